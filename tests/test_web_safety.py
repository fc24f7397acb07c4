"""Safety: read-only by default, token-guarded writes, SERVICE/LOAD refused, size, nesting,
row/byte caps, time limits that free the CPU, the concurrency cap, store swaps under load, and
a clean shutdown — the last ones against the real server (via run_server)."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import (
    GRAPH_A,
    TRIG,
    LiveServer,
    alive,
    app_for,
    cpu_ticks,
    make_config,
    make_store,
    run_live_server,
)
from flask import Flask
from flask.testing import FlaskClient

from sasci_kg.web.config import ConfigError

TOKEN = "s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROBLEM = "application/problem+json"
COUNT = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
ENDLESS = "SELECT (COUNT(*) AS ?n) WHERE { " + " ".join(
    f"?s{i} ?p{i} ?o{i} ." for i in range(20)
) + " }"
DEEP = "SELECT * WHERE " + "{" * 3000 + "}" * 3000


def problem_of(response: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, getattr(response, "data", None) or response.text
    content_type = response.headers["Content-Type"]
    assert content_type.startswith(PROBLEM)
    body = json.loads(response.data if hasattr(response, "data") else response.content)
    assert body["status"] == status
    if slug:
        assert body["type"].endswith("/problem/" + slug), body
    return body


def total(client: FlaskClient) -> int:
    response = client.get("/sparql", query_string={"query": COUNT, "format": "csv"})
    return int(response.get_data(as_text=True).split()[1])


# ---------------------------------------------------------------------------------------
# Read-only by default.


def test_writes_are_refused_when_updates_are_off(client: FlaskClient) -> None:
    before = total(client)
    problem_of(client.post("/update", data={"update": "CLEAR ALL"}), 403, "forbidden")
    problem_of(client.post("/update", data="CLEAR ALL", headers=AUTH,
                           content_type="application/sparql-update"), 403)
    for method in ("PUT", "POST", "DELETE"):
        response = client.open(f"/rdf-graph-store?graph={GRAPH_A}", method=method,
                               data="<a:b> <a:c> <a:d> .", content_type="text/turtle")
        problem_of(response, 403)
    assert total(client) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {"query": "INSERT DATA { <http://a> <http://b> <http://c> }"}},
        {"data": "DELETE WHERE { ?s ?p ?o }", "content_type": "application/sparql-query"},
        {"data": {"query": "CLEAR ALL"}, "headers": AUTH},
        {"data": {"update": "CLEAR ALL"}, "headers": AUTH},
        {"data": {"query": "ASK {}", "update": "CLEAR ALL"}, "headers": AUTH},
        {"method": "GET", "query_string": {"query": "ASK {}", "update": "CLEAR ALL"}},
        {"data": "CLEAR ALL", "content_type": "application/sparql-update", "headers": AUTH},
    ],
)
def test_an_update_sent_to_the_query_endpoint_is_refused(
    client: FlaskClient, kwargs: dict[str, Any]
) -> None:
    body = problem_of(client.open("/sparql", **{"method": "POST", **kwargs}), 400,
                      "wrong-operation")
    assert "/update" in body["detail"]


def test_updates_need_a_long_token() -> None:
    with pytest.raises(ConfigError, match="token"):
        make_config(Path("/nonexistent"), updates=True)
    with pytest.raises(ConfigError, match="short"):
        make_config(Path("/nonexistent"), updates=True, update_token="abc")


# ---------------------------------------------------------------------------------------
# Writes, when enabled.


@pytest.fixture
def writable(fresh_store: Path) -> Any:
    with app_for(fresh_store, updates=True, update_token=TOKEN) as application:
        yield application


@pytest.mark.parametrize(
    ("headers", "invalid"),
    [({}, False), ({"Authorization": "Bearer wrong-token-0123456789"}, True),
     ({"Authorization": f"Basic {TOKEN}"}, False), ({"Authorization": "Bearer"}, True)],
)
def test_write_without_the_token_is_401(
    writable: Flask, headers: dict[str, str], invalid: bool
) -> None:
    client = writable.test_client()
    for response in (
        client.post("/update", data={"update": "CLEAR ALL"}, headers=headers),
        client.delete(f"/rdf-graph-store?graph={GRAPH_A}", headers=headers),
    ):
        problem_of(response, 401, "unauthorized")
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="sasci-kg"')
        assert ('error="invalid_token"' in challenge) == invalid
    assert total(client) == 15


def test_update_with_the_token(writable: Flask) -> None:
    client = writable.test_client()
    insert = "INSERT DATA { GRAPH graph:new { person:zoe schema:name 'Zoe' } }"
    response = client.post("/update", data={"update": insert}, headers=AUTH)
    assert response.status_code == 204, response.data
    assert total(client) == 16
    direct = client.post("/update", data="DELETE DATA { GRAPH graph:new { person:zoe "
                         "schema:name 'Zoe' } }", headers=AUTH,
                         content_type="application/sparql-update")
    assert direct.status_code == 204
    assert total(client) == 15


@pytest.mark.parametrize(
    ("update", "status"),
    [
        ("LOAD <http://example.org/data.ttl>", 403),
        ("INSERT { ?s ?p ?o } WHERE { SERVICE <http://169.254.169.254/> { ?s ?p ?o } }", 403),
        ("SELECT * WHERE { ?s ?p ?o }", 400),
        ("INSERT DATA { oops }", 400),
        ("INSERT DATA " + "{" * 100 + "}" * 100, 400),
    ],
)
def test_updates_are_checked_like_queries(writable: Flask, update: str, status: int) -> None:
    client = writable.test_client()
    problem_of(client.post("/update", data={"update": update}, headers=AUTH), status)
    assert total(client) == 15


def test_update_dataset_parameters_are_refused_not_ignored(writable: Flask) -> None:
    client = writable.test_client()
    response = client.post("/update", headers=AUTH, data={
        "update": "INSERT DATA { <a:b> <a:c> <a:d> }", "using-graph-uri": GRAPH_A})
    assert "USING" in problem_of(response, 400)["detail"]
    assert total(client) == 15


def test_graph_store_writes_with_the_token(writable: Flask) -> None:
    client = writable.test_client()
    url = "/rdf-graph-store?graph=https://w3id.org/sasci-kg/graph/extra"
    created = client.put(url, data="<http://e/a> <http://e/p> 1 .", headers=AUTH,
                         content_type="text/turtle")
    assert created.status_code == 201 and created.headers["Location"].endswith(url.split("?")[1])
    assert "Content-Type" not in created.headers  # no body
    added = client.post(url, data='<http://e/b> <http://e/p> "2" .', headers=AUTH,
                        content_type="application/n-triples")
    assert added.status_code == 204
    assert len(client.get(url, headers={"Accept": "application/n-triples"}).data.splitlines()) == 2
    replaced = client.put(url, data="<http://e/c> <http://e/p> 3 .", headers=AUTH,
                          content_type="text/turtle")
    assert replaced.status_code == 204
    assert len(client.get(url, headers={"Accept": "application/n-triples"}).data.splitlines()) == 1
    # Relative IRIs are resolved against the graph's IRI (they were a 400 "No scheme").
    relative = client.put(url, data="<x> <http://e/p> <#y> .", headers=AUTH,
                          content_type="text/turtle")
    assert relative.status_code == 204 and "Content-Type" not in relative.headers
    graph = client.get(url, headers={"Accept": "application/n-triples"}).data.decode()
    assert graph == ("<https://w3id.org/sasci-kg/graph/x> <http://e/p> "
                     "<https://w3id.org/sasci-kg/graph/extra#y> .\n")
    problem_of(client.put(url, data="x", headers=AUTH, content_type="text/plain"), 415)
    problem_of(client.put(url, data="<a:b> <a:c> <a:d> <a:g> .", headers=AUTH,
                          content_type="application/n-quads"), 415)
    problem_of(client.put(url, data="not turtle", headers=AUTH, content_type="text/turtle"), 400)
    problem_of(client.put("/rdf-graph-store?default", data="<a:b> <a:c> <a:d> .", headers=AUTH,
                          content_type="text/turtle"), 400)
    assert client.delete(url, headers=AUTH).status_code == 204
    problem_of(client.delete(url, headers=AUTH), 404)
    problem_of(client.get(url), 404)
    assert total(client) == 15


def test_writes_with_a_content_coding_are_415(writable: Flask) -> None:
    """A gzip body was read as the update or the graph's Turtle (RFC 9110 §8.4: refuse it)."""
    client = writable.test_client()
    coded = {**AUTH, "Content-Encoding": "gzip"}
    insert = gzip.compress(b"INSERT DATA { GRAPH graph:new { person:zoe schema:name 'Zoe' } }")
    url = "/rdf-graph-store?graph=https://w3id.org/sasci-kg/graph/extra"
    triples = gzip.compress(b"<http://e/a> <http://e/p> 1 .")
    for response in (
        client.post("/update", data=insert, headers=coded,
                    content_type="application/sparql-update"),
        client.put(url, data=triples, headers=coded, content_type="text/turtle"),
        client.post(url, data=triples, headers=coded, content_type="text/turtle"),
    ):
        body = problem_of(response, 415, "unsupported-content-coding")
        assert "without Content-Encoding" in body["detail"]
    # Without the token it is still 401 first: nothing about the body is said before that.
    problem_of(client.post("/update", data=insert, headers={"Content-Encoding": "gzip"},
                           content_type="application/sparql-update"), 401)
    assert total(client) == 15

