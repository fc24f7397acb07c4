"""Linked data on the real graph: every IRI under the base resolves, with Cool-URIs content
negotiation, pages with provenance, retired IRIs (301/410), downloads and the JSON-LD context."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pyoxigraph as ox
import pytest
import rdflib
from conftest import app_for
from flask import Flask
from flask.testing import FlaskClient
from project import DATA, ONTOLOGY, SOURCES, built_dataset, load_real_store

from sasci_kg.build import build_dataset, load_inputs
from sasci_kg.errors import FactsError
from sasci_kg.export import JSONLD_CONTEXT, gzip_bytes, serialize_quads
from sasci_kg.store import load_store
from sasci_kg.vocab import BASE
from sasci_kg.void import DOWNLOADS, META_GRAPH, data_quads, normalise

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
PERSON = BASE + "id/person/adam-lent"
RDF_TYPES = {
    "text/turtle": ox.RdfFormat.TURTLE,
    "application/ld+json": ox.RdfFormat.JSON_LD,
    "application/n-triples": ox.RdfFormat.N_TRIPLES,
    "application/rdf+xml": ox.RdfFormat.RDF_XML,
    "application/trig": ox.RdfFormat.TRIG,
    "application/n-quads": ox.RdfFormat.N_QUADS,
}
EXTENSIONS = {"ttl": "text/turtle", "jsonld": "application/ld+json",
              "nt": "application/n-triples", "rdf": "application/rdf+xml",
              "trig": "application/trig", "nq": "application/n-quads"}
# (local path, canonical IRI it stands for, an IRI its data must mention)
ROUTES = [
    ("/id/person/adam-lent", PERSON, PERSON),
    ("/id/fact/sasci.funder.esrc", BASE + "id/fact/sasci.funder.esrc", BASE + "id/org/esrc"),
    ("/vocab/role/chair", BASE + "vocab/role/chair", BASE + "id/scheme/role"),
    ("/id/scheme/role", BASE + "id/scheme/role", BASE + "vocab/role/chair"),
    ("/graph/source/sasci-final-event", BASE + "graph/source/sasci-final-event", PERSON),
    ("/def", BASE + "def", BASE + "def#Session"),
    ("/.well-known/void", META_GRAPH.value, BASE + "id/dataset/sasci-kg"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    store = load_real_store(tmp_path_factory.mktemp("ld") / "store")
    with app_for(store, query_workers=1) as application:
        yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def parse(body: bytes, media_type: str) -> set[ox.Quad]:
    return set(ox.parse(body, format=RDF_TYPES[media_type], base_iri=BASE))


def mentioned(quads: set[ox.Quad]) -> set[str]:
    return {t.value for q in quads for t in (q.subject, q.object, q.graph_name)
            if isinstance(t, ox.NamedNode)}


# ---------------------------------------------------------------------------------------
# Content negotiation on every route


@pytest.mark.parametrize("media_type", list(RDF_TYPES))
@pytest.mark.parametrize(("path", "iri", "expected"), ROUTES, ids=[r[0] for r in ROUTES])
def test_accept_gives_each_rdf_type(client: FlaskClient, path: str, iri: str, expected: str,
                                    media_type: str) -> None:
    response = client.get(path, headers={"Accept": media_type})
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == media_type
    assert response.headers["Vary"] == "Accept"
    ext = next(e for e, m in EXTENSIONS.items() if m == media_type)
    assert response.headers["Content-Location"] == f"{path}.{ext}"
    links = response.headers["Link"]
    for e, m in EXTENSIONS.items():
        assert f'<{path}.{e}>; rel="alternate"; type="{m}"' in links
    assert f'<{path}.html>; rel="alternate"; type="text/html"' in links
    quads = parse(response.data, media_type)
    assert expected in mentioned(quads)
    # The RDF keeps the canonical IRIs: nothing points at this server.
    assert not any(i.startswith("http://localhost") for i in mentioned(quads))


@pytest.mark.parametrize(("path", "iri", "expected"), ROUTES, ids=[r[0] for r in ROUTES])
def test_extensions_browsers_and_no_preference(client: FlaskClient, path: str, iri: str,
                                               expected: str) -> None:
    for ext, media_type in EXTENSIONS.items():
        response = client.get(f"{path}.{ext}")
        assert response.status_code == 200 and response.mimetype == media_type, (ext, path)
        assert "Vary" not in response.headers
        assert expected in mentioned(parse(response.data, media_type))
    page = client.get(path, headers={"Accept": BROWSER})
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Location"] == f"{path}.html"
    assert client.get(f"{path}.html").mimetype == "text/html"
    plain = client.get(path)  # no Accept: Turtle, as for curl
    assert plain.mimetype == "text/turtle"
    assert client.get(path, headers={"Accept": "*/*"}).mimetype == "text/turtle"
    assert client.get(path + "?format=jsonld").mimetype == "application/ld+json"


def test_unacceptable_type_is_406_problem(client: FlaskClient) -> None:
    response = client.get("/id/person/adam-lent", headers={"Accept": "image/png"})
    assert response.status_code == 406
    assert response.mimetype == "application/problem+json"
    assert "text/turtle" in response.get_json()["offered"]


def test_head_etag_and_304(client: FlaskClient) -> None:
    full = client.get("/id/person/adam-lent.ttl")
    head = client.head("/id/person/adam-lent.ttl")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(full.data))
    etag = full.headers["ETag"]
    again = client.get("/id/person/adam-lent.ttl", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""


# ---------------------------------------------------------------------------------------
# Unknown and malformed IRIs


def test_unknown_iri_is_404_page_or_problem(client: FlaskClient) -> None:
    problem = client.get("/id/person/nobody-at-all")
    assert problem.status_code == 404 and problem.mimetype == "application/problem+json"
    assert problem.get_json()["iri"] == BASE + "id/person/nobody-at-all"
    page = client.get("/id/person/nobody-at-all", headers={"Accept": BROWSER})
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Nothing is known" in page.get_data(as_text=True)
    assert client.get("/graph/nothing-here").status_code == 404
    assert client.get("/def/9.9.9").status_code == 404
    assert client.get("/.well-known/void.exe").status_code == 404


@pytest.mark.parametrize("path", [
    "/id/person/a%20b",
    "/id/person/x%3E%20%3Fp%20%3Fo%20%7D%20UNION%20%7B%20%3Fs",
    "/id/person/%00",
    "/id/person/%22%3E",
    "/id/person/x%0ASELECT",
    "/vocab/role/%7Bchair%7D",
    "/graph/%3Chttp://example.org/%3E",
])
def test_bad_paths_are_404_and_never_reach_sparql(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, response.data[:300]
    assert response.mimetype == "application/problem+json"


def test_problem_types_resolve(client: FlaskClient) -> None:
    problem = client.get("/id/person/nobody-at-all").get_json()
    assert problem["type"] == BASE + "problem/not-found"
    page = client.get("/problem/not-found", headers={"Accept": BROWSER})
    assert page.status_code == 200
    assert '<strong class="status">404</strong>' in page.get_data(as_text=True)
    assert client.get("/problem/syntax-error").status_code == 200
    assert client.get("/problem/no-such-thing").status_code == 404


def test_vocabulary_namespace_goes_to_its_scheme(client: FlaskClient) -> None:
    response = client.get("/vocab/role")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/id/scheme/role")


def test_mounted_under_a_prefix_links_follow(client: FlaskClient) -> None:
    page = client.get("/id/person/adam-lent", headers={"Accept": BROWSER},
                      environ_overrides={"SCRIPT_NAME": "/kg"})
    html = page.get_data(as_text=True)
    hrefs = re.findall(r'href="([^"]+)"', html)
    ours = [h for h in hrefs if "/id/" in h or "/vocab/" in h or "/graph/" in h]
    assert ours and all(h.startswith("/kg/") for h in ours), ours[:5]
    assert not any(h.startswith(BASE) for h in hrefs)
    assert page.headers["Content-Location"] == "/kg/id/person/adam-lent.html"
    data = client.get("/id/person/adam-lent.nt", environ_overrides={"SCRIPT_NAME": "/kg"})
    assert f"<{PERSON}>".encode() in data.data  # the data keeps the canonical IRIs


# ---------------------------------------------------------------------------------------
# Pages: what a person, an organisation and a fact show


def page(client: FlaskClient, path: str) -> str:
    response = client.get(path, headers={"Accept": BROWSER})
    assert response.status_code == 200
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    return response.get_data(as_text=True)


def section(html: str, key: str) -> str:
    match = re.search(rf'<section class="aspect aspect-{key}" id="{key}">(.*?)</section>',
                      html, re.S)
    assert match, f"no section {key}"
    return match.group(1)


def test_person_page(client: FlaskClient) -> None:
    html = page(client, "/id/person/juliette-malley")
    assert "<h1 class=\"resource-title\">Juliette Malley</h1>" in html
    assert 'href="/id/session/sasci-final-2024.' in section(html, "person-roles")
    assert "Sessions" in section(html, "person-sessions")
    assert 'href="/id/org/cpec"' in section(html, "person-organisations")
    assert "person-quotes" in html
    assert 'class="graph-mark"' in html  # which graph each statement lives in
    adam = page(client, "/id/person/adam-lent")
    quotes = section(adam, "person-quotes")
    assert "through a collaborative approach, forcing change from below" in quotes
    assert "Opening panel" in section(adam, "person-sessions")


def test_organisation_and_project_pages(client: FlaskClient) -> None:
    esrc = page(client, "/id/org/esrc")
    assert 'href="/id/project/sasci"' in section(esrc, "organisation-funding")
    sasci = page(client, "/id/project/sasci")
    partnerships = section(sasci, "organisation-partnerships")
    assert 'href="/id/org/cpec"' in partnerships and "lead partner" in partnerships
    assert 'href="/id/org/esrc"' in section(sasci, "organisation-funding")
    cpec = page(client, "/id/org/cpec")
    assert 'href="/id/person/juliette-malley"' in section(cpec, "organisation-people")
    assert 'href="/id/org/lse"' in section(cpec, "organisation-units")


def test_fact_page_shows_provenance_and_evidence(client: FlaskClient) -> None:
    html = page(client, "/id/fact/sasci.funder.esrc")
    provenance = section(html, "fact-provenance")
    assert 'href="/id/source/sasci-final-event"' in provenance
    assert "stated" in provenance
    assert "funded by the Economic and Social Research Council (ESRC)" in section(
        html, "fact-evidence")


def test_page_lists_incoming_statements_and_embeds_json_ld(client: FlaskClient) -> None:
    html = page(client, "/id/org/cpec")
    assert 'id="incoming"' in html
    match = re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
    assert match
    graph = rdflib.Dataset()
    graph.parse(data=match.group(1), format="json-ld")
    triples = {(s, p, o) for s, p, o, _ in graph.quads((None, None, None, None))}
    assert (rdflib.URIRef(BASE + "id/org/cpec"), rdflib.URIRef("http://www.w3.org/ns/org#unitOf"),
            rdflib.URIRef(BASE + "id/org/lse")) in triples


@pytest.mark.parametrize("path", ["/id/org/cpec", "/graph/vocab", "/def",
                                  "/.well-known/void"])
def test_json_ld_of_a_resource_or_graph_is_the_graph_turtle_gives(
        client: FlaskClient, path: str) -> None:
    """Read as a graph (rdflib's Graph, Jena's Model), the JSON-LD held nothing: each named
    graph was a graph object, leaving the default graph empty."""
    turtle = rdflib.Graph().parse(data=client.get(path + "?format=ttl").data, format="turtle")
    response = client.get(path, headers={"Accept": "application/ld+json"})
    assert response.mimetype == "application/ld+json"
    jsonld = rdflib.Graph().parse(data=response.data, format="json-ld")
    assert len(turtle) > 10 and set(jsonld) == set(turtle)


def test_resource_document_has_both_directions_and_labels(client: FlaskClient) -> None:
    quads = parse(client.get("/id/org/cpec.nq").data, "application/n-quads")
    cpec = ox.NamedNode(BASE + "id/org/cpec")
    assert any(q.subject == cpec for q in quads)
    assert any(q.object == cpec for q in quads)
    lse = ox.NamedNode(BASE + "id/org/lse")
    assert any(q.subject == lse and q.predicate.value.endswith("#label") for q in quads)


def test_a_resource_document_starts_with_the_resource_itself(client: FlaskClient) -> None:
    # Sorted by subject alone, a person's Turtle began with the labels of the terms it uses
    # (http://www.w3.org/ns/prov#… sorts before https://w3id.org/…).
    turtle = client.get("/id/person/adam-lent.ttl").get_data(as_text=True)
    statements = [line for line in turtle.splitlines()
                  if line.strip() and not line.startswith("@prefix")]
    assert statements[0].startswith(("person:adam-lent ", f"<{PERSON}> ")), statements[:3]
    lines = client.get("/id/person/adam-lent.nt").get_data(as_text=True).splitlines()
    own = [line.startswith(f"<{PERSON}> ") for line in lines]
    assert own[0] and own == sorted(own, reverse=True)  # all its own, then the rest
    # The same statements as before, in another order; exports keep the canonical order.
    assert sorted(lines) == sorted(set(lines))


def test_ontology_page(client: FlaskClient) -> None:
    html = page(client, "/def")
    for anchor in ("Session", "Fact", "certainty", "evidence"):
        assert f'id="{anchor}"' in html
    assert "rdfs:subClassOf" in html and 'title="https://schema.org/Event"' in html
    assert 'id="schemes"' in html and "Session roles" in html
    assert client.get("/def/0.1.0", headers={"Accept": "text/turtle"}).status_code == 200


def test_void_page_lists_downloads(client: FlaskClient) -> None:
    html = page(client, "/.well-known/void")
    assert 'id="downloads"' in html
    for download in DOWNLOADS:
        assert f'href="/download/{download.filename}"' in html
    assert client.get("/download/").headers["Location"].endswith(
        "/.well-known/void.html#downloads")
    # Once a download has been made, the page gives its size and sha256.
    made = client.get("/download/sasci-kg.nt")
    html = page(client, "/.well-known/void")
    assert f'<td class="num">{len(made.data)}</td>' in html
    assert hashlib.sha256(made.data).hexdigest() in html


def test_resource_pages_are_fast(client: FlaskClient) -> None:
    for path in ("/id/person/juliette-malley", "/id/project/sasci", "/vocab/certainty/stated"):
        client.get(path, headers={"Accept": BROWSER})  # warm the label cache
        times = []
        for _ in range(5):
            started = time.perf_counter()
            assert client.get(path, headers={"Accept": BROWSER}).status_code == 200
            times.append(time.perf_counter() - started)
        assert statistics.median(times) < 0.1, (path, times)


# ---------------------------------------------------------------------------------------
# Downloads and the context


@pytest.mark.parametrize("download", DOWNLOADS, ids=lambda d: d.filename)
def test_downloads_match_the_export_and_the_void(client: FlaskClient, download: object) -> None:
    from sasci_kg.void import Download

    assert isinstance(download, Download)
    response = client.get(f"/download/{download.filename}")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(response.data))
    assert response.headers["Content-Disposition"] == \
        f'attachment; filename="{download.filename}"'
    quads = normalise(data_quads(built_dataset().quads))
    expected = serialize_quads(quads, download.format)
    if download.gzip:
        assert response.mimetype == "application/gzip"
        assert gzip.decompress(response.data) == expected
        assert response.data == gzip_bytes(expected)  # reproducible, as `export --gzip`
    else:
        assert response.mimetype == download.media_type
        assert response.data == expected
    digest = hashlib.sha256(response.data).hexdigest()
    assert response.headers["ETag"] == f'"{digest}"'
    assert response.headers["Repr-Digest"] == \
        f"sha-256=:{base64.b64encode(hashlib.sha256(response.data).digest()).decode()}:"
    # The VoID says where and in which format, nothing it cannot know at build time.
    void = parse(client.get("/.well-known/void.nq").data, "application/n-quads")
    stated = {(q.subject.value, q.predicate.value): q.object.value for q in void}
    node = download.node.value
    assert stated[(node, "http://www.w3.org/ns/dcat#downloadURL")] == \
        f"{BASE}download/{download.filename}"
    assert stated[(node, "http://www.w3.org/ns/dcat#mediaType")] == \
        f"http://www.iana.org/assignments/media-types/{download.media_type}"
    cached = client.get(f"/download/{download.filename}",
                        headers={"If-None-Match": response.headers["ETag"]})
    assert cached.status_code == 304 and cached.data == b""
    head = client.head(f"/download/{download.filename}")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(response.data))
    assert head.headers["ETag"] == response.headers["ETag"]
    part = client.get(f"/download/{download.filename}", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.data == response.data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(response.data)}"
    # Several ranges (each satisfiable) were 416; a server may ignore Range: the whole file.
    for ignored in ("bytes=0-9,20-29", "items=0-5", "bytes=0-9,"):
        several = client.get(f"/download/{download.filename}", headers={"Range": ignored})
        assert several.status_code == 200 and several.data == response.data, ignored
    beyond = client.get(f"/download/{download.filename}",
                        headers={"Range": f"bytes={len(response.data) + 10}-"})
    assert beyond.status_code == 416


def test_downloads_are_made_once_into_a_file_beside_the_store(app: Flask,
                                                              client: FlaskClient) -> None:
    store = Path(app.config["SASCI_KG"].store)
    first = client.get("/download/sasci-kg.ttl.gz")
    assert first.status_code == 200
    folder = store.parent / f".{store.name}.downloads"
    (generation,) = [p for p in folder.iterdir() if p.is_dir()]
    names = sorted(p.name for p in generation.iterdir())
    # The gzip file was compressed from the plain one, made on the way.
    plain = client.get("/download/sasci-kg.ttl")
    assert f"sasci-kg.ttl.{hashlib.sha256(plain.data).hexdigest()}" in names
    assert f"sasci-kg.ttl.gz.{hashlib.sha256(first.data).hexdigest()}" in names
    made = {p: p.stat().st_mtime_ns for p in generation.iterdir()}
    assert client.get("/download/sasci-kg.ttl.gz").data == first.data
    assert {p: p.stat().st_mtime_ns for p in generation.iterdir()} == made  # not made again
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_unknown_download_is_404(client: FlaskClient) -> None:
    response = client.get("/download/sasci-kg.xlsx")
    assert response.status_code == 404
    assert "sasci-kg.ttl" in response.get_json()["detail"]


def test_context_is_published(client: FlaskClient) -> None:
    response = client.get("/context.jsonld")
    assert response.mimetype == "application/ld+json"
    assert response.get_json() == JSONLD_CONTEXT
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    download = json.loads(client.get("/download/sasci-kg.jsonld").data)
    assert download["@context"] == JSONLD_CONTEXT["@context"]


def test_graph_contents_are_that_graph_only(client: FlaskClient) -> None:
    quads = parse(client.get("/graph/vocab.nq").data, "application/n-quads")
    assert {q.graph_name.value for q in quads} == {BASE + "graph/vocab"}
    assert len(quads) == built_dataset().graph_sizes()[BASE + "graph/vocab"]
    html = page(client, "/graph/vocab")
    assert f'<strong class="graph-size">{len(quads)}</strong>' in html


# ---------------------------------------------------------------------------------------
# Retired IRIs: 301 to the replacement, 410 without one


RETIRED = """\
retired:
  - id: person/j-malley
    replaced_by: person/juliette-malley
    reason: Minted with an initial; the article gives her full name.
  - id: fact/withdrawn.claim
    reason: The article does not support it.
