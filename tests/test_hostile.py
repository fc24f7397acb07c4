"""Hostile requests, the ones the anchor endpoints fail at (``shared/reference/endpoints.md``):
SSRF through SERVICE and LOAD, writes without the token, CORS preflights for writes, oversized
bodies and queries, queries built to crash or exhaust the engine, path traversal, and header
injection through ``format`` and download names.

Most run through the production server (prefork by default, real worker processes) with raw
bytes where a client library would tidy the request up; a loopback listener proves that no refused
SERVICE or LOAD ever connects. Nothing here sends traffic beyond 127.0.0.1: private, metadata
and rebinding hosts are numeric addresses or answers of a stand-in resolver, refused before any
connection is tried.
"""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import LiveServer, app_for, run_live_server
from reliability_support import assert_no_traceback, fresh_real_store, problem_shape, record

from sasci_kg import guard
from sasci_kg.guard import Policy, RemoteAccessRefusedError, check_query
from sasci_kg.store import store_generation
from sasci_kg.web.server import MAX_HEADER_BYTES

pytestmark = pytest.mark.reliability

TOKEN = "hostile-test-token-0123456789abcdef"
COUNT = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
GRAPH = "https://w3id.org/sasci-kg/graph/source/sasci-final-event"
CASES: dict[str, int] = {}


