"""The remote backend against a fake, misbehaving SPARQL engine on loopback.

Each engine quirk or failure that could pass a partial answer off as a whole one — a row
cap with a 200, partial results on timeout, a garbage or truncated body, a slow or silent
server, a refused connection — must come back as a library error, within the timeout.
Also: how queries are sent (form-encoded, dataset, VALUES, prefixes) and that credentials
never show.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyoxigraph as ox
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sasci_kg import remote_sparql
from sasci_kg.backends import BackendSettings, open_backend
from sasci_kg.errors import (
    QueryError,
    RemoteError,
    RemoteIncompleteError,
    RemoteProtocolError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    StoreError,
)
from sasci_kg.remote import (
    BasicAuth,
    BearerAuth,
    RemoteBackend,
    Secret,
    prepare_query,
    replace_graphs,
)
from sasci_kg.store import LoadInput

G = "https://w3id.org/sasci-kg/graph/source/test"
JSON = "application/sparql-results+json"
PASSWORD = "pa55-W0RD-never-shown"


# ---------------------------------------------------------------------------------------
# The fake engine.


@dataclass
class Seen:
    """One request the fake engine received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.body.decode(), keep_blank_values=True)

    @property
    def query_params(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)


@dataclass
class Reply:
    """What the fake engine answers: status, headers, body (optionally dripped slowly)."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = JSON
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the status line
    drip: float = 0.0  # between body bytes
    length: int | None = None  # a Content-Length that lies


def solutions(names: list[str], rows: list[dict[str, dict[str, str]]]) -> bytes:
    return json.dumps({"head": {"vars": names}, "results": {"bindings": rows}}).encode()


def literal_rows(n: int) -> bytes:
    return solutions(["x"], [{"x": {"type": "literal", "value": str(i)}} for i in range(n)])


class FakeEngine:
    """A threaded HTTP server on 127.0.0.1 that answers with ``self.reply(request)``."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.reply: Callable[[Seen], Reply] = lambda _: Reply(body=literal_rows(1))
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, dict(self.headers.items()),
                            self.rfile.read(length))
                engine.seen.append(seen)
                reply = engine.reply(seen)
                try:
                    time.sleep(reply.delay)
                    self.send_response(reply.status)
                    if reply.content_type:
                        self.send_header("Content-Type", reply.content_type)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(
                        reply.length if reply.length is not None else len(reply.body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if reply.drip:
                        for i in range(len(reply.body)):
                            self.wfile.write(reply.body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(reply.drip)
                    else:
                        self.wfile.write(reply.body)
                except OSError:
                    pass  # the client gave up: that is the point of some tests
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                return None

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def backend(self, **kwargs: object) -> RemoteBackend:
        options: dict[str, object] = {"update_url": self.url + "/update",
                                      "gsp_url": self.url + "/store", "timeout": 2.0}
        options.update(kwargs)
        return RemoteBackend(self.url + "/sparql", **options)  # type: ignore[arg-type]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    fake = FakeEngine()
    yield fake
    fake.close()


def ask(backend: RemoteBackend, sparql: str = "SELECT ?x WHERE { ?x ?p ?o }") -> object:
    """A query with an explicit dataset, so the fake needs to answer only this request."""
    result = backend.query(sparql, default_graph=[G], named_graphs=[G])
    return list(result) if isinstance(result, ox.QuerySolutions | ox.QueryTriples) else result


# ---------------------------------------------------------------------------------------
# Completeness: a 200 is not enough.


def test_row_cap_header_at_the_cap_is_refused(engine: FakeEngine) -> None:
    # Virtuoso's ResultSetMaxRows: 200 OK, the first N rows, and X-SPARQL-MaxRows: N.
    engine.reply = lambda _: Reply(body=literal_rows(3), headers={"X-SPARQL-MaxRows": "3"})
    with pytest.raises(RemoteIncompleteError, match="row cap of 3.*ResultSetMaxRows"):
        ask(engine.backend())


def test_row_cap_header_below_the_cap_is_a_complete_answer(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(body=literal_rows(2), headers={"X-SPARQL-MaxRows": "3"})
    assert len(ask(engine.backend())) == 2  # type: ignore[arg-type]


def test_a_known_row_cap_refuses_a_construct_that_reaches_it(engine: FakeEngine) -> None:
    # Virtuoso cuts CONSTRUCT and GSP reads at the cap with no header at all.
    triples = b"".join(b"<http://ex/s%d> <http://ex/p> <http://ex/o> .\n" % i for i in range(4))
    engine.reply = lambda _: Reply(body=triples, content_type="application/n-triples")
    construct = "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }"
    assert len(ask(engine.backend(), construct)) == 4  # type: ignore[arg-type]
    with pytest.raises(RemoteIncompleteError, match="row cap"):
        ask(engine.backend(row_cap=4), construct)


def test_partial_results_on_timeout_are_refused(engine: FakeEngine) -> None:
    # Virtuoso's "anytime" answers: 200, some rows, and X-SQL-State: S1TAT.
    engine.reply = lambda _: Reply(body=literal_rows(2), headers={
        "X-SQL-State": "S1TAT",
        "X-SQL-Message": "RC...: Returning incomplete results, query interrupted by result "
                         "timeout."})
    with pytest.raises(RemoteTimeoutError, match="partial results.*S1TAT"):
        ask(engine.backend())


def test_any_other_sql_state_on_a_200_is_refused(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(body=literal_rows(1), headers={"X-SQL-State": "42000"})
    with pytest.raises(RemoteIncompleteError, match="42000"):
        ask(engine.backend())


@pytest.mark.parametrize("body,content_type", [
    (b"<html><body>Service temporarily overloaded</body></html>", JSON),
    (b'{"head":{"vars":["x"]},"results":{"bindings":[{"x":{"type":"literal","value":"1"}}',
     JSON),
    (b'{"head":{"vars":["x"]}}', JSON),
    (b'{"head":{"vars":["x"]},"results":{"bindings":[{"x":{"type":"uri","value":"not an iri"}}]}}',
     JSON),
    (b"\xff\xfe garbage", JSON),
    (b"<html>a login page</html>", "text/html"),
    (b"", None),
])
def test_a_garbage_body_after_a_200_is_refused(engine: FakeEngine, body: bytes,
                                               content_type: str | None) -> None:
    engine.reply = lambda _: Reply(body=body, content_type=content_type)
    with pytest.raises(RemoteProtocolError):
        ask(engine.backend())


def test_garbage_triples_after_a_200_are_refused(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(body=b"<http://ex/s> <http://ex/p> oops .\n",
                                   content_type="application/n-triples")
    with pytest.raises(RemoteProtocolError, match="not valid N-Triples"):
        ask(engine.backend(), "CONSTRUCT WHERE { ?s ?p ?o }")


def test_a_body_cut_off_by_the_engines_timeout_is_a_timeout(engine: FakeEngine) -> None:
    # oxigraph serve --timeout-s: 200 OK, then the JSON stops with this sentence.
    engine.reply = lambda _: Reply(
        body=b'{"head":{"vars":["n"]},"results":{"bindings":[The SPARQL operation has been '
             b'cancelled')
    with pytest.raises(RemoteTimeoutError, match="time limit"):
        ask(engine.backend())


def test_a_body_shorter_than_announced_is_refused(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(body=literal_rows(2)[:30], length=500)
    with pytest.raises(RemoteProtocolError, match="closed the connection"):
        ask(engine.backend())


def test_an_answer_over_the_size_limit_is_refused(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(body=literal_rows(5000))
    with pytest.raises(RemoteIncompleteError, match="larger than"):
        ask(engine.backend(max_bytes=1 << 16))


def test_export_refuses_a_graph_read_shorter_than_the_engines_count(engine: FakeEngine) -> None:
    def reply(seen: Seen) -> Reply:
        if seen.method == "GET":  # GSP read: two triples only
            return Reply(content_type="application/n-triples",
                         body=b"<http://ex/a> <http://ex/p> \"1\" .\n"
                              b"<http://ex/b> <http://ex/p> \"2\" .\n")
        return Reply(body=solutions(["g", "n"], [{
            "g": {"type": "uri", "value": G},
            "n": {"type": "typed-literal", "value": "3",
                  "datatype": "http://www.w3.org/2001/XMLSchema#integer"}}]))
    engine.reply = reply
    with pytest.raises(RemoteIncompleteError, match="sent 2 triples but counts 3"):
        list(engine.backend().quads(G))


# ---------------------------------------------------------------------------------------
# Failures: bounded by the timeout, mapped to errors the web layer turns into 502/504.


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = RemoteBackend(f"http://127.0.0.1:{port}/sparql", timeout=2)
    with pytest.raises(RemoteUnavailableError, match="connection refused"):
        ask(backend)


def test_a_slow_engine_times_out_within_the_limit(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(body=literal_rows(1), delay=3)
    started = time.monotonic()
    with pytest.raises(RemoteTimeoutError, match="within 0.5 s"):
        ask(engine.backend(timeout=0.5))
    assert time.monotonic() - started < 2


def test_a_dripping_body_times_out_within_the_limit(engine: FakeEngine) -> None:
    # Headers at once, then a byte every 50 ms: each read is quick, the whole is not.
    engine.reply = lambda _: Reply(body=literal_rows(3), drip=0.05)
    started = time.monotonic()
    with pytest.raises(RemoteTimeoutError):
        ask(engine.backend(timeout=0.5))
    assert time.monotonic() - started < 1.5


def test_an_engine_that_never_answers_times_out() -> None:
    # Virtuoso 7 never answers a direct application/sparql-query POST: the connection is
    # accepted and then nothing. The backend never sends one; a silent engine still ends.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        backend = RemoteBackend(f"http://127.0.0.1:{silent.getsockname()[1]}/sparql",
                                timeout=0.5)
        started = time.monotonic()
        with pytest.raises(RemoteTimeoutError):
            ask(backend)
        assert time.monotonic() - started < 2


def test_not_http_at_all_is_a_protocol_error() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        backend = RemoteBackend(f"http://127.0.0.1:{server.getsockname()[1]}/sparql",
                                timeout=2)
        with pytest.raises(RemoteProtocolError, match="not a valid HTTP answer"):
            ask(backend)
        thread.join(2)


@pytest.mark.parametrize("status,error", [
    (500, RemoteProtocolError),
    (503, RemoteUnavailableError),
    (404, RemoteProtocolError),
    (406, RemoteProtocolError),
])
def test_engine_error_statuses(engine: FakeEngine, status: int,
                               error: type[RemoteError]) -> None:
    engine.reply = lambda _: Reply(status=status, body=b"Virtuoso 42000 Error SR186",
                                   content_type="text/plain")
    with pytest.raises(error, match=str(status)):
        ask(engine.backend())


def test_a_syntax_error_from_the_engine_is_a_query_error(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(status=400, content_type="text/plain",
                                   body=b"Virtuoso 37000 Error SP030: SPARQL compiler, line 1: "
                                        b"syntax error")
    with pytest.raises(QueryError, match="SP030"):
        ask(engine.backend())


def test_redirects_are_not_followed(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(status=302, headers={"Location": "http://elsewhere.test/"},
                                   content_type=None)
    with pytest.raises(RemoteProtocolError, match="redirected"):
        ask(engine.backend(auth=BasicAuth("kg", Secret(PASSWORD))))
    assert len(engine.seen) == 1


def test_error_classes_for_the_web_layer() -> None:
    for cls in (RemoteUnavailableError, RemoteTimeoutError, RemoteProtocolError,
                RemoteIncompleteError):
        assert issubclass(cls, RemoteError) and issubclass(cls, StoreError)


# ---------------------------------------------------------------------------------------
# What goes over the wire.


def test_queries_are_form_encoded_posts_with_the_union_dataset(engine: FakeEngine) -> None:
    def reply(seen: Seen) -> Reply:
        if "DISTINCT ?g" in seen.form["query"][0]:
            return Reply(body=solutions(["g"], [
                {"g": {"type": "uri", "value": G}},
                {"g": {"type": "uri", "value": "http://www.openlinksw.com/schemas/virtrdf#"}}]))
        return Reply(body=literal_rows(1))
    engine.reply = reply
    backend = engine.backend()
    backend.query("SELECT ?name WHERE { ?s schema:name ?name }")
    listing, seen = engine.seen[0], engine.seen[-1]
    assert "default-graph-uri" not in listing.form  # the listing sees every graph
    assert seen.method == "POST"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["Accept"].startswith(JSON)
    assert seen.form["default-graph-uri"] == [G]  # ours only, not the engine's own
    assert seen.form["named-graph-uri"] == [G]
    assert seen.form["query"][0].startswith("PREFIX schema: <https://schema.org/>\n")
    assert "timeout" not in seen.form  # Virtuoso's timeout= means "partial results"


def test_client_dataset_and_from_clauses_are_respected(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(body=literal_rows(1))
    backend = engine.backend()
    backend.query("SELECT * FROM <http://ex/g> WHERE { ?s ?p ?o }")
    assert "default-graph-uri" not in engine.seen[-1].form
    backend.query("SELECT * WHERE { ?s ?p ?o }", default_graph=["http://ex/a"],
                  named_graphs=["http://ex/b"])
    assert engine.seen[-1].form["default-graph-uri"] == ["http://ex/a"]
    assert engine.seen[-1].form["named-graph-uri"] == ["http://ex/b"]


def test_virtuoso_blank_node_labels_are_normalised(engine: FakeEngine) -> None:
    node = {"type": "bnode", "value": "nodeID://b10000"}
    engine.reply = lambda _: Reply(body=solutions(["a", "b"], [
        {"a": node, "b": node},
        {"a": {"type": "bnode", "value": "nodeID://b10001"},
         "b": {"type": "typed-literal", "value": "1",
               "datatype": "http://www.w3.org/2001/XMLSchema#integer"}}]))
    rows = ask(engine.backend())
    assert isinstance(rows, list)
    first, second = rows
    assert isinstance(first["a"], ox.BlankNode) and first["a"] == first["b"]
    assert second["a"] != first["a"]
    assert second["b"] == ox.Literal("1", datatype=ox.NamedNode(
        "http://www.w3.org/2001/XMLSchema#integer"))


def test_xml_results_with_virtuoso_blank_nodes_parse(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(content_type="application/sparql-results+xml", body=(
        b'<?xml version="1.0"?><sparql xmlns="http://www.w3.org/2005/sparql-results#">'
        b'<head><variable name="x"/></head><results><result><binding name="x">'
        b"<bnode>nodeID://b10000</bnode></binding></result></results></sparql>"))
    rows = ask(engine.backend())
    assert isinstance(rows, list) and isinstance(rows[0]["x"], ox.BlankNode)


def test_bearer_and_basic_credentials_are_sent_but_never_shown(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(status=401, content_type="text/plain", body=b"no")
    backend = engine.backend(auth=BearerAuth(Secret(PASSWORD)))
    with pytest.raises(RemoteError) as caught:
        ask(backend)
    assert engine.seen[-1].headers["Authorization"] == f"Bearer {PASSWORD}"
    assert "refused access (401)" in str(caught.value)
    basic = engine.backend(auth=BasicAuth("kg", Secret(PASSWORD)))
    with pytest.raises(RemoteError) as caught_basic:
        ask(basic)
    assert engine.seen[-1].headers["Authorization"].startswith("Basic ")
    for text in (str(caught.value), str(caught_basic.value), repr(backend), repr(basic),
                 repr(basic.auth), repr(backend.auth)):
        assert PASSWORD not in text


def test_settings_never_show_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n")
    settings = BackendSettings.from_env({
        "SASCI_KG_BACKEND": "remote",
        "SASCI_KG_QUERY_URL": "http://127.0.0.1:9/sparql",
        "SASCI_KG_AUTH": "digest",
        "SASCI_KG_USER": "kg",
        "SASCI_KG_PASSWORD_FILE": str(secret_file),
    })
    assert settings.password is not None and settings.password.reveal() == PASSWORD
    for text in (repr(settings), str(settings), settings.describe(), repr(settings.password),
                 repr(open_backend(settings))):
        assert PASSWORD not in text
    assert settings.describe() == "remote SPARQL engine at http://127.0.0.1:9/sparql " \
                                  "(digest auth as kg)"


def test_credentials_in_a_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(StoreError) as caught:
        BackendSettings.from_options(query_url=f"http://kg:{PASSWORD}@127.0.0.1:9/sparql")
    assert PASSWORD not in str(caught.value) and "--query-url" in str(caught.value)


@pytest.mark.parametrize("options,message", [
    ({"backend": "remote"}, "--query-url"),
    ({"backend": "cloud"}, "unknown backend"),
    ({"query_url": "ftp://x/sparql"}, "not an http"),
    ({"query_url": "http://x/sparql", "auth": "digest"}, "needs a user and a password"),
    ({"query_url": "http://x/sparql", "auth": "bearer"}, "needs a token"),
    ({"query_url": "http://x/sparql", "auth": "kerberos"}, "unknown authentication"),
    ({"query_url": "http://x/sparql", "timeout": "soon"}, "not a number"),
    ({"query_url": "http://x/sparql", "row_cap": "0"}, "positive"),
])
def test_bad_settings_name_the_fix(options: dict[str, str], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        BackendSettings.from_options(**options)  # type: ignore[arg-type]


def test_embedded_is_the_default_and_a_query_url_means_remote() -> None:
    assert BackendSettings.from_env({}).kind == "embedded"
    assert BackendSettings.from_env({"SASCI_KG_QUERY_URL": "http://x/sparql"}).is_remote


def test_loading_needs_an_update_url_and_refuses_foreign_graphs(engine: FakeEngine) -> None:
    engine.reply = lambda _: Reply(body=solutions(["g"], []))
    read_only = engine.backend(update_url=None)
    data = LoadInput(format=ox.RdfFormat.N_QUADS, label="x",
                     data=b'<http://ex/s> <http://ex/p> "1" <http://example.org/theirs> .\n')
    with pytest.raises(StoreError, match="update URL"):
        replace_graphs(read_only, [data])
    with pytest.raises(StoreError, match="outside our graph namespaces"):
        replace_graphs(engine.backend(), [data])
    default = LoadInput(format=ox.RdfFormat.N_QUADS, label="x",
                        data=b'<http://ex/s> <http://ex/p> "1" .\n')
    with pytest.raises(StoreError, match="default graph"):
        replace_graphs(engine.backend(), [default])
    assert all(s.method != "PUT" and "/update" not in s.path for s in engine.seen)


# ---------------------------------------------------------------------------------------
# Preparing the text: prefixes, parameters as VALUES, never pasted.


def test_default_prefixes_are_added_only_when_used_and_not_declared() -> None:
    text = prepare_query("PREFIX schema: <http://example.org/mine#>\n"
                         "SELECT * WHERE { ?s schema:name ?n ; kgo:certainty ?c }").text
    assert text.startswith("PREFIX kgo: <https://w3id.org/sasci-kg/def#>\nPREFIX schema: "
                           "<http://example.org/mine#>")
    assert text.count("PREFIX") == 2
    bare = prepare_query("SELECT * WHERE { ?s <http://ex/p> 'rdf:type # schema:x' }").text
    assert "PREFIX" not in bare


def test_values_go_at_the_start_of_the_where_group() -> None:
    text = prepare_query(
        "SELECT ?person ?n # a comment with { braces }\n"
        "WHERE { ?person <http://ex/says> \"}{\" ; <http://ex/n> ?n }",
        substitutions={"person": ox.NamedNode("http://ex/p1")}).text
    assert "WHERE { VALUES ?person { <http://ex/p1> }" in text
    construct = prepare_query(
        "CONSTRUCT { ?s <http://ex/q> ?o } WHERE { ?s <http://ex/p> ?o }",
        substitutions={"s": ox.NamedNode("http://ex/a")}).text
    assert construct.startswith("CONSTRUCT { ?s <http://ex/q> ?o } WHERE { VALUES ?s")
    describe = prepare_query("DESCRIBE ?s", substitutions={"s": ox.NamedNode("http://ex/a")})
    assert describe.text.endswith("VALUES ?s { <http://ex/a> }\n")
    short = prepare_query("CONSTRUCT WHERE { ?s ?p ?o }",
                          substitutions={"s": ox.NamedNode("http://ex/a")})
    assert short.text.endswith("VALUES ?s { <http://ex/a> }\n")


def test_literal_parameters_are_escaped_not_pasted() -> None:
    hostile = 'x" } } ; DROP ALL ; SELECT * WHERE { ?a ?b "'
    text = prepare_query("SELECT ?name WHERE { ?s <http://ex/name> ?name }",
                         substitutions={"name": ox.Literal(hostile + "\n\\")}).text
    assert 'VALUES ?name { "x\\" } } ; DROP ALL ; SELECT * WHERE { ?a ?b \\"\\n\\\\" }' in text


def test_parameters_must_be_projected_like_the_embedded_store_requires() -> None:
    with pytest.raises(QueryError, match="does not project \\?person"):
        prepare_query("SELECT ?name WHERE { ?person <http://ex/n> ?name }",
                      substitutions={"person": ox.NamedNode("http://ex/p")})
    assert "VALUES ?person" in prepare_query(
        "SELECT * WHERE { ?person <http://ex/n> ?name }",
        substitutions={"person": ox.NamedNode("http://ex/p")}).text
    assert "VALUES ?n" in prepare_query(
        "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }",
        substitutions={"n": ox.Literal("3")}).text


@pytest.mark.parametrize("sparql", [
    "INSERT DATA { GRAPH <http://ex/g> { <http://ex/a> <http://ex/b> <http://ex/c> } }",
    "PREFIX ex: <http://ex/> DELETE WHERE { ?s ?p ?o }",
    "LOAD <http://ex/evil.ttl>",
    "DROP ALL",
    "hello",
    "",
])
def test_updates_and_non_queries_never_reach_the_query_url(sparql: str) -> None:
    with pytest.raises(QueryError):
        prepare_query(sparql)


def test_bad_variable_names_are_refused() -> None:
    with pytest.raises(QueryError, match="not a SPARQL variable"):
        prepare_query("SELECT * WHERE { ?s ?p ?o }", substitutions={"s } DROP": ox.Literal("")})


# -- the tokenizer of remote_sparql: linear, and the same tokens as the plain alternation ----

# The alternation as it was before runs were read whole (quadratic on `a.a.a…`).
_PLAIN_REMOTE = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>\#[^\n\r]*)
    | (?P<string>'''(?:[^'\\]|\\.|'(?!''))*'''|\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\"
                 |'(?:[^'\\\n\r]|\\.)*'|"(?:[^"\\\n\r]|\\.)*")
    | (?P<iri><[^<>"{}|^`\\\x00-\x20]*>)
    | (?P<var>[?$][A-Za-z0-9_\u00B7-\uFFFF]+)
    | (?P<bnode>_:[A-Za-z0-9_\u00B7-\uFFFF.\-]+)
    | (?P<pname>(?:[A-Za-z\u00C0-\uFFFF][A-Za-z0-9_\-.\u00B7-\uFFFF]*)?:
                (?:[A-Za-z0-9_\-.:%\\\u00B7-\uFFFF]*))
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def _plain_remote_tokens(text: str) -> list[tuple[str, str, int, int]]:
    return [(m.lastgroup or "punct", m.group(), m.start(), m.end())
            for m in _PLAIN_REMOTE.finditer(text) if m.lastgroup not in ("ws", "comment")]


_PIECES = st.sampled_from(["a", "b", "é", ".", ":", "-", "_", "1", " ", "\u3000", "\u00b7",
                           "FROM", "{", "}", "?x", "_:b", "<i>", '"s"', "#c\n", "ex:", "%", "\\"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join) | st.text(max_size=40))
def test_remote_tokens_are_those_of_the_plain_alternation(text: str) -> None:
    got = [(t.kind, t.text, t.start, t.end) for t in remote_sparql._tokens(text)]
    assert got == _plain_remote_tokens(text)


@pytest.mark.parametrize("text", [
    "SELECT * { " + "a." * 50_000 + "}",        # a run no ":" follows: was 280 s
    "SELECT * {" + "<" * 100_000 + "}",          # FROM looked for at every token: was 246 s
    "SELECT * {" + "?a " * 30_000 + "}",
    "SELECT * { " + "é." * 50_000 + "}",
])
def test_preparing_a_long_query_for_a_remote_engine_takes_linear_time(text: str) -> None:
    started = time.process_time()
    try:
        remote_sparql.prepare_query(text)
    except QueryError:
        pass
    assert time.process_time() - started < 5, "quadratic again?"
