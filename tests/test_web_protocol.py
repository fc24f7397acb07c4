"""The SPARQL 1.1 Protocol through Flask's test client: the three bindings, parameters,
content negotiation, status codes, the service description, the Graph Store Protocol (read),
CORS, the problem+json shape, health and the access log. Then the HTTP edges the app decides
(``OPTIONS *``, …) over the wire, under both servers (prefork and granian)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

import pyoxigraph as ox
import pytest
import rdflib
from conftest import GRAPH_A, GRAPH_B, LiveServer, app_for, make_config, run_live_server
from flask import Flask
from flask.testing import FlaskClient
from reliability_support import problem_shape
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from sasci_kg.vocab import PREFIXES
from sasci_kg.web import close_app, create_app

NAMES = "SELECT ?name WHERE { ?s schema:name ?name } ORDER BY ?name"
CONSTRUCT = "CONSTRUCT { ?s schema:name ?n } WHERE { ?s schema:name ?n }"
JSON = "application/sparql-results+json"
PROBLEM = "application/problem+json"


def names(response: TestResponse) -> list[str]:
    data = json.loads(response.data)
    return [b["name"]["value"] for b in data["results"]["bindings"]]


def assert_problem(response: TestResponse, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert response.mimetype == PROBLEM
    body = json.loads(response.data)
    assert body["status"] == status and body["title"] and body["detail"]
    if slug:
        assert body["type"].endswith("/problem/" + slug)
    assert "Traceback" not in response.get_data(as_text=True)
    return body


ALL_NAMES = ["50%25 Fund", "Ada Lovelace", 'Bob "Quote" Smith', "Cy", "Engine Works"]


# ---------------------------------------------------------------------------------------
# The three bindings and their parameters.


@pytest.mark.parametrize("path", ["/sparql", "/query"])
def test_get_post_form_and_post_direct_agree(client: FlaskClient, path: str) -> None:
    get = client.get(path, query_string={"query": NAMES})
    form = client.post(path, data={"query": NAMES})
    direct = client.post(path, data=NAMES, content_type="application/sparql-query")
    for response in (get, form, direct):
        assert response.status_code == 200, response.data
        assert response.mimetype == JSON
        assert names(response) == ALL_NAMES
    assert get.data == form.data == direct.data


def test_form_body_is_decoded_exactly_once(client: FlaskClient) -> None:
    query = 'SELECT ?x WHERE { BIND("50%25 and a+b" AS ?x) }'
    for response in (
        client.post("/sparql", data={"query": query}),
        client.get("/sparql", query_string={"query": query}),
    ):
        value = json.loads(response.data)["results"]["bindings"][0]["x"]["value"]
        assert value == "50%25 and a+b"
    hit = client.post("/sparql", data={"query": 'ASK { ?s schema:name "50%25 Fund" }'})
    assert json.loads(hit.data)["boolean"] is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "GET", "query_string": [("query", NAMES), ("query", NAMES)]}, "2 times"),
        ({"method": "POST", "query_string": {"query": NAMES}, "data": {"query": NAMES}},
         "both the URL and the body"),
        ({"method": "POST", "query_string": {"query": NAMES}, "data": NAMES,
          "content_type": "application/sparql-query"}, "both in the body"),
        ({"method": "POST", "data": MultiDict([("query", NAMES), ("query", "ASK {}")])},
         "2 times"),
        ({"method": "GET", "query_string": [("query", NAMES), ("timeout", "1"),
                                            ("timeout", "2")]}, "timeout"),
        ({"method": "POST", "data": {"format": "json"}}, "no query"),
        ({"method": "GET", "query_string": {"query": "  "}}, "empty"),
    ],
)
def test_duplicate_conflicting_or_missing_parameters_are_400(
    client: FlaskClient, kwargs: dict[str, Any], message: str
) -> None:
    body = assert_problem(client.open("/sparql", **kwargs), 400)
    assert message in body["detail"]


@pytest.mark.parametrize(
    ("content_type", "data"),
    [("text/plain", NAMES), ("application/json", '{"query": "ASK {}"}'), (None, NAMES),
     ("application/sparql-query; charset=latin-1", NAMES)],
)
def test_wrong_content_type_is_415(
    client: FlaskClient, content_type: str | None, data: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = assert_problem(client.post("/sparql", data=data, headers=headers), 415)
    assert "application/sparql-query" in body["accepted"]


@pytest.mark.parametrize("path", ["/sparql", "/query"])
@pytest.mark.parametrize("coding", ["gzip", "GZIP", "identity, gzip", "br"])
@pytest.mark.parametrize("binding", ["form", "direct"])
def test_a_body_with_a_content_coding_is_415(
    client: FlaskClient, path: str, coding: str, binding: str
) -> None:
    """RFC 9110 §8.4, §15.5.16: this server decodes no content coding, and a gzip body read as
    the query (or the form) ran as text; now refused, with Accept-Encoding saying what is."""
    form = binding == "form"
    data = gzip.compress((urlencode({"query": NAMES}) if form else NAMES).encode())
    content_type = "application/x-www-form-urlencoded" if form else "application/sparql-query"
    response = client.post(path, data=data, content_type=content_type,
                           headers={"Content-Encoding": coding})
    body = assert_problem(response, 415, "unsupported-content-coding")
    assert "Content-Encoding" in body["detail"] and "without Content-Encoding" in body["detail"]
    assert response.headers["Accept-Encoding"] == "identity"


def test_identity_is_no_content_coding(client: FlaskClient) -> None:
    for coding in ("identity", "Identity", ""):
        response = client.post("/sparql", data=NAMES, content_type="application/sparql-query",
                               headers={"Content-Encoding": coding})
        assert response.status_code == 200 and names(response) == ALL_NAMES
    # A GET has no body to decode: its Content-Encoding says nothing.
    response = client.get("/sparql", query_string={"query": NAMES},
                          headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200 and names(response) == ALL_NAMES

def test_invalid_utf8_body_is_400(client: FlaskClient) -> None:
    response = client.post("/sparql", data=b"ASK { ?s ?p '\xff' }",
                           content_type="application/sparql-query")
    assert_problem(response, 400)


STRLEN_OF_A_E_B = b"query=SELECT+%3Fx+%7BBIND(STRLEN(%22a{}b%22)+AS+%3Fx)%7D"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_percent_escapes_that_are_not_utf8_are_400(client: FlaskClient, method: str) -> None:
    """Protocol §2.1.1–2.1.2: percent-encoded UTF-8. ``%E9`` (Latin-1 é) was kept as the
    three characters "%E9" and the query ran on that text (STRLEN 5)."""
    def ask(escape: bytes) -> Any:
        encoded = STRLEN_OF_A_E_B.replace(b"{}", escape)
        if method == "GET":
            return client.get("/sparql?" + encoded.decode("ascii"))
        return client.post("/sparql", data=encoded,
                           content_type="application/x-www-form-urlencoded")

    body = assert_problem(ask(b"%E9"), 400)
    where = "query string" if method == "GET" else "form body"
    assert where in body["detail"] and "not UTF-8" in body["detail"], body
    utf8 = ask(b"%C3%A9")
    assert json.loads(utf8.data)["results"]["bindings"][0]["x"]["value"] == "3"
    escaped = ask(b"%25E9")  # the text "%E9" itself
    assert json.loads(escaped.data)["results"]["bindings"][0]["x"]["value"] == "5"


def test_unknown_parameters_are_ignored(client: FlaskClient) -> None:
    response = client.get("/sparql", query_string={"query": NAMES, "callback": "x", "zzz": "1"})
    assert response.status_code == 200 and names(response) == ALL_NAMES


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("PUT", "/sparql", {"GET", "HEAD", "POST"}), ("DELETE", "/query", {"GET", "HEAD", "POST"}),
     ("GET", "/update", {"POST"}), ("PATCH", "/rdf-graph-store", {"GET", "HEAD", "PUT"}),
     ("POST", "/healthz", {"GET"})],
)
def test_wrong_method_is_405_with_allow(
    client: FlaskClient, method: str, path: str, allowed: set[str]
) -> None:
    response = client.open(path, method=method)
    body = assert_problem(response, 405)
    header = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed <= header and allowed <= set(body["allowed"])


def test_head_and_options(client: FlaskClient) -> None:
    get = client.get("/sparql", query_string={"query": NAMES})
    head = client.head("/sparql", query_string={"query": NAMES})
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(get.data))
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    options = client.options("/sparql")
    assert options.status_code == 200
    assert {"GET", "POST", "HEAD", "OPTIONS"} <= {
        m.strip() for m in options.headers["Allow"].split(",")
    }


@pytest.mark.parametrize(("method", "path", "status"), [
    ("get", "/sparql", 405), ("Get", "/healthz", 405), ("post", "/sparql", 405),
    ("options", "/sparql", 405), ("head", "/healthz", 405), ("get", "/update", 405),
    ("get", "/no/such/page", 404),
])
def test_a_method_is_case_sensitive(client: FlaskClient, method: str, path: str,
                                    status: int) -> None:
    """RFC 9110 §9.1: ``get`` is not GET. werkzeug upper-cases the method, so it was served
    as GET; now it is a method this server does not know, answered as FOO is: 405 with Allow
    where the path exists, 404 where it does not."""
    query = {"query": "ASK {}"}
    response = client.open(path, query_string=query, environ_overrides={"REQUEST_METHOD": method})
    foo = client.open(path, query_string=query, environ_overrides={"REQUEST_METHOD": "FOO"})
    assert response.status_code == foo.status_code == status, response.data
    assert response.headers.get("Allow") == foo.headers.get("Allow")
    if method != "head":  # (a 405 to an unknown method has its body; HEAD would not)
        body = assert_problem(response, status)
        if status == 405:
            assert body["detail"].startswith(f"{method} is not allowed here; use one of: ")
            # (the hint only where the upper-case method would do: not GET on /update)
            hint = method.upper() in body["allowed"]
            assert ("a method is case-sensitive" in body["detail"]) == hint, body
    assert "case-sensitive" not in foo.get_data(as_text=True)

# Every method a route of the app takes, as OPTIONS * lists them.
SERVER_METHODS = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"]


def test_options_asterisk_asks_about_the_whole_server(client: FlaskClient) -> None:
    """RFC 9110 §9.3.7: ``OPTIONS *`` (RFC 9112 §3.2.4's asterisk-form) asks what the server
    supports anywhere. It was taken for the path ``/*``: 404."""
    response = client.options("*")
    assert response.status_code == 200, response.data
    assert response.data == b"" and response.headers["Content-Length"] == "0"
    assert "Content-Type" not in response.headers
    assert response.headers["Allow"] == ", ".join(SERVER_METHODS)  # sorted, as a 405's
    assert_problem(client.options("/*"), 404)  # (a path like any other)


@pytest.mark.parametrize(("path", "allow"), [("/sparql", "GET, HEAD, OPTIONS, POST"),
                                             ("/id/person/ada", "GET, HEAD, OPTIONS")])
def test_options_on_a_path_lists_its_methods_sorted(client: FlaskClient, path: str,
                                                    allow: str) -> None:
    # Flask gave them in a set's order (two processes could differ), with text/html and no body.
    response = client.options(path)
    assert response.status_code == 200 and response.data == b""
    assert response.headers["Allow"] == allow
    assert "Content-Type" not in response.headers


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "HEAD", "options"])
def test_only_options_may_use_the_asterisk(client: FlaskClient, method: str) -> None:
    response = client.open("*", method=method, environ_overrides={"REQUEST_METHOD": method})
    assert response.status_code == 400
    if method != "HEAD":
        body = assert_problem(response, 400, "bad-request")
        assert "OPTIONS" in body["detail"] and "/sparql" in body["detail"]


def test_syntax_error_is_400_with_line_and_column(client: FlaskClient) -> None:
    response = client.get("/sparql", query_string={"query": "SELECT *\nWHERE { ?s ?p }"})
    body = assert_problem(response, 400, "syntax-error")
    assert body["line"] == 2 and body["column"] in (15, 16)
    unterminated = client.get("/sparql", query_string={"query": "ASK {\n ?s ?p 'x }"})
    body = assert_problem(unterminated, 400, "syntax-error")
    assert (body["line"], body["column"]) == (2, 8)


def test_an_undeclared_prefix_is_named_in_the_error(client: FlaskClient) -> None:
    # pyoxigraph says "expected one of Prefix not found, ['%'], ['-' | '0' ..= '9' | …": the
    # endpoint names the prefix and the fix instead.
    query = "SELECT * WHERE {\n  ?x schema:name ?n ; nosuch:thing ?y }"
    body = assert_problem(client.get("/sparql", query_string={"query": query}), 400,
                          "syntax-error")
    assert body["line"] == 2
    assert "the prefix nosuch: (in nosuch:thing) is declared neither in the query nor among " \
        "the endpoint's default prefixes; declare it: PREFIX nosuch: <" in body["detail"]


@pytest.mark.parametrize(("query", "iri", "line", "column"), [
    ("SELECT ?x WHERE { BIND(<x> AS ?x) }", "<x>", 1, 24),
    ("SELECT * WHERE {\n  ?s ?p <#y> }", "<#y>", 2, 9),
])
def test_a_relative_iri_is_named_in_the_error(
        client: FlaskClient, query: str, iri: str, line: int, column: int) -> None:
    # pyoxigraph says "expected one of GROUP_CONCAT, [_]" or "expected OPTIONAL" at the end.
    body = assert_problem(client.get("/sparql", query_string={"query": query}), 400,
                          "syntax-error")
    assert (body["line"], body["column"]) == (line, column)
    assert f"the IRI {iri} is relative" in body["detail"] and "BASE" in body["detail"]
    # "Less than" and "greater than" the tokenizer reads as an IRI are not blamed.
    typo = "SELECT * WHERE { ?a ?b ?c FILTER(?a<?b&&?c>?d) } LIMT 5"
    body = assert_problem(client.get("/sparql", query_string={"query": typo}), 400)
    assert "relative" not in body["detail"]
    based = client.get("/sparql", query_string={"query": "BASE <https://e.org/> " + query})
    assert based.status_code == 200, based.data


def test_a_carriage_return_survives_xml(client: FlaskClient) -> None:
    """XML parsers read a raw CR as LF (XML 1.0 §2.11); pyoxigraph writes it raw, so a
    literal's "\r" came back as "\n" from SPARQL XML results and RDF/XML."""
    value = "cr\rhere\r\nand \"more\""
    select = client.get("/sparql", query_string={
        "query": 'SELECT ?x WHERE { BIND("cr\\rhere\\r\\nand \\"more\\"" AS ?x) }',
        "format": "xml"})
    assert select.status_code == 200 and b"\r" not in select.data
    literal = ElementTree.fromstring(select.data).find(
        ".//{http://www.w3.org/2005/sparql-results#}literal")
    assert literal is not None and literal.text == value
    graph = client.get("/sparql", query_string={
        "query": 'CONSTRUCT { <https://e.org/s> <https://e.org/p> ?x } WHERE { '
                 'BIND("cr\\rhere\\r\\nand \\"more\\"" AS ?x) }', "format": "rdfxml"})
    assert graph.status_code == 200 and b"\r" not in graph.data
    parsed = rdflib.Graph().parse(data=graph.data, format="xml")
    assert [str(o) for o in parsed.objects()] == [value]


def test_carriage_returns_written_out_stay_within_the_byte_cap(store_path: Path) -> None:
    """Each CR grows from 1 byte to 5 (&#13;) after the cap was checked: XML answers passed
    the cap up to fivefold (an independent review's find)."""
    query = 'SELECT ?x WHERE { BIND("' + "\\r" * 1500 + '" AS ?x) }'
    with app_for(store_path, max_result_bytes=5000) as application:
        client = application.test_client()
        json_answer = client.get("/sparql", query_string={"query": query, "format": "json"})
        assert json_answer.status_code == 200, json_answer.data[:300]
        for fmt in ("xml", "rdfxml"):
            text = query if fmt == "xml" else query.replace(
                "SELECT ?x WHERE", "CONSTRUCT { <https://e.org/s> <https://e.org/p> ?x } WHERE")
            response = client.get("/sparql", query_string={"query": text, "format": fmt})
            assert response.status_code == 507, (fmt, response.status_code, len(response.data))


def test_default_prefixes_apply_without_prefix_lines(client: FlaskClient) -> None:
    query = "SELECT ?p WHERE { ?p a schema:Person ; schema:affiliation organisation:engine }"
    response = client.get("/sparql", query_string={"query": query, "format": "csv"})
    assert response.status_code == 200
    assert sorted(response.get_data(as_text=True).split()[1:]) == [
        "https://w3id.org/sasci-kg/id/person/ada", "https://w3id.org/sasci-kg/id/person/cy"
    ]



def test_a_graph_answer_is_written_with_prefixes_even_when_the_query_declares_its_own(
    client: FlaskClient,
) -> None:
    # The default prefixes go to the engine only when a query needs them for parsing, but a
    # CONSTRUCT's Turtle is always written with them (declaring only those it uses).
    own = ("PREFIX schema: <https://schema.org/> "
           "CONSTRUCT { ?p schema:name ?n } WHERE { ?p a schema:Person ; schema:name ?n }")
    bare = "CONSTRUCT { ?p schema:name ?n } WHERE { ?p a schema:Person ; schema:name ?n }"
    answers = [client.get("/sparql", query_string={"query": q}) for q in (own, bare)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].data == answers[1].data
    assert b"@prefix schema: <https://schema.org/> ." in answers[0].data


@pytest.mark.parametrize("form", ["SELECT ?n", "CONSTRUCT { ?p schema:name ?n }"])
def test_a_default_prefix_between_a_less_than_and_a_greater_than_is_declared(
    client: FlaskClient, form: str,
) -> None:
    # The guard reads `<xsd:integer(100)&&STRLEN(?n)>` as one IRI and so finds no xsd: to
    # declare; the engine reads "less than", and needs it (an independent review's find: the
    # CONSTRUCT failed with 400 once graph queries stopped getting every default prefix).
    query = ("PREFIX schema: <https://schema.org/> " + form + " WHERE { ?p schema:name ?n "
             "FILTER(STRLEN(?n)<xsd:integer(100)&&STRLEN(?n)>0) }")
    response = client.get("/sparql", query_string={"query": query},
                          headers={"Accept": "text/turtle" if "CONSTRUCT" in form else
                                   "text/csv"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert b"Ada" in response.data

# ---------------------------------------------------------------------------------------
# Dataset: the union by default, GRAPH still isolates, protocol and FROM datasets.


def count(client: FlaskClient, query: str, **params: Any) -> str:
    response = client.get("/sparql", query_string={"query": query, "format": "csv", **params})
    assert response.status_code == 200, response.data
    return response.get_data(as_text=True).split()[1]


COUNT = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"


def test_default_graph_is_the_union_and_graph_isolates(client: FlaskClient) -> None:
    assert count(client, COUNT) == "15"
    in_a = f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH <{GRAPH_A}> {{ ?s ?p ?o }} }}"
    assert count(client, in_a) == "8"
    graphs = client.get("/sparql", query_string={
        "query": "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } } ORDER BY ?g", "format": "csv"})
    assert graphs.get_data(as_text=True).split()[1:] == [GRAPH_A, GRAPH_B]


def test_protocol_and_query_datasets(client: FlaskClient) -> None:
    assert count(client, COUNT, **{"default-graph-uri": GRAPH_B}) == "7"
    query = "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }"
    assert count(client, query, **{"named-graph-uri": GRAPH_A}) == "8"
    assert count(client, f"SELECT (COUNT(*) AS ?n) FROM <{GRAPH_A}> WHERE {{ ?s ?p ?o }}") == "8"
    both = client.get("/sparql", query_string=[
        ("query", COUNT), ("format", "csv"), ("default-graph-uri", GRAPH_A),
        ("default-graph-uri", GRAPH_B)])
    assert both.get_data(as_text=True).split()[1] == "15"
    # A graph named twice is merged with itself: its triples count once (they counted twice).
    twice = client.get("/sparql", query_string=[
        ("query", COUNT), ("format", "csv"), ("default-graph-uri", GRAPH_B),
        ("default-graph-uri", GRAPH_B)])
    assert twice.get_data(as_text=True).split()[1] == "7"
    query = "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }"
    assert count(client, query, **{"named-graph-uri": [GRAPH_A, GRAPH_A]}) == "8"


@pytest.mark.parametrize("value", ["relative/graph", "not an iri", ""])
def test_relative_dataset_iri_is_400(client: FlaskClient, value: str) -> None:
    response = client.get("/sparql", query_string={"query": COUNT, "default-graph-uri": value})
    assert_problem(response, 400)


# ---------------------------------------------------------------------------------------
# Content negotiation.


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("*/*", JSON),
        ("application/sparql-results+xml", "application/sparql-results+xml"),
        ("text/csv;q=0.5, application/sparql-results+xml;q=0.9", "application/sparql-results+xml"),
        ("application/sparql-results+json;q=0, */*", "application/sparql-results+xml"),
        ("text/*", "text/csv"),
        ("text/tab-separated-values", "text/tab-separated-values"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("application/json", JSON),
        ("text/html, application/xml;q=0.9, */*;q=0.8", "application/sparql-results+xml"),
        ("application/sparql-results+json,application/json,text/javascript", JSON),
    ],
)
def test_select_negotiation(client: FlaskClient, accept: str | None, expected: str) -> None:
    headers = {"Accept": accept} if accept else {}
    response = client.get("/sparql", query_string={"query": NAMES}, headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == expected
    assert response.headers["Vary"] == "Accept"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/turtle"),
        ("*/*", "text/turtle"),
        ("application/n-triples", "application/n-triples"),
        ("application/n-quads", "application/n-quads"),
        ("application/trig", "application/trig"),
        ("application/ld+json", "application/ld+json"),
        ("application/rdf+xml", "application/rdf+xml"),
        ("application/rdf+xml;q=0.5, application/n-triples;q=0.7, text/turtle;q=0.1",
         "application/n-triples"),
        ("application/*", "application/n-triples"),
        ("application/turtle,text/turtle", "text/turtle"),
    ],
)
def test_construct_negotiation(client: FlaskClient, accept: str | None, expected: str) -> None:
    headers = {"Accept": accept} if accept else {}
    response = client.get("/sparql", query_string={"query": CONSTRUCT}, headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == expected


def test_charset_on_text_types_only(client: FlaskClient) -> None:
    csv = client.get("/sparql", query_string={"query": NAMES, "format": "csv"})
    assert csv.headers["Content-Type"] == "text/csv; charset=utf-8"
    ttl = client.get("/sparql", query_string={"query": CONSTRUCT})
    assert ttl.headers["Content-Type"] == "text/turtle; charset=utf-8"
    json_ = client.get("/sparql", query_string={"query": NAMES})
    assert json_.headers["Content-Type"] == JSON


@pytest.mark.parametrize(
    ("query", "accept"),
    [(NAMES, "text/turtle"), (NAMES, "image/png"), (CONSTRUCT, "text/csv"),
     (CONSTRUCT, "application/sparql-results+json"), (NAMES, "*/*;q=0")],
)
def test_unacceptable_is_406_with_the_offered_types(
    client: FlaskClient, query: str, accept: str
) -> None:
    response = client.get("/sparql", query_string={"query": query}, headers={"Accept": accept})
    body = assert_problem(response, 406, "not-acceptable")
    assert body["offered"][0] in (JSON, "text/turtle")
    assert len(body["offered"]) in (4, 6)


@pytest.mark.parametrize(
    ("query", "value", "expected"),
    [
        (NAMES, "json", JSON), (NAMES, "xml", "application/sparql-results+xml"),
        (NAMES, "csv", "text/csv"), (NAMES, "tsv", "text/tab-separated-values"),
        (NAMES, "text/tab-separated-values", "text/tab-separated-values"),
        (CONSTRUCT, "ttl", "text/turtle"), (CONSTRUCT, "nt", "application/n-triples"),
        (CONSTRUCT, "nq", "application/n-quads"), (CONSTRUCT, "trig", "application/trig"),
        (CONSTRUCT, "jsonld", "application/ld+json"), (CONSTRUCT, "rdfxml", "application/rdf+xml"),
        (CONSTRUCT, "application/ld+json", "application/ld+json"),
        (CONSTRUCT, "turtle", "text/turtle"), (CONSTRUCT, "json-ld", "application/ld+json"),
        (CONSTRUCT, "xml", "application/rdf+xml"), (CONSTRUCT, "n3", "text/turtle"),
    ],
)
def test_format_override_beats_accept(
    client: FlaskClient, query: str, value: str, expected: str
) -> None:
    response = client.get("/sparql", query_string={"query": query, "format": value},
                          headers={"Accept": "application/x-nothing"})
    assert response.status_code == 200, response.data
    assert response.mimetype == expected


def test_sparqlwrapper_style_format_parameters(client: FlaskClient) -> None:
    response = client.get("/sparql", query_string=[
        ("query", NAMES), ("format", "tsv"), ("format", "text/tab-separated-values"),
        ("output", "tsv"), ("results", "tsv"), ("output", "text/tab-separated-values")])
    assert response.mimetype == "text/tab-separated-values"
    jsonld = client.post("/sparql", data=MultiDict([
        ("query", CONSTRUCT), ("format", "json-ld"),
        ("format", "application/ld+json,application/x-json+ld")]))
    assert jsonld.mimetype == "application/ld+json"


def test_conflicting_and_unknown_formats(client: FlaskClient) -> None:
    conflict = client.get("/sparql", query_string=[("query", NAMES), ("format", "json"),
                                                   ("output", "xml")])
    assert_problem(conflict, 400)
    unknown = client.get("/sparql", query_string={"query": NAMES, "format": "png"})
    assert_problem(unknown, 406)
    wrong_kind = client.get("/sparql", query_string={"query": NAMES, "format": "ttl"})
    assert_problem(wrong_kind, 406)


def test_download_sets_content_disposition(client: FlaskClient) -> None:
    response = client.get("/sparql", query_string={"query": NAMES, "format": "csv",
                                                   "download": "1"})
    assert response.headers["Content-Disposition"] == 'attachment; filename="query-result.csv"'
    plain = client.get("/sparql", query_string={"query": NAMES, "download": "0"})
    assert "Content-Disposition" not in plain.headers


@pytest.mark.parametrize("fmt", ["ttl", "nt", "nq", "trig", "jsonld", "rdfxml"])
def test_every_rdf_format_carries_the_same_graph(client: FlaskClient, fmt: str) -> None:
    response = client.get("/sparql", query_string={"query": CONSTRUCT, "format": fmt})
    media = response.mimetype
    parsed = list(ox.parse(response.data, format=ox.RdfFormat.from_media_type(media)))
    assert len(parsed) == 5
    if fmt == "ttl":
        text = response.get_data(as_text=True)
        prefixes = [line.split()[1] for line in text.splitlines() if line.startswith("@prefix")]
        assert prefixes == ["organisation:", "person:", "schema:"]


# ---------------------------------------------------------------------------------------
# Time limits and parameters.


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan", "inf"])
def test_bad_timeout_is_400(client: FlaskClient, value: str) -> None:
    response = client.get("/sparql", query_string={"query": NAMES, "timeout": value})
    body = assert_problem(response, 400)
    assert "timeout" in body["detail"]


def test_large_timeout_is_clamped_not_refused(client: FlaskClient) -> None:
    response = client.get("/sparql", query_string={"query": NAMES, "timeout": "100000"})
    assert response.status_code == 200


# ---------------------------------------------------------------------------------------
# Service description.


def sd_graph(response: TestResponse) -> rdflib.Graph:
    return rdflib.Graph().parse(data=response.data, format=response.mimetype)


SD = rdflib.Namespace("http://www.w3.org/ns/sparql-service-description#")
SH = rdflib.Namespace("http://www.w3.org/ns/shacl#")


def test_service_description_from_the_configuration(client: FlaskClient) -> None:
    response = client.get("/sparql")
    assert response.status_code == 200 and response.mimetype == "text/turtle"
    graph = sd_graph(response)
    service = rdflib.URIRef("http://localhost/sparql#service")
    assert (service, SD.endpoint, rdflib.URIRef("http://localhost/sparql")) in graph
    assert (service, SD.feature, SD.UnionDefaultGraph) in graph
    assert (service, SD.feature, SD.BasicFederatedQuery) not in graph
    assert (service, SD.supportedLanguage, SD.SPARQL11Update) not in graph
    formats = {str(o) for o in graph.objects(service, SD.resultFormat)}
    assert "http://www.w3.org/ns/formats/JSON-LD" in formats and len(formats) == 10
    named = {str(o) for o in graph.objects(None, SD.name)}
    assert named == {GRAPH_A, GRAPH_B}
    declared = {str(p): str(n) for d in graph.objects(service, SH.declare)
                for p in graph.objects(d, SH.prefix) for n in graph.objects(d, SH.namespace)}
    assert declared == PREFIXES
    assert "SERVICE and LOAD are refused" in str(graph.value(service, rdflib.RDFS.comment))
    dataset = graph.value(service, SD.defaultDataset)
    assert (dataset, rdflib.RDFS.seeAlso,
            rdflib.URIRef("http://localhost/.well-known/void")) in graph


@pytest.mark.parametrize("accept", ["application/ld+json", "application/n-triples",
                                    "application/rdf+xml"])
def test_service_description_negotiates(client: FlaskClient, accept: str) -> None:
    response = client.get("/query", headers={"Accept": accept})
    assert response.mimetype == accept
    assert len(sd_graph(response)) > 20


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_browser_goes_to_the_query_page(store_path: Path) -> None:
    with app_for(store_path) as application:
        application.add_url_rule("/", "page", lambda: "the query page")
        response = application.test_client().get("/sparql", headers={"Accept": BROWSER})
        assert response.status_code == 303 and response.headers["Location"] == "/"


def test_browser_without_a_query_page_gets_rdf(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sasci_kg.web import sparql

    monkeypatch.setattr(sparql, "_has_query_page", lambda: False)
    response = client.get("/sparql", headers={"Accept": BROWSER})
    # The browser's application/xml;q=0.9 beats its */*;q=0.8.
    assert response.status_code == 200 and response.mimetype == "application/rdf+xml"


def test_forwarded_headers_only_when_configured(store_path: Path) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "kg.example.org",
                 "X-Forwarded-Prefix": "/kg", "X-Forwarded-For": "203.0.113.9"}
    endpoint = SD.endpoint
    with app_for(store_path, trusted_proxies=1) as application:
        graph = sd_graph(application.test_client().get("/sparql", headers=forwarded))
        assert str(next(graph.objects(None, endpoint))) == "https://kg.example.org/kg/sparql"
    with app_for(store_path) as application:
        graph = sd_graph(application.test_client().get("/sparql", headers=forwarded))
        assert str(next(graph.objects(None, endpoint))) == "http://localhost/sparql"


def test_federation_and_updates_show_in_the_description(store_path: Path) -> None:
    with app_for(store_path, service_allow="https://query.example.org/", updates=True,
                 update_token="t" * 20) as application:
        graph = sd_graph(application.test_client().get("/sparql"))
    service = rdflib.URIRef("http://localhost/sparql#service")
    assert (service, SD.feature, SD.BasicFederatedQuery) in graph
    assert "DNS rebinding" in str(graph.value(service, rdflib.RDFS.comment))
    # Updates go to /update (/sparql refuses them): a service of its own says so.
    assert (service, SD.supportedLanguage, SD.SPARQL11Update) not in graph
    updates = graph.value(predicate=SD.endpoint, object=rdflib.URIRef("http://localhost/update"))
    assert (updates, SD.supportedLanguage, SD.SPARQL11Update) in graph
    assert graph.value(updates, SD.defaultDataset) == graph.value(service, SD.defaultDataset)


# ---------------------------------------------------------------------------------------
# Graph Store Protocol, read side.


def test_gsp_named_graph(client: FlaskClient) -> None:
    response = client.get("/rdf-graph-store", query_string={"graph": GRAPH_A})
    assert response.status_code == 200 and response.mimetype == "text/turtle"
    assert len(list(ox.parse(response.data, format=ox.RdfFormat.TURTLE))) == 8
    assert response.headers["Vary"] == "Accept"


def test_gsp_default_graph_is_the_union(client: FlaskClient) -> None:
    response = client.get("/rdf-graph-store?default", headers={"Accept": "application/n-triples"})
    assert response.mimetype == "application/n-triples"
    assert len(response.data.splitlines()) == 15


@pytest.mark.parametrize(("accept", "expected"), [
    (None, "application/trig"), ("application/n-quads", "application/n-quads")])
def test_gsp_whole_dataset(client: FlaskClient, accept: str | None, expected: str) -> None:
    headers = {"Accept": accept} if accept else {}
    response = client.get("/rdf-graph-store", headers=headers)
    assert response.mimetype == expected
    quads = list(ox.parse(response.data, format=ox.RdfFormat.from_media_type(expected)))
    assert {q.graph_name.value for q in quads} == {GRAPH_A, GRAPH_B}  # type: ignore[union-attr]


def test_gsp_dataset_in_a_triples_format_is_406(client: FlaskClient) -> None:
    assert_problem(client.get("/rdf-graph-store", headers={"Accept": "text/turtle"}), 406)


def test_gsp_errors(client: FlaskClient) -> None:
    assert_problem(client.get("/rdf-graph-store",
                              query_string={"graph": "https://no/such/graph"}), 404)
    assert_problem(client.get("/rdf-graph-store", query_string={"graph": "relative"}), 400)
    assert_problem(client.get(f"/rdf-graph-store?default&graph={GRAPH_A}"), 400)
    assert_problem(client.get("/rdf-graph-store", query_string=[("graph", GRAPH_A),
                                                                ("graph", GRAPH_B)]), 400)


@pytest.mark.parametrize("target", [f"?graph={GRAPH_A}", "?default", ""])
def test_gsp_head_has_type_and_length(client: FlaskClient, target: str) -> None:
    get = client.get("/rdf-graph-store" + target)
    head = client.head("/rdf-graph-store" + target)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(get.data)) != "0"
    assert head.headers["Content-Type"] == get.headers["Content-Type"]


