"""SPARQL 1.1 Graph Store HTTP Protocol at ``/rdf-graph-store``.

Reads (GET, HEAD) of ``?graph=IRI``, ``?default`` (the union of all graphs, as for queries) and,
with neither, the whole dataset in TriG or N-Quads. Writes (PUT, POST, DELETE of ``?graph=``)
exist only when updates are enabled and carry the bearer token; they go through the writer
process (staging copy, then swap), never the read-only store the queries use.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from ..executor import DumpJob, GraphWriteJob
from ..vocab import PREFIXES
from .negotiation import DATASET_FORMATS, GRAPH_FORMATS, NQUADS, TRIG
from .problems import BadRequestError, UnsupportedMediaTypeError
from .sparql import (
    check_absolute_iri,
    get_runtime,
    negotiated,
    rdf_response,
    refuse_content_coding,
    require_write_access,
    single,
    time_limit,
    wants_download,
)

bp = Blueprint("graphstore", __name__)

# Formats a single graph can be written in (a quad format would name graphs of its own),
# by media type; text/plain is too vague to take as N-Triples for a write.
WRITE_FORMATS = tuple(f for f in GRAPH_FORMATS if f not in (NQUADS, TRIG))
WRITE_TYPES = {m: f for f in WRITE_FORMATS for m in f.media_types if m != "text/plain"}


def _target(params: MultiDict[str, str]) -> tuple[str, str | None]:
    """("graph", IRI), ("default", None) or ("dataset", None); 400 when ambiguous."""
    graph = single(params, "graph")
    default = "default" in params
    if graph is not None and default:
        raise BadRequestError("send either ?graph=IRI or ?default, not both")
    if graph is not None:
        # Graph Store Protocol §4.2: the graph IRI is absolute here (no base to resolve on).
        check_absolute_iri(graph, "graph")
        return "graph", graph
    return ("default", None) if default else ("dataset", None)


@bp.route("/rdf-graph-store", methods=["GET", "HEAD", "PUT", "POST", "DELETE"])
def graph_store() -> Response:
    """GSP §5.2 (GET/HEAD); PUT, POST and DELETE (§5.3-5.5) only with writes enabled."""
    if request.method in ("PUT", "POST", "DELETE"):
        return _write()
    kind, graph = _target(request.args)
    fmt = negotiated(request.args, DATASET_FORMATS if kind == "dataset" else GRAPH_FORMATS)
    runtime = get_runtime()
    config = runtime.config
    job = DumpJob(
        media_type=fmt.media_type,
        graph=graph,
        dataset=kind == "dataset",
        prefixes=PREFIXES,
        max_rows=config.max_rows,
        max_bytes=config.max_result_bytes,
    )
    outcome = runtime.pool().run(job, timeout=time_limit(request.args))
    stem = {"graph": "graph", "default": "default-graph", "dataset": "dataset"}[kind]
    response = rdf_response(
        outcome.body, fmt, download=stem if wants_download(request.args) else None
    )
    response.headers["X-Result-Rows"] = str(outcome.rows)
    return response


def _write() -> Response:
    require_write_access()
    kind, graph = _target(request.args)
    if kind != "graph" or graph is None:
        raise BadRequestError(
            "writes name one graph with ?graph=IRI; the default graph here is the union of "
            "the named graphs, and the dataset as a whole cannot be replaced over HTTP"
        )
    data = b""
    media_type = ""
    runtime = get_runtime()
    if request.method in ("PUT", "POST"):
        refuse_content_coding()
        fmt = WRITE_TYPES.get(request.mimetype)
        if fmt is None:
            raise UnsupportedMediaTypeError(
                f"the body must be one of {', '.join(f.media_type for f in WRITE_FORMATS)}, "
                f"not {request.mimetype or 'untyped'}",
                [f.media_type for f in WRITE_FORMATS],
            )
        request.max_content_length = runtime.config.max_upload_bytes
        data = request.get_data(cache=False)
        media_type = fmt.media_type
    action = request.method.lower()
    outcome = runtime.writer().run(
        GraphWriteJob(action, graph, data, media_type), timeout=time_limit(request.args)
    )
    response = Response(status=201 if outcome.info.get("created") else 204)
    del response.headers["Content-Type"]  # (no body: not Flask's text/html)
    if response.status_code == 201:
        response.headers["Location"] = request.url
    return response
