"""The SPARQL tokenizer and policy checks: SERVICE/LOAD found wherever the parser would see
them and nowhere else, size and nesting bounds, query vs update, and the address checks."""

from __future__ import annotations

import gc
import itertools
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyoxigraph as ox
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sasci_kg import guard
from sasci_kg.errors import QueryError
from sasci_kg.guard import (
    Checked,
    Policy,
    QueryChainTooLongError,
    QuerySyntaxError,
    QueryTooDeepError,
    QueryTooLargeError,
    RemoteAccessRefusedError,
    WrongOperationError,
    check_query,
    check_update,
    is_forbidden_address,
    tokenize,
)
from sasci_kg.vocab import PREFIXES

POLICY = Policy(default_prefixes=PREFIXES)

# Queries in which "SERVICE" or "LOAD" appears but is not the keyword.
NOT_A_CALL = [
    'SELECT * WHERE { ?s ?p "SERVICE <http://evil.example/> { ?a ?b ?c }" }',
    "SELECT * WHERE { ?s ?p 'LOAD <http://evil.example/>' }",
    'SELECT * WHERE { ?s ?p """a " "" SERVICE <http://evil.example/> {} """ }',
    "SELECT * WHERE { ?s ?p '''it's ''SERVICE'' <http://evil.example/> {}''' }",
    'SELECT * WHERE { ?s ?p "escaped \\" SERVICE <http://evil.example/> {} \\"" }',
    "SELECT * WHERE { ?s ?p ?o } # SERVICE <http://evil.example/> { }",
    "# LOAD <http://evil.example/>\nSELECT * WHERE { ?s ?p ?o }",
    "SELECT * WHERE { ?s <http://example.org/SERVICE> ?o }",
    "SELECT * WHERE { ?s <http://example.org/x#SERVICE> ?o }",
    "PREFIX ex: <http://example.org/> SELECT * WHERE { ?s ex:SERVICE ?o }",
    "PREFIX ex: <http://example.org/> SELECT * WHERE { ?s ex:service ?o . ?o ex:load ?l }",
    "PREFIX load: <http://example.org/> SELECT * WHERE { ?s load: ?o }",
    "SELECT ?service ?load WHERE { ?service ?load ?o }",
    "SELECT * WHERE { _:SERVICE ?p ?o }",
    'SELECT * WHERE { ?s ?p "x"@service }',
    'SELECT * WHERE { ?s ?p "#" . ?s ?p "SERVICE" }',
    "PREFIX ex: <http://example.org/> SELECT * WHERE { ?s ex:a.SERVICE ?o }",
]

# Queries that call a service, however it is written.
CALLS = [
    "SELECT * WHERE { SERVICE <{url}> { ?s ?p ?o } }",
    "select * where { service <{url}> { ?s ?p ?o } }",
    "SELECT * WHERE { SeRvIcE <{url}> { ?s ?p ?o } }",
    "SELECT * WHERE { SERVICE SILENT <{url}> { ?s ?p ?o } }",
    "SELECT * WHERE{?x ?y ?z.SERVICE<{url}>{?s ?p ?o}}",
    "PREFIX ex: <{base}> SELECT * WHERE { SERVICE ex:sparql { ?s ?p ?o } }",
    "BASE <{base}> SELECT * WHERE { SERVICE <sparql> { ?s ?p ?o } }",
    'SELECT * WHERE { ?s ?p "#" SERVICE <{url}> { ?s ?p ?o } }',
    'SELECT * WHERE { ?s ?p """x""" SERVICE <{url}> { ?s ?p ?o } }',
    "SELECT * WHERE { ?s ?p ?o # comment\n SERVICE <{url}> { ?s ?p ?o } }",
    "SELECT * WHERE { ?s ?p ?o # comment ended by CR\r SERVICE <{url}> { ?s ?p ?o } }",
    "SELECT * WHERE { { { OPTIONAL { SERVICE <{url}> { ?s ?p ?o } } } } }",
    "SELECT * WHERE { ?s ?p <http://example.org/a#b> SERVICE <{url}> { ?s ?p ?o } }",
]


