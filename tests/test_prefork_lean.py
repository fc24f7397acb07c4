"""The prefork worker's lean route: plain query requests answered from the parsed request,
without a WSGI environ or the middleware (``prefork.worker._Worker._answer_lean``).

It must mean exactly what the app means. Every request of ``test_fastpath.REQUESTS`` is sent
to a live prefork server and, in this process, straight to Flask's own view: status, body and
headers must agree. Then, in this process, a worker is shown to answer plain queries without
ever making an environ, to log them as the app does, and to hand everything else to the app.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from conftest import LiveServer, app_for, make_config, run_live_server
from flask import Flask
from test_fastpath import NAMES, REQUESTS, VOLATILE_HEADERS
from werkzeug.test import Client

from sasci_kg.web import close_app, create_app
from sasci_kg.web.prefork.slots import _Slots
from sasci_kg.web.prefork.worker import _Connection, _Worker

# What the server writes about the connection itself (the app never sees it).
CONNECTION_HEADERS = {"connection", "keep-alive"}


@pytest.fixture(scope="module")
def server(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # result_cache_mb=0: each request really runs (as in the view's app below).
    with run_live_server(store_path, tmp_path_factory.mktemp("lean"), server="prefork",
                         query_workers=1, result_cache_mb=0) as live:
        yield live


@pytest.fixture(scope="module")
def app(store_path: Path) -> Iterator[Flask]:
    with app_for(store_path, result_cache_mb=0, query_workers=1) as application:
        yield application


@pytest.mark.parametrize("request_", REQUESTS, ids=[f"{r[0]} {r[1][:40]} {r[3]}"
                                                     for r in REQUESTS])
def test_the_workers_lean_route_answers_as_the_flask_view_does(
        server: LiveServer, app: Flask, request_: Any) -> None:
    method, query_string, body, content_type, headers = request_
    sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
    response = requests.request(method, f"{server.url}/sparql?{query_string}", data=body,
                                headers=sent, timeout=30)
    got = {k.lower(): v for k, v in response.headers.items()
           if k.lower() not in VOLATILE_HEADERS | CONNECTION_HEADERS}
    view = Client(lambda environ, start: Flask.wsgi_app(app, environ, start))  # Flask only
    answer = view.open("/sparql", method=method, query_string=query_string, data=body,
                       content_type=content_type, headers=headers,
                       base_url=server.url)  # (the service description names the endpoint)
    status, content = answer.status_code, answer.get_data()
    expected = {k.lower(): v for k, v in answer.headers.items()
                if k.lower() not in VOLATILE_HEADERS | CONNECTION_HEADERS}
    assert response.status_code == status, (response.content, content)
    assert response.content == content
    assert got == expected


# ---------------------------------------------------------------------------------------
# One worker, in this process.


@pytest.fixture
def worker(store_path: Path) -> Iterator[_Worker]:
    config = make_config(store_path, result_cache_mb=0)
    application = create_app(config)
    listener = socket.create_server(("127.0.0.1", 0))
    dispatch, control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    made = _Worker(0, application, application.wsgi_app, config, listener, dispatch, control,
                   _Slots(1))
    made.runner.warm_up()
    try:
        yield made
    finally:
        close_app(application)
        for sock in (listener, dispatch, control):
            sock.close()


def _ask(worker: _Worker, request: bytes) -> bytes:
    """Serve one request on a fresh connection; the response."""
    client, ours = socket.socketpair()
    with client:
        client.sendall(request)
        worker._serve(_Connection(ours, 1, ("127.0.0.1", 1)))
        client.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            more = client.recv(65536)
            assert more, f"no answer, only {data!r}"
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            body += client.recv(65536)
        ours.close()
        return head + b"\r\n\r\n" + body


@pytest.fixture
def environs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The request targets the worker makes a WSGI environ for, as it makes them."""
    made: list[str] = []
    original = _Worker._environ

    def spy(self: _Worker, *args: Any) -> dict[str, Any]:
        made.append(args[2].decode("latin-1"))
        return original(self, *args)

    monkeypatch.setattr(_Worker, "_environ", spy)
    return made


