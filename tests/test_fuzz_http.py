"""Fuzzing every HTTP route: random methods, paths, parameters, headers, bodies and encodings.

In process (the Flask app over the real dataset, its queries in real worker processes) for
volume, and through the production server (prefork, or ``SASCI_KG_TEST_SERVER``) with raw
bytes on a socket for what only a real server sees: broken request lines, bad header syntax,
lying Content-Lengths, chunked bodies, non-UTF-8 targets. The properties:

- never a 500 (nor a 502): only the intended limits may answer 5xx — 503 busy, 504 time
  limit, 507 result cap;
- every refusal is a 4xx (or one of those limits) in the problem+json shape — except that a
  browser asking for a missing page gets an HTML 404/410 page, and the HTTP server itself answers
  requests that are not HTTP with its own plain 400;
- no traceback and no header value with a line break, ever;
- a 200 is never broken: SPARQL results and RDF bodies parse in the format they claim.

The case counts are fixed for CI and printed (``RELIABILITY`` lines); ``SASCI_KG_LONG=1``
runs many more, randomised.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pyoxigraph as ox
import pytest
import requests
from conftest import LiveServer, app_for, run_live_server
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import example, given
from hypothesis import strategies as st
from project import QUERIES
from reliability_support import (
    PROBLEM_JSON,
    assert_no_traceback,
    fuzz_settings,
    problem_shape,
    real_store,
    record,
)

from sasci_kg.void import DOWNLOADS

pytestmark = pytest.mark.reliability

# Statuses an intended limit may answer with (SPARQL Protocol, RFC 9110, RFC 4918 §11.5).
LIMIT_STATUSES = {503, 504, 507}
HTML_PAGE_STATUSES = {404, 410}
NAMED_QUERIES = [p.read_text(encoding="utf-8") for p in sorted(QUERIES.glob("*.rq"))]
COUNTS: dict[str, int] = {}
STATUSES: dict[int, int] = {}


def _count(target: str, status: int) -> None:
    COUNTS[target] = COUNTS.get(target, 0) + 1
    STATUSES[status] = STATUSES.get(status, 0) + 1


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    with app_for(real_store(), timeout=1.0, max_timeout=2.0, queue_timeout=10.0) as application:
        yield application


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    started = time.monotonic()
    yield
    record("fuzz-http", cases=dict(sorted(COUNTS.items())), total=sum(COUNTS.values()),
           statuses={str(k): v for k, v in sorted(STATUSES.items())},
           seconds=round(time.monotonic() - started, 1))


# ---------------------------------------------------------------------------------------
# What a response must be.

RESULT_PARSERS = {
    "application/sparql-results+json": ox.QueryResultsFormat.JSON,
    "application/sparql-results+xml": ox.QueryResultsFormat.XML,
    "text/tab-separated-values": ox.QueryResultsFormat.TSV,
}
RDF_PARSERS = {
    "text/turtle": ox.RdfFormat.TURTLE,
    "application/n-triples": ox.RdfFormat.N_TRIPLES,
    "application/n-quads": ox.RdfFormat.N_QUADS,
    "application/trig": ox.RdfFormat.TRIG,
    "application/rdf+xml": ox.RdfFormat.RDF_XML,
    "application/ld+json": ox.RdfFormat.JSON_LD,
}


def check_response(method: str, status: int, headers: Any, body: bytes,
                   *, accepts_html: bool) -> None:
    """The properties every response of the app must have."""
    assert status not in (500, 502), body[:1000]
    assert status < 500 or status in LIMIT_STATUSES, (status, body[:500])
    for name, value in headers.items():
        assert "\r" not in value and "\n" not in value, (name, value)
    assert_no_traceback(body)
    content_type = headers.get("Content-Type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if status >= 400:
        if media_type == "text/html":
            assert status in HTML_PAGE_STATUSES and accepts_html, (status, body[:300])
        elif method == "HEAD":
            assert media_type == PROBLEM_JSON, (status, content_type)
        else:
            problem_shape(status, content_type, body)
        return
    if status != 200 or method == "HEAD" or not body:
        return
    # Never a 200 whose body is broken: results and RDF parse in the format they claim.
    if media_type == "text/csv":  # pyoxigraph does not read CSV results (they are lossy)
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
        assert rows and all(len(row) == len(rows[0]) for row in rows), body[:300]
    elif media_type in RESULT_PARSERS:
        ox.parse_query_results(body, RESULT_PARSERS[media_type])
    elif media_type in RDF_PARSERS:
        list(ox.parse(body, RDF_PARSERS[media_type]))
    elif media_type in ("application/json", PROBLEM_JSON):
        json.loads(body)
    elif media_type == "application/gzip":
        gzip.decompress(body)


def _accepts_html(headers: dict[str, str]) -> bool:
    return "html" in headers.get("Accept", "").lower()


# ---------------------------------------------------------------------------------------
# Strategies: the pieces of a request.

ODD = ["\x00", "\x7f", "\u00e9", "e\u0301", "\u200b", "\u202e", "\ufeff", "\U0001f600",
       "\ufffd", "\\", "'", '"', "<", ">", "&", "%", "%00", "%2e%2e%2f", "%ZZ", "%c0%ae",
       "\u2028", "{", "}", "|", "^", "`", " ", "+", "#", "?", ";", ",", "=", "\t"]
odd_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from(ODD) | st.text(max_size=5), max_size=8).map("".join),
)
SPARQL_TOKENS = [
    "SELECT", "*", "WHERE", "{", "}", "?s", "?p", "?o", "?x", "$y", "<http://a.example/x>",
    "<https://w3id.org/sasci-kg/id/person/juliette-malley>", "schema:name", "rdfs:label",
    "ex:x", "a", ".", ";", ",", "(", ")", "[", "]", "FILTER", "OPTIONAL", "UNION", "MINUS",
    "GRAPH", "SERVICE", "SILENT", "LOAD", "INTO", "PREFIX", "ex:", "BASE", "LIMIT", "OFFSET",
    "1", "0", "-1", "1e999", "ORDER", "BY", "GROUP", "HAVING", "DESC", "COUNT", "SUM",
    "DISTINCT", "AS", "BIND", "VALUES", "UNDEF", "EXISTS", "NOT", "IN", "REGEX", "STR",
    "LANG", "@en", "^^xsd:integer", '"x"', "'y'", '"""long"""', "#c\n", "\n", "ASK",
    "DESCRIBE", "CONSTRUCT", "FROM", "NAMED", "INSERT", "DATA", "DELETE", "CLEAR", "DROP",
    "ALL", "WITH", "USING", "/", "|", "^", "!", "+", "?", "&&", "||", "=", "!=", "<", ">=",
    "true", "false", "_:b", "[]", "<<", ">>", "VERSION", '"1.2"', "\\u0053", "é", "\u00a0",
]
sparql_soup = st.lists(st.sampled_from(SPARQL_TOKENS), max_size=40).map(" ".join)


@st.composite
def mutated_query(draw: st.DrawFn) -> str:
    """A named query after a few character-level edits."""
    text = list(draw(st.sampled_from(NAMED_QUERIES)))
    for _ in range(draw(st.integers(1, 5))):
        position = draw(st.integers(0, max(0, len(text) - 1)))
        op = draw(st.sampled_from(["delete", "insert", "duplicate"]))
        if op == "delete":
            del text[position:position + draw(st.integers(1, 30))]
        elif op == "insert":
            text[position:position] = list(draw(st.sampled_from(SPARQL_TOKENS) | odd_text))
        else:
            text[position:position] = text[position:position + draw(st.integers(1, 40))]
    return "".join(text)


queries = st.one_of(sparql_soup, mutated_query(), st.sampled_from(NAMED_QUERIES), odd_text)

MEDIA_TYPES = [
    "application/sparql-results+json", "application/sparql-results+xml", "text/csv",
    "text/tab-separated-values", "text/turtle", "application/n-triples", "application/n-quads",
    "application/trig", "application/ld+json", "application/rdf+xml", "application/json",
    "text/html", "application/xhtml+xml", "text/plain", "text/*", "*/*", "*", "application/*",
    "image/png", "text/html;level=1", "x/y", "", ";", "text/csv;q=abc", "*/*;q=2",
    "text/turtle;q=0", "application/sparql-query", "application/sparql-update",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded; charset=latin-1", "application/sparql-query;charset=utf-16",
]
FORMAT_VALUES = ["json", "xml", "csv", "tsv", "ttl", "nt", "nq", "trig", "jsonld", "rdfxml",
                 "html", "srj", "turtle", "text/csv", "application/ld+json,text/turtle", "", "x"]
media_type = st.sampled_from(MEDIA_TYPES) | odd_text
accept_header = st.lists(
    st.tuples(st.sampled_from(MEDIA_TYPES), st.sampled_from(["", ";q=0.5", ";q=0", ";q=1.0",
                                                             ";q=x", ";charset=utf-8"])),
    max_size=5,
).map(lambda items: ", ".join(m + q for m, q in items))
PARAM_NAMES = ["query", "update", "format", "output", "results", "timeout", "download",
               "default-graph-uri", "named-graph-uri", "using-graph-uri", "graph", "default",
               "v", "callback", "q"]
param_value = st.one_of(
    queries, st.sampled_from(FORMAT_VALUES), odd_text,
    st.sampled_from(["1", "0.001", "-1", "nan", "inf", "1e309", "0x10", " 2 ", "999999",
                     "https://w3id.org/sasci-kg/graph/source/sasci-final-event",
                     "http://a.example/g", "relative", "urn:x", "true", "no"]),
)
params = st.lists(st.tuples(st.sampled_from(PARAM_NAMES) | odd_text, param_value), max_size=5)

# Header values a client can really send: latin-1, no line breaks or NULs.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    exclude_characters="\x7f"), max_size=60)
HEADER_NAMES = ["Accept", "Content-Type", "Authorization", "Origin", "If-None-Match",
                "If-Modified-Since", "Range", "Accept-Encoding", "Content-Encoding",
                "Accept-Language", "Access-Control-Request-Method",
                "Access-Control-Request-Headers", "X-Forwarded-For", "X-Forwarded-Host",
                "X-Forwarded-Prefix", "X-Forwarded-Proto", "Cookie", "Referer", "Expect",
                "Transfer-Encoding", "X-Custom"]
headers = st.dictionaries(
    st.sampled_from(HEADER_NAMES),
    st.one_of(header_text, accept_header, media_type.filter(
        lambda v: all(0x20 <= ord(c) <= 0xFF and c != "\x7f" for c in v))),
    max_size=5,
)
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND"]


def _segments() -> st.SearchStrategy[str]:
    real = ["person/juliette-malley", "org/cpec", "session/sasci-final-2024.plenary",
            "event/sasci-final-2024", "concept/innovation", "role/chair", "certainty",
            "source/sasci-final-event", "ontology", "meta", "vocab"]
    traversal = ["..", "../..", "%2e%2e", "..%2f..%2f", "%2e%2e%2fetc%2fpasswd", "/etc/passwd",
                 "....//", "..\\..\\", "%00", "a%00.ttl", "%c0%ae%c0%ae", "//", ".", "~root"]
    pieces = st.sampled_from(real) | st.sampled_from(traversal) | odd_text.filter(bool)
    ext = st.sampled_from(["", ".ttl", ".html", ".jsonld", ".nt", ".rdf", ".trig", ".nq",
                           ".xyz", ".", ".ttl.ttl"])
    return st.builds(lambda parts, e: "/".join(parts) + e,
                     st.lists(pieces, min_size=1, max_size=4), ext)


ROUTE_PATHS = st.one_of(
    st.sampled_from(["/", "/sparql", "/query", "/update", "/healthz", "/rdf-graph-store",
                     "/.well-known/void", "/download/", "/context.jsonld", "/def",
                     "/problem/not-found", "/favicon.ico", "/robots.txt", ""]),
    st.builds(lambda prefix, rest: prefix + rest,
              st.sampled_from(["/id/", "/vocab/", "/graph/", "/ui/static/", "/static/",
                               "/download/", "/problem/", "/def/", "/def.",
                               "/.well-known/void.", "/"]),
              _segments()),
    st.sampled_from([f"/download/{d.filename}" for d in DOWNLOADS]),
    odd_text.map(lambda t: "/" + t),
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    queries.map(lambda q: q.encode("utf-8", "surrogatepass")),
    params.map(lambda ps: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}"
                                   for k, v in ps).encode()),
    st.sampled_from([b"\xff\xfe\xfd", b"%ZZ=%", b"query=%E9", gzip.compress(b"query=ASK{}"),
                     b"<a> <b> <c> .", b"@prefix : <x> .", b"{" * 1000]),
)


def _send(client: FlaskClient, method: str, path: str, query: list[tuple[str, str]],
          hdrs: dict[str, str], body: bytes | None) -> Any:
    target = path if path.startswith("/") else "/" + path
    # A "?" or "#" in a generated path is part of the path, not a query or fragment.
    target = target.replace("?", "%3F").replace("#", "%23")
    # The test client reads "//host" as a network location; the raw-socket test sends those.
    target = "/" + target.lstrip("/")
    return client.open(target, method=method, query_string=query, headers=hdrs, data=body)


# ---------------------------------------------------------------------------------------
# In process: every route.


@fuzz_settings(ci=400, long=20_000)
@given(method=st.sampled_from(METHODS), path=ROUTE_PATHS, query=params, hdrs=headers,
       body=bodies)
@example(method="GET", path="/sparql",
         query=[("query", "ASK { FILTER(" + "!" * 20_000 + "true) }")],
         hdrs={}, body=None)
@example(method="GET", path="/download/sasci-kg.ttl%0d%0aSet-Cookie:x=1", query=[], hdrs={},
         body=None)
def test_every_route_answers_random_requests_cleanly(
    app: Flask, method: str, path: str, query: list[tuple[str, str]],
    hdrs: dict[str, str], body: bytes | None,
) -> None:
    response = _send(app.test_client(), method, path, query, hdrs, body)
    _count("http: random requests to every route (in process)", response.status_code)
    check_response(method, response.status_code, response.headers, response.get_data(),
                   accepts_html=_accepts_html(hdrs))


@fuzz_settings(ci=250, long=10_000)
@given(query=queries, binding=st.sampled_from(["get", "form", "direct"]),
       accept=st.none() | accept_header, fmt=st.none() | st.sampled_from(FORMAT_VALUES))
def test_sparql_endpoint_answers_random_queries_cleanly(
    app: Flask, query: str, binding: str, accept: str | None, fmt: str | None
) -> None:
    hdrs = {"Accept": accept} if accept is not None else {}
    extra = [("timeout", "0.5")] + ([("format", fmt)] if fmt is not None else [])
    client = app.test_client()
    if binding == "get":
        response = client.get("/sparql", query_string=[("query", query), *extra], headers=hdrs)
    elif binding == "form":
        response = client.post("/sparql", data={"query": query}, query_string=extra,
                               headers=hdrs)
    else:
        response = client.post("/sparql", data=query.encode("utf-8", "surrogatepass"),
                               content_type="application/sparql-query", query_string=extra,
                               headers=hdrs)
    _count("http: random and mutated SPARQL (3 bindings)", response.status_code)
    check_response("POST" if binding != "get" else "GET", response.status_code,
                   response.headers, response.get_data(), accepts_html=False)


# ---------------------------------------------------------------------------------------
# Through the production server: raw bytes on a socket.


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with run_live_server(real_store(), tmp_path_factory.mktemp("fuzz-live"),
                         timeout=1.0, max_timeout=2.0) as live:
        yield live


def raw_exchange(url: str, request: bytes, *, timeout: float = 15.0) -> tuple[int, dict[str, str],
                                                                               bytes]:
    """Send raw bytes, read until the server closes; (status, headers, body). Status 0: the
    server closed without an answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse and close before reading everything
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        return 0, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    while head.split(b" ", 2)[1:2] == [b"100"] and body:  # an interim 100 Continue
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().title()] = value.strip()
    if fields.get("Transfer-Encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return status, fields, body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return bytes(out)


raw_targets = st.one_of(
    ROUTE_PATHS.map(lambda p: quote(p if p.startswith("/") else "/" + p, safe="/%?&=:.")),
    st.binary(min_size=1, max_size=60).map(lambda b: "/" + b.decode("latin-1")),
    st.sampled_from(["*", "http://127.0.0.1/sparql", "//etc/passwd", "/sparql?query=%",
                     "/sparql?query=%E9%00", "/%2e%2e/%2e%2e/etc/passwd",
                     "/ui/static/..%2f..%2f__init__.py", "/ui/static/%2e%2e/%2e%2e/server.py",
                     "/download/..%2fsasci-kg.ttl", "/id/..%2f..%2fetc%2fpasswd", "/" * 300]),
)
raw_header_lines = st.lists(st.one_of(
    st.tuples(st.sampled_from(HEADER_NAMES), header_text).map(lambda t: f"{t[0]}: {t[1]}"),
    st.sampled_from(["Content-Length: -1", "Content-Length: 99999999999", "Content-Length: x",
                     "Content-Length: 5\r\nContent-Length: 6", "Transfer-Encoding: chunked",
                     "Transfer-Encoding: gzip, chunked", " folded: header", "No-Colon",
                     "Bad Name: x", "X: " + "a" * 9000, "Host:", "Expect: 100-continue",
                     ":", "Content-Type: application/sparql-query"]),
), max_size=6)


@fuzz_settings(ci=60, long=3_000)
@given(method=st.sampled_from([*METHODS, "GE T", "get", "", "\x00", "QUERY"]),
       target=raw_targets, version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "",
                                                    "HTTP/1.1 x", "http/1.1"]),
       lines=raw_header_lines, body=st.binary(max_size=300))