class Listener:
    """A loopback TCP port that counts the connections made to it and closes them at once."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/sparql"
        self.count = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=2)


def _store_with_data() -> ox.Store:
    """A store where every pattern of CALLS matches, so the SERVICE part is reached."""
    store = ox.Store()
    s, p = ox.NamedNode("http://example.org/s"), ox.NamedNode("http://example.org/p")
    for o in (ox.Literal("#"), ox.Literal("x"), ox.NamedNode("http://example.org/a#b")):
        store.add(ox.Quad(s, p, o))
    return store


def assert_pyoxigraph_calls(query: str, listener: Listener, store: ox.Store | None = None
                            ) -> None:
    """Run directly, pyoxigraph connects to the listener: the SERVICE is live for it."""
    before = listener.count
    try:
        result = (store or _store_with_data()).query(query)
        if not isinstance(result, ox.QueryBoolean):
            list(result)
    except (OSError, RuntimeError, ValueError, SyntaxError):
        pass
    assert listener.count > before


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.mark.parametrize("query", NOT_A_CALL)
def test_keyword_inside_strings_iris_comments_names_is_not_a_call(query: str) -> None:
    checked = check_query(query, POLICY)
    assert checked.form == "SELECT" and checked.remote_iris == ()
    # And pyoxigraph agrees: the query runs without calling anything.
    list(ox.Store().query(query, use_default_graph_as_union=True))  # type: ignore[arg-type]


@pytest.mark.parametrize("template", CALLS)
def test_every_way_of_writing_service_is_refused(template: str, listener: Listener) -> None:
    url = listener.url
    query = template.replace("{url}", url).replace("{base}", url[: -len("sparql")])
    with pytest.raises(RemoteAccessRefusedError) as info:
        check_query(query, POLICY)
    assert info.value.keyword == "SERVICE"
    assert info.value.iri == url
    # And pyoxigraph really would have called it: run directly, it connects to the URL.
    assert_pyoxigraph_calls(query, listener)


# "<" after an operand is "less than" to the engine, an IRI to the tokenizer; the text that
# follows then reads differently: in the tokenizer's reading SERVICE was inside a string.
HIDDEN_BEHIND_LESS_THAN = [
    "SELECT * WHERE { BIND(1 AS ?a) BIND(2 AS ?b) FILTER(?a<?b&&'>'!=?a) "
    "SERVICE <{url}> { ?x ?y ?z } #'\n}",
    "SELECT * WHERE { BIND(1 AS ?a) BIND(2 AS ?b) FILTER(?a<?b#> '''\n) "
    "SERVICE <{url}> { ?x ?y ?z } #'''\n}",
    "SELECT * WHERE { BIND(3 AS ?a) FILTER(STRLEN(\"ab\")<?a&&'>'!='x') "
    "SERVICE <{url}> { ?x ?y ?z } #'\n}",
    # After the end of EXISTS {…} and of a triple term, too (an independent review's finds).
    "SELECT * WHERE { BIND(1 AS ?b) FILTER(EXISTS{}<?b&&'>'!=''||true) "
    "SERVICE <{url}> { ?x ?y ?z } } #'",
    "SELECT * WHERE { FILTER(<<(<x:s> <x:p> <x:o>)>><?b&&'>'!=''||true) "
    "SERVICE <{url}> { ?x ?y ?z } } #'",
]


@pytest.mark.parametrize("template", HIDDEN_BEHIND_LESS_THAN)
def test_service_hidden_behind_a_less_than_is_refused(template: str,
                                                      listener: Listener) -> None:
    query = template.replace("{url}", listener.url)
    with pytest.raises(QueryError, match="less than"):
        check_query(query, POLICY)
    # It is real: run directly, pyoxigraph reads a live SERVICE there and calls the URL.
    assert_pyoxigraph_calls(query, listener)


# pyoxigraph reads a keyword glued to what follows or comes before (an independent hunt's
# finds): SERVICESILENT is SERVICE SILENT, SERVICEex:x is SERVICE ex:x, `true SERVICE` may be
# written trueSERVICE, and a prefix named service: starts a SERVICE where a pattern may.
GLUED = [
    "SELECT * WHERE { SERVICESILENT<{url}> { ?s ?p ?o } }",
    "SELECT * WHERE { SERVICESILENT <{url}> { ?s ?p ?o } }",
    "PREFIX : <{base}> SELECT * WHERE { SERVICE:sparql { ?s ?p ?o } }",
    "PREFIX ex: <{base}> SELECT * WHERE { SERVICEex:sparql { ?s ?p ?o } }",
    "PREFIX ex: <{base}> ASK { SERVICEex:sparql { ?s ?p ?o } }",
    "SELECT * WHERE { ?s ?p trueSERVICE <{url}> { ?s ?p ?o } }",
    "PREFIX : <{base}> PREFIX service: <http://e.org/> SELECT * WHERE { service:sparql {} }",
    "SELECT * WHERE { ?s ?p ?o FILTER(?a<?b&&'>'!=?a) ?s ?p ?o "
    "SERVICESILENT <{url}> { ?s ?p ?o } } #'",
    "SELECT * WHERE { ?s ?p ?o FILTER(?a<?b&&'>'!=?a) ?s ?p 1SERVICE <{url}> { ?s ?p ?o } } #'",
    # pyoxigraph reads at most one run of dots in a local name: ex:a.b, then ".", then SERVICE.
    "PREFIX ex: <http://example.org/> SELECT * WHERE { ?s ?p ex:a.b.SERVICE<{url}>{} }",
    "PREFIX : <http://example.org/> ASK { ?s ?p :a.b.SERVICE<{url}>{} }",
]


# After an operand "<<" before an IRI's body is "less than" and that IRI to the engine (no
# triple term starts so); read as "<<", the IRI's # or ' hid the rest (a third hunt's find).
LESS_THAN_AN_IRI = [
    "SELECT * WHERE { BIND(1<<http://e/#> AS ?b) SERVICE <{url}> {} }",
    "SELECT * WHERE { FILTER(1<<http://e/x#>||true) SERVICE <{url}> {} }",
    "SELECT (1<<http://e/#> AS ?b) WHERE { SERVICE <{url}> {} }",
    "SELECT * WHERE { FILTER(1<<http://e/x'>||true) SERVICE <{url}> {} } #'",
    "BASE <http://e/> SELECT * WHERE { FILTER(1<<(x'>||true) SERVICE <{url}> {} } #'",
]


# An IRI token holding # where "<" may be "less than": the engine reads its body up to the #
# as query text, and the rest of the line as a comment (a fourth hunt's find).
SERVICE_IN_AN_IRI_BODY = [
    "PREFIX ex: <{base}> SELECT * WHERE { FILTER(1<2)SERVICEex:#>\n{} }",
    "PREFIX ex: <{base}> ASK { FILTER(1<2)SERVICESILENTex:#>\n{} }",
    "PREFIX ex: <{base}> SELECT * WHERE { ?s ?p ?o FILTER(?s<?o)SERVICEex:#>\n{} }",
]


@pytest.mark.parametrize("template", SERVICE_IN_AN_IRI_BODY)
def test_a_service_in_an_iri_body_before_its_hash_is_refused(
        template: str, listener: Listener) -> None:
    base = listener.url[: -len("sparql")]
    query = template.replace("{base}", base)
    with pytest.raises(RemoteAccessRefusedError):
        check_query(query, POLICY)
    assert_pyoxigraph_calls(query, listener)  # (it is real)
    with pytest.raises(RemoteAccessRefusedError):
        check_update(f"PREFIX ex: <{base}> INSERT {{ <http://e/a> <http://e/b> 1 }} WHERE "
                     "{ FILTER(1<2)SERVICEex:#>\n{} }", POLICY)


@pytest.mark.parametrize("query", [
    "SELECT * WHERE { ?s <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> ?o }",
    "SELECT * WHERE { ?s ?p ?o FILTER(?o = <http://example.org/service#a>) }",
    "SELECT * WHERE { ?s <http://example.org/download#p> ?o }",
])
def test_hash_iris_that_hold_no_service_where_less_than_may_stand_pass(query: str) -> None:
    assert check_query(query, POLICY).form == "SELECT"


@pytest.mark.parametrize("template", LESS_THAN_AN_IRI)
def test_less_than_before_an_iri_hides_no_service(template: str, listener: Listener) -> None:
    query = template.replace("{url}", listener.url)
    with pytest.raises(RemoteAccessRefusedError):
        check_query(query, POLICY)
    assert_pyoxigraph_calls(query, listener)


@pytest.mark.parametrize("update", [
    "DELETE { ?s ?p ?o } WHERE { ?s ?p ?o FILTER(?o<<http://e/#>) } ; LOAD <{url}>",
    "DELETE { ?s ?p ?o } WHERE { ?s ?p ?o FILTER(?o<<http://e/x'>) } ; LOAD SILENT <{url}> #'",
    "INSERT { <http://e/a> <http://e/b> 1 } WHERE { FILTER(1<<http://e/x'>||true) "
    "SERVICE <{url}> {} } #'",
])
def test_less_than_before_an_iri_hides_no_load_in_an_update(update: str) -> None:
    with pytest.raises(RemoteAccessRefusedError):
        check_update(update.replace("{url}", "http://127.0.0.1:9/sparql"), POLICY)


def test_triple_terms_still_read_as_triple_terms() -> None:
    for query in ("SELECT * WHERE { <<( <http://a> <http://b> <http://c> )>> ?p ?o }",
                  "SELECT * WHERE { ?s ?p <<<http://a> <http://b> <http://c>>> }"):
        assert "<<" in {t.text[:2] for t in tokenize(query)}
        assert check_query(query, POLICY).form == "SELECT"


@pytest.mark.parametrize("template", GLUED)
def test_a_keyword_glued_to_a_name_is_refused(template: str, listener: Listener) -> None:
    url = listener.url
    query = template.replace("{url}", url).replace("{base}", url[: -len("sparql")])
    with pytest.raises(RemoteAccessRefusedError):
        check_query(query, POLICY)
    store = _store_with_data()
    store.add(ox.Quad(ox.NamedNode("http://example.org/s"), ox.NamedNode("http://example.org/p"),
                      ox.Literal(True)))
    store.add(ox.Quad(ox.NamedNode("http://example.org/s"), ox.NamedNode("http://example.org/p"),
                      ox.Literal(1)))
    assert_pyoxigraph_calls(query, listener, store)  # (it is real)


@pytest.mark.parametrize("template", [
    "CLEAR ALL ; LOADSILENT <{url}>",
    "PREFIX ex: <{base}> CLEAR ALL ; LOADex:sparql",
    "PREFIX ex: <{base}> INSERT { ?s ?p ?o } WHERE { SERVICEex:sparql { ?s ?p ?o } }",
])
def test_a_keyword_glued_to_a_name_in_an_update_is_refused(template: str) -> None:
    url = "http://127.0.0.1:9/sparql"
    with pytest.raises(RemoteAccessRefusedError):
        check_update(template.replace("{url}", url).replace("{base}", url[: -len("sparql")]),
                     POLICY)


@pytest.mark.parametrize("query", [
    "SELECT * WHERE { BIND(1 AS ?a) BIND(2 AS ?b) FILTER(?a<?b) }",
    "SELECT * WHERE { BIND(1 AS ?a) BIND(2 AS ?b) FILTER(?a < ?b && 'it\\'s' != ?a) }",
    "SELECT * WHERE { ?s <http://dbpedia.org/resource/Hell's_Kitchen> ?o }",
    "SELECT * WHERE { ?s ?p ?o FILTER(?o = <http://example.org/a#b>) }",
    "SELECT * WHERE { ?s ?p ?o FILTER(?o IN (<http://example.org/a'b>, <http://e.org/#c>)) }",
    "SELECT * WHERE { ?s ?p ?o FILTER(?o != <http://example.org/a#b> || ?o = '''x''') }",
])
def test_iris_that_read_one_way_only_pass(query: str) -> None:
    assert check_query(query, POLICY).form == "SELECT"
    list(ox.Store().query(query))  # type: ignore[arg-type]


@pytest.mark.parametrize("query", [
    "SELECT * WHERE { VALUES (?a ?b) { (<http://x/a> <http://dbpedia.org/resource/Ender's_Game>)"
    " } }",
    "SELECT * WHERE { ?s <http://x/p> (<http://x/a> <http://dbpedia.org/resource/Ender's_Game>) }",
    'SELECT * WHERE { VALUES (?a ?b) { (<http://x/a> <http://x/b#c>) } BIND("""x""" AS ?d) }',
])
def test_iris_with_a_quote_or_hash_where_no_service_follows_pass(query: str) -> None:
    """The engine may read such an IRI otherwise, but with no SERVICE or LOAD after it there
    is nothing to hide (an earlier check refused these, legitimate, queries)."""
    checked = check_query(query, POLICY)
    assert checked.form == "SELECT" and checked.volatile  # (never cached: a hidden RAND())
    list(ox.Store().query(query))  # type: ignore[arg-type]


def test_a_backslash_carries_no_string_over_a_line(listener: Listener) -> None:
    """The tokenizer read `\\` as an escape of any character: a short string went on past a
    line break, over a line the engine ran, after a # that the engine took as a comment."""
    query = ("SELECT * WHERE { BIND(1 AS ?a) BIND(2 AS ?b) FILTER(?a<?b#>'\\\n) "
             f"SERVICE <{listener.url}> {{ ?x ?y ?z }} }} #'")
    with pytest.raises(QueryError):
        check_query(query, POLICY)
    assert_pyoxigraph_calls(query, listener)  # (it is real)