def test_graph_store_write_body_is_bounded(fresh_store: Path) -> None:
    with app_for(fresh_store, updates=True, update_token=TOKEN,
                 max_upload_bytes=1000) as application:
        response = application.test_client().put(
            f"/rdf-graph-store?graph={GRAPH_A}", data="<a:b> <a:c> 'x' .\n" * 200,
            headers=AUTH, content_type="text/turtle")
        problem_of(response, 413)


# ---------------------------------------------------------------------------------------
# SERVICE and LOAD; size; nesting; caps (test client).


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * WHERE { SERVICE <http://169.254.169.254/latest/meta-data/> { ?s ?p ?o } }",
        "select * where { service silent <http://localhost:5432/> { ?s ?p ?o } }",
        "SELECT * WHERE { SERVICE ?where { ?s ?p ?o } }",
        "SELECT * WHERE { ?s ?p ?o # a comment\n SERVICE <http://10.0.0.1/> { ?s ?p ?o } }",
        "LOAD <http://127.0.0.1/>",
    ],
)
def test_service_and_load_are_403(client: FlaskClient, query: str) -> None:
    body = problem_of(client.post("/sparql", data={"query": query}), 403, "remote-access-refused")
    assert body["keyword"] in ("SERVICE", "LOAD")
    assert "refused" in body["detail"]