def test_production_server_answers_raw_garbage_cleanly(
    server: LiveServer, method: str, target: str, version: str, lines: list[str], body: bytes
) -> None:
    request = f"{method} {target} {version}".encode("latin-1", "replace") + b"\r\n"
    request += b"Host: 127.0.0.1\r\nConnection: close\r\n"
    request += b"".join(line.encode("latin-1", "replace") + b"\r\n" for line in lines)
    if not any(line.lower().startswith("content-length") for line in lines):
        request += f"Content-Length: {len(body)}\r\n".encode()
    request += b"\r\n" + body
    status, fields, payload = raw_exchange(server.url, request)
    _count("http: raw bytes to the production server", status)
    if status == 0:
        return  # closed without a word: the HTTP server's answer to some unparseable input
    assert status not in (500, 502), payload[:500]
    assert_no_traceback(payload)
    content_type = fields.get("Content-Type", "")
    if content_type.startswith(PROBLEM_JSON):  # the app's answer
        assert status < 500 or status in LIMIT_STATUSES, (status, payload[:300])
        if payload:
            problem_shape(status, content_type, payload)
    elif status >= 400 and status not in HTML_PAGE_STATUSES:
        # Not problem+json: only the HTTP server's own refusal of a request that is not HTTP it
        # takes (RFC 9112: 400, 413, 414, 417, 431; 501 for an unknown transfer coding;
        # 505 for an unknown version).
        assert status in (400, 405, 413, 414, 417, 431, 501, 505), (status, fields, payload[:300])
        assert b"sasci" not in payload.lower(), payload[:300]


def test_the_server_is_healthy_after_the_garbage(server: LiveServer) -> None:
    response = requests.get(server.url + "/healthz", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert "Traceback" not in server.log(), server.log()[-3000:]
    assert "unexpected error" not in server.log(), server.log()[-3000:]