def test_prefixes_under_a_long_base_are_resolved_only_when_used() -> None:
    """Resolved at once, 4,000 relative PREFIX lines under a 40 KB BASE took 4.6 s."""
    query = "BASE <http://x/" + "a/" * 20000 + ">\n" + "PREFIX p: <b>\n" * 4000 + "SELECT * {}"
    started = time.monotonic()
    assert check_query(query, POLICY).form == "SELECT"
    assert time.monotonic() - started < 1.0
    with pytest.raises(RemoteAccessRefusedError) as info:
        check_query("BASE <http://127.0.0.1/a/> PREFIX p: <b/> SELECT * { SERVICE p:c {} }",
                    POLICY)
    assert info.value.iri == "http://127.0.0.1/a/b/c"


@pytest.mark.parametrize(
    "query", ["SELECT * WHERE { SERVICE ?endpoint { ?s ?p ?o } }",
              "SELECT * WHERE { SERVICE SILENT $e { ?s ?p ?o } }"],
)
def test_service_with_a_variable_is_refused(query: str) -> None:
    with pytest.raises(RemoteAccessRefusedError, match="variable"):
        check_query(query, POLICY)


def test_service_with_unknown_prefix_is_refused() -> None:
    with pytest.raises(RemoteAccessRefusedError, match="unknown prefix"):
        check_query("SELECT * WHERE { SERVICE nope:x { ?s ?p ?o } }", POLICY)


@pytest.mark.parametrize(
    "text", ["LOAD <http://example.org/data.ttl>", "load silent <http://example.org/x> INTO GRAPH <http://g>",
             "INSERT DATA { <a:b> <a:c> <a:d> } ; LOAD <http://example.org/x>"],
)
def test_load_is_refused_on_both_endpoints(text: str) -> None:
    with pytest.raises(RemoteAccessRefusedError) as info:
        check_query(text, POLICY)
    assert info.value.keyword == "LOAD"
    with pytest.raises(RemoteAccessRefusedError):
        check_update(text, POLICY)