def test_service_in_a_string_or_iri_runs(client: FlaskClient) -> None:
    query = ('SELECT ?x WHERE { BIND("SERVICE <http://169.254.169.254/> {}" AS ?x) '
             "FILTER(?x != <http://example.org/SERVICE>) } # SERVICE <http://10.0.0.1/> {}")
    assert client.get("/sparql", query_string={"query": query}).status_code == 200


def test_query_size_is_bounded(client: FlaskClient) -> None:
    big = "SELECT * WHERE { ?s ?p ?o } #" + "x" * (100 * 1024)
    body = problem_of(client.post("/sparql", data=big, content_type="application/sparql-query"),
                      413, "query-too-large")
    assert body["limit"] == 100 * 1024
    problem_of(client.get("/sparql", query_string={"query": big}), 413)
    huge = "x" * (400 * 1024)
    problem_of(client.post("/sparql", data=huge, content_type="application/sparql-query"), 413)


def test_deep_nesting_is_400_and_the_server_carries_on(client: FlaskClient) -> None:
    body = problem_of(client.get("/sparql", query_string={"query": DEEP}), 400, "query-too-deep")
    assert body["limit"] == 64 and body["line"] == 1
    assert total(client) == 15


@pytest.mark.parametrize(
    ("settings", "cap"), [({"max_rows": 4}, "max-rows"), ({"max_result_bytes": 300}, "max-bytes")],
)
def test_results_over_a_cap_are_507_never_a_truncated_200(
    store_path: Path, settings: dict[str, int], cap: str
) -> None:
    with app_for(store_path, **settings) as application:
        client = application.test_client()
        for response in (
            client.get("/sparql", query_string={"query": "SELECT * WHERE { ?s ?p ?o }"}),
            client.get("/sparql", query_string={"query": "CONSTRUCT WHERE { ?s ?p ?o }"}),
            client.get("/rdf-graph-store"),
        ):
            body = problem_of(response, 507, "result-too-large")
            assert body["cap"] == cap and body["limit"] == next(iter(settings.values()))
        small = client.get("/sparql", query_string={"query": "ASK { ?s ?p ?o }"})
        assert small.status_code == 200


# ---------------------------------------------------------------------------------------
# The real server: time limit, concurrency cap, swaps, crashes, shutdown.


