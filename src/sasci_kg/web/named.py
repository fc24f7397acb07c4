"""Named questions for people who do not write SPARQL: ``/queries`` lists the queries of
``queries/``, ``/queries/<name>`` offers one as a form (IRI parameters with entity pickers)
and answers it as HTML, SPARQL JSON, XML, CSV or TSV (``Accept`` or ``format=``).

Parameters are bound as values by :func:`sasci_kg.queries.bound_query_text` (a leading
VALUES block, each term checked and escaped), never pasted into the text; an IRI parameter
also takes a name, which is resolved as connection tracing resolves names. The bound query
is plain SPARQL, so it runs like any query of ``/sparql``: checked by the guard, then run
and serialised in the endpoint's long-lived query workers, killed at the time limit (504),
capped (507), queued (503).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, request
from flask.typing import ResponseReturnValue

from ..errors import NotFoundError, QueryError
from ..guard import check_query
from ..queries import NamedQuery, bound_query_text, get_query, list_queries
from ..trace_entities import as_iri
from .funders import current_graph, local_url, render_page, root
from .negotiation import JSON as JSON_RESULTS
from .negotiation import RESULT_FORMATS, Format, choose_format, content_disposition
from .problems import BadRequestError
from .search import HTML
from .sparql import execute_query, get_runtime, time_limit
from .tracing import entity_problem, entity_problem_page, json_response

bp = Blueprint("named", __name__, template_folder="templates")

DEFAULT_QUERIES_DIR = Path("queries")
OFFERED: tuple[Format, ...] = (*RESULT_FORMATS, HTML)
# Parameters of the page itself, never query parameters.
PAGE_PARAMETERS = frozenset({"format", "timeout", "download"})
_ABSOLUTE_IRI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s<>\"{}|\\^`]*$")


def queries_dir() -> Path:
    return Path(current_app.config.get("SASCI_KG_QUERIES_DIR", DEFAULT_QUERIES_DIR))


# ---------------------------------------------------------------------------------------
# Running a named query in the query workers.


def run_in_pool(query: NamedQuery, values: dict[str, str], fmt: Format, *,
                timeout: float) -> bytes:
    """Run ``query`` with ``values`` bound (a leading VALUES block) in the endpoint's query
    workers, answered as ``fmt``: the same guard, time limit (504), row and byte caps (507)
    and queue (503) as ``/sparql``."""
    text = bound_query_text(query, values)  # a value that cannot be bound: 400, no work
    checked = check_query(text, get_runtime().policy)
    if checked.returns_graph:
        raise QueryError("named query pages answer SELECT and ASK queries; run a CONSTRUCT or "
                         "DESCRIBE on the query page (/)")
    return execute_query(text, fmt, timeout=timeout, checked=checked).body


# ---------------------------------------------------------------------------------------
# Parameters: what the form sent, checked and resolved.


@dataclass(frozen=True)
class Field:
    """One parameter as the form shows it."""

    name: str
    kind: str
    description: str
    default: str | None
    value: str  # what the person typed (or the default)
    bound: str | None  # what is bound: an IRI or a literal value; None: left unbound
    label: str | None = None  # the name of the entity an IRI names


def read_fields(query: NamedQuery) -> list[Field]:
    """The form's values, resolved: an IRI parameter takes an IRI, a ref
    (``person/…``), a prefixed name or a name to look up. Unknown parameters are 400."""
    known = {p.name for p in query.params}
    unknown = sorted(set(request.args) - known - PAGE_PARAMETERS)
    if unknown:
        raise BadRequestError(
            f"query '{query.name}' has no parameter {', '.join(repr(u) for u in unknown)}; "
            f"its parameters: {', '.join(sorted(known)) or 'none'}")
    fields = []
    tracer = current_graph().tracer
    for param in query.params:
        values = request.args.getlist(param.name)
        if len(values) > 1:
            raise BadRequestError(f"the {param.name} parameter is given {len(values)} times; "
                                  "send it once")
        typed = values[0].strip() if values else ""
        shown = typed if values else (param.default or "")
        bound = typed or (param.default if not values else None) or None
        label = None
        if bound and param.kind == "iri":
            if len(bound) > 2000:
                raise BadRequestError(f"{param.name} is longer than 2000 characters")
            iri = as_iri(bound)  # <…>, http(s)://…, a ref or a prefixed name
            if iri is None:
                iri = bound if _ABSOLUTE_IRI.match(bound) else tracer.resolve(
                    bound, parameter=param.name).iri
            bound = iri
            label = tracer.index.labels.get(bound)
        elif bound is not None and len(bound) > 2000:
            raise BadRequestError(f"{param.name} is longer than 2000 characters")
        fields.append(Field(param.name, param.kind, param.description, param.default,
                            shown, bound, label))
    return fields


# ---------------------------------------------------------------------------------------
# Pages.


def _named_queries() -> list[NamedQuery]:
    directory = queries_dir()
    return list_queries(directory) if directory.is_dir() else []


@bp.get("/queries")
def index() -> ResponseReturnValue:
    """Every named question, with what it asks and its parameters; JSON for scripts."""
    queries = _named_queries()
    overrides = [v for v in request.args.getlist("format") if v.strip()]
    from .search import JSON

    if choose_format(request.headers.get("Accept"), overrides, (JSON, HTML)) is JSON:
        return json_response({"queries": [{
            "name": q.name, "title": q.title, "description": q.description,
            "url": f"{root()}/queries/{q.name}",
            "parameters": [{"name": p.name, "kind": p.kind, "description": p.description,
                            "default": p.default} for p in q.params]} for q in queries]})
    return render_page("queries_index.html", queries=queries)


def _cells(body: bytes) -> dict[str, Any]:
    """SPARQL JSON results as the HTML table shows them (IRIs linked, with names)."""
    from .resources import curie

    data = json.loads(body)
    if "boolean" in data:
        return {"boolean": data["boolean"], "columns": [], "rows": []}
    labels = current_graph().tracer.index.labels
    columns = data["head"]["vars"]
    rows = []
    for binding in data["results"]["bindings"]:
        row: list[dict[str, Any] | None] = []
        for name in columns:
            term = binding.get(name)
            if term is None:
                row.append(None)
            elif term["type"] == "uri":
                iri = term["value"]
                row.append({"kind": "iri", "text": labels.get(iri) or curie(iri),
                            "href": local_url(iri), "title": iri})
            elif term["type"] == "literal":
                meta = term.get("xml:lang") and "@" + term["xml:lang"] or (
                    curie(term["datatype"]) if term.get("datatype") else None)
                row.append({"kind": "literal", "text": term["value"], "meta": meta})
            else:
                row.append({"kind": "bnode", "text": "_:" + term["value"]})
        rows.append(row)
    return {"boolean": None, "columns": columns, "rows": rows}


@bp.get("/queries/<name>")
def named_query(name: str) -> ResponseReturnValue:
    """A named question: the form and its answer (HTML), or the answer as data."""
    query = get_query(name, queries_dir()) if re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) \
        else None
    if query is None:
        raise NotFoundError(f"no named query '{name}'")
    overrides = [v for v in request.args.getlist("format") if v.strip()]
    fmt = choose_format(request.headers.get("Accept"), overrides, OFFERED)
    context: dict[str, Any] = {"query": query, "fields": None, "table": None, "error": None,
                               "formats": RESULT_FORMATS, "seconds": None}
    try:
        fields = read_fields(query)
    except NotFoundError as exc:
        if fmt is not HTML:
            return entity_problem(exc)
        context["fields"] = _typed_fields(query)
        return entity_problem_page(exc, "named_query.html", **context)
    values = {f.name: f.bound for f in fields if f.bound}
    started = time.monotonic()
    # The page is built from SPARQL JSON; data is serialised by the worker as asked.
    body = run_in_pool(query, values, JSON_RESULTS if fmt is HTML else fmt,
                       timeout=time_limit(request.args))
    seconds = time.monotonic() - started
    if fmt is HTML:
        context.update(fields=fields, table=_cells(body), seconds=seconds,
                       data_query="&".join(f"{f.name}={_quote(f.bound)}" for f in fields
                                           if f.bound))
        return render_page("named_query.html", **context)
    response = Response(body, content_type=fmt.content_type)
    response.headers["Vary"] = "Accept"
    if request.args.get("download", "").lower() not in ("", "0", "false", "no", "off"):
        response.headers["Content-Disposition"] = content_disposition(fmt, query.name)
    return response


def _quote(value: str | None) -> str:
    from urllib.parse import quote

    return quote(value or "", safe="")


def _typed_fields(query: NamedQuery) -> list[Field]:
    """The form as typed, when a value could not be resolved."""
    out = []
    for p in query.params:
        typed = request.args.get(p.name, p.default or "")
        out.append(Field(p.name, p.kind, p.description, p.default, typed, None))
    return out