def test_codepoint_escaped_keyword_is_a_syntax_error_here_and_in_pyoxigraph() -> None:
    # pyoxigraph 0.5.13 does not unescape \u outside IRIs and strings; if that ever changes,
    # this test fails and the tokenizer must unescape first.
    query = "SELECT * WHERE { \\u0053ERVICE <http://127.0.0.1:9/> { ?s ?p ?o } }"
    with pytest.raises(QuerySyntaxError):
        check_query(query, POLICY)
    with pytest.raises(SyntaxError):
        ox.Store().query(query)


def test_escaped_iri_target_is_decoded_before_the_check() -> None:
    policy = Policy(service_allow=("http://example.org/",), resolve=lambda h, p: ["127.0.0.1"])
    with pytest.raises(RemoteAccessRefusedError) as info:
        check_query("SELECT * { SERVICE <http://\\u0065xample.org/s> { ?s ?p ?o } }", policy)
    assert info.value.iri == "http://example.org/s"
    assert "internal address" in info.value.reason


# ---------------------------------------------------------------------------------------
# Size, nesting, form.


def test_size_bound_counts_bytes() -> None:
    policy = Policy(max_bytes=100)
    query = "SELECT * WHERE { ?s ?p '" + "é" * 40 + "' }"  # 80 bytes of é
    with pytest.raises(QueryTooLargeError) as info:
        check_query(query, policy)
    assert info.value.size > 100 and info.value.limit == 100


def test_depth_at_the_limit_passes_and_one_more_is_refused() -> None:
    ok = "SELECT * WHERE " + "{" * 64 + "}" * 64
    assert check_query(ok, POLICY).form == "SELECT"
    with pytest.raises(QueryTooDeepError) as info:
        check_query("SELECT * WHERE " + "{" * 65 + "}" * 65, POLICY)
    assert (info.value.line, info.value.column) == (1, 16 + 64)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * WHERE " + "{" * 3000 + "}" * 3000,
        "SELECT * WHERE { ?s " + "(" * 400 + "<http://x>" + ")" * 400 + " ?o }",
        "SELECT * WHERE { ?s <http://p> " + "[ <http://p> " * 100 + "1" + " ]" * 100 + " }",
        "SELECT * WHERE " + "{" * 40 + " FILTER(" + "(" * 30 + "1" + ")" * 30 + ") " + "}" * 40,
    ],
)
def test_deep_nesting_is_refused_before_parsing(query: str) -> None:
    with pytest.raises(QueryTooDeepError):
        check_query(query, POLICY)


def test_depth_ignores_brackets_in_strings_and_iris() -> None:
    query = 'SELECT * WHERE { ?s ?p "' + "{" * 100 + '" . ?s ?p <http://x/((((> }'
    assert check_query(query, POLICY).form == "SELECT"


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("SELECT * WHERE { ?s ?p ?o }", "SELECT"),
        ("PREFIX ex: <http://e/> BASE <http://b/> construct { ?s ?p ?o } WHERE { ?s ?p ?o }",
         "CONSTRUCT"),
        ("DESCRIBE <http://e/x>", "DESCRIBE"),
        ("# a comment\nASK {}", "ASK"),
        ('VERSION "1.2" SELECT * {}', "SELECT"),
    ],
)
def test_query_forms(text: str, form: str) -> None:
    checked = check_query(text, POLICY)
    assert checked.form == form
    assert checked.returns_graph == (form in ("CONSTRUCT", "DESCRIBE"))


@pytest.mark.parametrize(
    "text",
    ["INSERT DATA { <http://a> <http://b> <http://c> }", "delete where { ?s ?p ?o }",
     "PREFIX ex: <http://e/> WITH ex:g DELETE { ?s ?p ?o } WHERE { ?s ?p ?o }",
     "CLEAR ALL", "DROP GRAPH <http://g>", "CREATE GRAPH <http://g>"],
)
def test_an_update_is_refused_as_a_query_and_accepted_as_an_update(text: str) -> None:
    with pytest.raises(WrongOperationError, match="/update"):
        check_query(text, POLICY)
    assert check_update(text, POLICY).is_update


def test_a_query_is_refused_as_an_update() -> None:
    with pytest.raises(WrongOperationError, match="/sparql"):
        check_update("SELECT * {}", POLICY)


def test_from_clause_is_noticed() -> None:
    assert check_query("SELECT * FROM <http://g> WHERE { ?s ?p ?o }", POLICY).has_dataset_clause
    assert not check_query("SELECT * WHERE { ?s <http://from> ?o }", POLICY).has_dataset_clause


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("SELECT * WHERE {\n  ?s ?p ?o .\n  ?s ?p 'open }", 3, 9),
        ("SELECT * WHERE { ?s ?p ?o } \u00a0", 1, 29),
        ("\ufeffSELECT * {}", 1, 1),
        ("SELEKT * {}", 1, 1),
    ],
)
def test_syntax_errors_have_line_and_column(text: str, line: int, column: int) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        check_query(text, POLICY)
    assert (info.value.line, info.value.column) == (line, column)


def test_empty_query_is_a_syntax_error() -> None:
    with pytest.raises(QuerySyntaxError, match="empty"):
        check_query("  # only a comment\n", POLICY)


def test_tokens() -> None:
    tokens = list(tokenize('PREFIX ex: <http://e/> SELECT ?x { ?x ex:p "a\\"b"@en, 1.5e3 }'))
    assert [t.kind for t in tokens] == [
        "word", "pname", "iri", "word", "var", "punct", "var", "pname", "string", "langtag",
        "punct", "number", "punct",
    ]


# Whether the engine needs the default prefixes: only for a prefixed name whose prefix no
# PREFIX in the text declares.
_SCHEMA = "PREFIX schema: <https://schema.org/> "


