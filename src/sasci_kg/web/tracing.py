"""Connection tracing on the web: ``/api/trace`` and ``/api/connections`` (JSON, the CLI's
options as parameters) and the pages ``/trace`` and ``/connections`` (sentences with their
evidence, links to the entities' pages, a picture of the connections).

A name that matches nothing answers 404, one that matches several 400, both as
problem+json listing the suggestions (the pages show them as links to pick from).

Every query runs in the endpoint's killable query workers (:mod:`.pool_backend`): the
search's hops until its ``timeout`` (stopped there, the answer says the search ran out of
time), every other query within the same limit (past it: 504).
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from ..errors import AmbiguousEntityError, NotFoundError, UnknownEntityError
from ..network import write_network
from ..trace import (
    DEFAULT_HOPS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_PATHS,
    MAX_HOPS,
    MAX_LENGTH,
    MAX_PATHS,
    NETWORK_KINDS,
    Node,
    Tracer,
    TraceResult,
    paths_network,
)
from ..trace_entities import short_ref
from .funders import (
    current_graph,
    inline_svg,
    int_arg,
    links_arg,
    local_url,
    render_page,
)
from .pool_backend import PoolTracer
from .problems import BadRequestError, problem
from .sparql import time_limit

bp = Blueprint("tracing", __name__, template_folder="templates")


# ---------------------------------------------------------------------------------------
# Parameters and errors.


def timeout_arg() -> float:
    """``timeout`` in seconds: the endpoint's default, at most its maximum (the same rule
    as /sparql, so one parser)."""
    return time_limit(request.args)


def request_limit(tracer: Tracer, seconds: float) -> AbstractContextManager[None]:
    """Each query of ``tracer`` in this block may run ``seconds`` (when its queries run in
    the query workers, as they do on the web)."""
    if isinstance(tracer, PoolTracer):
        return tracer.pool.limit(seconds)
    return nullcontext()


def text_arg(name: str) -> str:
    value = request.args.get(name, "").strip()
    if not value:
        raise BadRequestError(f"the {name} parameter is missing: give a name, part of one, "
                              "an acronym or an IRI")
    if len(value) > 500:
        raise BadRequestError(f"{name} is longer than 500 characters")
    return value


def suggestion_dicts(exc: NotFoundError) -> list[dict[str, Any]]:
    """The candidates of an entity error, as JSON-ready dicts with their pages."""
    out = []
    for candidate in getattr(exc, "candidates", []):
        out.append({"iri": candidate.iri, "ref": candidate.ref, "label": candidate.label,
                    "kind": candidate.kind, "href": local_url(candidate.iri)})
    return out


def entity_problem(exc: NotFoundError) -> Response:
    """404 for a name that matches nothing, 400 for one that matches several; with the
    suggestions either way."""
    extra: dict[str, Any] = {"parameter": getattr(exc, "parameter", None),
                             "text": getattr(exc, "text", None),
                             "suggestions": suggestion_dicts(exc)}
    if isinstance(exc, AmbiguousEntityError):
        return problem(400, "bad-request", "Ambiguous name", str(exc), **extra)
    return problem(404, "not-found", "Not found", str(exc), **extra)


def entity_problem_page(exc: NotFoundError, template: str, **context: Any) -> Response:
    """The page again, with the error and its suggestions as links that replace the
    parameter that was not understood."""
    parameter = getattr(exc, "parameter", None)
    picks = []
    for s in suggestion_dicts(exc):
        args = {k: v for k, v in request.args.items()}
        if parameter:
            args[parameter] = s["ref"]
        picks.append({**s, "pick": request.path + "?" + urlencode(args)})
    status = 400 if isinstance(exc, AmbiguousEntityError) else 404
    context.pop("error", None)
    return render_page(template, status=status, error={
        "message": str(exc), "parameter": parameter, "text": getattr(exc, "text", ""),
        "ambiguous": isinstance(exc, AmbiguousEntityError), "suggestions": picks,
        "unknown": isinstance(exc, UnknownEntityError)}, **context)


def json_response(data: Any) -> Response:
    body = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    response = Response(body, content_type="application/json")
    response.headers["Cache-Control"] = "no-cache"
    return response


# ---------------------------------------------------------------------------------------
# Tracing.


def run_trace(source: str, target: str) -> TraceResult:
    """Resolve both names (naming the web parameters in errors), then trace."""
    tracer = current_graph().tracer
    max_length = int_arg("max_length", DEFAULT_MAX_LENGTH, 1, MAX_LENGTH)
    paths = int_arg("paths", DEFAULT_PATHS, 1, MAX_PATHS)
    links, timeout = links_arg(), timeout_arg()
    with request_limit(tracer, timeout):
        start = tracer.resolve(source, parameter="from")
        end = tracer.resolve(target, parameter="to")
        if start.iri == end.iri:
            raise BadRequestError(f"from and to are the same entity ({start.label}); give "
                                  "two different ones")
        return tracer.trace(start.iri, end.iri, max_length=max_length, paths=paths,
                            links=links, timeout=timeout)


@bp.get("/api/trace")
def api_trace() -> ResponseReturnValue:
    """How ``from`` is connected to ``to``: the CLI's ``trace --format json``."""
    source, target = text_arg("from"), text_arg("to")
    try:
        result = run_trace(source, target)
    except NotFoundError as exc:
        return entity_problem(exc)
    data = result.to_dict()
    data["pages"] = {"trace": _trace_url(result.source, result.target),
                     "from": local_url(result.source.iri), "to": local_url(result.target.iri)}
    return json_response(data)


