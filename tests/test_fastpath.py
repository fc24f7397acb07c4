"""The lean /sparql route (web/fastpath.py) and the per-generation result cache.

The lean route must mean exactly what the Flask view means: every request below is sent once
through the app (lean route first) and once straight to Flask's own WSGI app, and the answers
must agree in status, body and headers. Then: ETags and 304s (GET and HEAD only), answers kept
per store generation and dropped by a swap, volatile queries never kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import TRIG, app_for, make_store
from flask import Flask
from werkzeug.test import Client

from sasci_kg.web.result_cache import CachedAnswer, ResultCache, SmallMemo

NAMES = "SELECT ?name WHERE { ?s schema:name ?name } ORDER BY ?name"
FORM = "application/x-www-form-urlencoded"

# (method, query string, body, content type, headers)
REQUESTS: list[tuple[str, str, bytes, str | None, dict[str, str]]] = [
    ("GET", urlencode({"query": NAMES}), b"", None, {}),
    ("HEAD", urlencode({"query": NAMES}), b"", None, {}),
    ("GET", urlencode({"query": NAMES, "format": "csv"}), b"", None, {}),
    ("GET", urlencode({"query": NAMES}), b"", None, {"Accept": "text/tab-separated-values"}),
    ("GET", urlencode({"query": NAMES, "download": "1"}), b"", None, {}),
    ("GET", urlencode({"query": "CONSTRUCT WHERE { ?s ?p ?o }"}), b"", None,
     {"Accept": "text/turtle"}),
    ("GET", urlencode({"query": "ASK {}", "timeout": "1"}), b"", None, {}),
    ("GET", urlencode([("query", NAMES), ("default-graph-uri",
                                         "https://w3id.org/sasci-kg/graph/source/alpha")]),
     b"", None, {}),
    ("POST", "", urlencode({"query": NAMES}).encode(), FORM, {}),
    ("POST", "format=json", NAMES.encode(), "application/sparql-query", {}),
    ("POST", "", NAMES.encode(), "application/sparql-query; charset=UTF-8", {}),
    # refusals, each answered by the same problem+json as the view gives
    ("GET", urlencode({"query": "SELECT * WHERE { ?s ?p }"}), b"", None, {}),
    ("GET", urlencode({"query": NAMES}), b"", None, {"Accept": "image/png"}),
    ("GET", urlencode({"query": "   "}), b"", None, {}),
    ("GET", urlencode({"query": NAMES, "timeout": "soon"}), b"", None, {}),
    ("GET", urlencode({"query": NAMES, "default-graph-uri": "not an iri"}), b"", None, {}),
    ("GET", urlencode({"query": "SELECT * { SERVICE <http://10.0.0.1/> { ?s ?p ?o } }"}),
     b"", None, {}),
    ("GET", urlencode({"query": "INSERT DATA { <a:b> <a:c> <a:d> }"}), b"", None, {}),
    ("GET", urlencode({"query": "ASK { FILTER(" + "(" * 80 + "1" + ")" * 80 + ") }"}),
     b"", None, {}),
    ("GET", urlencode({"query": "SELECT * { ?s ?p ?o . ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }",
                       "timeout": "0.3"}), b"", None, {}),
    # passed on to the view: no query, twice a query, an update, both URL and body, …
    ("GET", "", b"", None, {"Accept": "text/turtle"}),
    ("GET", urlencode([("query", NAMES), ("query", NAMES)]), b"", None, {}),
    ("GET", urlencode({"update": "CLEAR ALL"}), b"", None, {}),
    ("POST", urlencode({"query": NAMES}), urlencode({"query": NAMES}).encode(), FORM, {}),
    ("POST", "query=ASK{}", NAMES.encode(), "application/sparql-query", {}),
    ("POST", "", NAMES.encode(), "application/sparql-query; charset=latin-1", {}),
    ("POST", "", b"\xff\xfe", "application/sparql-query", {}),
    ("POST", "", NAMES.encode(), "text/plain", {}),
    ("POST", "", b"CLEAR ALL", "application/sparql-update", {}),
    ("PUT", urlencode({"query": NAMES}), b"", None, {}),
    ("POST", "", NAMES.encode(), "application/sparql-query", {"Content-Encoding": "gzip"}),
    ("POST", "", urlencode({"query": NAMES}).encode(), FORM, {"Content-Encoding": "br"}),
    ("POST", "", NAMES.encode(), "application/sparql-query", {"Content-Encoding": "identity"}),
]

# Headers that may differ between two runs of the same request.
VOLATILE_HEADERS = {"server-timing", "date"}


@pytest.fixture(scope="module")
def app(store_path: Path) -> Iterator[Flask]:
    # result_cache_mb=0: both paths really run each query (the cache has its own tests).
    with app_for(store_path, result_cache_mb=0) as application:
        yield application


def _send(client: Client, method: str, query_string: str, body: bytes,
          content_type: str | None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    response = client.open("/sparql", method=method, query_string=query_string, data=body,
                           content_type=content_type, headers=headers)
    fields = {k.lower(): v for k, v in response.headers.items()
              if k.lower() not in VOLATILE_HEADERS}
    return response.status_code, fields, response.get_data()


@pytest.mark.parametrize("request_", REQUESTS, ids=[f"{r[0]} {r[1][:40]} {r[3]}"
                                                     for r in REQUESTS])
def test_the_lean_route_answers_as_the_flask_view_does(app: Flask, request_: Any) -> None:
    lean = Client(app)  # app.wsgi_app: access log → lean route → Flask
    view = Client(lambda environ, start: Flask.wsgi_app(app, environ, start))  # Flask only
    got = _send(lean, *request_)
    expected = _send(view, *request_)
    assert got[0] == expected[0], (got, expected)
    assert got[2] == expected[2]
    assert got[1] == expected[1]


def test_the_lean_route_really_answers_plain_queries(app: Flask, monkeypatch: Any) -> None:
    # The Flask view is not reached for a plain GET or POST query …
    from sasci_kg.web import sparql

    seen: list[str] = []
    original = sparql.read_query_request

    def spy() -> Any:
        seen.append("view")
        return original()

    monkeypatch.setattr(sparql, "read_query_request", spy)
    client = app.test_client()
    assert client.get("/sparql", query_string={"query": NAMES}).status_code == 200
    assert client.post("/sparql", data={"query": NAMES}).status_code == 200
    assert client.post("/query", data=NAMES, content_type="application/sparql-query"
                       ).status_code == 200
    assert seen == []
    # … and is for a request it passes on.
    assert client.get("/sparql", headers={"Accept": "text/turtle"}).status_code == 200
    assert seen == ["view"]


def test_a_query_sent_alone_takes_every_default_without_looking_them_up(
        app: Flask, monkeypatch: Any) -> None:
    # Most requests send the query and nothing else: read() says so with one shared empty
    # object, and answer_query takes the defaults (timeout, no dataset, no format override)
    # without asking for each parameter. Any other parameter goes the whole way.
    from sasci_kg.web import fastpath, sparql

    lean = fastpath.QueryFastPath(app, app.wsgi_app)
    for method, query_string, body in (("GET", urlencode({"query": NAMES}), b""),
                                       ("POST", "", urlencode({"query": NAMES}).encode())):
        params, text = lean.read(method, query_string, sparql.FORM_URLENCODED, body.__bytes__)
        assert params is sparql.NO_OTHER_PARAMETERS and text == NAMES
    params, _ = lean.read("GET", urlencode({"query": NAMES, "timeout": "1"}), "", lambda: b"")
    assert params is not sparql.NO_OTHER_PARAMETERS and params["timeout"] == "1"
    looked: list[str] = []
    monkeypatch.setattr(sparql, "time_limit", lambda *a: looked.append("timeout") or 2.0)
    client = app.test_client()
    assert client.post("/sparql", data={"query": NAMES}).status_code == 200
    assert looked == [] and not sparql.NO_OTHER_PARAMETERS
    assert client.post("/sparql", data={"query": NAMES, "timeout": "1"}).status_code == 200
    assert looked == ["timeout"]


def test_get_answers_carry_an_etag_and_revalidate_with_304(fresh_store: Path) -> None:
    with app_for(fresh_store) as app:
        client = app.test_client()
        first = client.get("/sparql", query_string={"query": NAMES})
        etag = first.headers["ETag"]
        assert etag.startswith('"') and first.headers["Cache-Control"] == "no-cache"
        for condition in (etag, "W/" + etag, f'"other", {etag}', "*"):
            again = client.get("/sparql", query_string={"query": NAMES},
                               headers={"If-None-Match": condition})
            assert again.status_code == 304, condition
            assert again.get_data() == b""
            assert again.headers["ETag"] == etag and again.headers["Vary"] == "Accept"
        head = client.head("/sparql", query_string={"query": NAMES},
                           headers={"If-None-Match": etag})
        assert head.status_code == 304
        changed = client.get("/sparql", query_string={"query": NAMES},
                             headers={"If-None-Match": '"something-else"'})
        assert changed.status_code == 200 and changed.get_data() == first.get_data()
        # Another format is another representation, with another tag.
        csv = client.get("/sparql", query_string={"query": NAMES, "format": "csv"})
        assert csv.headers["ETag"] != etag
        # A POSTed query is not a representation of /sparql: no tag, no 304 (RFC 9110 §13.1.2).
        posted = client.post("/sparql", data={"query": NAMES}, headers={"If-None-Match": etag})
        assert posted.status_code == 200 and "ETag" not in posted.headers
        assert posted.get_data() == first.get_data()


def test_answers_are_kept_per_store_generation(fresh_store: Path, monkeypatch: Any) -> None:
    with app_for(fresh_store) as app:
        runtime = app.extensions["sasci_kg"]
        runs: list[str] = []
        pool = runtime.pool()
        original = pool.run

        def counting(job: Any, **kwargs: Any) -> Any:
            if hasattr(job, "sparql"):  # queries only (health checks ask for counts too)
                runs.append(job.sparql)
            return original(job, **kwargs)

        monkeypatch.setattr(pool, "run", counting)
        client = app.test_client()
        ask = "ASK { ?s schema:name 'Cyrus' }"
        assert client.get("/sparql", query_string={"query": ask}).json["boolean"] is False
        assert client.post("/sparql", data={"query": ask}).json["boolean"] is False
        assert client.get("/sparql", query_string={"query": ask}).json["boolean"] is False
        assert runs == [ask]  # once: the two repeats came from the cache
        assert runtime.results.stats()["hits"] == 2
        kept = client.get("/healthz").json["answer_cache"]
        assert kept["entries"] == 1 and kept["process"] == os.getpid()  # (one per process)
        # A load swaps a new store in: the kept answer is for the old one, and is not used.
        make_store(fresh_store, TRIG.replace('"Cy"', '"Cyrus"'))
        assert client.get("/sparql", query_string={"query": ask}).json["boolean"] is True
        assert runs == [ask, ask]


def test_volatile_queries_are_never_kept(fresh_store: Path) -> None:
    with app_for(fresh_store) as app:
        client = app.test_client()
        query = "SELECT (RAND() AS ?r) (STRUUID() AS ?u) WHERE {}"
        answers = {client.get("/sparql", query_string={"query": query}).get_data()
                   for _ in range(3)}
        assert len(answers) == 3
        assert app.extensions["sasci_kg"].results.stats()["entries"] == 0


def test_the_cache_can_be_switched_off(fresh_store: Path) -> None:
    with app_for(fresh_store, result_cache_mb=0) as app:
        client = app.test_client()
        for _ in range(2):
            assert client.get("/sparql", query_string={"query": NAMES}).status_code == 200
        assert app.extensions["sasci_kg"].results.stats()["entries"] == 0


def test_result_cache_keeps_within_its_budget() -> None:
    cache = ResultCache(max_bytes=100, max_entry_bytes=40)

    def answer(size: int) -> CachedAnswer:
        return CachedAnswer(b"x" * size, rows=1, seconds=0.0, etag=str(size))

    for key in range(5):
        cache.put((1, 1), key, answer(30))
    stats = cache.stats()
    assert stats["bytes"] <= 100 and stats["entries"] == 3
    assert cache.get((1, 1), 0) is None and cache.get((1, 1), 4) is not None  # oldest out
    cache.put((1, 1), "big", answer(41))  # over the per-answer bound: never kept
    assert cache.get((1, 1), "big") is None
    cache.put((2, 2), "new", answer(10))  # a new generation drops the old answers
    assert cache.get((1, 1), 4) is None and cache.stats()["entries"] == 1
    assert json.dumps(cache.stats())


def test_the_memo_of_checked_texts_is_bounded_by_their_characters_too() -> None:
    memo = SmallMemo(100, max_key_chars=25)
    for text in ("a" * 10, "b" * 10):
        memo.put(text, text.upper())
    assert memo.get("a" * 10) == "A" * 10 and memo.get("b" * 10) == "B" * 10
    memo.put("c" * 10, "C")  # 30 characters in all: emptied, then kept
    assert memo.get("a" * 10) is None and memo.get("c" * 10) == "C"
    counted = SmallMemo(2)
    for key in range(3):
        counted.put(key, key)
    assert counted.get(0) is None and counted.get(2) == 2


# ---------------------------------------------------------------------------------------
# Pages kept per store generation (web/page_cache.py).

PAGE = "/id/person/ada"  # a person of the test store (conftest.TRIG)


def test_pages_are_kept_per_generation_and_revalidate(fresh_store: Path,
                                                      monkeypatch: Any) -> None:
    with app_for(fresh_store) as app:
        from sasci_kg.web import resources

        pages = app.extensions["sasci_kg_pages"]
        jobs: list[Any] = []  # the descriptions the pages are made from
        original = resources.describe_resource
        monkeypatch.setattr(resources, "describe_resource",
                            lambda *a, **kw: jobs.append(a[1]) or original(*a, **kw))
        client = app.test_client()
        turtle = {"Accept": "text/turtle"}
        first = client.get(PAGE, headers=turtle)
        assert first.status_code == 200 and b"Ada Lovelace" in first.data
        ran = len(jobs)
        assert ran >= 1
        again = client.get(PAGE, headers=turtle)
        assert again.data == first.data and again.headers["ETag"] == first.headers["ETag"]
        assert again.headers["Content-Type"] == first.headers["Content-Type"]
        assert len(jobs) == ran  # from the cache: no query ran
        head = client.head(PAGE, headers=turtle)
        assert head.status_code == 200 and head.data == b"" and len(jobs) == ran
        not_modified = client.get(PAGE, headers={**turtle,
                                                 "If-None-Match": first.headers["ETag"]})
        assert not_modified.status_code == 304 and not_modified.data == b""
        assert not_modified.headers["ETag"] == first.headers["ETag"]
        html = client.get(PAGE, headers={"Accept": "text/html"})  # another representation
        assert html.mimetype == "text/html" and html.headers["ETag"] != first.headers["ETag"]
        assert pages.stats()["entries"] == 2
        # A missing page is answered once (not kept, not run twice) …
        before = len(jobs)
        assert client.get("/id/person/nobody", headers=turtle).status_code == 404
        missing_jobs = len(jobs) - before
        assert client.get("/id/person/nobody", headers=turtle).status_code == 404
        assert len(jobs) - before == 2 * missing_jobs
        # … and a load makes every kept page old.
        make_store(fresh_store, TRIG.replace("Ada Lovelace", "Ada King"))
        after = client.get(PAGE, headers=turtle)
        assert b"Ada King" in after.data and after.headers["ETag"] != first.headers["ETag"]


def test_the_form_decoder_agrees_with_urllib() -> None:
    # The lean route decodes %XX in C (binascii) where that gives urllib's answer, and hands
    # anything else to parse_qsl: the two must never disagree.
    import random
    from urllib.parse import parse_qsl, unquote_to_bytes

    from sasci_kg.web.fastpath import PassOn, _parse_form

    pieces = ["%", "a", "=", "&", "+", " ", "\r", "\n", "é", "%C3%A9", "%FF", "%2", "%zz",
              "%3D", "%3d", "%26", "%7B", "%7b", "query", "%0A", "%0d", "\t", "_", "=3D", "%%",
              "%3", "D", "%2 ", "% ", "%\t", "0", "f", "%e", "%C3", "%=", "%%%"]
    rng = random.Random(7)
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        expected = parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote")
        try:
            unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
        except UnicodeDecodeError:  # the Flask view refuses it (400): passed on
            with pytest.raises(PassOn):
                _parse_form(text)
            continue
        assert _parse_form(text) == expected, text
