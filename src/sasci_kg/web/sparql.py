"""The SPARQL 1.1 Protocol: queries at ``/sparql`` (alias ``/query``), updates at ``/update``,
the service description, and ``/healthz``.

A request is read (parameters decoded once; duplicates and conflicts refused), checked by
:mod:`sasci_kg.guard` (size, nesting, SERVICE/LOAD) and negotiated before any work; then the
query runs, is capped and is serialised in a killable worker (:mod:`sasci_kg.executor`), so the
status line is only sent once the whole body exists. Other blueprints run queries through
:func:`execute_query` and reach the shared state through :func:`get_runtime`. With a remote
engine behind the endpoint the same checks run here first, and only the workers talk to it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote_to_bytes

import pyoxigraph as ox
from flask import Blueprint, Response, current_app, redirect, request, url_for
from werkzeug.datastructures import CombinedMultiDict, MultiDict
from werkzeug.wrappers import Response as BaseResponse

from ..errors import RemoteError
from ..executor import (
    ExecutorBusyError,
    InfoJob,
    Outcome,
    QueryJob,
    QueryTimeoutError,
    StoreUnavailableError,
    UpdateJob,
    WorkerCrashedError,
    WorkerPool,
    rdf_format,
    serialize_rdf,
)
from ..guard import Checked, Policy, WrongOperationError, check_query, check_update
from ..local_runner import InProcessRunner
from ..store import Generation, GenerationWatch
from ..vocab import DCTERMS, PREFIXES, RDF, RDFS, SD, SH, VOID, XSD, Namespace
from .config import ServerConfig
from .negotiation import (
    FORMAT_PARAMETERS,
    GRAPH_FORMATS,
    RESULT_FORMATS,
    Format,
    choose_format,
    content_disposition,
    wants_html,
)
from .problems import (
    BadRequestError,
    ForbiddenError,
    UnauthorizedError,
    UnsupportedContentCodingError,
    UnsupportedMediaTypeError,
    problem,
    remote_detail,
)
from .result_cache import (
    AnswerCache,
    CachedAnswer,
    ResultCache,
    SmallMemo,
    entity_tag,
    not_modified,
)

bp = Blueprint("sparql", __name__)
log = logging.getLogger("sasci_kg.web")

ENTAILMENT = Namespace("http://www.w3.org/ns/entailment/")
FORM_URLENCODED = "application/x-www-form-urlencoded"
# Parameters that may appear once only (SPARQL 1.1 Protocol §2.1: one query per request).
SINGLE_VALUED = ("query", "update", "timeout", "download")
# The parameters of a query request that sends the query alone (most do), but for the query
# itself: none. The lean route (:mod:`.fastpath`) passes this very object, and answer_query
# then takes every parameter's default without looking for each one. Never changed.
NO_OTHER_PARAMETERS: MultiDict[str, str] = MultiDict()


# ---------------------------------------------------------------------------------------
# Shared state: the worker pools and a per-generation cache of the dataset's shape.

# A remote engine has no store generation to watch: its graph list and size are asked again
# when they are older than this (a `sasci-kg load --backend remote` shows within seconds).
REMOTE_INFO_SECONDS = 5.0


class Runtime:
    """The app's worker pools (created lazily, per process) and cached store facts."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self._remote = config.is_remote  # (asked on every query request: three properties)
        self.policy = Policy(
            max_bytes=config.max_query_bytes,
            max_depth=config.max_depth,
            service_allow=config.service_allow,
            default_prefixes=PREFIXES,
        )
        cache_bytes = config.result_cache_mb * 1024 * 1024
        self.results: AnswerCache = ResultCache(cache_bytes,
                                                 max_entry_bytes=max(cache_bytes // 8, 1))
        # The guard's verdicts on texts seen before: a repeated query is answered from the
        # result cache, and checking it again (~20 µs) was most of what such an answer cost.
        # At 1,024 entries a round of the benchmark's light mix (12,000 texts) found none.
        self._checked = SmallMemo(32_768, max_key_chars=16 * 1024 * 1024)
        self._formats = SmallMemo(256)
        self._lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._runner: InProcessRunner | None = None
        self._writer: WorkerPool | None = None
        self._info: Mapping[str, Any] | None = None
        self._info_at = 0.0
        # The store generation, read again only when the store may have changed.
        self._generation = GenerationWatch(config.store)

    def use_runner(self, runner: InProcessRunner) -> None:
        """Run this process's queries in ``runner`` (the prefork server's workers)."""
        with self._lock:
            self._runner = runner

    def pool(self) -> WorkerPool | InProcessRunner:
        """The query pool of this process (a forked server process gets its own); under the
        prefork server, the process itself."""
        with self._lock:
            runner = self._runner
        if runner is not None and runner.owner_pid == os.getpid():
            return runner
        return self.isolated_pool()

    def isolated_pool(self) -> WorkerPool:
        """Query processes of this process's own, for work that must survive a time limit
        (a trace or search out of time answers with what it found; under the prefork server
        a limit ends the process, so such work runs here)."""
        with self._lock:
            if self._pool is None or self._pool.owner_pid != os.getpid():
                c = self.config
                self._pool = WorkerPool(
                    c.backend_settings if c.is_remote else c.store,
                    # (one under the prefork server: each of its processes has its own)
                    size=1 if self._runner is not None else c.query_workers,
                    max_waiting=c.queue_size,
                    wait_timeout=c.queue_timeout,
                    memory_limit_mb=c.worker_memory_mb,
                    # behind the guard, SERVICE reaches nothing (offline.py), unless it must
                    offline=not c.is_remote and not c.service_allow,
                )
            return self._pool

    def writer(self) -> WorkerPool:
        """The single writer process (only when updates are enabled)."""
        with self._lock:
            if self._writer is None or self._writer.owner_pid != os.getpid():
                c = self.config
                self._writer = WorkerPool(
                    c.store, size=1, max_waiting=4, wait_timeout=c.queue_timeout,
                    memory_limit_mb=c.worker_memory_mb, writer=True,
                    offline=not c.service_allow,  # (LOAD in an update fetches, too)
                )
            return self._writer

    def info(self, *, wait: float | None = None) -> Mapping[str, Any]:
        """Named graphs and quad count, computed once per store generation (for a remote
        engine: at most every ``REMOTE_INFO_SECONDS``)."""
        if self.config.is_remote:
            with self._lock:
                cached, fresh = self._info, time.monotonic() - self._info_at < REMOTE_INFO_SECONDS
            if cached is not None and fresh:
                return cached
            outcome = self.pool().run(InfoJob(), timeout=self.config.timeout, wait=wait)
            with self._lock:
                self._info, self._info_at = outcome.info, time.monotonic()
            return outcome.info
        generation = self._generation()
        if generation is None:
            raise StoreUnavailableError(f"{self.config.store}: no store here")
        with self._lock:
            cached = self._info
        if cached is not None and tuple(cached["generation"] or ()) == generation:
            return cached
        outcome = self.pool().run(InfoJob(), timeout=self.config.timeout, wait=wait)
        with self._lock:
            self._info = outcome.info
        return outcome.info

    def check(self, text: str) -> Checked:
        """The guard's verdict on a query text, remembered for texts seen before (a refusal is
        not remembered, nor a verdict that depends on DNS: SERVICE targets are checked anew)."""
        checked: Checked | None = self._checked.get(text)
        if checked is None:
            checked = check_query(text, self.policy)
            if not checked.remote_iris and len(text) <= 16 * 1024:
                self._checked.put(text, checked)
        return checked

    def negotiate(self, accept: str | None, overrides: Sequence[str],
                  offered: Sequence[Format]) -> Format:
        """The response format (as :func:`choose_format`), remembered per request shape."""
        key = (accept, tuple(overrides), offered[0].key)
        fmt: Format | None = self._formats.get(key)
        if fmt is None:
            fmt = choose_format(accept, overrides, offered)
            if len(accept or "") <= 1024:
                self._formats.put(key, fmt)
        return fmt

    def generation(self) -> Generation | None:
        """The store generation now (None for a remote engine: nothing is cached for it)."""
        return None if self._remote else self._generation()

    def cached_info(self) -> Mapping[str, Any] | None:
        with self._lock:
            return self._info

    def close(self) -> None:
        """Stop the worker processes."""
        with self._lock:
            pools = [p for p in (self._pool, self._writer) if p is not None]
            self._pool = self._writer = None
        for pool in pools:
            pool.close()
        self._generation.close()


def get_config() -> ServerConfig:
    """The configuration of the current app."""
    config: ServerConfig = current_app.config["SASCI_KG"]
    return config


def get_runtime() -> Runtime:
    """The worker pools and store facts of the current app."""
    runtime: Runtime = current_app.extensions["sasci_kg"]
    return runtime


# ---------------------------------------------------------------------------------------
# Reading the request.


def single(params: MultiDict[str, str], name: str) -> str | None:
    """The one value of a parameter; 400 if it is repeated."""
    values = params.getlist(name)
    if len(values) > 1:
        raise BadRequestError(f"the {name} parameter is given {len(values)} times; send it once")
    return values[0] if values else None


def read_operation(kind: str) -> tuple[MultiDict[str, str], str | None]:
    """The parameters and the operation text (``kind``: query or update) of a request.

    GET reads the URL. POST takes ``application/x-www-form-urlencoded`` (decoded once, by
    Werkzeug) or ``application/sparql-{kind}`` (the body is the text). A single-valued
    parameter in both the URL and the body is refused rather than guessed.
    """
    check_utf8_form(request.query_string, "the URL's query string")
    if request.method != "POST":
        return request.args, single(request.args, kind)
    refuse_content_coding()
    request.max_content_length = get_config().max_body_bytes
    mimetype = request.mimetype
    if mimetype == FORM_URLENCODED:
        # (Werkzeug parses the form from the bytes kept here.)
        check_utf8_form(request.get_data(cache=True), "the form body")
        form = request.form
        for name in SINGLE_VALUED:
            if name in form and name in request.args:
                raise BadRequestError(
                    f"the {name} parameter is in both the URL and the body; send it once"
                )
        params: MultiDict[str, str] = CombinedMultiDict([form, request.args])
        return params, single(params, kind)
    if mimetype == f"application/sparql-{kind}":
        charset = request.mimetype_params.get("charset", "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaTypeError(
                f"the body must be UTF-8, not {charset}", [f"application/sparql-{kind}"]
            )
        if kind in request.args:
            raise BadRequestError(
                f"the {kind} is both in the body and in the URL's {kind} parameter; send it once"
            )
        try:
            text = request.get_data(cache=False).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequestError(f"the body is not valid UTF-8 ({exc})") from None
        return request.args, text
    accepted = [FORM_URLENCODED, f"application/sparql-{kind}"]
    raise UnsupportedMediaTypeError(
        f"a {kind} POST must be {' or '.join(accepted)}, not {mimetype or 'untyped'}", accepted
    )


def refuse_content_coding() -> None:
    """415 for a request body sent with a content coding other than identity (RFC 9110
    §8.4): nothing here decodes one, and a gzip body read as the text is nonsense."""
    value = request.headers.get("Content-Encoding", "")
    if any(c.strip().lower() not in ("", "identity") for c in value.split(",")):
        raise UnsupportedContentCodingError(
            f"the body is sent with Content-Encoding: {value.strip()}, which this endpoint "
            "does not decode; send the body without Content-Encoding")


def percent_decoded(raw: bytes | str) -> str:
    """A query string or form body percent-decoded as UTF-8 (UnicodeDecodeError if it is
    not), as SPARQL 1.1 Protocol §2.1.1–2.1.2 require."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return unquote_to_bytes(data.replace(b"+", b" ")).decode("utf-8")


def check_utf8_form(raw: bytes, where: str) -> None:
    """400 unless ``raw`` (a query string or a form body) percent-decodes to UTF-8: Werkzeug
    keeps an escape that is not UTF-8 as its text, so ``%E9`` (Latin-1 é) silently became
    the three characters ``%E9`` of a query."""
    try:
        percent_decoded(raw)
    except UnicodeDecodeError as exc:
        raise BadRequestError(
            f"{where} is not UTF-8 once percent-decoded (byte {exc.object[exc.start]:#04x}); "
            "percent-encode the text's UTF-8 bytes (é is %C3%A9)") from None


def graph_iris(params: MultiDict[str, str], name: str) -> list[str]:
    """The values of a graph-IRI parameter, each checked to be an absolute IRI, each once:
    the dataset's default graph is the RDF merge of those named, and a graph merged with
    itself is itself (given twice, pyoxigraph counted its triples twice)."""
    values = params.getlist(name)
    for value in values:
        check_absolute_iri(value, name)
    return list(dict.fromkeys(values))


def check_absolute_iri(value: str, name: str) -> None:
    """400 unless ``value`` is an absolute IRI."""
    problem_text = f"{name}={value!r} is not an absolute IRI (like https://example.org/graph)"
    if ":" not in value:
        raise BadRequestError(problem_text)
    try:
        ox.NamedNode(value)
    except ValueError:
        raise BadRequestError(problem_text) from None


def time_limit(params: MultiDict[str, str], config: ServerConfig | None = None) -> float:
    """The ``timeout`` parameter in seconds, clamped to the maximum; the default without one."""
    config = config or get_config()
    raw = single(params, "timeout")
    if raw is None or raw == "":
        return config.timeout
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise BadRequestError(f"timeout={raw!r} is not a positive number of seconds (like 5)")
    return min(value, config.max_timeout)


def wants_download(params: MultiDict[str, str]) -> bool:
    value = single(params, "download")
    return value is not None and value.lower() not in ("0", "false", "no", "off")


def format_overrides(params: MultiDict[str, str]) -> list[str]:
    return [v for name in FORMAT_PARAMETERS for v in params.getlist(name) if v.strip()]


def negotiated(params: MultiDict[str, str], offered: Sequence[Format]) -> Format:
    """The response format for this request among ``offered`` (406/400 on failure)."""
    return choose_format(request.headers.get("Accept"), format_overrides(params), offered)


def rdf_response(
    body: bytes, fmt: Format, *, download: str | None = None, status: int = 200
) -> Response:
    """A negotiated response: the right Content-Type, ``Vary: Accept``, optional download."""
    response = Response(body, status=status, content_type=fmt.content_type)
    response.headers["Vary"] = "Accept"
    if download:
        response.headers["Content-Disposition"] = content_disposition(fmt, download)
    return response


# ---------------------------------------------------------------------------------------
# Running queries (for this blueprint and the others).


def execute_query(
    text: str,
    fmt: Format,
    *,
    timeout: float | None = None,
    default_graph: Sequence[str] | None = None,
    named_graphs: Sequence[str] | None = None,
    checked: Checked | None = None,
    runtime: Runtime | None = None,
    generation: Generation | None = None,
) -> Outcome:
    """Check and run a query in a worker, serialised as ``fmt``; raises library errors.
    ``generation``: the store's, if the caller has just looked."""
    runtime = runtime or get_runtime()
    config = runtime.config
    checked = checked or check_query(text, runtime.policy)
    dataset = bool(default_graph) or bool(named_graphs)
    job = QueryJob(
        sparql=text,
        media_type=fmt.media_type,
        # Handing pyoxigraph the 37 default prefixes costs ~12 µs a query (and their
        # pickling ~8): only when the text uses a prefix it does not declare, or when the
        # answer is RDF (its Turtle is written with them: then they are not declared to
        # the parser unless the text needs them).
        prefixes=PREFIXES if checked.needs_default_prefixes or checked.returns_graph else {},
        declare_prefixes=checked.needs_default_prefixes,
        default_graph=tuple(default_graph or ()) if dataset else None,
        named_graphs=tuple(named_graphs or ()) if dataset else None,
        # pyoxigraph ignores FROM when asked for the union, so honour the query's own dataset.
        union=not checked.has_dataset_clause,
        max_rows=config.max_rows,
        max_bytes=config.max_result_bytes,
        generation=generation,
    )
    return runtime.pool().run(job, timeout=timeout or config.timeout)


def offered_for(checked: Checked) -> Sequence[Format]:
    """The formats a query's result can take: RDF for CONSTRUCT/DESCRIBE, a table otherwise."""
    return GRAPH_FORMATS if checked.returns_graph else RESULT_FORMATS


@dataclass(frozen=True)
class QueryAnswer:
    """A finished answer to a query request, independent of the web framework: the Flask view
    and the lean WSGI route (:mod:`.fastpath`) both send it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    # The store generation this answer holds for, when it came from the answer cache: the
    # same request gives the same answer until the next load, and has been asked before.
    generation: Generation | None = None


# Conditional requests are answered for GET and HEAD only: RFC 9110 §13.1.2 asks for 412, not
# 304, on other methods, and a POSTed query's answer is not a representation of /sparql.
CONDITIONAL_METHODS = ("GET", "HEAD")


def answer_query(
    runtime: Runtime,
    params: MultiDict[str, str],
    text: str,
    *,
    method: str,
    accept: str | None,
    if_none_match: str | None = None,
    generation: Generation | None = None,
    later: list[Callable[[], None]] | None = None,
) -> QueryAnswer:
    """Check, negotiate and run one query request (SPARQL 1.1 Protocol §2.1) — from the
    cache when this store generation has answered it before (``generation``: the store
    generation the server has just read, if it has). Raises library errors.

    ``later``: where to put the work the answer does not wait for (keeping it in the answer
    cache), for a caller that runs it once the answer is sent; without it, it is done here."""
    if not text.strip():
        raise BadRequestError("the query parameter is empty")
    config = runtime.config
    default_graph: Sequence[str]
    named_graphs: Sequence[str]
    overrides: Sequence[str]
    if params is NO_OTHER_PARAMETERS:  # (the usual request: every parameter at its default)
        default_graph = named_graphs = overrides = ()
        limit, download = config.timeout, False
    else:
        default_graph = graph_iris(params, "default-graph-uri")
        named_graphs = graph_iris(params, "named-graph-uri")
        limit = time_limit(params, config)
        download = wants_download(params)
        overrides = format_overrides(params)
    checked = runtime.check(text)
    fmt = runtime.negotiate(accept, overrides, offered_for(checked))
    conditional = method in CONDITIONAL_METHODS
    answer, generation = _cached_or_run(runtime, text, fmt, checked, default_graph,
                                        named_graphs, limit, tagged=conditional,
                                        now=generation, later=later)
    headers = [("Content-Type", fmt.content_type), ("Vary", "Accept")]
    if conditional:
        # The answer is fixed until the next load: caches keep it, and revalidate (ETag).
        headers += [("ETag", f'"{answer.etag}"'), ("Cache-Control", "no-cache")]
        if if_none_match and not_modified(if_none_match, answer.etag):
            return QueryAnswer(304, headers[1:], b"", generation)
    headers += [
        ("X-Result-Rows", str(answer.rows)),
        ("Server-Timing", f"exec;dur={answer.seconds * 1000:.1f}"),
    ]
    if download:
        headers.append(("Content-Disposition", content_disposition(fmt, "query-result")))
    return QueryAnswer(200, headers, answer.body, generation)


def _cached_or_run(
    runtime: Runtime, text: str, fmt: Format, checked: Checked,
    default_graph: Sequence[str], named_graphs: Sequence[str], limit: float, *, tagged: bool,
    now: Generation | None = None, later: list[Callable[[], None]] | None = None,
) -> tuple[CachedAnswer, Generation | None]:
    """The answer, from the cache or a worker, and the store generation it came from the
    cache under (None: it was computed now); its entity tag is computed when ``tagged`` (a GET
    or HEAD, which sends it) or the answer is kept (in ``later``, if given: see
    :func:`answer_query`)."""
    keep = not checked.volatile and runtime.results.max_bytes > 0
    generation = (now or runtime.generation()) if keep else None
    key = (text, fmt.media_type, tuple(default_graph), tuple(named_graphs))
    if generation is not None:
        cached = runtime.results.get(generation, key)
        if cached is not None:
            return cached, generation
    outcome = execute_query(
        text, fmt, timeout=limit, default_graph=default_graph, named_graphs=named_graphs,
        checked=checked, runtime=runtime, generation=generation,
    )
    etag = entity_tag(fmt.media_type, outcome.body) if tagged else ""
    answer = CachedAnswer(outcome.body, outcome.rows, outcome.seconds, etag)
    # Kept under the generation the worker answered from (a load may have swapped since).
    worked_on = outcome.info.get("generation")
    if generation is not None and worked_on is not None:

        def keep_answer() -> None:
            kept = answer if tagged else replace(
                answer, etag=entity_tag(fmt.media_type, answer.body))
            runtime.results.put(tuple(worked_on), key, kept)

        if later is None:
            keep_answer()
        else:
            later.append(keep_answer)
    return answer, None


def read_query_request() -> tuple[MultiDict[str, str], str | None]:
    """The parameters and query text of a request to the query endpoint (400/415 if the
    request is not a query operation)."""
    if request.method == "POST" and request.mimetype == "application/sparql-update":
        raise WrongOperationError(
            "this is a SPARQL Update body, and this endpoint only answers queries; "
            "send updates to /update (with its token, if updates are enabled)"
        )
    params, text = read_operation("query")
    if "update" in params:  # (with a query too: neither is guessed, nothing silently dropped)
        raise WrongOperationError(
            "the update parameter belongs to /update; this endpoint only answers queries"
        )
    return params, text


@bp.route("/query", methods=["GET", "HEAD", "POST"], endpoint="query")
@bp.route("/sparql", methods=["GET", "HEAD", "POST"], endpoint="query")  # first: url_for's pick
def query() -> BaseResponse:
    """SPARQL 1.1 Protocol §2.1: the query operation; without a query, the description.

    Most query requests never reach this view: :mod:`.fastpath` answers them in front of Flask
    with the same :func:`answer_query`. What it passes on (no query, a chunked body, anything
    unusual) is read here.
    """
    params, text = read_query_request()
    if text is None:
        if request.method == "POST":
            raise BadRequestError("no query: send it as the query parameter or the body")
        return service_description(params)
    answer = answer_query(
        get_runtime(), params, text, method=request.method,
        accept=request.headers.get("Accept"), if_none_match=request.headers.get("If-None-Match"),
    )
    response = Response(answer.body, status=answer.status)
    for name, value in answer.headers:
        response.headers[name] = value
    return response


# ---------------------------------------------------------------------------------------
# Updates: off unless enabled, and then only with the bearer token.


def require_write_access() -> None:
    """403 when writes are off; 401 without the right bearer token (compared in constant time)."""
    config = get_config()
    if config.is_remote:
        raise ForbiddenError(
            "this endpoint is read-only: the data is held by a remote SPARQL engine, which "
            "this endpoint never writes to; it is changed with `sasci-kg load --backend remote`"
        )
    if not config.updates or not config.update_token:
        raise ForbiddenError(
            "this endpoint is read-only: updates and Graph Store writes are disabled"
        )
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        # RFC 6750 §3.1: no error code for a request without bearer credentials (none, or
        # another scheme such as Basic): it was not a bad token, just not one.
        raise UnauthorizedError(
            "writes need an `Authorization: Bearer <token>` header",
            token_given=scheme.lower() == "bearer",
        )
    if not hmac.compare_digest(token.encode("utf-8"), config.update_token.encode("utf-8")):
        raise UnauthorizedError("the bearer token is not valid", token_given=True)


@bp.route("/update", methods=["POST"])
def update() -> Response:
    """SPARQL 1.1 Protocol §2.2: the update operation (writes a staging copy, then swaps)."""
    require_write_access()
    params, text = read_operation("update")
    if text is None or not text.strip():
        raise BadRequestError("no update: send it as the update parameter or the body")
    for name in ("using-graph-uri", "using-named-graph-uri"):
        if name in params:
            raise BadRequestError(f"{name} is not supported; write USING in the update instead")
    limit = time_limit(params)
    runtime = get_runtime()
    check_update(text, runtime.policy)
    runtime.writer().run(UpdateJob(text, prefixes=PREFIXES), timeout=limit)
    return Response(status=204)


# ---------------------------------------------------------------------------------------
# Service description (SPARQL 1.1 Service Description), generated from the configuration.


def _has_query_page() -> bool:
    return any(rule.rule == "/" for rule in current_app.url_map.iter_rules())


def service_description(params: MultiDict[str, str]) -> BaseResponse:
    """The description in RDF (Turtle by default); a browser goes to the query page."""
    if (
        not format_overrides(params)
        and wants_html(request.headers.get("Accept"), GRAPH_FORMATS)
        and _has_query_page()
    ):
        response = redirect(request.script_root + "/", code=303)
        response.headers["Vary"] = "Accept"
        return response
    fmt = negotiated(params, GRAPH_FORMATS)
    triples = describe_service(url_for("sparql.query", _external=True), get_runtime())
    body = serialize_rdf(triples, rdf_format(fmt.media_type), PREFIXES)
    download = "service-description" if wants_download(params) else None
    return rdf_response(body, fmt, download=download)


def describe_service(endpoint: str, runtime: Runtime) -> list[ox.Triple]:
    """The SD triples: endpoint, languages, formats, features, dataset, default prefixes."""
    config = runtime.config
    info = runtime.info()
    node = ox.NamedNode
    service = node(endpoint + "#service")
    dataset = node(endpoint + "#dataset")
    default_graph = node(endpoint + "#default-graph")
    triples: list[ox.Triple] = []

    def add(s: ox.NamedNode, p: ox.NamedNode, o: ox.NamedNode | ox.Literal) -> None:
        triples.append(ox.Triple(s, p, o))

    add(service, RDF.type, SD.Service)
    add(service, SD.endpoint, node(endpoint))
    add(service, DCTERMS.title, ox.Literal("sasci-kg SPARQL endpoint"))
    add(service, SD.supportedLanguage, SD.SPARQL11Query)
    if config.updates:
        # Updates have an endpoint of their own (this one refuses them): a service of its own,
        # over the same dataset.
        update = node(endpoint.rsplit("/", 1)[0] + "/update")
        updates = node(update.value + "#service")
        add(updates, RDF.type, SD.Service)
        add(updates, SD.endpoint, update)
        add(updates, DCTERMS.title, ox.Literal("sasci-kg SPARQL Update endpoint"))
        add(updates, SD.supportedLanguage, SD.SPARQL11Update)
        add(updates, RDFS.comment, ox.Literal(
            "Needs the server's token: Authorization: Bearer TOKEN."))
        add(updates, SD.defaultDataset, dataset)
    for fmt in (*RESULT_FORMATS, *GRAPH_FORMATS):
        add(service, SD.resultFormat, node(fmt.iri))
    add(service, SD.feature, SD.UnionDefaultGraph)
    if config.service_allow:
        add(service, SD.feature, SD.BasicFederatedQuery)
    add(service, SD.defaultEntailmentRegime, ENTAILMENT.Simple)
    limits = (
        f"Read-only unless updates are enabled. Limits: query text {config.max_query_bytes} "
        f"bytes, nesting depth {config.max_depth}, time {config.timeout:g} s by default "
        f"(timeout parameter up to {config.max_timeout:g} s; over it: 504), results "
        f"{config.max_rows} rows and {config.max_result_bytes} bytes (over them: 507), "
        f"{config.query_workers} queries at once (then 503 with Retry-After)."
    )
    if config.service_allow:
        limits += (
            " SERVICE may call only IRIs under: " + ", ".join(config.service_allow) + ". Hosts "
            "that resolve to internal addresses are refused, but the engine resolves the host "
            "again when it connects, so a DNS answer that changes in between (DNS rebinding) "
            "is a residual risk."
        )
    else:
        limits += " SERVICE and LOAD are refused."
    if config.is_remote:
        # Which engine, and how it is reached, is the operator's business: not said here.
        limits += (" Queries are checked here, then answered by a remote SPARQL 1.1 engine "
                   "over the graphs listed below.")
    add(service, RDFS.comment, ox.Literal(limits))
    add(service, SD.defaultDataset, dataset)
    add(dataset, RDF.type, SD.Dataset)
    # the dataset's own description (VoID/DCAT: figures, licence, downloads, provenance)
    add(dataset, RDFS.seeAlso, node(endpoint.rsplit("/", 1)[0] + "/.well-known/void"))
    add(dataset, SD.defaultGraph, default_graph)
    add(default_graph, RDF.type, SD.Graph)
    add(default_graph, RDFS.comment, ox.Literal("The union of all the named graphs."))
    add(default_graph, VOID.triples, ox.Literal(str(info["quads"]), datatype=XSD.integer))
    for graph in info["graphs"]:
        named = node(endpoint + "#graph-" + hashlib.sha256(graph.encode()).hexdigest()[:12])
        add(dataset, SD.namedGraph, named)
        add(named, RDF.type, SD.NamedGraph)
        add(named, SD.name, node(graph))
    for name, namespace in sorted(PREFIXES.items()):
        declaration = node(f"{endpoint}#prefix-{name}")
        add(service, SH.declare, declaration)
        add(declaration, SH.prefix, ox.Literal(name))
        add(declaration, SH.namespace, ox.Literal(namespace, datatype=XSD.anyURI))
    return triples


# ---------------------------------------------------------------------------------------
# Health.


@bp.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> Response:
    """Store reachable, its generation, quads (cached per generation), worker pool state."""
    runtime = get_runtime()
    body: dict[str, Any] = {"status": "ok"}
    if runtime.config.is_remote:
        body["backend"] = "remote"
    else:
        generation = runtime.generation()
        if generation is None:
            return problem(503, "store-unavailable", "Store unavailable",
                           "the store directory is missing", state="unavailable")
        body["generation"] = "-".join(str(part) for part in generation)
    try:
        info = runtime.info(wait=0.5)  # do not queue behind slow queries
        body.update(quads=info["quads"], graphs=len(info["graphs"]))
    except StoreUnavailableError as exc:
        return problem(503, "store-unavailable", "Store unavailable", str(exc),
                       state="unavailable")
    except RemoteError as exc:
        # The server is up but cannot answer: unhealthy (the log has the engine's failure).
        log.warning("health check: %s: %s", type(exc).__name__, exc)
        return problem(503, "store-unavailable", "Store unavailable", remote_detail(exc),
                       state="unavailable")
    except (ExecutorBusyError, QueryTimeoutError, WorkerCrashedError):
        # Busy or slow: say so rather than queue behind the queries.
        body.update(quads=None, graphs=None, note="workers busy; counts not refreshed")
    body["workers"] = runtime.pool().stats()
    # Answers kept for this store generation: the prefork server's processes share one
    # cache; under the other servers each process keeps its own, so the figures are those
    # of the process that answered (named, since calls alternate).
    body["answer_cache"] = {**runtime.results.stats(), "shared": runtime.results.shared,
                            "process": os.getpid()}
    response = Response(json.dumps(body) + "\n", content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