@pytest.mark.parametrize(
    ("text", "needs"),
    [
        ("SELECT * { ?s schema:name ?o }", True),
        (_SCHEMA + "SELECT * { ?s schema:name ?o }", False),
        ("PREFIX : <x#> SELECT * { :a ?p ?o }", False),
        ("SELECT * { :a ?p ?o }", True),
        ("SELECT * { ?s ?p ?o }", False),
        (_SCHEMA + "SELECT * { ?s schema:name ?o ; a ex:Thing }", True),
        (_SCHEMA + "SELECT * { ?s schema:name ?o ; a :Thing }", True),
        (_SCHEMA + "SELECT * { ?s SCHEMA:name ?o }", True),  # prefixes are case-sensitive
        ("prefix\tSCHEMA: # c\n <https://schema.org/> select * { ?s SCHEMA:name ?o }", False),
        ("PREFIX schema:name <https://schema.org/> SELECT * { ?s schema:name ?o }", True),
        ("SELECT * { ?s schema:name ?o } " + _SCHEMA, False),  # wherever the PREFIX is
        ("SELECT * { ?s <http://e/ex:a> 'ex:b' } # ex:c", False),  # not in IRIs, strings, comments
        ("SELECT * { ?s ?p _:b . ?s ?p ?ex }", False),
        ("SELECT * { ?s ?p \"x\"^^xsd:string }", True),
        (_SCHEMA + "SELECT * { ?s schema:a.schema:b.c ?o } LIMIT 1", False),
        (_SCHEMA + "SELECT * { ?s a.b:c ?o }", True),
        (_SCHEMA + "SELECT * { ?s schema:name ?o . FILTER(?o = a.b) }", False),
    ],
)
def test_needs_default_prefixes(text: str, needs: bool) -> None:
    assert check_query(text, POLICY).needs_default_prefixes is needs
    assert guard._check_full(text, POLICY).needs_default_prefixes is needs


_PREFIX_NAMES = st.sampled_from(["", "ex", "schema", "a.b", "\u00e9-1"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_PREFIX_NAMES, max_size=4),
    st.lists(st.tuples(_PREFIX_NAMES, st.sampled_from(["", "x", "a.b", "a:b"])), max_size=5),
    st.sampled_from([" ", "\n", " # c\n"]),
    st.booleans(),
)
def test_needs_default_prefixes_when_a_prefix_used_is_not_declared(
    declared: list[str], used: list[tuple[str, str]], separator: str, declared_last: bool
) -> None:
    declarations = "".join(f"PREFIX{separator}{p}:{separator}<http://e/{p}>\n" for p in declared)
    body = "SELECT * {" + "".join(f" ?s {p}:{local} ?o ." for p, local in used) + " }\n"
    text = body + declarations if declared_last else declarations + body
    needs = not {p for p, _ in used} <= set(declared)
    assert check_query(text, POLICY).needs_default_prefixes is needs
    assert guard._check_full(text, POLICY).needs_default_prefixes is needs


def test_needs_default_prefixes_in_updates_and_service_targets() -> None:
    update = "PREFIX ex: <http://e/> INSERT DATA { ex:a ex:b ex:c }"
    assert not check_update(update, POLICY).needs_default_prefixes
    assert check_update(update.replace("ex:c", "schema:c"), POLICY).needs_default_prefixes
    policy = Policy(service_allow=("http://example.org/",),
                    default_prefixes={"ex": "http://example.org/"},
                    resolve=_resolver(["93.184.216.34"]))
    query = "SELECT * { SERVICE ex:s { ?s ?p ?o } }"
    checked = check_query(query, policy)
    assert checked.remote_iris == ("http://example.org/s",) and checked.needs_default_prefixes
    checked = check_query("PREFIX ex: <http://example.org/> " + query, policy)
    assert checked.remote_iris == ("http://example.org/s",)
    assert not checked.needs_default_prefixes


# ---------------------------------------------------------------------------------------
# Allow-list and addresses.


def _resolver(addresses: Sequence[str]):  # type: ignore[no-untyped-def]
    return lambda host, port: list(addresses)


def test_allowed_service_on_a_public_address_passes() -> None:
    policy = Policy(service_allow=("https://query.example.org/",),
                    resolve=_resolver(["93.184.216.34", "2606:2800:220:1::1"]))
    query = "SELECT * { SERVICE <https://query.example.org/sparql> { ?s ?p ?o } }"
    assert check_query(query, policy).remote_iris == ("https://query.example.org/sparql",)


@pytest.mark.parametrize(
    "iri",
    [
        "https://other.example.org/sparql",  # not on the list
        "https://query.example.org.evil.example/sparql",  # prefix trick on the host
        "https://query.example.org@127.0.0.1/sparql",  # user-info trick
        "http://query.example.org/sparql",  # other scheme
        "https://query.example.org:8443/sparql",  # other port
        "file:///etc/passwd",
    ],
)
def test_service_outside_the_allow_list_is_refused(iri: str) -> None:
    policy = Policy(service_allow=("https://query.example.org/",),
                    resolve=_resolver(["93.184.216.34"]))
    with pytest.raises(RemoteAccessRefusedError):
        check_query(f"SELECT * {{ SERVICE <{iri}> {{ ?s ?p ?o }} }}", policy)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
     "100.100.100.200", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "192.0.0.192",
     "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1",
     "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:7f00:1::",
     "2001:0:4136:e378:8000:63bf:3fff:fdd2",
     "fe80::1%eth0", "not-an-address"],
)
def test_internal_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::1"])
def test_public_addresses_are_not(address: str) -> None:
    assert not is_forbidden_address(address)


@pytest.mark.parametrize(
    "addresses", [["127.0.0.1"], ["93.184.216.34", "10.0.0.1"], ["::ffff:10.0.0.1"], []],
)
def test_allowed_host_resolving_inside_is_refused(addresses: list[str]) -> None:
    policy = Policy(service_allow=("https://query.example.org/",), resolve=_resolver(addresses))
    with pytest.raises(RemoteAccessRefusedError):
        check_query("SELECT * { SERVICE <https://query.example.org/s> { ?s ?p ?o } }", policy)


def test_allowed_ip_literal_inside_is_refused() -> None:
    policy = Policy(service_allow=("http://[::ffff:7f00:1]/",))
    with pytest.raises(RemoteAccessRefusedError, match="internal"):
        check_query("SELECT * { SERVICE <http://[::ffff:7f00:1]/s> { ?s ?p ?o } }", policy)


def test_unresolvable_host_is_refused() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise socket.gaierror("no such host")

    policy = Policy(service_allow=("https://query.example.org/",), resolve=fail)
    with pytest.raises(RemoteAccessRefusedError, match="does not resolve"):
        check_query("SELECT * { SERVICE <https://query.example.org/s> { ?s ?p ?o } }", policy)


# ---------------------------------------------------------------------------------------
# Properties.

_SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\\r\n'),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_SAFE_TEXT)
def test_any_text_inside_a_string_never_triggers(text: str) -> None:
    query = f'SELECT * WHERE {{ ?s ?p "{text}" }} # {text.replace(chr(0x85), "")}'
    assert check_query(query, POLICY).remote_iris == ()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_tokenizer_never_fails_other_than_with_a_syntax_error(text: str) -> None:
    try:
        list(tokenize(text))
    except QuerySyntaxError as exc:
        assert exc.line is not None and exc.column is not None


