"""The HTML query page (``sasci_kg.web.ui``) through Flask's test client: the page, its
named-query examples, share and download links, and its static files, all offline."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sasci_kg.vocab import BASE, PREFIXES
from sasci_kg.web import ui

WHO_SPOKE = """\
# title: Who spoke in which session?
# description: Every speaker, with the session & their organisation.
# param: session iri The session to ask about
SELECT ?person ?session WHERE {
  ?session schema:performer ?person .
}
"""

COUNT = """\
# title: How many things of each type?
# description: A census of the graph by rdf:type.
SELECT ?type (COUNT(*) AS ?n) WHERE { ?s a ?type } GROUP BY ?type
"""


@pytest.fixture
def queries_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / "who-spoke.rq").write_text(WHO_SPOKE, encoding="utf-8")
    (folder / "count-types.rq").write_text(COUNT, encoding="utf-8")
    return folder


def make_app(queries_dir: Path) -> Flask:
    app = Flask("ui-test")
    app.config.update(TESTING=True, SASCI_KG_QUERIES_DIR=queries_dir)
    app.register_blueprint(ui.bp)
    return app


@pytest.fixture
def client(queries_dir: Path) -> FlaskClient:
    return make_app(queries_dir).test_client()


class _Collector(HTMLParser):
    """Every tag with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = {}
        self._capture: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if attributes.get("id") in ("query", "sasci-config"):
            self._capture = attributes["id"]
            self.text[self._capture] = ""

    def handle_endtag(self, tag: str) -> None:
        self._capture = None

    def handle_data(self, data: str) -> None:
        if self._capture:
            self.text[self._capture] += data


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    return collector


def page_config(html: str) -> dict[str, Any]:
    return json.loads(parse(html).text["sasci-config"])