def _count(category: str) -> None:
    CASES[category] = CASES.get(category, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    record("hostile", cases=dict(sorted(CASES.items())), total=sum(CASES.values()))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real dataset, in a store of this module's own (the writes tried here must fail)."""
    return fresh_real_store(tmp_path_factory.mktemp("hostile-store"))


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The production server with writes enabled behind a token: the hardest case to guard."""
    with run_live_server(store, tmp_path_factory.mktemp("hostile-live"), updates=True,
                         update_token=TOKEN, timeout=1.5, max_timeout=2.0) as live:
        yield live


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """A loopback port that must never be connected to: every SERVICE/LOAD here aims at it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        yield sock


def never_connected(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()


def total(server: LiveServer) -> int:
    response = requests.get(server.sparql, params={"query": COUNT, "format": "csv"}, timeout=10)
    assert response.status_code == 200, response.text
    return int(response.text.split()[1])


def problem(response: requests.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = problem_shape(status, response.headers.get("Content-Type", ""), response.content)
    if slug is not None:
        assert body["type"].endswith("/problem/" + slug), body
    return body


def raw(server: LiveServer, request: bytes, timeout: float = 15.0) -> tuple[int, dict[str, str],
                                                                          bytes]:
    """Send exact bytes (no client tidying); read the whole answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = (fields[name.strip().lower()] + "\n" + value.strip()
                                        if name.strip().lower() in fields else value.strip())
    return int(lines[0].split()[1]), fields, body


def get_raw(server: LiveServer, target: str, headers: str = "") -> tuple[int, dict[str, str],
                                                                         bytes]:
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    return raw(server, request.encode("latin-1"))


# ---------------------------------------------------------------------------------------
# SSRF: SERVICE and LOAD to loopback, private, metadata and rebinding hosts.

INTERNAL_HOSTS = [
    "127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "127.1:{port}", "0.0.0.0:{port}",
    "2130706433:{port}", "0x7f000001:{port}", "0177.0.0.1:{port}", "[::ffff:127.0.0.1]:{port}",
    "[::ffff:7f00:1]:{port}", "[0:0:0:0:0:ffff:127.0.0.1]:{port}", "127.0.0.1.:{port}",
    "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254",
    "169.254.170.2", "[fd00:ec2::254]", "100.100.100.200", "168.63.129.16", "192.0.0.192",
    "[fe80::1]", "[fc00::1]", "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::]", "224.0.0.1",
    "255.255.255.255", "[::]",
]


def ssrf_queries(port: int) -> list[tuple[str, str]]:
    """(name, query or update) pairs that would reach an internal host if run."""
    out: list[tuple[str, str]] = []
    for host in INTERNAL_HOSTS:
        url = f"http://{host.format(port=port)}/sparql"
        out.append((f"SERVICE {host}", f"SELECT * WHERE {{ SERVICE <{url}> {{ ?s ?p ?o }} }}"))
    url = f"http://127.0.0.1:{port}/"
    out += [
        ("SERVICE SILENT", f"SELECT * WHERE {{ SERVICE SILENT <{url}> {{ ?s ?p ?o }} }}"),
        ("lower-case service", f"select * where {{ service <{url}> {{ ?s ?p ?o }} }}"),
        ("SERVICE after a comment", f"SELECT * WHERE {{ SERVICE # x\n <{url}> {{ ?s ?p ?o }} }}"),
        ("SERVICE via PREFIX",
         f"PREFIX in: <{url}> SELECT * WHERE {{ SERVICE in:q {{ ?s ?p ?o }} }}"),
        ("SERVICE via BASE", f"BASE <{url}> SELECT * WHERE {{ SERVICE <sparql> {{ ?s ?p ?o }} }}"),
        ("SERVICE via \\u escapes", "SELECT * WHERE { SERVICE <http://127.0.0.1\\u003a"
         f"{port}/> {{ ?s ?p ?o }} }}"),
        ("SERVICE ?variable",
         "SELECT * WHERE { VALUES ?e { <" + url + "> } SERVICE ?e { ?s ?p ?o } }"),
        ("SERVICE in a subquery", "SELECT * WHERE { { SELECT * WHERE { SERVICE <" + url
         + "> { ?s ?p ?o } } } }"),
        ("SERVICE in EXISTS",
         f"SELECT * WHERE {{ FILTER EXISTS {{ SERVICE <{url}> {{ ?s ?p ?o }} }} }}"),
        ("SERVICE with user info", f"SELECT * WHERE {{ SERVICE <http://evil@127.0.0.1:{port}/> "
         "{ ?s ?p ?o } }"),
        ("SERVICE to a file", "SELECT * WHERE { SERVICE <file:///etc/passwd> { ?s ?p ?o } }"),
        ("SERVICE to gopher", f"SELECT * WHERE {{ SERVICE <gopher://127.0.0.1:{port}/> "
         "{ ?s ?p ?o } }"),
    ]
    return out


def ssrf_updates(port: int) -> list[tuple[str, str]]:
    url = f"http://127.0.0.1:{port}/data.ttl"
    return [
        ("LOAD", f"LOAD <{url}>"),
        ("LOAD SILENT INTO GRAPH", f"LOAD SILENT <{url}> INTO GRAPH <{GRAPH}>"),
        ("LOAD metadata", "LOAD <http://169.254.169.254/latest/meta-data/iam/>"),
        ("LOAD file", "LOAD <file:///etc/passwd>"),
        ("INSERT from SERVICE", "INSERT { ?s ?p ?o } WHERE { SERVICE <" + url + "> { ?s ?p ?o } }"),
        ("LOAD after an update", f"INSERT DATA {{ <a:b> <a:c> <a:d> }} ; LOAD <{url}>"),
    ]


def test_service_and_load_to_internal_hosts_are_refused_and_never_connect(
    server: LiveServer, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    before = total(server)
    for name, query in ssrf_queries(port):
        for send in ("get", "form"):
            if send == "get":
                response = requests.get(server.sparql, params={"query": query}, timeout=10)
            else:
                response = requests.post(server.sparql, data={"query": query}, timeout=10)
            body = problem(response, 403)
            assert body["type"].endswith(("/remote-access-refused", "/query-refused")), (name, body)
            _count("SSRF: SERVICE to loopback/private/metadata hosts (refused, no connection)")
    for name, update in ssrf_updates(port):
        response = requests.post(server.url + "/update", data={"update": update},
                                 headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert response.status_code in (400, 403), (name, response.text)
        problem_shape(response.status_code, response.headers["Content-Type"], response.content)
        _count("SSRF: LOAD / SERVICE in updates, with the token (refused, no connection)")
    time.sleep(0.2)
    never_connected(listener)
    assert total(server) == before


@pytest.mark.parametrize("mistake", ["loopback", "private", "metadata"])
def test_an_allow_list_naming_internal_hosts_still_refuses_them(
    store: Path, listener: socket.socket, mistake: str
) -> None:
    """An operator who allow-lists an internal host by mistake is still protected."""
    port = listener.getsockname()[1]
    target = {"loopback": f"http://127.0.0.1:{port}/", "private": "http://10.1.2.3/",
              "metadata": "http://169.254.169.254/"}[mistake]
    with app_for(store, service_allow=(target,)) as app:
        client = app.test_client()
        for query in (f"SELECT * WHERE {{ SERVICE <{target}sparql> {{ ?s ?p ?o }} }}",):
            response = client.post("/sparql", data={"query": query})
            body = problem_shape(403, response.headers["Content-Type"], response.data)
            assert "internal address" in body["detail"], body
            _count("SSRF: allow-listed internal host still refused")
    never_connected(listener)


REBINDING_ANSWERS = {
    # host name → what a hostile DNS server answers (the stand-in resolver below)
    "mixed.rebind.test": ["93.184.216.34", "127.0.0.1"],
    "v6-mapped.rebind.test": ["::ffff:169.254.169.254"],
    "nat64.rebind.test": ["64:ff9b::a9fe:a9fe"],
    "6to4.rebind.test": ["2002:7f00:1::1"],
    "teredo.rebind.test": ["2001:0:4136:e378:8000:63bf:80ff:fffe"],  # → 127.0.0.1
    "zone.rebind.test": ["fe80::1%eth0"],
    "private.rebind.test": ["10.0.0.7"],
    "cgnat.rebind.test": ["100.64.1.1"],
    "nothing.rebind.test": [],
}


def test_rebinding_host_names_are_refused_by_what_they_resolve_to(
    store: Path, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names whose DNS answers hold an internal address (at the moment of the check) are
    refused. The stand-in resolver answers for ``*.rebind.test``; no DNS query leaves."""
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in REBINDING_ANSWERS:
            raise OSError(f"{host}: no such host in this test")
        return REBINDING_ANSWERS[host]

    monkeypatch.setattr(guard, "_default_resolve", resolver)
    allow = tuple(f"http://{host}/" for host in REBINDING_ANSWERS)
    with app_for(store, service_allow=allow) as app:
        client = app.test_client()
        for host in REBINDING_ANSWERS:
            query = f"SELECT * WHERE {{ SERVICE <http://{host}/sparql> {{ ?s ?p ?o }} }}"
            response = client.post("/sparql", data={"query": query})
            body = problem_shape(403, response.headers["Content-Type"], response.data)
            assert "resolve" in body["detail"], body
            _count("SSRF: DNS-rebinding host names (stand-in resolver)")
        description = client.get("/sparql", headers={"Accept": "text/turtle"}).get_data(
            as_text=True)
    assert sorted(set(asked)) == sorted(REBINDING_ANSWERS)
    # The residual risk (an answer that changes between check and connect) is stated.
    assert "DNS rebinding" in description
    never_connected(listener)


def test_the_guard_resolves_each_host_once_per_check() -> None:
    calls: list[str] = []

    def flipping(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["93.184.216.34"] if len(calls) % 2 else ["127.0.0.1"]

    policy = Policy(service_allow=("http://flip.rebind.test/",), resolve=flipping)
    with pytest.raises(RemoteAccessRefusedError):
        # Two SERVICE clauses: the first sees a public answer, the second the rebound one.
        check_query("SELECT * WHERE { SERVICE <http://flip.rebind.test/a> { ?s ?p ?o } "
                    "SERVICE <http://flip.rebind.test/b> { ?s ?p ?o } }", policy)
    assert calls == ["flip.rebind.test", "flip.rebind.test"]
    _count("SSRF: DNS-rebinding host names (stand-in resolver)")


# ---------------------------------------------------------------------------------------
# Writes without (or with a wrong) token; CORS preflights for writes.

WRONG_AUTHORIZATIONS = [
    None, "", "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Bearer x{TOKEN}",
    f"Bearer {TOKEN.upper()}", f"Basic {base64.b64encode(TOKEN.encode()).decode()}",
    f"Basic {base64.b64encode(('admin:' + TOKEN).encode()).decode()}", f"Token {TOKEN}",
    f"{TOKEN}", f"Bearer {TOKEN} {TOKEN}", f"Bearer {TOKEN},Bearer {TOKEN}",
    "Bearer \u00e9\u00e9\u00e9", "Bearer " + "A" * 8000, f"Digest {TOKEN}",
]


def write_requests(server: LiveServer) -> list[tuple[str, str, dict[str, Any]]]:
    graph = f"{server.url}/rdf-graph-store?graph=https://w3id.org/sasci-kg/graph/evil"
    clear = {"data": {"update": "CLEAR ALL"}}
    return [
        ("POST", server.url + "/update", clear),
        ("POST", server.url + "/update",
         {"data": "DROP ALL", "headers": {"Content-Type": "application/sparql-update"}}),
        ("POST", server.url + f"/update?access_token={TOKEN}", clear),
        ("POST", server.url + "/update", {"data": {"update": "CLEAR ALL", "token": TOKEN}}),
        ("PUT", graph, {"data": "<a:b> <a:c> <a:d> .", "headers": {"Content-Type": "text/turtle"}}),
        ("POST", graph, {"data": "<a:b> <a:c> <a:d> .",
                         "headers": {"Content-Type": "application/n-triples"}}),
        ("DELETE", f"{server.url}/rdf-graph-store?graph={GRAPH}", {}),
    ]


def test_writes_without_the_right_token_are_401_and_change_nothing(server: LiveServer,
                                                                   store: Path) -> None:
    before, generation = total(server), store_generation(store)
    for method, url, kwargs in write_requests(server):
        for authorization in WRONG_AUTHORIZATIONS:
            headers = dict(kwargs.get("headers", {}))
            if authorization is not None:
                headers["Authorization"] = authorization
            response = requests.request(method, url, data=kwargs.get("data"), headers=headers,
                                        timeout=10)
            problem(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="sasci-kg"')
            assert TOKEN not in response.text
            _count("writes: wrong or missing token (401, nothing written)")
    assert total(server) == before and store_generation(store) == generation
    assert TOKEN not in server.log()


def test_updates_sent_to_the_query_endpoint_never_run(server: LiveServer, store: Path) -> None:
    before, generation = total(server), store_generation(store)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    attempts = [
        {"data": {"query": "CLEAR ALL"}}, {"data": {"update": "CLEAR ALL"}, "headers": auth},
        {"data": "DROP ALL", "headers": {"Content-Type": "application/sparql-update", **auth}},
        {"data": "DELETE WHERE { ?s ?p ?o }",
         "headers": {"Content-Type": "application/sparql-query", **auth}},
    ]
    for kwargs in attempts:
        response = requests.post(server.sparql, timeout=10, **kwargs)  # type: ignore[arg-type]
        problem(response, 400, "wrong-operation")
        _count("writes: updates sent to /sparql (400, never run)")
    for update in ("INSERT DATA { <a:b> <a:c> <a:d> }", "CLEAR ALL", "DROP GRAPH <a:b>"):
        response = requests.get(server.sparql, params={"query": update}, headers=auth,
                                timeout=10)
        problem(response, 400, "wrong-operation")
        _count("writes: updates sent to /sparql (400, never run)")
    response = requests.get(server.url + "/update", params={"update": "CLEAR ALL"}, timeout=10)
    problem(response, 405)
    _count("writes: updates sent to /sparql (400, never run)")
    assert total(server) == before and store_generation(store) == generation


def test_a_read_only_server_refuses_writes_even_with_a_token(store: Path) -> None:
    with app_for(store) as app:
        client = app.test_client()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for response in (
            client.post("/update", data={"update": "CLEAR ALL"}, headers=auth),
            client.put(f"/rdf-graph-store?graph={GRAPH}", data="<a:b> <a:c> <a:d> .",
                       headers=auth, content_type="text/turtle"),
            client.delete(f"/rdf-graph-store?graph={GRAPH}", headers=auth),
        ):
            problem_shape(403, response.headers["Content-Type"], response.data)
            _count("writes: read-only server (403 even with a token)")


ORIGINS = ["http://evil.example", "null", "http://127.0.0.1", "https://w3id.org"]


def test_cors_never_opens_writes_to_other_origins(server: LiveServer) -> None:
    write_preflights = [("/update", "POST"), ("/rdf-graph-store", "PUT"),
                        ("/rdf-graph-store", "POST"), ("/rdf-graph-store", "DELETE"),
                        ("/sparql", "PUT"), ("/sparql", "DELETE"), ("/id/person/x", "POST")]
    for origin in ORIGINS:
        for path, method in write_preflights:
            response = requests.options(server.url + path, timeout=10, headers={
                "Origin": origin, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type"})
            assert response.status_code < 500
            assert "Access-Control-Allow-Origin" not in response.headers, (path, method)
            assert "Access-Control-Allow-Credentials" not in response.headers
            _count("CORS: preflights for writes (no Allow-Origin)")
        # Reads are open, but never with credentials or the Authorization header.
        read = requests.options(server.sparql, timeout=10, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert read.headers.get("Access-Control-Allow-Origin") == "*"
        assert "authorization" not in read.headers.get("Access-Control-Allow-Headers", "").lower()
        assert "Access-Control-Allow-Credentials" not in read.headers
        # A write that a browser sends anyway gets no CORS header, so its answer stays opaque.
        for method, url, kwargs in write_requests(server)[:1] + write_requests(server)[4:5]:
            headers = {**kwargs.get("headers", {}), "Origin": origin,
                       "Authorization": f"Bearer {TOKEN}x"}
            response = requests.request(method, url, data=kwargs.get("data"), headers=headers,
                                        timeout=10)
            assert response.status_code == 401
            assert "Access-Control-Allow-Origin" not in response.headers
            _count("CORS: preflights for writes (no Allow-Origin)")


# ---------------------------------------------------------------------------------------
# Oversized: queries, bodies, URLs, headers.


def test_oversized_requests_are_refused_with_413_or_their_http_limit(server: LiveServer) -> None:
    big_query = "SELECT * WHERE { ?s ?p ?o } #" + "x" * (100 * 1024)
    problem(requests.post(server.sparql, data={"query": big_query}, timeout=20), 413,
            "query-too-large")
    problem(requests.post(server.sparql, data=big_query.encode(), timeout=20,
                          headers={"Content-Type": "application/sparql-query"}), 413)
    problem(requests.post(server.sparql, data=b"query=" + b"x" * (2 * 1024 * 1024), timeout=20,
                          headers={"Content-Type": "application/x-www-form-urlencoded"}), 413)
    problem(requests.post(server.url + "/update", data="x" * (2 * 1024 * 1024), timeout=20,
                          headers={"Content-Type": "application/sparql-update",
                                   "Authorization": f"Bearer {TOKEN}"}), 413)
    problem(requests.put(f"{server.url}/rdf-graph-store?graph=https://w3id.org/sasci-kg/graph/x",
                         data=b"<a:b> <a:c> <a:d> .\n" * (1024 * 1024), timeout=30,
                         headers={"Content-Type": "application/n-triples",
                                  "Authorization": f"Bearer {TOKEN}"}), 413)
    for _ in range(5):
        _count("oversized: query text, form, update and upload bodies (413)")
    # A body that lies about its length, or arrives chunked with no length at all.
    status, fields, body = raw(server, b"POST /sparql HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                               b"Content-Type: application/sparql-query\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n"
                               + b"".join(b"10000\r\n" + b"#" * 0x10000 + b"\r\n"
                                          for _ in range(32)) + b"0\r\n\r\n")
    assert status == 413, (status, body[:300])
    problem_shape(413, fields["content-type"], body)
    _count("oversized: chunked body with no length (413)")
    # URL and headers past the HTTP server's limits: refused before the app, never a 500.
    big = 4 * MAX_HEADER_BYTES  # the server's read buffer grows in steps: well past it
    long_url = "/sparql?query=" + "x" * big
    for target, extra in ((long_url, ""), ("/sparql", "X-Big: " + "a" * big + "\r\n"),
                          ("/sparql", "".join(f"X-H{i}: {i}\r\n" for i in range(big // 10)))):
        status, _, body = get_raw(server, target, extra)
        assert status in (400, 413, 414, 431), (status, body[:200])
        assert_no_traceback(body)
        _count("oversized: URL, header and header-count limits (4xx before the app)")
    assert total(server) > 0


# ---------------------------------------------------------------------------------------
# Queries built to crash the parser or exhaust the engine.

CRASHERS = {
    # 20,000 unary operators (20 KB): the parser's recursion overflows its stack.
    "20,000 negations": "ASK { FILTER(" + "!" * 20_000 + "true) }",
    "20,000 additions": "SELECT (" + "+".join(["1"] * 20_000) + " AS ?x) WHERE {}",
    "12,000 ORs": "ASK { FILTER(" + "||".join(["1"] * 12_000) + ") }",
    "20,000 minus signs": "SELECT (" + "- " * 20_000 + "1 AS ?x) WHERE {}",
}
EXHAUSTERS = {
    "20-way cross product": "SELECT (COUNT(*) AS ?n) WHERE { "
    + " ".join(f"?s{i} ?p{i} ?o{i} ." for i in range(20)) + " }",
    "path of 2,000 steps": "ASK { ?s " + "/".join(["schema:knows"] * 2_000) + " ?o }",
    "nested star paths": "SELECT (COUNT(*) AS ?n) WHERE { "
    "?a (((<a:p>|!<a:q>)*)/((^<a:r>|!<a:s>)*))* ?b . ?c (!<a:x>)* ?d }",
    "cartesian ORDER BY": "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i } ORDER BY ?a ?d ?g"
    " LIMIT 1",
    "huge VALUES join": "SELECT (COUNT(*) AS ?n) WHERE { VALUES ?x { "
    + " ".join(str(i) for i in range(5_000)) + " } VALUES ?y { "
    + " ".join(str(i) for i in range(5_000)) + " } }",
}


def test_queries_that_crash_the_parser_are_400_and_cost_one_worker(server: LiveServer) -> None:
    for name, query in CRASHERS.items():
        response = requests.post(server.sparql, data={"query": query}, timeout=20)
        assert response.status_code in (400, 413, 504), (name, response.text[:300])
        body = problem_shape(response.status_code, response.headers["Content-Type"],
                             response.content)
        if response.status_code == 400:
            assert body["type"].rsplit("/", 1)[1] in ("query-too-complex", "syntax-error",
                                                      "query-too-deep"), (name, body)
        _count("engine: queries that crash the parser (4xx, worker replaced)")
    started = time.monotonic()
    assert total(server) > 0 and time.monotonic() - started < 5


def test_queries_that_exhaust_the_engine_are_stopped_and_the_cpu_freed(
    server: LiveServer,
) -> None:
    from conftest import cpu_ticks

    for name, query in EXHAUSTERS.items():
        started = time.monotonic()
        response = requests.post(server.sparql, data={"query": query, "timeout": "1"},
                                 timeout=30)
        elapsed = time.monotonic() - started
        assert response.status_code in (200, 400, 504, 507), (name, response.text[:300])
        if response.status_code != 200:
            problem_shape(response.status_code, response.headers["Content-Type"],
                          response.content)
        assert elapsed < 1 + 3, (name, elapsed)
        _count("engine: exponential and runaway queries (stopped at the limit)")
    time.sleep(0.5)
    ticks = cpu_ticks(server.workers())
    time.sleep(1.0)
    assert cpu_ticks(server.workers()) - ticks < 20  # nothing is still running
    assert total(server) > 0


def test_deep_nesting_is_refused_before_parsing(server: LiveServer) -> None:
    for depth in (65, 1_000, 30_000):
        query = "SELECT * WHERE " + "{" * depth + "}" * depth
        problem(requests.post(server.sparql, data={"query": query}, timeout=20), 400,
                "query-too-deep")
        query = "SELECT * WHERE { FILTER(" + "(" * depth + "1" + ")" * depth + ") }"
        response = requests.post(server.sparql, data={"query": query}, timeout=20)
        assert response.status_code in (400, 413), response.text[:200]
        _count("engine: deep nesting (400 before parsing)")


# ---------------------------------------------------------------------------------------
# Path traversal in the resource, download and static routes.

TRAVERSALS = [
    "/ui/static/../__init__.py", "/ui/static/..%2f__init__.py", "/ui/static/%2e%2e/__init__.py",
    "/ui/static/%2e%2e%2f%2e%2e%2fpyproject.toml", "/ui/static/..%252f__init__.py",
    "/ui/static/..\\__init__.py", "/ui/static/..%5c__init__.py", "/ui/static//etc/passwd",
    "/ui/static/%2fetc%2fpasswd", "/ui/static/....//....//etc/passwd",
    "/ui/static/%c0%ae%c0%ae/__init__.py", "/ui/static/..;/__init__.py",
    "/ui/static/query-page.js%00.png", "/ui/static/\uff0e\uff0e/__init__.py",
    "/static/../__init__.py", "/static/..%2f..%2f..%2fpyproject.toml", "/static//etc/passwd",
    "/download/..%2f..%2fetc%2fpasswd", "/download/%2e%2e%2fpyproject.toml",
    "/download/sasci-kg.ttl%00.txt", "/download/../../etc/passwd", "/download/..",
    "/id/..%2f..%2f..%2fetc%2fpasswd", "/id/../../../etc/passwd", "/id/person/..%2f..%2fdef",
    "/vocab/..%2f..%2fetc%2fpasswd", "/graph/..%2f..%2fetc%2fpasswd", "/def/..%2f..%2fpasswd",
    "/problem/..%2f..%2fetc%2fpasswd", "/.well-known/void.%2e%2e%2fpasswd",
    "//etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd",
]
SECRETS = [b"root:x:0:", b"def create_app", b"[build-system]", b"from __future__", b"import "]


def test_path_traversal_never_reaches_a_file(server: LiveServer) -> None:
    for target in TRAVERSALS:
        status, fields, body = get_raw(server, target.encode("utf-8").decode("latin-1"))
        assert status in (301, 303, 308, 400, 404), (target, status, body[:200])
        if status >= 400 and body:
            if fields.get("content-type", "").startswith("application/problem+json"):
                problem_shape(status, fields["content-type"], body)
            else:
                assert fields.get("content-type", "").startswith("text/html"), (target, fields)
        for secret in SECRETS:
            assert secret not in body, (target, secret)
        _count("traversal: resource, download and static routes (never a file)")


# ---------------------------------------------------------------------------------------
# Header injection through format=, download names and paths.

INJECTIONS = ["%0d%0aSet-Cookie:%20pwned=1", "%0aX-Injected:%201", "%0d%0a%0d%0a<script>",
              "\u560a\u560dSet-Cookie:pwned=1", "%E5%98%8A%E5%98%8DSet-Cookie:%20pwned=1",
              "ttl%0d%0aContent-Disposition:%20attachment;%20filename=evil.sh",
              '%22;%20filename=evil.sh', "%00"]


def injection_targets(payload: str) -> list[str]:
    return [
        f"/sparql?query=ASK%7B%7D&format=json{payload}",
        f"/sparql?query=ASK%7B%7D&download=1{payload}",
        f"/sparql?query=CONSTRUCT%7B?s?p?o%7DWHERE%7B?s?p?o%7DLIMIT%201&format=ttl{payload}"
        "&download=1",
        f"/sparql?format={payload}",
        f"/rdf-graph-store?graph={GRAPH}&format=nt{payload}&download=1",
        f"/id/person/juliette-malley?format=ttl{payload}",
        f"/id/person/juliette-malley{payload}",
        f"/download/sasci-kg.ttl{payload}",
        f"/download/{payload}sasci-kg.ttl",
        f"/vocab/role{payload}",
        f"/?format=ttl{payload}&query=ASK%7B%7D",
        f"/def.ttl{payload}",
    ]


def test_header_injection_through_format_and_download_names_is_inert(server: LiveServer) -> None:
    for payload in INJECTIONS:
        for target in injection_targets(payload):
            status, fields, body = get_raw(server, target.encode("utf-8").decode("latin-1"))
            assert status < 500, (target, status, body[:300])
            assert "set-cookie" not in fields and "x-injected" not in fields, (target, fields)
            for name, value in fields.items():
                assert "\n" not in value or name == "vary", (target, name, value)
            disposition = fields.get("content-disposition")
            if disposition is not None:
                assert re.fullmatch(r'attachment; filename="[a-z0-9.-]+"', disposition), (
                    target, disposition)
            assert_no_traceback(body)
            if status >= 400 and fields.get("content-type", "").startswith("application/prob"):
                problem_shape(status, fields["content-type"], body)
            _count("header injection: format, download and path values (inert)")


def test_the_server_survived_everything(server: LiveServer) -> None:
    health = requests.get(server.url + "/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    log = server.log()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]