def test_time_limit_stops_the_work_and_others_are_answered(live_server: LiveServer) -> None:
    workers = set(live_server.workers())
    assert len(workers) == 2
    result: dict[str, Any] = {}

    def slow() -> None:
        started = time.monotonic()
        result["response"] = requests.get(
            live_server.sparql, params={"query": ENDLESS, "timeout": "1"}, timeout=30)
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    fast = requests.get(live_server.sparql, params={"query": "ASK {}"}, timeout=10)
    assert fast.status_code == 200 and time.monotonic() - started < 1.0
    thread.join(timeout=30)
    response = result["response"]
    body = problem_of(response, 504, "query-timeout")
    assert body["limit_seconds"] == 1.0
    assert result["seconds"] < 1.0 + 2.0
    # (Under the prefork server the worker answers 504 itself, then ends: a moment later.)
    deadline = time.monotonic() + 2
    while not (killed := workers - set(live_server.workers())) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(killed) == 1 and not any(alive(p) for p in killed)
    time.sleep(0.3)
    ticks = cpu_ticks(live_server.workers())
    time.sleep(0.5)
    assert cpu_ticks(live_server.workers()) - ticks < 10  # the CPU is free


def test_timeout_is_clamped_to_the_maximum(live_server: LiveServer) -> None:
    started = time.monotonic()
    response = requests.get(live_server.sparql, params={"query": ENDLESS, "timeout": "999"},
                            timeout=30)
    assert problem_of(response, 504)["limit_seconds"] == 3.0  # max_timeout in the tests
    assert time.monotonic() - started < 3.0 + 2.0


def test_parser_crash_and_deep_query_leave_the_server_up(live_server: LiveServer) -> None:
    response = requests.post(live_server.sparql, data={"query": DEEP}, timeout=10)
    problem_of(response, 400, "query-too-deep")
    ok = requests.get(live_server.sparql, params={"query": COUNT, "format": "csv"}, timeout=10)
    assert ok.status_code == 200 and ok.text.split()[1] == "15"