def test_page_is_served(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "<title>SPARQL query" in html
    assert 'for="query"' in html  # the editor has a label
    assert client.head("/").status_code == 200


def test_csp_forbids_anything_from_elsewhere(client: FlaskClient) -> None:
    csp = client.get("/").headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    for directive in ("script-src", "style-src", "connect-src"):
        assert f"{directive} 'self'" in csp


def test_no_external_urls_in_page_or_assets(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    collector = parse(html)
    assets = []
    for tag, attrs in collector.tags:
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (tag, name, value)
        if tag == "script" and attrs.get("src"):
            assets.append(attrs["src"])
        if tag == "link" and attrs.get("rel") == "stylesheet":
            assets.append(attrs["href"])
    assert len(assets) == 2
    for url in assets:
        with client.get(url) as response:
            body = response.get_data(as_text=True)
        assert "http://" not in body and "https://" not in body, url
        assert "@import" not in body and "url(" not in body, url
    # IRIs do appear in the page, but only as data: the prefix table and the config.
    assert "https://schema.org/" in html


def test_named_queries_are_listed(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    assert "Who spoke in which session?" in html
    assert "Every speaker, with the session &amp; their organisation." in html
    assert "How many things of each type?" in html
    assert "The session to ask about" in html
    examples = [
        a for tag, a in parse(html).tags if tag == "a" and "example" in (a.get("class") or "")
    ]
    assert [a["data-name"] for a in examples] == ["count-types", "who-spoke"]
    # Each example is a real link that fills the editor, even without JavaScript.
    query = parse_qs(urlsplit(examples[1]["href"]).query)["query"][0]
    assert query == WHO_SPOKE


def test_default_prefixes_are_listed(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    assert "<details" in html and "Default prefixes" in html
    for prefix, namespace in PREFIXES.items():
        assert f"<code>{prefix}:</code>" in html
        assert f"<code>{namespace}</code>" in html


def test_page_config(client: FlaskClient) -> None:
    config = page_config(client.get("/").get_data(as_text=True))
    assert config["endpoint"] == "/sparql"
    assert config["root"] == "/"
    assert config["base"] == BASE
    assert config["prefixes"] == PREFIXES
    assert [f["key"] for f in config["formats"]] == [
        "json", "xml", "csv", "tsv", "ttl", "nt", "nq", "trig", "jsonld", "rdfxml"
    ]
    assert config["autorun"] is False


def test_shared_link_fills_the_editor_and_keeps_the_format(client: FlaskClient) -> None:
    query = 'CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p "<b>&" }'
    response = client.get("/", query_string={"query": query, "format": "ttl"})
    html = response.get_data(as_text=True)
    collector = parse(html)
    # Browsers drop the one newline written after <textarea> (html.parser keeps it).
    assert collector.text["query"] == "\n" + query
    assert '<option value="ttl" selected>' in html
    assert page_config(html)["autorun"] is True
    share = next(a for tag, a in collector.tags if a.get("id") == "share-url")["value"]
    assert share is not None
    params = parse_qs(urlsplit(share).query)
    assert params == {"query": [query], "format": ["ttl"]}


def test_unknown_format_is_ignored(client: FlaskClient) -> None:
    html = client.get("/?query=ASK%7B%7D&format=exe").get_data(as_text=True)
    assert " selected>" in html
    assert re.search(r'<option value=""\s+selected>', html)


def test_download_links_for_every_format(client: FlaskClient) -> None:
    query = "SELECT * WHERE { ?s ?p ?o } LIMIT 1"
    html = client.get("/", query_string={"query": query}).get_data(as_text=True)
    links = {
        a["data-format"]: a["href"]
        for tag, a in parse(html).tags
        if tag == "a" and "download" in (a.get("class") or "")
    }
    assert set(links) == {f.key for f in ui.FORMATS}
    for key, href in links.items():
        url = urlsplit(href)
        assert url.path == "/sparql"
        assert parse_qs(url.query) == {"query": [query], "format": [key], "download": ["1"]}


def test_static_files_are_cached_by_fingerprint(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    script = next(a["src"] for tag, a in parse(html).tags if tag == "script" and a.get("src"))
    assert script.startswith("/ui/static/query-page.js?v=")
    with client.get(script) as response:
        assert response.status_code == 200
        assert response.mimetype in ("text/javascript", "application/javascript")
        assert response.cache_control.max_age == 365 * 24 * 3600
        assert response.cache_control.immutable
    with client.get("/ui/static/query-page.css") as css:
        assert css.status_code == 200 and css.mimetype == "text/css"
        # Without the current fingerprint: revalidate every time, by ETag.
        assert css.cache_control.no_cache or css.cache_control.max_age == 0
        etag = css.headers["ETag"]
    with client.get("/ui/static/query-page.css", headers={"If-None-Match": etag}) as again:
        assert again.status_code == 304
    with client.get("/ui/static/query-page.css?v=000000000000") as stale:
        assert not stale.cache_control.immutable


@pytest.mark.parametrize(
    "path", ["/ui/static/nope.js", "/ui/static/../ui.py", "/ui/static/%2e%2e/ui.py"]
)
def test_static_files_outside_the_folder_are_not_found(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_missing_queries_directory_still_serves_the_page(tmp_path: Path) -> None:
    client = make_app(tmp_path / "absent").test_client()
    response = client.get("/")
    assert response.status_code == 200
    assert "No named queries found" in response.get_data(as_text=True)


def test_broken_query_file_is_reported_on_the_page(queries_dir: Path) -> None:
    (queries_dir / "broken.rq").write_text("SELECT * WHERE { ?s ?p ?o }\n", encoding="utf-8")
    response = make_app(queries_dir).test_client().get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "The named queries could not be read" in html
    assert "broken.rq" in html and "title" in html


def test_queries_dir_defaults_to_queries_in_the_cwd(
    queries_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(queries_dir.parent)
    app = Flask("ui-test-default")
    app.register_blueprint(ui.bp)
    html = app.test_client().get("/").get_data(as_text=True)
    assert "Who spoke in which session?" in html


def test_paths_follow_the_script_root(client: FlaskClient) -> None:
    html = client.get("/", base_url="http://localhost/kg/").get_data(as_text=True)
    config = page_config(html)
    assert config["endpoint"] == "/kg/sparql"
    assert config["root"] == "/kg/"
    assert 'src="/kg/ui/static/query-page.js?v=' in html
    assert "http://localhost/kg/sparql" in html  # the endpoint address shown to copy


def test_the_repository_queries_render(client: FlaskClient) -> None:
    """Every named query shipped in ``queries/`` appears on the page with its title."""
    from sasci_kg.queries import list_queries

    shipped = Path(__file__).resolve().parent.parent / "queries"
    queries = list_queries(shipped)
    if not queries:
        pytest.skip("no named queries in queries/ yet")
    html = make_app(shipped).test_client().get("/").get_data(as_text=True)
    for query in queries:
        assert f'data-name="{query.name}"' in html


def test_create_app_serves_the_page(queries_dir: Path, tmp_path: Path) -> None:
    """The real app registers the page, and a browser asking /sparql for HTML lands on it."""
    import pyoxigraph as ox

    from sasci_kg.store import LoadInput, load_store
    from sasci_kg.web import close_app, create_app, load_config

    store = tmp_path / "store"
    data = f"<{BASE}id/person/a> <https://schema.org/name> \"A\" .\n".encode()
    load_store(store, [LoadInput(format=ox.RdfFormat.N_TRIPLES, data=data, graph=BASE + "graph/t")])
    app = create_app(load_config({"store": store, "query_workers": 1}, environ={}))
    try:
        app.config["SASCI_KG_QUERIES_DIR"] = queries_dir
        assert "ui" in app.blueprints
        client = app.test_client()
        page = client.get("/")
        assert page.status_code == 200 and "Who spoke in which session?" in page.text
        browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        found = client.get("/sparql", headers={"Accept": browser_accept})
        assert found.status_code == 303 and found.headers["Location"] == "/"
    finally:
        close_app(app)