def test_a_worker_answers_plain_queries_without_an_environ(
        worker: _Worker, environs: list[str], caplog: pytest.LogCaptureFixture) -> None:
    form = urlencode({"query": NAMES}).encode()
    caplog.set_level(logging.INFO, logger="sasci_kg.access")
    get = _ask(worker, b"GET /sparql?" + form + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    post = _ask(worker, b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                % (len(form), form))
    for response in (get, post):
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Type: application/sparql-results+json" in response
        assert b'"name"' in response
    assert environs == []
    # Logged as the app's access log does: the parameter names, never their values.
    lines = [r.getMessage() for r in caplog.records if r.name == "sasci_kg.access"]
    assert [line.split(" ")[:3] for line in lines] == [
        ["GET", "/sparql?query=…", "200"], ["POST", "/query", "200"]]
    sizes = [len(response.partition(b"\r\n\r\n")[2]) for response in (get, post)]
    assert [line.rsplit(" ", 1)[1] for line in lines] == [f"{size}B" for size in sizes]


def test_a_worker_hands_anything_else_to_the_app(worker: _Worker, environs: list[str]
                                                 ) -> None:
    query = urlencode({"query": NAMES})
    # No query (the service description), a fragment, a query error (the app's problem
    # response, made from an environ only then), Content-Type twice.
    assert _ask(worker, b"GET /sparql HTTP/1.1\r\nHost: x\r\nAccept: text/turtle\r\n\r\n"
                ).startswith(b"HTTP/1.1 200 ")
    assert _ask(worker, f"GET /sparql?{query}#here HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                ).startswith(b"HTTP/1.1 200 ")
    bad = _ask(worker, b"GET /sparql?query=SELECT+%2A+%7B HTTP/1.1\r\nHost: x\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400 ") and b"application/problem+json" in bad
    body = NAMES.encode()
    twice = _ask(worker, b"POST /sparql HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/sparql-query\r\nContent-Type: application/sparql-query\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert twice.startswith(b"HTTP/1.1 ")
    assert environs == ["/sparql", f"/sparql?{query}#here", "/sparql?query=SELECT+%2A+%7B",
                    "/sparql"]


def test_an_answer_kept_after_it_was_sent_revalidates(store_path: Path, tmp_path: Path) -> None:
    # A POSTed answer goes into the answer cache after it is sent, with its entity tag made
    # then: the same query by GET comes from the cache with that tag, and revalidates (304).
    from sasci_kg.web.result_cache import entity_tag

    with run_live_server(store_path, tmp_path, server="prefork", query_workers=1) as live:
        with requests.Session() as session:
            posted = session.post(f"{live.url}/sparql", data={"query": NAMES}, timeout=30)
            assert posted.status_code == 200 and "ETag" not in posted.headers
            got = session.get(f"{live.url}/sparql", params={"query": NAMES}, timeout=30)
            tag = f'"{entity_tag("application/sparql-results+json", got.content)}"'
            assert got.headers["ETag"] == tag
            assert got.content == posted.content
            again = session.get(f"{live.url}/sparql", params={"query": NAMES},
                                headers={"If-None-Match": tag}, timeout=30)
            assert again.status_code == 304
            stats = session.get(f"{live.url}/healthz", timeout=30).json()
    assert stats["answer_cache"]["hits"] >= 1, stats


def test_a_refused_query_is_logged_with_its_body_size(
        worker: _Worker, caplog: pytest.LogCaptureFixture) -> None:
    # The app's problem response is an iterator, not a list: the line said 0B (an
    # independent review's find); the app's access log gives the size.
    caplog.set_level(logging.INFO, logger="sasci_kg.access")
    response = _ask(worker, b"GET /sparql?query=SELECT+%2A+%7B HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")
    size = len(response.partition(b"\r\n\r\n")[2])
    [line] = [r.getMessage() for r in caplog.records if r.name == "sasci_kg.access"]
    assert line.split(" ")[:3] == ["GET", "/sparql?query=…", "400"]
    assert line.endswith(f" {size}B") and size > 100, line


def test_a_stop_does_not_wait_out_an_idle_keep_alive_connection(
        store_path: Path, tmp_path: Path) -> None:
    # A worker keeps an idle connection for seconds (STICKY); a stop must not wait for that
    # (it took 4.6 s: an independent review's find).
    with run_live_server(store_path, tmp_path, server="prefork", query_workers=1) as live:
        port = int(live.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET /sparql?query=ASK%7B%7D HTTP/1.1\r\nHost: x\r\n\r\n")
            client.settimeout(10)
            assert client.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep(0.2)
            began = time.monotonic()
            live.process.send_signal(signal.SIGTERM)
            live.process.wait(30)
            assert time.monotonic() - began < 2.0