# ---------------------------------------------------------------------------------------
# The fast path (guard._check_fast) against the reference (guard._check_full): the same
# Checked, or the same exception with the same message, line and column, for any text.

ROOT = Path(__file__).resolve().parents[1]

# Keywords and function names in several cases, and words that only start like one.
_KEYWORDS = [
    "SELECT", "select", "Select", "ASK", "CONSTRUCT", "DESCRIBE", "INSERT", "DELETE", "DATA",
    "WHERE", "WITH", "CLEAR", "LOAD", "load", "INTO", "GRAPH", "SERVICE", "service", "SILENT",
    "FROM", "from", "NAMED", "PREFIX", "prefix", "BASE", "base", "VERSION", "RAND", "now",
    "UUID", "STRUUID", "BNODE", "a", "FILTER", "PREFIXED", "SERVICE_", "SELECT1",
]
_TERMINALS = [
    # IRIs, valid and not
    "<http://example.org/>", "<http://example.org/s>", "<https://query.example.org/sparql>",
    "<http://127.0.0.1/x>", "<rel>", "<>", "<http://\\u0065xample.org/s>", "<http://[x>",
    "<a b>", "<http://e/{>",
    # prefixed names and blank nodes, and what comes close
    "ex:", "ex:s", ":", ":x", "ex:a.b", "ex:a.", "schema:name", "nope:x", "ex:a\\.b", "ex:%41",
    "a.b:c", "PREFIX:", "SELECT:x", "\u00e9:x", "a-b", "_:b", "_:b.c", "_:", "q:sparql",
    # variables, numbers, language tags
    "?x", "$y", "?SERVICE", "?", "$", "1", "1.5", ".5", "1e3", "1.e2", "1.", "12.5E-3", "@en",
    "@en-GB", "@en--ltr", "@",
    # strings with quotes and escapes, and comments
    '"x"', "'y'", '"a\\"b"', "'''it's'''", '"""a "" b"""', '"SERVICE <http://e/>"',
    "'''x'''''", '"\\\n"', "# SERVICE <http://e/>\n", "#", "# c\r",
]
_PUNCTUATION = [
    "{", "}", "(", ")", "[", "]", "<<", ">>", "<<(", ")>>", "{|", "|}", "^^", "&&", "||", "!=",
    "<=", ">=", ";", ",", ".", "=", "<", ">", "!", "+", "-", "*", "/", "^", "|", "~",
]
# Texts that no terminal can read (at least not to the end).
_ODD = [
    "\u00a0", "\\", '"', "'", "&", "\u00e9", "\ufeff", "\x00", "\u00b7", "%", "`", "\u0085",
    "\u2028", '"open', "'open", '"""long', '"\\', "<\\u00ZZ>",
]
_SEPARATORS = ["", "", " ", "  ", "\n", "\t", "\r\n", " # c\n"]
# Runs of name characters and dots (where a prefixed name may start only if ":" follows the
# run and the run does not end with "."), and what may follow them.
_NAME_RUNS = st.builds(
    lambda unit, count, rest, end: unit * count + rest + end,
    st.sampled_from(["a.", "a-", "a_.", "1.", "a1.", "e.", "1e", "a.1e", "\u00e9.", "a\u00b7",
                     "-a"]),
    st.integers(1, 30),
    st.text(alphabet="aZe1_.-\u00e9\u00b7\u0301", max_size=12),
    st.sampled_from(["", "", ":", ".:", ":x", ":a.b", "+5", "-5", " ", "@en", "_:b"]),
)
_PIECE = st.tuples(
    st.sampled_from(_KEYWORDS) | st.sampled_from(_TERMINALS) | st.sampled_from(_PUNCTUATION)
    | _NAME_RUNS,
    st.sampled_from(_SEPARATORS),
)


@st.composite
def _sparqlish(draw: st.DrawFn) -> str:
    """Terminals with or without space between, and in about half the texts one odd piece."""
    texts = [text + sep for text, sep in draw(st.lists(_PIECE, max_size=40))]
    if draw(st.booleans()):
        odd = draw(st.sampled_from(_ODD) | st.text(max_size=3))
        texts.insert(draw(st.integers(0, len(texts))), odd)
    return "".join(texts)


_STARTS = st.sampled_from(["", "SELECT * ", "PREFIX ex: <http://example.org/>\nSELECT ",
                           "prefix ex: # c\n <http://example.org/> ASK ", "VERSION '1.2' ",
                           "PREFIX : <http://example.org/> PREFIX schema: <https://schema.org/> "])


def _resolve_stub(host: str, port: int) -> list[str]:
    return ["93.184.216.34"] if host == "query.example.org" else ["127.0.0.1"]


_POLICIES = [
    POLICY,
    Policy(max_depth=2),
    Policy(max_depth=0, max_bytes=60),
    Policy(service_allow=("http://example.org/", "https://query.example.org/"),
           default_prefixes={"ex": "http://example.org/", "q": "https://query.example.org/"},
           resolve=_resolve_stub),
]

_Outcome = Checked | tuple[type[BaseException], tuple[object, ...], dict[str, object]]


def _outcome(check: Callable[[str, Policy], Checked], text: str, policy: Policy) -> _Outcome:
    try:
        return check(text, policy)
    except Exception as exc:  # every exception, so a difference in kind is seen too
        return type(exc), exc.args, vars(exc)


def _assert_agree(text: str, policy: Policy) -> None:
    assert _outcome(guard._check, text, policy) == _outcome(guard._check_full, text, policy)


@settings(max_examples=1000, deadline=None)
@given(_STARTS, _sparqlish(), st.sampled_from(_POLICIES))
def test_fast_path_agrees_with_the_reference(start: str, text: str, policy: Policy) -> None:
    _assert_agree(start + text, policy)


# Prologues of PREFIX declarations (names, IRIs, separators, comments; some not quite one),
# which the fast path keeps and does not read again when the next text starts with them.
_DECLARATION = st.builds(
    lambda keyword, sep1, name, sep2, iri, sep3: keyword + sep1 + name + sep2 + iri + sep3,
    st.sampled_from(["PREFIX"] * 6 + ["prefix", "PreFix", "PREFIXED", "BASE"]),
    st.sampled_from([" "] * 4 + ["\n", "\t", " # c\n", ""]),
    st.sampled_from(["ex:", "schema:", "p1:"] * 3 + [":", "a.b:", "ex:x", "SELECT:", "\u00e9:",
                                                     "ex", "<x>"]),
    st.sampled_from([" "] * 4 + ["", "\r\n", "#>\n"]),
    st.sampled_from(["<http://example.org/>", "<https://schema.org/a/long/namespace#>"] * 3
                    + ["<x>", "<a b>", "'x'", "ex:"]),
    st.sampled_from(["\n"] * 4 + [" ", "", "# SERVICE <http://e/>\n", "\u00a0"]),
)
_BODY_STARTS = st.sampled_from(["SELECT * ", "ASK ", "CONSTRUCT ", "select ", "", "BASE <x> ",
                                "PREFIX ex: <http://e/> SELECT "])


