"""Full-text search on the real graph: an SQLite FTS5 index built from the store, ranked
(whole names first), forgiving (case, accents, apostrophes, acronyms, word starts), quotes
found by their words; and /search over HTTP, as JSON for scripts and a page for people."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import app_for
from flask.testing import FlaskClient
from project import QUERIES, load_real_store

from sasci_kg.errors import QueryError
from sasci_kg.search import SearchIndex, build_search_index, make_snippet
from sasci_kg.store import OxigraphBackend, open_store

ID = "https://w3id.org/sasci-kg/id/"
JENNY_QUOTE = ID + "quote/jenny-pitts.jump-in-the-river"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_real_store(tmp_path_factory.mktemp("search") / "store")


@pytest.fixture(scope="module")
def backend(store_path: Path) -> OxigraphBackend:
    return open_store(store_path)


@pytest.fixture(scope="module")
def index(backend: OxigraphBackend, tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    return build_search_index(backend, tmp_path_factory.mktemp("index") / "search.sqlite")


@pytest.fixture(scope="module")
def client(store_path: Path) -> Iterator[FlaskClient]:
    with app_for(store_path) as app:
        app.config["SASCI_KG_QUERIES_DIR"] = QUERIES
        yield app.test_client()


def refs(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.ref for h in hits]


def test_the_index_is_a_real_fts5_index(index: SearchIndex) -> None:
    with sqlite3.connect(index.path) as connection:
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        [(sql,)] = connection.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'docs_fts'").fetchall()
    assert "docs_fts" in tables and "USING fts5" in sql
    assert len(index) > 100  # people, organisations, sessions, ideas, quotes, claims


def test_thurrock_finds_thurrock_council_first(index: SearchIndex) -> None:
    assert refs(index.search("Thurrock"))[0] == "org/thurrock-council"
    assert refs(index.search("thur"))[0] == "org/thurrock-council"  # as it is typed


def test_a_quote_is_found_by_its_words(index: SearchIndex) -> None:
    [first, *_] = index.search("jump in the river")
    assert first.iri == JENNY_QUOTE and first.kind == "quote"
    assert first.about == (ID + "person/jenny-pitts", "Jenny Pitts")
    assert first.matched == "text"
    assert [part for part, hit in first.snippet if hit] == ["jump", "in", "river"]
    assert "Just be prepared to jump in the river" in first.snippet_text


@pytest.mark.parametrize(("typed", "ref"), [
    ("ESRC", "org/esrc"),
    ("KCL", "org/kings-college-london"),
    ("Kings College", "org/kings-college-london"),
    ("King’s College London", "org/kings-college-london"),
    ("ÉQUAL CARE", "org/equal-care-co-op"),
    ("Dr Juliette Malley", "person/juliette-malley"),
    ("Shape or be shaped", "session/sasci-final-2024.shape-or-be-shaped"),
    ("frugal", "concept/frugal-innovation"),
])
def test_names_are_found_forgivingly_and_ranked_first(index: SearchIndex, typed: str,
                                                      ref: str) -> None:
    assert refs(index.search(typed))[0] == ref


def test_a_person_comes_before_what_they_said(index: SearchIndex) -> None:
    hits = index.search("Juliette Malley", limit=20)
    assert hits[0].ref == "person/juliette-malley"
    said = [h for h in hits if h.kind in ("quote", "claim")]
    assert said and all(h.matched == "speaker" for h in said)


def test_kinds_filter_and_limit(index: SearchIndex) -> None:
    hits = index.search("innovation", kinds=["idea"], limit=3)
    assert len(hits) == 3 and {h.kind for h in hits} == {"idea"}
    assert all(h.kind == "organisation" for h in index.search("care", kinds=["organisation"]))


def test_any_word_will_do_when_no_entry_has_them_all(index: SearchIndex) -> None:
    assert "org/thurrock-council" in refs(index.search("Thurrock zebra"))


def test_query_syntax_is_never_fts_syntax(index: SearchIndex) -> None:
    for text in ['"', "NEAR(a b)", "thurrock OR", "*", "a:b", "') DROP TABLE docs; --",
                 "^council"]:
        index.search(text)  # no sqlite3.OperationalError
    assert index.search("   ") == [] and index.search("!!!") == []
    with pytest.raises(QueryError, match="kind: unknown kind"):
        index.search("x", kinds=["planet"])
    with pytest.raises(QueryError, match="longer than"):
        index.search("x" * 1000)


def test_snippets_cut_around_the_first_match() -> None:
    text = " ".join(f"w{i}" for i in range(100)) + " river " + "end"
    parts = make_snippet(text, ["river"], width=10)
    assert parts[0] == ("…", False) or parts[0][0].startswith("…")
    assert ("river", True) in parts


# -- over HTTP --------------------------------------------------------------------------

def test_search_json(client: FlaskClient) -> None:
    response = client.get("/search?q=Thurrock")
    assert response.status_code == 200 and response.mimetype == "application/json"
    first = response.get_json()["hits"][0]
    assert first["ref"] == "org/thurrock-council" and first["label"] == "Thurrock Council"
    quote = client.get("/search?q=jump+in+the+river&format=json").get_json()["hits"][0]
    assert quote["iri"] == JENNY_QUOTE and quote["about"]["label"] == "Jenny Pitts"
    assert "jump in the river" in quote["snippet"]
    only = client.get("/search?q=care&kind=person,organisation&limit=2").get_json()
    assert only["count"] <= 2 and {h["kind"] for h in only["hits"]} <= {"person", "organisation"}


def test_search_page(client: FlaskClient) -> None:
    response = client.get("/search?q=jump+in+the+river", headers={"Accept": "text/html"})
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert '<a class="entity kind-quote" href="/id/quote/jenny-pitts.jump-in-the-river"' in page
    assert "<mark>jump</mark>" in page and "Jenny Pitts" in page
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(("url", "status"), [
    ("/search?q=x&kind=planet", 400),
    ("/search?q=x&limit=0", 400),
    ("/search?q=x&limit=many", 400),
    ("/search?q=x&format=pdf", 406),
])
def test_search_errors_are_problems(client: FlaskClient, url: str, status: int) -> None:
    response = client.get(url)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"


def test_the_index_follows_the_store_generation(tmp_path: Path) -> None:
    """A rebuilt store is never searched with the old index."""
    import pyoxigraph as ox

    from sasci_kg.store import LoadInput, load_store

    def load(name: str) -> None:
        data = (f"<{ID}org/x> a <https://schema.org/Organization> ; "
                f"<https://schema.org/name> \"{name}\" .").encode()
        load_store(tmp_path / "store", [LoadInput(format=ox.RdfFormat.TURTLE, data=data,
                                                  graph=ID + "graph")])

    load("Zanzibar Trust")
    with app_for(tmp_path / "store") as app:
        client = app.test_client()
        assert client.get("/search?q=zanzibar").get_json()["count"] == 1
        load("Quixote Foundation")
        assert client.get("/search?q=zanzibar").get_json()["count"] == 0
        assert client.get("/search?q=quixote").get_json()["hits"][0]["label"] == \
            "Quixote Foundation"
