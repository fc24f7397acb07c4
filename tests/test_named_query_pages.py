"""Named questions on the web: /queries lists every query of queries/, /queries/<name>
offers each as a form and answers it as HTML, JSON, CSV, TSV or XML; parameters are bound
as values (an injection attempt is inert), names resolve to IRIs, and the endpoint's query
workers run them: no process per question, and a run past the time limit is stopped with
its worker, which is replaced."""

from __future__ import annotations

import csv
import io
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import alive, app_for, descendants
from flask.testing import FlaskClient
from project import QUERIES, load_real_store

from sasci_kg.executor import WorkerPool
from sasci_kg.queries import list_queries

ID = "https://w3id.org/sasci-kg/id/"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
ALL = list_queries(QUERIES)

NEEDLE = """\
# title: Organisations whose name holds some words
# description: A literal parameter, for the injection tests.
# param: needle literal Part of the name
SELECT ?organisation ?name ?needle
WHERE {
  ?organisation a schema:Organization ; schema:name ?name .
  FILTER(CONTAINS(LCASE(?name), LCASE(?needle)))
}
ORDER BY ?name
"""
SLOW = """\
# title: A question that takes too long
SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }
"""
IS_FUNDED = """\
# title: Is the project funded?
# param: project iri The project
# default: project https://w3id.org/sasci-kg/id/project/sasci
ASK { ?project schema:funder ?funder }
"""


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_real_store(tmp_path_factory.mktemp("named") / "store")


@pytest.fixture(scope="module")
def client(store_path: Path) -> Iterator[FlaskClient]:
    with app_for(store_path) as app:
        app.config["SASCI_KG_QUERIES_DIR"] = QUERIES
        yield app.test_client()