# Chains within the size limit and at depth 1 that overflowed pyoxigraph's stack (SIGSEGV):
# a lost worker and a 500 each time. Refused before the engine sees them.
CHAINS = {
    "binds": "SELECT * WHERE { ?s ?p ?o . "
             + " ".join(f"BIND(?o AS ?v{i})" for i in range(4000)) + " }",
    "minus": "SELECT * WHERE { ?s ?p ?o . "
             + " ".join(f"MINUS {{ ?s ?p {i} }}" for i in range(4000)) + " }",
    "values": "SELECT * WHERE { ?s ?p ?o . "
              + " ".join(f"VALUES ?v{i} {{ 1 }}" for i in range(4000)) + " }",
    "sum": "SELECT (" + " + ".join("1" for _ in range(8000)) + " AS ?x) WHERE { }",
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chains_that_crash_the_engine_are_400_before_it_runs(live_server: LiveServer,
                                                             name: str) -> None:
    response = requests.post(live_server.sparql, data={"query": CHAINS[name]}, timeout=30)
    body = problem_of(response, 400, "query-too-complex")
    assert body["limit"] in (1000, 3000) and "crash" in body["detail"]
    ok = requests.get(live_server.sparql, params={"query": COUNT, "format": "csv"}, timeout=10)
    assert ok.status_code == 200 and ok.text.split()[1] == "15"


def test_long_queries_short_of_the_chains_are_answered(client: FlaskClient) -> None:
    # Up to the limits, and anything that only looks like a chain (operators in IRIs, strings
    # and comments, keywords inside longer words) is answered.
    for query in (
        "SELECT * WHERE { ?s ?p ?o . "
        + " ".join(f"BIND(?o AS ?v{i})" for i in range(1000)) + " } LIMIT 1",
        "SELECT (" + "+".join("1" for _ in range(3000)) + " AS ?x) WHERE { }",
        "SELECT * WHERE { VALUES ?x { "
        + " ".join(f"<http://example.org/a/b+c/d-{i}>" for i in range(1500)) + " } }",
        'ASK { ?s ?p "' + "+-*/" * 4000 + '" } # ' + "BIND MINUS " * 1000,
        "SELECT * WHERE { " + " ".join(f"?s <http://e/minus-values-bind-{i}> ?o ."
                                       for i in range(1200)) + " } LIMIT 1",
    ):
        response = client.post("/sparql", data={"query": query, "timeout": "0.5"})
        # (answered, or stopped at the time limit: what matters is that it was not refused)
        assert response.status_code in (200, 504), response.data[:300]


def test_service_never_connects(live_server: LiveServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sock.settimeout(0.5)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/sparql"
        response = requests.post(live_server.sparql, timeout=10, data={
            "query": f"SELECT * WHERE {{ SERVICE <{url}> {{ ?s ?p ?o }} }}"})
        problem_of(response, 403)
        with pytest.raises((TimeoutError, socket.timeout)):
            sock.accept()


def test_concurrency_cap_is_503_with_retry_after(store_path: Path, tmp_path: Path) -> None:
    with run_live_server(store_path, tmp_path, query_workers=1, queue_size=0) as server:
        thread = threading.Thread(target=requests.get, args=(server.sparql,), kwargs={
            "params": {"query": ENDLESS, "timeout": "1.5"}, "timeout": 30})
        thread.start()
        time.sleep(0.4)
        response = requests.get(server.sparql, params={"query": "ASK {}"}, timeout=10)
        body = problem_of(response, 503, "busy")
        assert int(response.headers["Retry-After"]) >= 1 and body["retry_after"] >= 1
        thread.join()
        # The killed worker's replacement is starting; without a queue, wait for it here.
        deadline = time.monotonic() + 10
        while requests.get(server.url + "/healthz", timeout=10).json()["workers"]["idle"] < 1:
            assert time.monotonic() < deadline, "no replacement worker"
            time.sleep(0.05)
        assert requests.get(server.sparql, params={"query": "ASK {}"}, timeout=10).ok


def test_default_settings_serve_eight_clients_at_once(store_path: Path, tmp_path: Path) -> None:
    with run_live_server(store_path, tmp_path, defaults=True) as server:
        def client(n: int) -> list[int]:
            session = requests.Session()
            codes = []
            for _ in range(5):
                query = f"SELECT ?name WHERE {{ ?s schema:name ?name }} LIMIT {n + 1}"
                codes.append(session.get(server.sparql, params={"query": query},
                                         timeout=20).status_code)
            session.close()
            return codes

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(client, range(8)))
        assert [c for codes in results for c in codes] == [200] * 40


def test_swapped_store_is_served_without_restart(fresh_store: Path, tmp_path: Path) -> None:
    with run_live_server(fresh_store, tmp_path) as server:
        pids = set(server.workers())
        failures: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            session = requests.Session()
            while not stop.is_set():
                query = "SELECT * WHERE { ?s ?p ?o } ORDER BY ?s"
                response = session.get(server.sparql, params={"query": query, "format": "csv"},
                                       timeout=10)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
            session.close()

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        make_store(fresh_store, TRIG.replace('"Cy"', '"Cyrus"'))
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        assert failures == []
        after = requests.get(server.sparql, params={
            "query": "ASK { ?s schema:name 'Cyrus' }"}, timeout=10)
        assert after.json()["boolean"] is True
        assert set(server.workers()) == pids  # the same processes, no restart
        # granian started its HTTP worker once (the prefork server logs no such line)
        assert server.log().count("Spawning worker") <= 1


@pytest.mark.parametrize("http_server", ["prefork", "granian", "gunicorn"])
def test_stopping_the_server_leaves_no_process(store_path: Path, tmp_path: Path,
                                               http_server: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Nor a temporary folder: search indexes, the forkserver's socket folder (the prefork
    server's workers end with os._exit, which skips the interpreter's own clean-up)."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the server's, and its children's
    with run_live_server(store_path, tmp_path, server=http_server) as server:
        pids = server.workers()
        assert len(pids) == 2
        answer = requests.get(server.sparql, params={"query": "ASK {}"}, timeout=10)
        assert answer.json() == {"head": {}, "boolean": True}
        etag = answer.headers["ETag"]
        again = requests.get(server.sparql, params={"query": "ASK {}"},
                             headers={"If-None-Match": etag}, timeout=10)
        assert again.status_code == 304 and again.headers["ETag"] == etag
        for path in ("/funders", "/search?q=Cy&format=json"):  # a search index, a tracer
            assert requests.get(server.url + path, timeout=30).ok, path
        made = {p.name.split("-")[0] for p in temp.rglob("*")}
        assert "sasci" in made and made & {"pymp", "listener"}, made  # the forkserver's
    # run_live_server has checked every descendant; the workers are gone.
    assert not any(alive(p) for p in pids)
    assert list(temp.iterdir()) == []