"""


def retired_data(tmp_path: Path, extra: str = RETIRED) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    (data / "sasci-final-event" / "retired.yaml").write_text(extra, encoding="utf-8")
    return data


def test_retired_iris_answer_301_and_410(tmp_path: Path) -> None:
    result = build_dataset(retired_data(tmp_path), ONTOLOGY, sources_dir=SOURCES)
    old = ox.NamedNode(BASE + "id/person/j-malley")
    assert ox.Quad(old, ox.NamedNode("http://purl.org/dc/terms/isReplacedBy"),
                   ox.NamedNode(BASE + "id/person/juliette-malley"),
                   ox.NamedNode(BASE + "graph/source/sasci-final-event")) in result.quads
    store = tmp_path / "store"
    load_store(store, load_inputs(result))
    with app_for(store, query_workers=1) as app:
        client = app.test_client()
        moved = client.get("/id/person/j-malley", headers={"Accept": BROWSER})
        assert moved.status_code == 301
        assert moved.headers["Location"].endswith("/id/person/juliette-malley")
        assert client.get("/id/person/j-malley.ttl").headers["Location"].endswith(
            "/id/person/juliette-malley.ttl")
        gone = client.get("/id/fact/withdrawn.claim")
        assert gone.status_code == 410 and gone.mimetype == "application/problem+json"
        assert gone.get_json()["reason"] == "The article does not support it."
        page_gone = client.get("/id/fact/withdrawn.claim", headers={"Accept": BROWSER})
        assert page_gone.status_code == 410
        assert "The article does not support it." in page_gone.get_data(as_text=True)


def test_retired_ids_cannot_be_used_or_redefined(tmp_path: Path) -> None:
    bad = RETIRED + """\
  - id: person/adam-lent
    reason: still defined in people.yaml
  - id: org/old-name
    replaced_by: org/no-such-org
    reason: renamed
"""
    data = retired_data(tmp_path, bad)
    quotes = data / "sasci-final-event" / "quotes.yaml"
    text = quotes.read_text(encoding="utf-8")
    quotes.write_text(text.replace("speaker: person/juliette-malley",
                                   "speaker: person/j-malley", 1), encoding="utf-8")
    with pytest.raises(FactsError) as caught:
        build_dataset(data, ONTOLOGY, sources_dir=None, shacl=False)
    message = str(caught.value)
    assert "duplicate id 'person/adam-lent'" in message
    assert "unknown reference 'org/no-such-org'" in message
    assert "'person/j-malley' is retired" in message
    assert "'person/juliette-malley' instead" in message