@pytest.fixture(scope="module")
def extra(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    """An app whose queries folder also holds test-only questions."""
    folder = tmp_path_factory.mktemp("queries")
    for query in QUERIES.glob("*.rq"):
        (folder / query.name).write_text(query.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "needle.rq").write_text(NEEDLE, encoding="utf-8")
    (folder / "slow.rq").write_text(SLOW, encoding="utf-8")
    (folder / "is-funded.rq").write_text(IS_FUNDED, encoding="utf-8")
    with app_for(store_path) as app:
        app.config["SASCI_KG_QUERIES_DIR"] = folder
        yield app.test_client()


def rows(client: FlaskClient, url: str) -> list[dict[str, str]]:
    response = client.get(url, headers={"Accept": "application/sparql-results+json"})
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()
    return [{k: v["value"] for k, v in b.items()} for b in data["results"]["bindings"]]


# -- the list -------------------------------------------------------------------------------

def test_the_index_lists_every_named_query(client: FlaskClient) -> None:
    page = client.get("/queries", headers=HTML).get_data(as_text=True)
    for query in ALL:
        assert f'href="/queries/{query.name}"' in page
        assert query.title.replace("'", "&#39;") in page
    data = client.get("/queries?format=json").get_json()
    assert [q["name"] for q in data["queries"]] == [q.name for q in ALL]
    profile = next(q for q in data["queries"] if q["name"] == "person-profile")
    assert profile["parameters"] == [{"name": "person", "kind": "iri", "description":
                                      "The person", "default": ID + "person/juliette-malley"}]


def test_the_home_page_links_the_questions(client: FlaskClient) -> None:
    page = client.get("/", headers=HTML).get_data(as_text=True)
    header = page.split("</header>", 1)[0]
    assert 'href="/queries"' in header


@pytest.mark.parametrize("query", ALL, ids=[q.name for q in ALL])
def test_every_named_query_answers_as_a_page(client: FlaskClient, query: object) -> None:
    name = query.name  # type: ignore[attr-defined]
    response = client.get(f"/queries/{name}", headers=HTML)
    assert response.status_code == 200, response.get_data(as_text=True)
    page = response.get_data(as_text=True)
    assert '<table class="kg-table result-table">' in page
    assert re.search(r"[1-9]\d* rows? in ", page)


# -- answers and formats --------------------------------------------------------------------

def test_defaults_apply_and_a_name_resolves(client: FlaskClient) -> None:
    default = rows(client, "/queries/person-profile")
    assert {r["person"] for r in default} == {ID + "person/juliette-malley"}
    for value in ("Jenny Pitts", "person/jenny-pitts", "person:jenny-pitts",
                  ID + "person/jenny-pitts", f"<{ID}person/jenny-pitts>"):
        found = rows(client, "/queries/person-profile?person=" + value.replace(" ", "+"))
        assert found and {r["organisationName"] for r in found} == {
            "National Development Team for Inclusion"}, value


def test_an_empty_optional_parameter_answers_for_all(client: FlaskClient) -> None:
    every = rows(client, "/queries/quotes")
    one = rows(client, "/queries/quotes?speaker=Jenny+Pitts")
    assert len(every) == 4 and [r["speakerName"] for r in one] == ["Jenny Pitts"]
    assert "jump in the river" in one[0]["text"]


@pytest.mark.parametrize(("how", "media"), [
    ("format=csv", "text/csv"),
    ("format=tsv", "text/tab-separated-values"),
    ("format=xml", "application/sparql-results+xml"),
    ("format=json", "application/sparql-results+json"),
])
def test_formats(client: FlaskClient, how: str, media: str) -> None:
    response = client.get(f"/queries/funders?{how}")
    assert response.status_code == 200 and response.mimetype == media
    assert "Economic and Social Research Council" in response.get_data(as_text=True)


def test_accept_decides_without_format(client: FlaskClient) -> None:
    response = client.get("/queries/funders", headers={"Accept": "text/csv"})
    assert response.mimetype == "text/csv" and response.headers["Vary"] == "Accept"
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert table[0]["funderName"] == "Economic and Social Research Council"
    xml = client.get("/queries/funders", headers={"Accept": "application/sparql-results+xml"})
    assert ET.fromstring(xml.data).tag.endswith("sparql")
    assert client.get("/queries/funders", headers=HTML).mimetype == "text/html"
    assert client.get("/queries/funders").mimetype == "application/sparql-results+json"
    assert client.get("/queries/funders", headers={"Accept": "image/png"}).status_code == 406
    download = client.get("/queries/funders?format=csv&download=1")
    assert download.headers["Content-Disposition"] == 'attachment; filename="funders.csv"'


def test_the_page_is_a_form_with_pickers_and_a_linked_table(client: FlaskClient) -> None:
    response = client.get("/queries/person-profile?person=Jenny+Pitts", headers=HTML)
    page = response.get_data(as_text=True)
    assert '<form class="query-form" method="get" action="/queries/person-profile">' in page
    assert 'name="person" value="Jenny Pitts" list="f-person-options"' in page
    assert "data-picker" in page and '<datalist id="f-person-options">' in page
    assert 'Asking about <a class="entity" href="/id/person/jenny-pitts"' in page
    assert '<a class="entity" href="/id/person/jenny-pitts"' in page.split("<table", 1)[1]
    assert "format=csv&amp;download=1" in page
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_an_ask_question(extra: FlaskClient) -> None:
    assert extra.get("/queries/is-funded").get_json() == {"head": {}, "boolean": True}
    assert ">Yes<" in extra.get("/queries/is-funded", headers=HTML).get_data(as_text=True)


# -- safety --------------------------------------------------------------------------------

@pytest.mark.parametrize("attempt", [
    '") || true || ("',
    'x")) } UNION { ?organisation ?p ?name } #',
    "thurrock' } #",
    "\\u0022) || true",
])
def test_a_literal_injection_is_inert(extra: FlaskClient, attempt: str) -> None:
    assert len(rows(extra, "/queries/needle?needle=thurrock")) == 1
    assert len(rows(extra, "/queries/needle?needle=care")) > 3
    from urllib.parse import quote

    assert rows(extra, "/queries/needle?needle=" + quote(attempt)) == []


@pytest.mark.parametrize("attempt", [
    "https://w3id.org/sasci-kg/id/person/x> } UNION { ?person ?p ?o } #",
    "x> . ?fact ?p ?o",
    "<https://example.org/a> } #",
])
def test_an_iri_injection_is_refused(client: FlaskClient, attempt: str) -> None:
    from urllib.parse import quote

    response = client.get("/queries/person-profile?person=" + quote(attempt))
    assert response.status_code in (400, 404), response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize(("url", "status", "message"), [
    ("/queries/no-such-question", 404, "no named query 'no-such-question'"),
    ("/queries/..%2Fetc", 404, "nothing at"),
    ("/queries/Funders", 404, "no named query"),
    ("/queries/funders?project=x", 400, "has no parameter 'project'"),
    ("/queries/person-profile?person=a&person=b", 400, "given 2 times"),
    ("/queries/person-profile?person=Ewan", 400, "matches 2 entities"),
    ("/queries/person-profile?person=Juliete+Maley", 404, "nothing in the graph"),
    ("/queries/funders?timeout=soon", 400, "not a positive number"),
])
def test_errors_are_problems(client: FlaskClient, url: str, status: int, message: str) -> None:
    response = client.get(url)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert message in response.get_json()["detail"]


def test_the_page_offers_suggestions_for_a_name_it_cannot_place(client: FlaskClient) -> None:
    response = client.get("/queries/person-profile?person=Ewan", headers=HTML)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'href="/queries/person-profile?person=person%2Fewan-ferlie"' in page
    assert 'href="/queries/person-profile?person=person%2Fewan-king"' in page


def _workers(client: FlaskClient) -> WorkerPool:
    pool: WorkerPool = client.application.extensions["sasci_kg"].pool()
    return pool


def test_questions_run_in_the_query_workers(extra: FlaskClient,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each question is one job of the endpoint's workers, its parameters bound in its text
    as a VALUES block; no process is started for it."""
    # (The pool starts here; a page of its own, since pages are kept per store generation.)
    assert extra.get("/queries/funders?format=json").status_code == 200
    pool = _workers(extra)
    workers = pool.pids()
    jobs: list[Any] = []
    run = pool.run

    def counted(job: Any, **options: Any) -> Any:
        jobs.append(job)
        return run(job, **options)

    monkeypatch.setattr(pool, "run", counted)
    before = set(descendants(os.getpid()))
    asked = [("/queries/funders", HTML, "text/html"),
             ("/queries/person-profile?person=Jenny+Pitts", HTML, "text/html"),
             ("/queries/quotes?speaker=person/jenny-pitts&format=csv", {}, "text/csv"),
             ("/queries/needle?needle=care&format=tsv", {}, "text/tab-separated-values"),
             ("/queries/is-funded?project=project/sasci", {},
              "application/sparql-results+json")]
    for url, accept, media in asked:
        response = extra.get(url, headers=accept)
        assert response.status_code == 200 and response.mimetype == media, url
    assert len(jobs) == len(asked)
    assert f"VALUES ?person {{ <{ID}person/jenny-pitts> }}" in jobs[1].sparql
    assert 'VALUES ?needle { "care" }' in jobs[3].sparql
    assert [job.media_type for job in jobs] == [
        "application/sparql-results+json", "application/sparql-results+json", "text/csv",
        "text/tab-separated-values", "application/sparql-results+json"]
    assert f"VALUES ?project {{ <{ID}project/sasci> }}" in jobs[4].sparql
    assert set(descendants(os.getpid())) <= before
    assert pool.pids() == workers


def test_a_slow_question_is_stopped_at_the_time_limit(extra: FlaskClient) -> None:
    assert extra.get("/queries/funders").status_code == 200
    pool = _workers(extra)
    workers = pool.pids()
    started = time.monotonic()
    response = extra.get("/queries/slow?timeout=1")
    assert response.status_code == 504
    assert response.get_json()["limit_seconds"] == 1.0
    assert time.monotonic() - started < 5
    # The worker that ran it was killed (the CPU is free at once) and replaced.
    for _ in range(100):
        if len(pool.pids()) == pool.size and pool.pids() != workers:
            break
        time.sleep(0.05)
    assert len(set(workers) - set(pool.pids())) == 1 and len(pool.pids()) == pool.size
    assert not any(alive(p) for p in set(workers) - set(pool.pids()))
    # And the next one runs (a question no test has asked: pages are kept per generation).
    assert rows(extra, "/queries/person-profile?person=person/adam-lent")
