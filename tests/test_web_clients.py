"""Real clients against the real server: SPARQLWrapper (GET and POST, each result format),
rdflib's SPARQLStore, and curl."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import rdflib
from conftest import GRAPH_A, GRAPH_B, LiveServer
from rdflib.plugins.stores.sparqlstore import SPARQLStore
from SPARQLWrapper import CSV, JSON, JSONLD, N3, POST, TSV, TURTLE, XML, SPARQLWrapper

NAMES = "SELECT ?name WHERE { ?s schema:name ?name } ORDER BY ?name"
EXPECTED = ["50%25 Fund", "Ada Lovelace", 'Bob "Quote" Smith', "Cy", "Engine Works"]


def wrapper(server: LiveServer, query: str, fmt: str, method: str = "GET") -> SPARQLWrapper:
    sparql = SPARQLWrapper(server.sparql)
    sparql.setQuery(query)
    sparql.setReturnFormat(fmt)
    sparql.setMethod(method)
    return sparql


@pytest.mark.parametrize("method", ["GET", POST])
def test_sparqlwrapper_select_json(live_server: LiveServer, method: str) -> None:
    result = wrapper(live_server, NAMES, JSON, method).queryAndConvert()
    assert [b["name"]["value"] for b in result["results"]["bindings"]] == EXPECTED  # type: ignore[index]


@pytest.mark.parametrize("method", ["GET", POST])
def test_sparqlwrapper_select_xml_csv_tsv(live_server: LiveServer, method: str) -> None:
    xml = wrapper(live_server, NAMES, XML, method).queryAndConvert()
    values = [n.firstChild.data for n in xml.getElementsByTagName("literal")]  # type: ignore[union-attr]
    assert values == EXPECTED
    csv = wrapper(live_server, NAMES, CSV, method).queryAndConvert()
    assert csv.decode().splitlines()[2] == "Ada Lovelace"  # type: ignore[union-attr]
    tsv = wrapper(live_server, NAMES, TSV, method).queryAndConvert()
    assert tsv.decode().splitlines()[0] == "?name"  # type: ignore[union-attr]


def test_sparqlwrapper_ask(live_server: LiveServer) -> None:
    assert wrapper(live_server, "ASK { ?s a schema:Person }", JSON).queryAndConvert()[
        "boolean"] is True  # type: ignore[index]


# SPARQLWrapper builds RDF/XML results into an rdflib ConjunctiveGraph, which warns.
@pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")
@pytest.mark.parametrize("fmt", [TURTLE, N3, XML, JSONLD])
@pytest.mark.parametrize("method", ["GET", POST])
def test_sparqlwrapper_construct(live_server: LiveServer, fmt: str, method: str) -> None:
    query = "CONSTRUCT { ?s schema:name ?n } WHERE { ?s schema:name ?n }"
    result = wrapper(live_server, query, fmt, method).queryAndConvert()
    if isinstance(result, bytes):
        syntax = {TURTLE: "turtle", N3: "turtle", JSONLD: "json-ld"}[fmt]
        result = rdflib.Graph().parse(data=result, format=syntax)
    assert isinstance(result, rdflib.Graph) and len(result) == 5


def test_sparqlwrapper_sees_errors(live_server: LiveServer) -> None:
    from SPARQLWrapper.SPARQLExceptions import QueryBadFormed

    with pytest.raises(QueryBadFormed):
        wrapper(live_server, "SELECT * WHERE { ?s ?p }", JSON).queryAndConvert()


@pytest.mark.parametrize("method", ["GET", "POST", "POST_FORM"])
def test_rdflib_sparqlstore(live_server: LiveServer, method: str) -> None:
    store = SPARQLStore(live_server.sparql, method=method)
    graph = rdflib.Graph(store=store)
    try:
        rows = list(graph.query(
            "PREFIX schema: <https://schema.org/> SELECT ?name WHERE "
            "{ ?s schema:name ?name } ORDER BY ?name"))
        assert [str(row[0]) for row in rows] == EXPECTED  # type: ignore[index]
        person = rdflib.URIRef("https://w3id.org/sasci-kg/id/person/ada")
        assert len(list(graph.triples((person, None, None)))) == 3
        assert graph.query("ASK { ?s ?p ?o }").askAnswer is True
        contexts = {str(c.identifier) if hasattr(c, "identifier") else str(c)
                    for c in store.contexts()}
        assert {GRAPH_A, GRAPH_B} <= contexts
    finally:
        store.close()


curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def run_curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30,
                          check=True)


@curl
def test_curl_get_post_and_head(live_server: LiveServer) -> None:
    get = run_curl("-H", "Accept: text/csv", "--get", "--data-urlencode", f"query={NAMES}",
                   live_server.sparql)
    assert get.stdout.splitlines()[1:] == [f'"{v}"' if '"' in v else v for v in [
        "50%25 Fund", "Ada Lovelace", 'Bob ""Quote"" Smith', "Cy", "Engine Works"]]
    post = run_curl("--data-urlencode", f"query={NAMES}", live_server.sparql)
    assert [b["name"]["value"] for b in json.loads(post.stdout)["results"]["bindings"]] == EXPECTED
    direct = run_curl("-H", "Content-Type: application/sparql-query", "--data-binary",
                      "ASK {}", live_server.url + "/query")
    assert json.loads(direct.stdout)["boolean"] is True
    head = run_curl("-I", f"{live_server.url}/rdf-graph-store?graph={GRAPH_A}")
    headers = dict(
        line.split(": ", 1) for line in head.stdout.strip().splitlines()[1:] if ": " in line
    )
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["content-type"] == "text/turtle; charset=utf-8"
    body = run_curl(f"{live_server.url}/rdf-graph-store?graph={GRAPH_A}").stdout
    assert int(lowered["content-length"]) == len(body.encode())


@curl
def test_curl_sees_status_codes_and_problem_json(live_server: LiveServer) -> None:
    out = run_curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "Accept: image/png",
                   "--get", "--data-urlencode", f"query={NAMES}", live_server.sparql)
    assert out.stdout == "406"
    error = run_curl("-w", "\n%{http_code} %{content_type}", "--get", "--data-urlencode",
                     "query=SELECT * WHERE { SERVICE <http://169.254.169.254/> { ?s ?p ?o } }",
                     live_server.sparql)
    body, status = error.stdout.rsplit("\n", 1)
    assert status == "403 application/problem+json"
    assert json.loads(body)["title"] == "SERVICE or LOAD refused"
    allow = run_curl("-X", "PUT", "-D", "-", "-o", "/dev/null", live_server.sparql)
    assert "405" in allow.stdout.splitlines()[0] and "allow:" in allow.stdout.lower()