@settings(max_examples=600, deadline=None)
@given(st.lists(_DECLARATION, min_size=1, max_size=8), _BODY_STARTS, _sparqlish(),
       st.sampled_from(_POLICIES))
def test_a_prologue_kept_reads_as_it_did(declarations: list[str], start: str, text: str,
                                         policy: Policy) -> None:
    prologue, text = "".join(declarations), start + text
    guard._PROLOGUES = ()
    _assert_agree(prologue + text, policy)  # read whole; the prologue kept, if it is one
    _assert_agree(prologue + text, policy)  # and again, with it kept
    _assert_agree(prologue + "SELECT * WHERE { ?s ex:p ?o }", policy)  # another text after it
    _assert_agree(prologue[:-1] + text, policy)  # a text that almost starts with it


def test_a_prologue_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The PREFIX lines a client sends before every query are most of its text: read once.
    prologue = "".join(f"PREFIX p{i}: <http://example.org/{i}/>\n" for i in range(6))
    guard._PROLOGUES = ()
    read: list[str] = []
    real = guard._FAST

    class Spy:
        def split(self, text: str) -> list[str | None]:
            read.append(text)
            return real.split(text)

    monkeypatch.setattr(guard, "_FAST", Spy())
    first = guard._check_fast(prologue + "SELECT * { ?s p1:x ?o }", POLICY)
    second = guard._check_fast(prologue + "ASK { ?s p9:x ?o }", POLICY)
    assert first is not None and not first.needs_default_prefixes
    assert second is not None and second.needs_default_prefixes  # p9 is declared nowhere
    # (A prologue ends with its last IRI: the line break is read with the query.)
    assert read == [prologue[:-1], "\nSELECT * { ?s p1:x ?o }", "\nASK { ?s p9:x ?o }"]


# Texts where a near miss in the fast path would show.
_TRICKY = [
    "SELECT * FROM.:x", "select * from <g>", "SELECT ( ( )>> ( (", "SELECT ( ( ) >> ( (",
    "SELECT {| |} {| {", "SELECT << <<( { )>> >> {", "SELECT * PREFIX FROM <http://g/>",
    "SELECT * PREFIX ex: <http://[x> BASE <a> PREFIX p: <http://[x>",
    "SELECT * BASE <a> BASE <http://[x>", "WHERE SELECT", "{ VERSION SELECT", "PREFIXED SELECT",
    "PREFIX ex:<http://e/>SELECT", "PREFIX\tex:#c\n<http://e/>#c\nASK", "PREFIX ex: ex: <x> ASK",
    "PREFIX PREFIX <x> SELECT", "PREFIX ex: 'x' SELECT", "PREFIX ex:a. <x> SELECT",
    "SELECT 'a\n'b'", "SELECT 'a\nb'", 'SELECT "a\rb"', "SELECT 'a\\'", 'SELECT "a\\"b" RAND',
    "SELECT * { ?s ?p 'NOW' } # RAND", "SELECT ?x { SERVICE q:sparql {} }",
    "SELECT ?x { SERVICE <http://example.org/s> {} }", "ASK { <http://a\\u0020b> ?p ?o }",
    "DESCRIBE <a>" + " <b>" * 80, "INSERT DATA {}", "SELECT * WHERE { ?s ?p ?o } \u00a0",
    "SELECT a.SERVICE <x>", "SELECT ex:a.SERVICE <x>",
    # runs of words, dots and hyphens (one match of the fast path), and near misses
    "SELECT * { ?s ?p true.FROM <g> }", "SELECT a-b.RAND.", "SELECT a.1e5FROM <g>", "a.SELECT",
    "SELECT.a:b", "SELECT.a.:b", "SELECT a.b.\u00e9", "SELECT a.b\u00b7c", "SELECT a.PREFIX <x>",
    "SELECT a-SERVICE <http://example.org/s> {}", "SELECT a.b_c-d..e--f.",
]


@pytest.mark.parametrize("text", _TRICKY)
@pytest.mark.parametrize("policy", _POLICIES)
def test_fast_path_agrees_on_tricky_texts(text: str, policy: Policy) -> None:
    _assert_agree(text, policy)


def test_fast_path_agrees_on_short_punctuation_runs() -> None:
    # Every run of up to three characters that the split of the punctuation could misread.
    for n in range(1, 4):
        for chars in itertools.product("<>|(){}[]^&!=;.?a1: ", repeat=n):
            _assert_agree("SELECT " + "".join(chars), Policy(max_depth=1))


def _repository_queries() -> list[str]:
    texts = [path.read_text() for path in sorted((ROOT / "queries").glob("*.rq"))]
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.mix import MIX, PREFIXES
    finally:
        sys.path.remove(str(ROOT))
    manifest = {
        "people": [{"name": "Ann O'Neil", "id": "person/ann-o-neil"}],
        "organisations": [{"id": "org/one"}],
        "units": ["org/unit"],
        "words": ["river"],
        "org_pairs": [["org/one", "org/two"]],
    }
    mix = [query.sparql(manifest, round_) for query in MIX for round_ in range(2)]
    return texts + mix + [PREFIXES + "SELECT ?thing ?type WHERE { ?thing schema:name "
                          '"Some Name" ; a ?type }']


@pytest.mark.parametrize("text", _repository_queries())
def test_fast_path_takes_the_repository_queries(text: str) -> None:
    assert guard._check_fast(text, POLICY) is not None
    for policy in _POLICIES:
        _assert_agree(text, policy)


# ---------------------------------------------------------------------------------------
# Linear time. The tokenizer against the plain alternation of the terminals, as it was before
# it was made linear (quadratic on some texts, so only on short ones here), and the time both
# paths take on long texts made to be slow.

_PLAIN = re.compile(
    "|".join(f"(?P<{kind}>{pattern})" for kind, pattern in guard._TERMINALS.items()), re.DOTALL
)


_PLAIN_IRI = re.compile(guard._TERMINALS["iri"])


