"""Hostile requests, the ones the anchor endpoints fail at (``shared/reference/endpoints.md``):
SSRF through SERVICE and LOAD, writes without the token, CORS preflights for writes, oversized
bodies and queries, queries built to crash or exhaust the engine, path traversal, and header
injection through ``format`` and download names.

Most run through the production server (gunicorn, real worker processes) with raw bytes where
a client library would tidy the request up; a loopback listener proves that no refused
SERVICE or LOAD ever connects. Nothing here sends traffic beyond 127.0.0.1: private, metadata
and rebinding hosts are numeric addresses or answers of a stand-in resolver, refused before any
connection is tried.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import LiveServer, run_live_server
from reliability_support import fresh_real_store, problem_shape, record

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
# Queries built to crash the parser.

CRASHERS = {
    # 20,000 unary operators (20 KB): the parser's recursion overflows its stack.
    "20,000 negations": "ASK { FILTER(" + "!" * 20_000 + "true) }",
    "20,000 additions": "SELECT (" + "+".join(["1"] * 20_000) + " AS ?x) WHERE {}",
    "12,000 ORs": "ASK { FILTER(" + "||".join(["1"] * 12_000) + ") }",
    "20,000 minus signs": "SELECT (" + "- " * 20_000 + "1 AS ?x) WHERE {}",
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
