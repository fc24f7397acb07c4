"""SPARQL as it goes to a remote engine and comes back: the text and the results.

:func:`prepare_query` declares the default prefixes a query uses, binds parameters with a
VALUES block (escaped terms, never pasted text) and finds the query form and dataset clause;
the result parsers read an engine's answer completely, so that a broken body is an error,
not a 200, and give pyoxigraph result objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyoxigraph as ox

from .errors import QueryError, RemoteError, RemoteProtocolError, RemoteTimeoutError
from .vocab import PREFIXES

#: A graph that never exists: the dataset of a query when the engine holds none of ours.
EMPTY_GRAPH = "urn:sasci-kg:no-graph"

SPARQL_RESULTS_JSON = "application/sparql-results+json"
N_TRIPLES = "application/n-triples"
_JSON_TYPES = {SPARQL_RESULTS_JSON, "application/json"}
_XML_TYPES = {"application/sparql-results+xml", "application/xml", "text/xml"}
_TRIPLE_TYPES = {
    N_TRIPLES: ox.RdfFormat.N_TRIPLES,
    "text/plain": ox.RdfFormat.N_TRIPLES,  # N-Triples' media type before RDF 1.1
    "text/turtle": ox.RdfFormat.TURTLE,
    "application/x-turtle": ox.RdfFormat.TURTLE,
}


# ---------------------------------------------------------------------------------------
# SPARQL text: find the query form, the dataset clause, the prefixes used, and where a
# VALUES block binds the parameters — without a full parser, never inside a string, IRI or
# comment. The engine parses the result; we only insert well-formed, escaped terms.

_NAME_START = "A-Za-z\u00C0-\uFFFF"
_NAME_CHARS = "A-Za-z0-9_\\-.\u00B7-\uFFFF"
_TOKEN = re.compile(
    rf"""
      (?P<ws>\s+)
    | (?P<comment>\#[^\n\r]*)
    | (?P<string>'''(?:[^'\\]|\\.|'(?!''))*'''|\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\"
                 |'(?:[^'\\\n\r]|\\.)*'|"(?:[^"\\\n\r]|\\.)*")
    | (?P<iri><[^<>"{{}}|^`\\\x00-\x20]*>)
    | (?P<var>[?$][A-Za-z0-9_\u00B7-\uFFFF]+)
    | (?P<bnode>_:[A-Za-z0-9_\u00B7-\uFFFF.\-]+)
    | (?P<pname>(?:[{_NAME_START}][{_NAME_CHARS}]*+)?:
                (?:[A-Za-z0-9_\-.:%\\\u00B7-\uFFFF]*))
    | (?P<run>[{_NAME_START}][{_NAME_CHARS}]*+)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# A run of name characters and dots that no ":" follows (so no prefixed name starts in it),
# read as the alternation above would read it from each of its characters: whitespace (some
# of it is in the name range), words and single characters. Read whole first, because trying
# a prefixed name from every letter of a run like `a.a.a…` looked to its end each time:
# quadratic, 280 s at 100 KB, in a query process.
_IN_RUN = re.compile(r"(?P<ws>\s+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>.)", re.DOTALL)
_UPDATE_WORDS = {"INSERT", "DELETE", "LOAD", "CLEAR", "CREATE", "DROP", "COPY", "MOVE", "ADD",
                 "WITH"}
_QUERY_FORMS = {"SELECT", "CONSTRUCT", "DESCRIBE", "ASK"}
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    found = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "punct"
        if kind == "run":
            start = match.start()
            for inner in _IN_RUN.finditer(match.group()):
                if inner.lastgroup != "ws":
                    found.append(_Token(inner.lastgroup or "punct", inner.group(),
                                        start + inner.start(), start + inner.end()))
            continue
        if kind in ("ws", "comment"):
            continue
        found.append(_Token(kind, match.group(), match.start(), match.end()))
    return found


@dataclass(frozen=True)
class PreparedQuery:
    """A query made ready for a remote engine: its form and the text to send."""

    form: str  # SELECT, CONSTRUCT, DESCRIBE or ASK
    text: str
    has_dataset: bool  # the query names its own dataset (FROM / FROM NAMED)


def term_text(name: str, term: object) -> str:
    """A term as SPARQL text, checked so that it cannot break out of the VALUES block."""
    if isinstance(term, ox.NamedNode):
        if re.search(r"[<>\"{}|^`\\\x00-\x20]", term.value):
            raise QueryError(f"parameter '{name}': '{term.value}' is not an IRI")
        return f"<{term.value}>"
    if isinstance(term, ox.Literal):
        return str(term)  # N-Triples form: quotes, backslashes and newlines escaped
    raise QueryError(f"parameter '{name}': only IRIs and literals can be bound")


def prepare_query(
    sparql: str,
    *,
    prefixes: dict[str, str] | None = None,
    substitutions: dict[str, ox.NamedNode | ox.Literal] | None = None,
    base_iri: str | None = None,
) -> PreparedQuery:
    """Add the default prefixes the query uses but does not declare, bind ``substitutions``
    with a VALUES block, and say which form the query has; QueryError when it is no query.
    """
    prefixes = PREFIXES if prefixes is None else prefixes
    tokens = _tokens(sparql)
    declared: set[str] = set()
    has_base = False
    i = 0
    while i < len(tokens) and tokens[i].kind == "word" and tokens[i].text.upper() in (
            "PREFIX", "BASE"):
        if tokens[i].text.upper() == "BASE":
            has_base = True
            i += 2
        else:
            if i + 1 < len(tokens) and tokens[i + 1].kind == "pname":
                declared.add(tokens[i + 1].text.split(":", 1)[0])
            i += 3
    if i >= len(tokens) or tokens[i].kind != "word":
        raise QueryError("not a SPARQL query: expected SELECT, CONSTRUCT, DESCRIBE or ASK")
    form = tokens[i].text.upper()
    if form in _UPDATE_WORDS:
        raise QueryError(f"{form} is an update, not a query; the query URL takes only "
                         "SELECT, CONSTRUCT, DESCRIBE and ASK")
    if form not in _QUERY_FORMS:
        raise QueryError(f"not a SPARQL query: expected SELECT, CONSTRUCT, DESCRIBE or ASK, "
                         f"found '{tokens[i].text}'")
    body = tokens[i + 1:]

    used = {t.text.split(":", 1)[0] for t in tokens if t.kind == "pname"}
    prologue = []
    if base_iri and not has_base:
        prologue.append(f"BASE {term_text('base_iri', ox.NamedNode(base_iri))}")
    for name in sorted(used - declared):
        if name in prefixes:
            prologue.append(f"PREFIX {name}: <{prefixes[name]}>")

    has_dataset = _has_dataset(body)
    text = sparql
    if substitutions:
        text = _bind_values(sparql, form, body, substitutions)
    if prologue:
        text = "\n".join(prologue) + "\n" + text
    return PreparedQuery(form=form, text=text, has_dataset=has_dataset)


def _has_dataset(body: list[_Token]) -> bool:
    """Whether a FROM stands outside every group (one pass: asking, for each token, how deep
    it stands cost a pass per token, 246 s on a 100 KB query)."""
    depth = 0
    for t in body:
        if t.text == "{":
            depth += 1
        elif t.text == "}":
            depth -= 1
        elif depth == 0 and t.kind == "word" and t.text.upper() == "FROM":
            return True
    return False


def _bind_values(sparql: str, form: str, body: list[_Token],
                 substitutions: dict[str, ox.NamedNode | ox.Literal]) -> str:
    """Insert ``VALUES ?name { term }`` at the start of the query's WHERE group."""
    for name in substitutions:
        if not _VARIABLE_NAME.match(name):
            raise QueryError(f"'{name}' is not a SPARQL variable name")
    if form == "SELECT":
        projected = _projection(body)
        if projected is not None:
            for name in substitutions:
                if name not in projected:
                    raise QueryError(f"query cannot run: the SPARQL query does not project "
                                     f"?{name} in its SELECT clause; a parameter must be a "
                                     "projected variable")
    block = " ".join(f"VALUES ?{name} {{ {term_text(name, term)} }}"
                     for name, term in substitutions.items())
    groups_to_skip = 1 if form == "CONSTRUCT" else 0
    if form == "CONSTRUCT" and body and body[0].kind == "word" and body[0].text.upper() == \
            "WHERE":
        groups_to_skip = -1  # CONSTRUCT WHERE { triples }: no VALUES inside; append
    braces = parens = 0
    if groups_to_skip >= 0:
        for token in body:
            if token.text == "(":
                parens += 1
            elif token.text == ")":
                parens -= 1
            elif token.text == "{":
                if braces == 0 and parens == 0:
                    if groups_to_skip == 0:
                        return f"{sparql[:token.end]} {block}\n{sparql[token.end:]}"
                    groups_to_skip -= 1
                braces += 1
            elif token.text == "}":
                braces -= 1
    # No WHERE group (DESCRIBE <iri>, CONSTRUCT WHERE): a trailing VALUES clause.
    return f"{sparql}\n{block}\n"


def _projection(body: list[_Token]) -> set[str] | None:
    """The variables a SELECT projects, or None for ``SELECT *``."""
    names: set[str] = set()
    parens = 0
    previous = ""
    for token in body:
        if token.text in ("{",) or (token.kind == "word" and token.text.upper() in (
                "WHERE", "FROM")) and parens == 0:
            break
        if token.text == "(":
            parens += 1
        elif token.text == ")":
            parens -= 1
        elif token.text == "*" and parens == 0:
            return None
        elif token.kind == "var" and (parens == 0 or previous == "AS"):
            names.add(token.text[1:])
        previous = token.text.upper()
    return names


# ---------------------------------------------------------------------------------------
# Results: parse completely before handing back, so a broken body is an error, not a 200.

def _label_map() -> Callable[[str], str]:
    labels: dict[str, str] = {}

    def label(value: str) -> str:
        if value not in labels:
            labels[value] = f"r{len(labels)}"
        return labels[value]

    return label


def _normalise_json_bnodes(data: dict[str, object]) -> None:
    """Give blank nodes labels pyoxigraph accepts (Virtuoso sends ``nodeID://b10000``)."""
    label = _label_map()
    results = data.get("results")
    bindings = results.get("bindings") if isinstance(results, dict) else None
    if not isinstance(bindings, list):
        return
    for row in bindings:
        if not isinstance(row, dict):
            continue
        for value in row.values():
            if isinstance(value, dict) and value.get("type") == "bnode" and isinstance(
                    value.get("value"), str):
                value["value"] = label(value["value"])


def parse_solutions(body: bytes, media_type: str, what: str
                    ) -> ox.QuerySolutions | ox.QueryBoolean:
    """A SELECT or ASK answer (SPARQL JSON or XML), read to the end; RemoteError if broken."""
    if media_type in _JSON_TYPES:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _broken(body, what, f"not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not ("boolean" in data or "results" in data):
            raise _broken(body, what, "not a SPARQL JSON result (no results or boolean)")
        _normalise_json_bnodes(data)
        payload = json.dumps(data).encode()
        fmt = ox.QueryResultsFormat.JSON
    elif media_type in _XML_TYPES:
        label = _label_map()
        payload = re.sub(rb"<bnode>([^<]*)</bnode>",
                         lambda m: b"<bnode>" + label(m.group(1).decode()).encode() +
                         b"</bnode>", body)
        fmt = ox.QueryResultsFormat.XML
    else:
        raise RemoteProtocolError(f"{what}: the engine answered '{media_type or 'no type'}', "
                                  "not SPARQL results JSON or XML")
    try:
        parsed = ox.parse_query_results(payload, format=fmt)
        if isinstance(parsed, ox.QuerySolutions):
            for _ in parsed:  # read to the end: a bad term fails here, not in the caller
                pass
            parsed = ox.parse_query_results(payload, format=fmt)
    except (SyntaxError, ValueError) as exc:
        raise _broken(body, what, f"not valid SPARQL results ({exc})") from None
    return parsed


def _broken(body: bytes, what: str, why: str) -> RemoteError:
    text = body[-200:].decode("utf-8", "replace")
    if "operation has been cancelled" in text or "timed out" in text.lower():
        # oxigraph serve --timeout-s: a 200 whose body stops with this text
        return RemoteTimeoutError(f"{what}: the engine stopped the query at its time limit "
                                  "and sent a broken answer")
    return RemoteProtocolError(f"{what}: {why}")


def count_rows(body: bytes, media_type: str) -> int:
    """How many result rows or triples an answer holds (0 when it cannot tell)."""
    if media_type in _JSON_TYPES:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return 0
        results = data.get("results") if isinstance(data, dict) else None
        bindings = results.get("bindings") if isinstance(results, dict) else None
        return len(bindings) if isinstance(bindings, list) else 0
    if media_type in _XML_TYPES:
        return len(re.findall(rb"<result[\s>]", body))
    return sum(1 for line in body.splitlines() if line.strip() and not line.startswith(b"#"))


def parse_triples(body: bytes, media_type: str, what: str) -> list[ox.Triple]:
    """A CONSTRUCT, DESCRIBE or graph read (N-Triples or Turtle); RemoteError if broken."""
    fmt = _TRIPLE_TYPES.get(media_type)
    if fmt is None:
        raise RemoteProtocolError(f"{what}: the engine answered '{media_type or 'no type'}', "
                                  "not N-Triples or Turtle")
    try:
        return [item.triple if isinstance(item, ox.Quad) else item
                for item in ox.parse(body, format=fmt)]
    except (SyntaxError, ValueError) as exc:
        raise _broken(body, what, f"not valid {fmt.name} ({exc})") from None


def as_query_triples(triples: Iterable[ox.Triple]) -> ox.QueryTriples:
    """A pyoxigraph ``QueryTriples`` holding ``triples`` (it has no public constructor)."""
    store = ox.Store()
    graph = ox.NamedNode(EMPTY_GRAPH)
    store.extend(ox.Quad(t.subject, t.predicate, t.object, graph) for t in triples)
    result = store.query("CONSTRUCT { ?s ?p ?o } WHERE { GRAPH <" + EMPTY_GRAPH +
                         "> { ?s ?p ?o } }")
    assert isinstance(result, ox.QueryTriples)
    return result