# ---------------------------------------------------------------------------------------
# CORS: reads for everyone, writes for no one.


def test_cors_for_reads(client: FlaskClient) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    for response in (
        client.get("/sparql", query_string={"query": NAMES}, headers=origin),
        client.post("/sparql", data={"query": NAMES}, headers=origin),
        client.get("/sparql", query_string={"query": "SELEC"}, headers=origin),  # errors too
        client.get("/rdf-graph-store", headers=origin),
    ):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in response.headers


def test_preflight_for_a_read_post_is_allowed(client: FlaskClient) -> None:
    response = client.options("/sparql", headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"].lower() == "content-type"


@pytest.mark.parametrize(("path", "method"), [
    ("/rdf-graph-store", "PUT"), ("/rdf-graph-store", "POST"), ("/rdf-graph-store", "DELETE"),
    ("/update", "POST")])
def test_preflight_for_a_write_gets_no_allow_headers(
    client: FlaskClient, path: str, method: str
) -> None:
    response = client.options(path, headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": method})
    assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-")]


def test_write_responses_carry_no_cors(client: FlaskClient) -> None:
    response = client.post("/update", data={"update": "CLEAR ALL"},
                           headers={"Origin": "https://elsewhere.example"})
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


# ---------------------------------------------------------------------------------------
# One error shape; health; access log.


def test_unexpected_errors_are_500_problems_without_traceback(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    application = create_app(make_config(store_path))
    try:
        def boom() -> str:
            raise RuntimeError("secret internal detail")

        application.add_url_rule("/boom", "boom", boom)
        with caplog.at_level(logging.ERROR, logger="sasci_kg.web"):
            response = application.test_client().get("/boom")
        body = assert_problem(response, 500, "internal-error")
        assert "secret internal detail" not in json.dumps(body)
        assert "secret internal detail" in caplog.text  # logged, with its traceback
        assert "Traceback" in caplog.text
    finally:
        close_app(application)


def test_not_found_is_a_problem(client: FlaskClient) -> None:
    assert_problem(client.get("/no/such/page"), 404, "not-found")


def test_healthz(client: FlaskClient, store_path: Path) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["quads"] == 15 and body["graphs"] == 2
    assert body["generation"] and body["workers"]["size"] == 2


def test_healthz_without_a_store_is_503(tmp_path: Path, fresh_store: Path) -> None:
    with app_for(fresh_store) as application:
        client = application.test_client()
        assert client.get("/healthz").status_code == 200
        fresh_store.rename(tmp_path / "moved")
        assert_problem(client.get("/healthz"), 503, "store-unavailable")
        assert_problem(client.get("/sparql", query_string={"query": NAMES}), 503)


def test_access_log_line_without_query_values(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "SELECT * WHERE { ?s schema:name 'my-secret-value' }"
    with caplog.at_level(logging.INFO, logger="sasci_kg.access"):
        response = client.get("/sparql", query_string={"query": secret, "format": "csv"})
        body = response.data  # the line is written once the body has been sent
    lines = [r.getMessage() for r in caplog.records if r.name == "sasci_kg.access"]
    assert len(lines) == 1
    method, path, status, duration, size = lines[0].split()
    assert (method, path, status) == ("GET", "/sparql?query=…&format=…", "200")
    assert duration.endswith("ms") and size == f"{len(body)}B"
    assert "my-secret-value" not in caplog.text


def test_app_factory_has_no_module_level_app() -> None:
    import sasci_kg.web as web

    assert not [name for name, value in vars(web).items() if isinstance(value, Flask)]


# ---------------------------------------------------------------------------------------
# Configuration: options > environment > file > defaults.


def test_configuration_sources_and_precedence(tmp_path: Path) -> None:
    from sasci_kg.web.config import load_config

    settings = tmp_path / "serve.toml"
    settings.write_text(
        '[serve]\nport = 9000\nmax-rows = 10\nservice_allow = ["https://a.example/sparql"]\n',
        encoding="utf-8",
    )
    environ = {"SASCI_KG_CONFIG": str(settings), "SASCI_KG_MAX_ROWS": "20",
               "SASCI_KG_STORE": str(tmp_path / "s"), "SASCI_KG_UPDATES": "no"}
    config = load_config({"port": 9100, "timeout": None}, environ=environ)
    assert config.port == 9100  # option over file
    assert config.max_rows == 20  # environment over file
    assert config.service_allow == ("https://a.example/sparql",)  # file
    assert config.timeout == 10.0 and config.host == "127.0.0.1"  # defaults
    assert config.store == tmp_path / "s" and config.updates is False
    env_list = load_config({}, environ={
        "SASCI_KG_SERVICE_ALLOW": "https://a.example/, https://b.example/x"})
    assert env_list.service_allow == ("https://a.example/", "https://b.example/x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "environ", "message"),
    [
        ({"port": "eighty"}, {}, "port"),
        ({}, {"SASCI_KG_TIMEOUT": "soon"}, "timeout"),
        ({"timeout": 30, "max_timeout": 10}, {}, "max_timeout"),
        ({"max_rows": 0}, {}, "max_rows"),
        ({"service_allow": "ftp://x.example/"}, {}, "service_allow"),
        ({"service_allow": "https://user@x.example/"}, {}, "service_allow"),
        ({"updates": "maybe"}, {}, "updates"),
        ({"colour": "blue"}, {}, "colour"),
        ({"log_level": "loud"}, {}, "log_level"),
    ],
)
def test_bad_settings_name_themselves(
    options: dict[str, Any], environ: dict[str, str], message: str
) -> None:
    from sasci_kg.web.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(options, environ=environ)


def test_the_server_is_prefork_on_linux_and_granian_elsewhere(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sasci_kg.web.config import ConfigError, load_config

    assert load_config({}, environ={}).server == "prefork"  # (CI runs on Linux)
    assert load_config({"server": "granian"}, environ={}).server == "granian"
    monkeypatch.setattr("sys.platform", "darwin")
    assert load_config({}, environ={}).server == "granian"
    with pytest.raises(ConfigError, match="Linux only"):
        load_config({"server": "prefork"}, environ={})
    with pytest.raises(ConfigError, match="prefork, granian or gunicorn"):
        load_config({"server": "uvicorn"}, environ={})


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    from sasci_kg.web.config import ConfigError, load_config

    settings = tmp_path / "serve.toml"
    settings.write_text("prot = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="prot"):
        load_config(config_file=settings, environ={})


# ---------------------------------------------------------------------------------------
# Over the wire, under both servers: requests no test client can send as they are.


@pytest.fixture(scope="module", params=["prefork", "granian"])
def wire(request: pytest.FixtureRequest, store_path: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with run_live_server(store_path, tmp_path_factory.mktemp("wire"), server=request.param,
                         query_workers=1) as live:
        yield live


def exchange(server: LiveServer, head: str, body: bytes = b"") -> tuple[int, dict[str, str],
                                                                        bytes]:
    """Send one request as written (``Connection: close`` added); status, headers, body."""
    port = int(server.url.rsplit(":", 1)[1])
    request = head.replace("\n", "\r\n") + "Host: a\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_part, _, content = data.partition(b"\r\n\r\n")
    line, *fields = head_part.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(line.split()[1]), headers, content


def test_options_asterisk_over_the_wire(wire: LiveServer) -> None:
    status, headers, content = exchange(wire, "OPTIONS * HTTP/1.1\n")
    assert status == 200, content
    assert headers["allow"] == ", ".join(SERVER_METHODS)
    assert headers["content-length"] == "0" and content == b""
    status, headers, content = exchange(wire, "GET * HTTP/1.1\n")
    assert status == 400, content
    problem_shape(status, headers["content-type"], content)


def test_a_lower_case_method_over_the_wire(wire: LiveServer) -> None:
    for method in ("get", "FOO"):
        status, headers, content = exchange(wire, f"{method} /sparql?query=ASK%7B%7D HTTP/1.1\n")
        assert status == 405, content
        assert headers["allow"] == "GET, HEAD, OPTIONS, POST"
        problem_shape(status, headers["content-type"], content)
        status, headers, content = exchange(wire, f"{method} /nowhere HTTP/1.1\n")
        assert status == 404, content


def test_a_body_with_a_content_coding_over_the_wire(wire: LiveServer) -> None:
    body = gzip.compress(b"ASK {}")
    # (the last: a body that is not what it claims, which the lean route could read as text)
    for framing, sent in ((f"Content-Length: {len(body)}\n", body),
                          ("Transfer-Encoding: chunked\n",
                           b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)),
                          ("Content-Length: 6\n", b"ASK {}")):
        status, headers, content = exchange(
            wire, "POST /sparql HTTP/1.1\nContent-Type: application/sparql-query\n"
                  "Content-Encoding: gzip\n" + framing, sent)
        if headers.get("transfer-encoding") == "chunked":
            content = content.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
        assert status == 415, content
        assert headers["accept-encoding"] == "identity"
        assert "without Content-Encoding" in problem_shape(
            status, headers["content-type"], content)["detail"]
