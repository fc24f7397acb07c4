"""Connection tracing over HTTP on the real graph: /api/trace and /api/connections (JSON),
the /trace and /connections pages, the network picture and its downloads, the funders'
overview — the article's connections, with evidence; unknown and ambiguous names answered
with suggestions; everything a page needs served from this server only; every query run
in the killable query workers, so a runaway one is stopped there and the server goes on."""

from __future__ import annotations

import csv
import io
import json
import re
import resource
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import LiveServer, alive, app_for, run_live_server
from flask.testing import FlaskClient
from project import QUERIES, load_real_store

from sasci_kg import trace, trace_links
from sasci_kg.executor import WorkerPool
from sasci_kg.web import funders as funders_view

ID = "https://w3id.org/sasci-kg/id/"
SHAPE = "session/sasci-final-2024.shape-or-be-shaped"
SUSTAINING = "session/sasci-final-2024.sustaining-innovation-breakout"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_real_store(tmp_path_factory.mktemp("web-trace") / "store")


@pytest.fixture(scope="module")
def client(store_path: Path) -> Iterator[FlaskClient]:
    with app_for(store_path) as app:
        app.config["SASCI_KG_QUERIES_DIR"] = QUERIES
        yield app.test_client()


@pytest.fixture(scope="module")
def server(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The production server (gunicorn) on the real graph."""
    with run_live_server(store_path, tmp_path_factory.mktemp("web-trace-live")) as live:
        yield live


def refs(nodes: list[dict[str, Any]]) -> list[str]:
    return [n["ref"] for n in nodes]


def excerpts(path: dict[str, Any]) -> list[str]:
    return [x for step in path["steps"] for link in step["links"] for e in link["evidence"]
            for x in e["excerpts"]]


# -- the article's connections, over real HTTP -------------------------------------------

def test_equal_care_coop_meets_thurrock_in_shape_or_be_shaped(server: LiveServer) -> None:
    response = requests.get(server.url + "/api/trace", params={
        "from": "Equal Care Co-op", "to": "Thurrock Council"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    data = response.json()
    assert data["headline"] == ("Equal Care Co-op → Thurrock Council: 3 connections, the "
                                "shortest 2 links")
    first = data["paths"][0]
    assert refs(first["nodes"]) == ["org/equal-care-co-op", SHAPE, "org/thurrock-council"]
    assert first["explanation"] == (
        'Emma Back spoke for Equal Care Co-op in the breakout "Shape or Be Shaped", where '
        "Ceri Armstrong, Ian Wake and Les Billingham spoke for Thurrock Council.")
    assert any("Emma Back (Equal Care Co-op), along with Les Billingham" in x
               for x in excerpts(first))
    assert data["pages"]["from"] == "/id/org/equal-care-co-op"


def test_kings_college_meets_wcs_care_in_the_sustaining_breakout(server: LiveServer) -> None:
    data = requests.get(server.url + "/api/trace", params={
        "from": "King's College London", "to": "WCS Care"}, timeout=30).json()
    first = data["paths"][0]
    assert refs(first["nodes"]) == ["org/kings-college-london", SUSTAINING, "org/wcs-care"]
    assert first["explanation"].startswith("Ewan Ferlie chaired the breakout on sustaining "
                                           "innovation for King’s College London, where ")
    chair = first["steps"][0]["links"][0]
    assert (chair["kind"], chair["role"], chair["via"]) == ("represented", "chair",
                                                           "person/ewan-ferlie")
    assert chair["evidence"][0]["excerpts"]


def test_the_funder_reaches_a_participant_through_the_project_and_its_event(
        server: LiveServer) -> None:
    data = requests.get(server.url + "/api/trace", params={
        "from": "ESRC", "to": "Shared Lives Plus", "paths": "1"}, timeout=30).json()
    [first] = data["paths"]
    assert refs(first["nodes"])[:3] == ["org/esrc", "project/sasci", "event/sasci-final-2024"]
    assert refs(first["nodes"])[-1] == "org/shared-lives-plus"
    assert [s["kinds"][0] for s in first["steps"]] == ["funding", "hosting", "session",
                                                        "represented"]
    assert "funded by the Economic and Social Research Council (ESRC)" in excerpts(first)


def test_connections_over_http(server: LiveServer) -> None:
    data = requests.get(server.url + "/api/connections", params={
        "entity": "Equal Care Co-op", "hops": "2"}, timeout=30).json()
    [thurrock] = data["groups"]["organisations"]
    assert thurrock["ref"] == "org/thurrock-council" and thurrock["distance"] == 2
    assert [s["ref"] for s in thurrock["sessions"]] == [SHAPE]
    assert {p["ref"] for p in data["groups"]["people"]} == {
        "person/emma-back", "person/les-billingham", "person/ceri-armstrong", "person/ian-wake"}


# -- names that are not understood -------------------------------------------------------

def test_an_unknown_name_is_404_with_suggestions(client: FlaskClient) -> None:
    response = client.get("/api/trace?from=Juliete+Maley&to=WCS+Care")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["parameter"] == "from" and body["text"] == "Juliete Maley"
    assert body["suggestions"][0]["ref"] == "person/juliette-malley"
    assert body["suggestions"][0]["href"] == "/id/person/juliette-malley"
    assert body["type"].endswith("/problem/not-found")
    assert client.get("/api/connections?entity=xyzzy").status_code == 404


def test_an_ambiguous_name_is_400_with_the_candidates(client: FlaskClient) -> None:
    response = client.get("/api/trace?from=WCS+Care&to=Kings")
    assert response.status_code == 400
    body = response.get_json()
    assert body["parameter"] == "to" and body["title"] == "Ambiguous name"
    assert {s["ref"] for s in body["suggestions"]} == {"org/kings-fund",
                                                      "org/kings-college-london"}


@pytest.mark.parametrize(("query", "message"), [
    ("to=WCS", "the from parameter is missing"),
    ("from=ESRC&to=WCS&max_length=9", "max_length must be between 1 and 8"),
    ("from=ESRC&to=WCS&paths=0", "paths must be between 1 and 20"),
    ("from=ESRC&to=WCS&paths=two", "is not a whole number"),
    ("from=ESRC&to=WCS&links=friendship", "unknown link kind(s) friendship"),
    ("from=ESRC&to=WCS&timeout=-1", "not a positive number of seconds"),
    ("from=ESRC&to=Economic+and+Social+Research+Council", "the same entity"),
])
def test_bad_options_are_400(client: FlaskClient, query: str, message: str) -> None:
    response = client.get("/api/trace?" + query)
    assert response.status_code == 400
    assert message in response.get_json()["detail"]


def test_options_are_the_clis(client: FlaskClient) -> None:
    one = client.get("/api/trace?from=Equal+Care+Co-op&to=Thurrock+Council&paths=1").get_json()
    assert len(one["paths"]) == 1
    short = client.get("/api/trace?from=ESRC&to=Shared+Lives+Plus&max_length=3").get_json()
    assert short["paths"] == [] and short["complete"]
    assert short["headline"].endswith("within 3 links")
    kinds = client.get("/api/trace?from=Equal+Care+Co-op&to=Thurrock+Council&paths=1"
                       "&links=affiliation,role").get_json()
    assert {k for s in kinds["paths"][0]["steps"] for k in s["kinds"]} <= {"affiliation", "role"}
    assert kinds["links"] == ["affiliation", "role"]


# -- the pages -----------------------------------------------------------------------------

def test_the_trace_page_says_it_in_sentences_with_evidence_and_links(
        client: FlaskClient) -> None:
    response = client.get("/trace?from=Equal+Care+Co-op&to=Thurrock+Council", headers=HTML)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Equal Care Co-op → Thurrock Council: 3 connections, the shortest 2 links" in page
    assert ("Emma Back spoke for Equal Care Co-op in the breakout &#34;Shape or Be Shaped&#34;"
            in page)
    assert 'href="/id/org/equal-care-co-op"' in page and 'href="/id/org/thurrock-council"' in page
    assert "Emma Back (Equal Care Co-op), along with Les Billingham" in page
    assert 'href="/id/fact/shape-or-be-shaped.speaker.emma-back"' in page
    # The picture, inline, with the shortest connection marked.
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page
    highlight = re.search(r'<figure class="network" data-highlight="([^"]*)"', page)
    assert highlight is not None
    assert json.loads(highlight.group(1).replace("&#34;", '"')) == [
        "org/equal-care-co-op", SHAPE, "org/thurrock-council"]
    assert "/network?from=org%2Fequal-care-co-op&amp;to=org%2Fthurrock-council" in page


def test_the_trace_page_offers_the_suggestions_as_links(client: FlaskClient) -> None:
    response = client.get("/trace?from=Kings&to=Thurrock", headers=HTML)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Which one did you mean?" in page
    assert 'href="/trace?from=org%2Fkings-fund&amp;to=Thurrock"' in page
    assert 'href="/trace?from=org%2Fkings-college-london&amp;to=Thurrock"' in page
    unknown = client.get("/trace?from=WCS&to=Juliete+Maley", headers=HTML)
    assert unknown.status_code == 404
    assert 'href="/trace?from=WCS&amp;to=person%2Fjuliette-malley"' in unknown.get_data(
        as_text=True)


def test_an_empty_trace_page_is_a_form(client: FlaskClient) -> None:
    page = client.get("/trace", headers=HTML).get_data(as_text=True)
    assert '<form class="trace-form" method="get" action="/trace">' in page
    assert 'data-picker="organisation,funder,project,person,session,event"' in page
    assert client.get("/trace?from=ESRC", headers=HTML).status_code == 400


def test_the_connections_page(client: FlaskClient) -> None:
    response = client.get("/connections?entity=Equal+Care+Co-op", headers=HTML)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Equal Care Co-op (org/equal-care-co-op): within 2 links" in page
    assert 'href="/id/org/thurrock-council"' in page
    assert 'href="/trace?from=org/equal-care-co-op&amp;to=org/thurrock-council"' in page
    assert client.get("/connections?entity=Ewan", headers=HTML).status_code == 400


# -- the network ---------------------------------------------------------------------------

def test_the_network_page_is_the_packages_svg_made_interactive(client: FlaskClient) -> None:
    response = client.get("/network", headers=HTML)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert page.count('<g class="node') >= 40
    assert 'data-iri="https://w3id.org/sasci-kg/id/org/thurrock-council"' in page
    csp = response.headers["Content-Security-Policy"]
    # Everything from this server; the SVG's own styles admitted by hash, nothing else.
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "'sha256-" in csp
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert not url.startswith(("http:", "https:", "//")) or "creativecommons" in url, url


def test_the_network_marks_a_connection(client: FlaskClient) -> None:
    page = client.get("/network?from=ESRC&to=WCS+Care", headers=HTML).get_data(as_text=True)
    highlight = re.search(r'data-highlight="([^"]*)"', page)
    assert highlight is not None
    marked = json.loads(highlight.group(1).replace("&#34;", '"'))
    assert {"org/esrc", "project/sasci", "org/wcs-care"} <= set(marked)
    assert 'stroke="#C0392B"' in page  # drawn by the package, before any script runs
    assert client.get("/network?from=ESRC", headers=HTML).status_code == 400
    unknown = client.get("/network?from=ESRC&to=Nowhere+Trust", headers=HTML)
    assert unknown.status_code == 404
    assert "nothing in the graph is called" in unknown.get_data(as_text=True)


def test_the_network_downloads(client: FlaskClient) -> None:
    svg = client.get("/network.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    root = ET.fromstring(svg.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    graphml = client.get("/network.graphml")
    assert graphml.mimetype == "application/graphml+xml"
    assert "attachment" in graphml.headers["Content-Disposition"]
    nodes = ET.fromstring(graphml.data).findall(".//{http://graphml.graphdrawing.org/xmlns}node")
    assert len(nodes) >= 40
    gexf = client.get("/network.gexf")
    assert ET.fromstring(gexf.data).tag == "{http://gexf.net/1.3}gexf"
    rows = list(csv.DictReader(io.StringIO(client.get("/network.csv").get_data(as_text=True))))
    assert {"source", "target", "kind", "facts"} <= set(rows[0])
    assert any(r["source"] == "project/sasci" and r["target"] == "org/esrc" for r in rows)
    data = client.get("/network.json?around=WCS+Care&hops=1").get_json()
    assert {n["id"] for n in data["nodes"]} >= {"org/wcs-care", "person/jo-cheshire"}
    assert client.get("/network.pdf").status_code == 404
    assert client.get("/network.csv?hops=9").status_code == 400


# -- the funders' overview ---------------------------------------------------------------

def test_the_funders_page(client: FlaskClient) -> None:
    response = client.get("/funders", headers=HTML)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'href="/id/org/esrc"' in page and "funded by the Economic and Social Research " \
        "Council (ESRC)" in page
    for partner in ("Care Policy and Evaluation Centre", "King’s College London",
                    "University of York"):
        assert partner in page
    assert "Co-hosts are not partners of the project." in page
    assert 'href="/id/org/social-finance"' in page
    table = page.split('id="organisations"', 1)[1].split("</table>", 1)[0]
    assert table.count('data-ref="org/') >= 14
    assert 'href="/id/session/sasci-final-2024.shape-or-be-shaped"' in table
    assert '<select id="pick-from" name="from">' in page
    assert '<option value="org/thurrock-council">Thurrock Council</option>' in page
    assert page.count('<g class="node') >= 40


def test_a_network_too_large_to_draw_offers_to_draw_part_of_it(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big portfolio (10⁶ triples: ~40,000 links): the pages still answer, as HTML, and
    offer to draw around one entity; tools get a 400 problem that says the same."""
    monkeypatch.setattr(trace, "DEFAULT_NETWORK_LINKS", 20)
    with app_for(store_path) as app:
        client = app.test_client()
        network = client.get("/network", headers=HTML)
        assert network.status_code == 200 and network.mimetype == "text/html"
        page = network.get_data(as_text=True)
        assert "more than 20 links: too many to draw" in page
        assert 'class="trace-form around-form"' in page and 'name="around"' in page
        assert '<g class="node' not in page
        funders = client.get("/funders", headers=HTML)
        assert funders.status_code == 200
        page = funders.get_data(as_text=True)
        assert "more than 20 links: too many to draw" in page and 'name="around"' in page
        assert '<option value="org/thurrock-council">Thurrock Council</option>' in page
        monkeypatch.setattr(funders_view, "MAX_PRESENT_ORGANISATIONS", 5)
        short = client.get("/funders", headers=HTML).get_data(as_text=True)
        table = short.split('id="organisations"', 1)[1].split("</table>", 1)[0]
        assert table.count('<th scope="row"') == 5
        assert "The first 5 organisations by name;" in short and 'href="/search"' in short
        part = client.get("/network?around=WCS+Care&hops=1", headers=HTML)
        assert part.status_code == 200 and '<g class="node' in part.get_data(as_text=True)
        download = client.get("/network.svg")
        assert download.status_code == 400
        assert "too many to draw" in download.get_json()["detail"]


# -- every query in the killable query workers -------------------------------------------

# A query that runs for ever (a four-way cross product, counted before any row comes out).
RUNAWAY = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _replaced(pool: WorkerPool, old: list[int]) -> None:
    """Wait until the killed worker's replacement is up; check the killed one is gone."""
    for _ in range(100):
        if len(pool.pids()) == pool.size and pool.pids() != old:
            break
        time.sleep(0.05)
    gone = set(old) - set(pool.pids())
    assert len(gone) == 1 and len(pool.pids()) == pool.size, (old, pool.pids())
    assert not any(alive(pid) for pid in gone)


def test_a_runaway_hop_is_killed_in_its_worker_and_the_search_says_it_ran_out_of_time(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with app_for(store_path) as app:
        client = app.test_client()
        assert client.get("/api/trace?from=ESRC&to=WCS+Care").status_code == 200
        pool: WorkerPool = app.extensions["sasci_kg"].pool()
        workers = pool.pids()
        monkeypatch.setattr(trace_links, "frontier_query", lambda *a, **k: RUNAWAY)
        started, cpu = time.monotonic(), _cpu_seconds()
        response = client.get("/api/trace?from=ESRC&to=Shared+Lives+Plus&timeout=1")
        wall, cpu = time.monotonic() - started, _cpu_seconds() - cpu
        assert response.status_code == 200, response.get_data(as_text=True)
        found = response.get_json()
        # The answer of a search whose time ran out, as before the queries moved out.
        assert found["timed_out"] and not found["complete"] and found["paths"] == []
        assert found["headline"].startswith(
            "No connection found between Economic and Social Research Council and Shared "
            "Lives Plus in the time allowed")
        assert any("time limit" in note for note in found["notes"])
        assert 0.9 < wall < 4
        assert cpu < 0.5  # the hop ran, and was killed, in a worker: not in this process
        _replaced(pool, workers)
        monkeypatch.undo()
        again = client.get("/api/trace?from=ESRC&to=Shared+Lives+Plus").get_json()
        assert again["paths"] and again["complete"]


def test_a_runaway_query_outside_the_search_is_504_and_its_worker_replaced(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sasci_kg.trace as trace_module

    describe = trace_module.describe

    def runaway_describe(backend: Any, nodes: Any, facts: Any) -> Any:
        backend.query(RUNAWAY)
        return describe(backend, nodes, facts)

    with app_for(store_path) as app:
        client = app.test_client()
        assert client.get("/api/connections?entity=org/esrc&hops=1").status_code == 200
        pool: WorkerPool = app.extensions["sasci_kg"].pool()
        workers = pool.pids()
        monkeypatch.setattr(trace_module, "describe", runaway_describe)
        started, cpu = time.monotonic(), _cpu_seconds()
        response = client.get("/api/connections?entity=org/esrc&timeout=1")
        wall, cpu = time.monotonic() - started, _cpu_seconds() - cpu
        assert response.status_code == 504
        assert response.mimetype == "application/problem+json"
        problem = response.get_json()
        assert problem["limit_seconds"] == 1.0 and "did not finish within 1 s" in \
            problem["detail"]
        assert 0.9 < wall < 4 and cpu < 0.5
        _replaced(pool, workers)
        monkeypatch.undo()
        assert client.get("/api/connections?entity=org/esrc&hops=1").status_code == 200
        assert client.get("/funders", headers=HTML).status_code == 200