def _plain_tokens(text: str) -> list[tuple[str, str, int]] | tuple[int, int]:
    pos = 0
    tokens = []
    while (m := _PLAIN.match(text, pos)) is not None and m.end() > pos:
        if m.lastgroup == "punct" and m.group()[:2] == "<<" and _PLAIN_IRI.match(text, pos + 1):
            tokens.append(("punct", "<", pos))  # "less than" an IRI, as the engine reads it
            pos += 1
            continue
        if m.lastgroup not in ("ws", "comment"):
            tokens.append((str(m.lastgroup), m.group(), pos))
        pos = m.end()
    if pos < len(text):
        return guard._Lines(text).position(pos)
    return tokens


def _tokens(text: str) -> list[tuple[str, str, int]] | tuple[int, int]:
    try:
        return [tuple(token) for token in tokenize(text)]  # type: ignore[misc]
    except QuerySyntaxError as exc:
        assert exc.line is not None and exc.column is not None
        return exc.line, exc.column


@settings(max_examples=1000, deadline=None)
@given(_sparqlish() | st.text(max_size=40) | _NAME_RUNS)
def test_tokens_are_those_of_the_plain_alternation(text: str) -> None:
    assert _tokens(text) == _plain_tokens(text)


@pytest.mark.parametrize(
    "text",
    ["a.1e+5", "a.1e+5 x", "a.1e+5.b:c", "a.1E-5 x", "a.1e+ x", "a-1.5e+3 x", "ex:a.b. x",
     "a.b.:c", "a.b:c", "\u00e9.a:b", "a\u00e9.b", "a._:b", "_:a.b. x", "1a.b:c", "-a.b:c",
     ".a.b:c", "a.-b", "a.b\u00b7", "a.b \u00e9\u00e9"],
)
def test_tokens_at_the_ends_of_runs(text: str) -> None:
    for whole in (text, "SELECT " + text, text + " ?x"):
        assert _tokens(whole) == _plain_tokens(whole)


# (head, unit, tail): the head, the unit repeated to the size, then the tail.
_SLOW_BEFORE = {
    "letters and dots": ("SELECT ", "a.", ""),
    "digits and dots": ("SELECT ", "1.", ""),
    "letters, digits and dots": ("SELECT ", "a.1.", ""),
    "exponent-like": ("SELECT ", "1e.", ""),
    "hyphens": ("SELECT ", "a-", ""),
    "underscores": ("SELECT ", "a_.", ""),
    "non-ASCII letters": ("SELECT ", "\u00e9", ""),
    "a run then a non-ASCII letter": ("SELECT ", "a.", "\u00e9"),
    "a run that ends with ':'": ("SELECT ", "a.", "a:b"),
    "a run that ends with '.:'": ("SELECT ", "a.", ":b"),
    "a run after a prefixed name": ("SELECT ex:a ", "a.", ""),
    "a run in a local name": ("SELECT ex:", "a.", ""),
    "blank-node labels": ("SELECT ", "_:a.", ""),
    "a run after a blank node": ("SELECT _:", "a.", " a.a"),
    "language tags": ('SELECT "x"@en-', "a.", ""),
    "variables": ("SELECT ?v", "-a", ""),
    "after PREFIX": ("PREFIX ", "a.", ""),
    "after <": ("SELECT <", "a.", ""),
    "a long string": ('SELECT """', 'a"', '"""'),
    "a long IRI": ("SELECT <", "a", ">"),
}
_SLOW_POLICY = Policy(max_bytes=1 << 20)


def _text_of_size(head: str, unit: str, tail: str, size: int) -> str:
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


def _shortest_times(check: Callable[[str], object], texts: Sequence[str]) -> list[float]:
    """The shortest of three runs on each text, the texts taken in turn (so that a burst of
    load elsewhere slows them alike), without the garbage collector (whose full collections
    take time in proportion to everything the test process holds, not to the text)."""
    best = [float("inf")] * len(texts)
    gc.disable()
    try:
        for _ in range(3):
            for i, text in enumerate(texts):
                start = time.perf_counter()
                try:
                    check(text)
                except (QuerySyntaxError, QueryChainTooLongError):  # (a verdict all the same)
                    pass
                best[i] = min(best[i], time.perf_counter() - start)
    finally:
        gc.enable()
    return best


@pytest.mark.parametrize("name", _SLOW_BEFORE)
def test_time_grows_linearly(name: str) -> None:
    texts = [_text_of_size(*_SLOW_BEFORE[name], size) for size in (25_000, 100_000)]
    checks: list[tuple[str, Callable[[str], object]]] = [
        ("tokenize", lambda text: deque(tokenize(text), maxlen=0)),
        ("fast path", lambda text: guard._check_fast(text, _SLOW_POLICY)),
    ]
    for label, check in checks:
        small, large = _shortest_times(check, texts)
        # Linear: 4x (quadratic was 16x); the millisecond is for timer noise on tiny times. On
        # a busy machine a linear time can look 6x now and then (it did once in a full run);
        # a quadratic one stays 16x however often it is measured.
        for _ in range(3):
            if large < 6 * small + 0.001:
                break
            again = _shortest_times(check, texts)
            small, large = min(small, again[0]), min(large, again[1])
        assert large < 6 * small + 0.001, f"{label}: {small * 1e3:.1f} -> {large * 1e3:.1f} ms"
        assert large < 0.5, f"{label}: {large:.2f} s at 100 KB"


@pytest.mark.parametrize("text", [
    "BASE <a> BASE <http://[x> SELECT * {}",
    "BASE <http://[x> SELECT * { SERVICE <y> {} }",
    "SELECT * { SERVICE <http://[x/> {} }",
    "SELECT * { SERVICE <http://a:99999/> {} }",
    "PREFIX p: <http://[x> SELECT * { SERVICE p:a {} }",
    "LOAD <http://[x>",
])
def test_an_iri_that_urllib_refuses_is_a_client_error(text: str) -> None:
    # urllib raises ValueError on an unclosed IPv6 host or a port out of range; the guard
    # must turn that into a refusal (400/403), never let it through as a 500.
    allowing = Policy(service_allow=("http://",), resolve=lambda host, port: ["8.8.8.8"])
    for policy in (Policy(), allowing):
        with pytest.raises(QueryError):
            guard._check(text, policy)


def test_many_base_declarations_are_refused_at_once() -> None:
    """Each relative BASE resolved against the last, which grew: 10,000 of them (100 KB)
    took the check 3.4 s, before any time limit runs."""
    started = time.monotonic()
    with pytest.raises(QuerySyntaxError, match="BASE declarations"):
        check_query("BASE <a/> " * 10_000 + "SELECT * {}", POLICY)
    assert time.monotonic() - started < 1.0
    assert check_query("BASE <http://e.org/> BASE <a/> SELECT * {}", POLICY).form == "SELECT"
