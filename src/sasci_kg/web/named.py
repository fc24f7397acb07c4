"""Named questions for people who do not write SPARQL: ``/queries`` lists the queries of
``queries/``, ``/queries/<name>`` offers one as a form (IRI parameters with entity pickers)
and answers it as HTML, SPARQL JSON, XML, CSV or TSV (``Accept`` or ``format=``).

Parameters are bound as values by :func:`sasci_kg.queries.run_named_query` (pyoxigraph
substitutions), never pasted into the text; an IRI parameter also takes a name, which is
resolved as connection tracing resolves names. Each run happens in a process of its own,
started for it and killed at the endpoint's time limit (the query workers take no
substitutions); at most ``query_workers`` run at once, then 503.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import re
import resource
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pyoxigraph as ox
from flask import Blueprint, Response, current_app, request
from flask.typing import ResponseReturnValue

from ..backends import BackendSettings, open_backend
from ..errors import NotFoundError, QueryError, SasciKgError, StoreError
from ..executor import (
    ExecutorBusyError,
    QueryTimeoutError,
    ResultTooLargeError,
    StoreUnavailableError,
    WorkerCrashedError,
    results_format,
)
from ..queries import NamedQuery, bind_parameters, get_query, list_queries, run_named_query
from ..trace_entities import as_iri
from .funders import current_graph, local_url, render_page, root
from .negotiation import RESULT_FORMATS, Format, choose_format, content_disposition
from .problems import BadRequestError
from .search import HTML
from .sparql import get_config, time_limit
from .tracing import entity_problem, entity_problem_page, json_response

bp = Blueprint("named", __name__, template_folder="templates")

DEFAULT_QUERIES_DIR = Path("queries")
OFFERED: tuple[Format, ...] = (*RESULT_FORMATS, HTML)
# Parameters of the page itself, never query parameters.
PAGE_PARAMETERS = frozenset({"format", "timeout", "download"})
# How long a new process may take to start and open the store (not the query's time).
STARTUP_SECONDS = 30.0
_ABSOLUTE_IRI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s<>\"{}|\\^`]*$")


def queries_dir() -> Path:
    return Path(current_app.config.get("SASCI_KG_QUERIES_DIR", DEFAULT_QUERIES_DIR))


# ---------------------------------------------------------------------------------------
# Running a named query in a process that can be killed.


def _term_json(term: object) -> dict[str, str]:
    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.BlankNode):
        return {"type": "bnode", "value": term.value}
    if isinstance(term, ox.Literal):
        out = {"type": "literal", "value": term.value}
        if term.language:
            out["xml:lang"] = term.language
        elif term.datatype.value != "http://www.w3.org/2001/XMLSchema#string":
            out["datatype"] = term.datatype.value
        return out
    raise QueryError(f"a named query gave a term this page cannot show: {term!r}")


def results_json(result: Any, max_rows: int, max_bytes: int) -> bytes:
    """SPARQL 1.1 JSON results of a SELECT or ASK, within the row and byte caps."""
    if isinstance(result, ox.QueryBoolean):
        return json.dumps({"head": {}, "boolean": bool(result)}).encode()
    if not isinstance(result, ox.QuerySolutions):
        raise QueryError("named query pages answer SELECT and ASK queries; run a CONSTRUCT or "
                         "DESCRIBE on the query page (/)")
    names = [v.value for v in result.variables]
    bindings: list[dict[str, dict[str, str]]] = []
    size = 0
    for solution in result:
        if len(bindings) >= max_rows:
            raise ResultTooLargeError("max-rows", max_rows)
        row = {n: _term_json(solution[n]) for n in names if solution[n] is not None}
        size += len(json.dumps(row))
        if size > max_bytes:
            raise ResultTooLargeError("max-bytes", max_bytes)
        bindings.append(row)
    return json.dumps({"head": {"vars": names}, "results": {"bindings": bindings}},
                      ensure_ascii=False).encode()


def _child_main(conn: Connection, settings: BackendSettings, query: NamedQuery,
                values: dict[str, str],
                max_rows: int, max_bytes: int, memory_mb: int) -> None:
    """The child: open the store read-only, run, send ("ok", body) or an error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # Linux: die with the server process
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        backend = open_backend(settings)
        conn.send(("ready",))  # the time limit counts from here: the query, not the start
        result = run_named_query(backend, query, values)
        reply: tuple[Any, ...] = ("ok", results_json(result, max_rows, max_bytes))
    except ResultTooLargeError as exc:
        reply = ("too-large", exc.cap, exc.limit)
    except StoreError as exc:
        reply = ("store", str(exc))
    except SasciKgError as exc:
        reply = ("query", str(exc))
    conn.send(reply)
    conn.close()


def _slots() -> threading.BoundedSemaphore:
    slots: threading.BoundedSemaphore | None = current_app.extensions.get("sasci_kg_named")
    if slots is None:
        slots = current_app.extensions.setdefault(
            "sasci_kg_named", threading.BoundedSemaphore(get_config().query_workers))
    return slots


def run_isolated(query: NamedQuery, values: dict[str, str], *, timeout: float) -> bytes:
    """Run ``query`` with ``values`` bound in a process of its own; SPARQL JSON bytes.

    Past ``timeout``, counted from when the store is open, the process is killed
    (:class:`QueryTimeoutError`, 504); with every slot taken for the endpoint's queue time,
    :class:`ExecutorBusyError` (503)."""
    config = get_config()
    slots = _slots()
    if not slots.acquire(timeout=config.queue_timeout):
        raise ExecutorBusyError(max(1, round(config.queue_timeout)))
    try:
        context = multiprocessing.get_context("forkserver")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_child_main, name="sasci-kg-named-query", daemon=True,
            args=(sender, config.backend_settings, query, values, config.max_rows,
                  config.max_result_bytes, config.worker_memory_mb))
        process.start()
        sender.close()
        try:
            try:
                if not receiver.poll(STARTUP_SECONDS):
                    raise WorkerCrashedError("run", None)
                reply = receiver.recv()
                if reply[0] == "ready":
                    if not receiver.poll(timeout):
                        raise QueryTimeoutError(timeout)
                    reply = receiver.recv()
            except EOFError:
                process.join(timeout=1)
                raise WorkerCrashedError("run", process.exitcode) from None
        finally:
            receiver.close()
            if process.is_alive():
                process.kill()
            process.join(timeout=5)
            process.close()
    finally:
        slots.release()
    if reply[0] == "ok":
        body: bytes = reply[1]
        return body
    if reply[0] == "too-large":
        raise ResultTooLargeError(reply[1], reply[2])
    if reply[0] == "store":
        raise StoreUnavailableError(reply[1])
    raise QueryError(reply[1])


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
    bind_parameters(query, values)  # a value that cannot be bound: 400 before any work
    started = time.monotonic()
    body = run_isolated(query, values, timeout=time_limit(request.args))
    seconds = time.monotonic() - started
    if fmt is HTML:
        context.update(fields=fields, table=_cells(body), seconds=seconds,
                       data_query="&".join(f"{f.name}={_quote(f.bound)}" for f in fields
                                           if f.bound))
        return render_page("named_query.html", **context)
    if fmt.key != "json":
        parsed = ox.parse_query_results(body, ox.QueryResultsFormat.JSON)
        body = parsed.serialize(format=results_format(fmt.media_type)) or b""
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