def _trace_url(a: Node, b: Node) -> str:
    from .funders import root

    return root() + "/trace?" + urlencode({"from": a.ref, "to": b.ref})


@bp.get("/trace")
def trace_page() -> ResponseReturnValue:
    """The tracing page: a form, then the connections in sentences with evidence and a
    picture with the shortest one marked."""
    source = request.args.get("from", "").strip()
    target = request.args.get("to", "").strip()
    context: dict[str, Any] = {"source": source, "target": target, "result": None,
                               "svg": None, "error": None, "max_length": MAX_LENGTH,
                               "max_paths": MAX_PATHS, "network_kinds": NETWORK_KINDS}
    if not source and not target:
        return render_page("trace.html", **context)
    if not source or not target:
        context["error"] = {"message": "Give both ends: an organisation or a person in each "
                                       "box.", "suggestions": []}
        return render_page("trace.html", status=400, **context)
    try:
        result = run_trace(source, target)
    except NotFoundError as exc:
        return entity_problem_page(exc, "trace.html", **context)
    svg = None
    if result.paths:
        svg = inline_svg(write_network(paths_network(result), "svg"))
    context.update(result=result, svg=svg, paths=[_path_view(p) for p in result.paths],
                   network_link=_network_url(result))
    return render_page("trace.html", svgs=[svg] if svg else [], **context)


def _network_url(result: TraceResult) -> str:
    from .funders import root

    return root() + "/network?" + urlencode({"from": result.source.ref,
                                             "to": result.target.ref})


def _path_view(path: Any) -> dict[str, Any]:
    """A path as the page shows it: the sentence, the chain of nodes, each step with its
    evidence (distinct excerpts, each with the facts behind it)."""
    steps = []
    for step in path.steps:
        excerpts = [{"text": text, "facts": sorted({link.fact for link in links if link.fact})}
                    for text, links in step.excerpts(step.primary_links)]
        others = [link for link in step.links if link not in step.primary_links]
        steps.append({"step": step, "excerpts": excerpts, "others": others})
    return {"path": path, "steps": steps, "ids": [n.ref for n in path.nodes]}


# ---------------------------------------------------------------------------------------
# What is near one entity.


def run_connections(entity: str) -> Any:
    tracer = current_graph().tracer
    hops = int_arg("hops", DEFAULT_HOPS, 1, MAX_HOPS)
    links, timeout = links_arg(), timeout_arg()
    with request_limit(tracer, timeout):
        centre = tracer.resolve(entity, parameter="entity")
        return tracer.connections(centre.iri, hops=hops, links=links, timeout=timeout)


@bp.get("/api/connections")
def api_connections() -> ResponseReturnValue:
    """Everything within ``hops`` links of ``entity``: the CLI's ``connections --format
    json``."""
    try:
        found = run_connections(text_arg("entity"))
    except NotFoundError as exc:
        return entity_problem(exc)
    return json_response(found.to_dict())


@bp.get("/connections")
def connections_page() -> ResponseReturnValue:
    """Who and what is near an entity, grouped, with the sessions and people between."""
    entity = request.args.get("entity", "").strip()
    context: dict[str, Any] = {"entity": entity, "found": None, "error": None,
                               "hops": request.args.get("hops", str(DEFAULT_HOPS)),
                               "max_hops": MAX_HOPS}
    if not entity:
        return render_page("connections.html", **context)
    try:
        found = run_connections(entity)
    except NotFoundError as exc:
        return entity_problem_page(exc, "connections.html", **context)
    context.update(found=found, hops=str(found.hops))
    return render_page("connections.html", **context)


__all__ = ["bp", "entity_problem", "entity_problem_page", "short_ref"]
