"""One error shape for the whole app: RFC 9457 ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail`` and extension members (``line``/``column``, ``offered``, …).

:func:`problem` builds a response any blueprint can return; :func:`init_app` installs the
handlers that turn library exceptions, HTTP errors (404, 405, 413, …) and unexpected failures
into it. No traceback ever reaches a client: unexpected errors are logged and answered 500.
A remote engine's failure is answered 502 (504 for a time-out) with a detail that does not name
the engine's address; the full message goes to the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..errors import (
    DownloadBusyError,
    NotFoundError,
    QueryError,
    QueryRefusedError,
    RemoteError,
    RemoteIncompleteError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    SasciKgError,
    StoreError,
    StoreLockedError,
)
from ..executor import (
    ExecutorBusyError,
    InvalidRdfError,
    QueryTimeoutError,
    QueryTooComplexError,
    ResultTooLargeError,
    StoreUnavailableError,
    WorkerCrashedError,
)
from ..guard import (
    QueryChainTooLongError,
    QuerySyntaxError,
    QueryTooDeepError,
    QueryTooLargeError,
    RemoteAccessRefusedError,
    WrongOperationError,
)
from ..vocab import BASE
from .config import ConfigError
from .negotiation import ConflictingFormatError, NotAcceptableError

log = logging.getLogger("sasci_kg.web")

PROBLEM_JSON = "application/problem+json"


def error_response(app: Flask, exc: Exception, environ: dict[str, Any]) -> Response:
    """The response the app's error handlers give for ``exc`` on the request ``environ``,
    for code that answers outside a Flask view (the lean route, the prefork server)."""
    with app.request_context(environ):
        response = app.make_response(app.handle_user_exception(exc))
        return app.process_response(response)
PROBLEM_BASE = BASE + "problem/"


class BadRequestError(SasciKgError):
    """A request whose parameters are missing, repeated, conflicting or malformed (400)."""


class UnsupportedMediaTypeError(SasciKgError):
    """A request body in a content type this route does not take (415)."""

    def __init__(self, message: str, accepted: list[str]):
        super().__init__(message)
        self.accepted = accepted


class UnsupportedContentCodingError(SasciKgError):
    """A request body sent with a content coding (gzip, …), which this server does not
    decode (415)."""


class UnauthorizedError(SasciKgError):
    """A write without a valid bearer token (401)."""

    def __init__(self, message: str, *, token_given: bool):
        super().__init__(message)
        self.token_given = token_given


class ForbiddenError(SasciKgError):
    """A write on an endpoint whose writes are switched off (403)."""


class PayloadTooLargeError(SasciKgError):
    """A request body over this route's size limit (413)."""


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response. ``slug`` names the problem type (under ``…/problem/``)."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    response = Response(
        json.dumps(body, ensure_ascii=False, indent=2) + "\n",
        status=status,
        content_type=PROBLEM_JSON,
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# (exception class, status, slug, title) — the first class that matches wins.
_MAP: list[tuple[type[BaseException], int, str, str]] = [
    (QuerySyntaxError, 400, "syntax-error", "SPARQL syntax error"),
    (QueryTooLargeError, 413, "query-too-large", "Query too large"),
    (QueryTooDeepError, 400, "query-too-deep", "Query nested too deeply"),
    (QueryChainTooLongError, 400, "query-too-complex", "Query too complex"),
    (RemoteAccessRefusedError, 403, "remote-access-refused", "SERVICE or LOAD refused"),
    (WrongOperationError, 400, "wrong-operation", "Wrong operation for this endpoint"),
    (QueryTimeoutError, 504, "query-timeout", "Query time limit reached"),
    (ResultTooLargeError, 507, "result-too-large", "Result over this endpoint's cap"),
    (ExecutorBusyError, 503, "busy", "Too many queries at once"),
    (QueryTooComplexError, 400, "query-too-complex", "Query too complex to parse"),
    (WorkerCrashedError, 500, "worker-crashed", "Query worker crashed"),
    (StoreLockedError, 503, "store-busy", "The store is being written"),
    (DownloadBusyError, 503, "download-being-made", "The download is being made"),
    (RemoteTimeoutError, 504, "remote-timeout", "The SPARQL engine did not answer in time"),
    (RemoteError, 502, "remote-error", "The SPARQL engine failed"),
    (StoreUnavailableError, 503, "store-unavailable", "Store unavailable"),
    (InvalidRdfError, 400, "invalid-rdf", "Invalid RDF"),
    (NotAcceptableError, 406, "not-acceptable", "Not acceptable"),
    (ConflictingFormatError, 400, "bad-request", "Conflicting parameters"),
    (BadRequestError, 400, "bad-request", "Bad request"),
    (UnsupportedMediaTypeError, 415, "unsupported-media-type", "Unsupported media type"),
    (UnsupportedContentCodingError, 415, "unsupported-content-coding",
     "Unsupported content coding"),
    (UnauthorizedError, 401, "unauthorized", "Authentication required"),
    (ForbiddenError, 403, "forbidden", "Forbidden"),
    (PayloadTooLargeError, 413, "payload-too-large", "Request body too large"),
    (NotFoundError, 404, "not-found", "Not found"),
    (QueryRefusedError, 403, "query-refused", "Query refused"),
    (QueryError, 400, "query-error", "Query cannot run"),
    (ConfigError, 500, "internal-error", "Server misconfigured"),
    (StoreError, 500, "store-error", "Store error"),
]


def remote_detail(exc: RemoteError) -> str:
    """What a client is told of a remote engine's failure: what happened and what to do, but
    not the engine's address or its raw answer (those are in the server's log)."""
    if isinstance(exc, RemoteTimeoutError):
        return ("the SPARQL engine behind this endpoint did not give a complete answer in time; "
                "make the query more selective (a LIMIT, fewer OPTIONALs or unbounded paths) or "
                "try again later")
    if isinstance(exc, RemoteUnavailableError):
        return "the SPARQL engine behind this endpoint cannot be reached; try again later"
    if isinstance(exc, RemoteIncompleteError):
        return ("the SPARQL engine behind this endpoint cut its answer short (a row or size "
                "cap), so it is refused rather than passed on as whole; ask for less with "
                "LIMIT/OFFSET")
    return ("the SPARQL engine behind this endpoint failed or gave an answer that cannot be "
            "trusted; the details are in the server's log")


def problem_for(exc: SasciKgError) -> Response:
    """The problem response for a library exception."""
    status, slug, title = next(
        ((status, slug, title) for cls, status, slug, title in _MAP if isinstance(exc, cls)),
        (500, "internal-error", "Internal error"),
    )
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, (QuerySyntaxError, QueryTooDeepError)):
        extra.update(line=exc.line, column=exc.column)
    if isinstance(exc, QueryTooLargeError):
        extra.update(limit=exc.limit, size=exc.size)
    if isinstance(exc, (QueryTooDeepError, QueryChainTooLongError)):
        extra.update(limit=exc.limit)
    if isinstance(exc, RemoteAccessRefusedError):
        extra.update(keyword=exc.keyword, iri=exc.iri)
    if isinstance(exc, QueryTimeoutError):
        extra.update(limit_seconds=exc.limit)
    if isinstance(exc, ResultTooLargeError):
        extra.update(cap=exc.cap, limit=exc.limit)
    if isinstance(exc, (ExecutorBusyError, DownloadBusyError)):
        headers["Retry-After"] = str(exc.retry_after)
        extra.update(retry_after=exc.retry_after)
    if isinstance(exc, (StoreLockedError, StoreUnavailableError)):
        headers["Retry-After"] = "2"
    if isinstance(exc, NotAcceptableError):
        extra.update(offered=exc.offered)
    if isinstance(exc, UnsupportedMediaTypeError):
        extra.update(accepted=exc.accepted)
    if isinstance(exc, UnsupportedContentCodingError):
        headers["Accept-Encoding"] = "identity"  # (RFC 9110 §12.5.3: the codings taken)
    if isinstance(exc, UnauthorizedError):
        challenge = 'Bearer realm="sasci-kg"'
        if exc.token_given:
            challenge += ', error="invalid_token"'
        headers["WWW-Authenticate"] = challenge
    if status >= 500 and not isinstance(
        exc, (ExecutorBusyError, StoreLockedError, StoreUnavailableError, ResultTooLargeError,
              DownloadBusyError)
    ):
        log.error("%s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
    detail = remote_detail(exc) if isinstance(exc, RemoteError) else str(exc)
    return problem(status, slug, title, detail, headers=headers, **extra)


def _http_problem(exc: HTTPException) -> Response:
    status = exc.code or 500
    headers = {
        k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")
    }
    extra: dict[str, Any] = {}
    detail = exc.description or exc.name
    if status == 405:
        # Sorted: werkzeug gathers the methods in a set, whose order changed from one process
        # to the next (string hashing), so two workers gave different bytes for one answer.
        allowed = sorted({m.strip() for m in headers.get("Allow", "").split(",") if m.strip()})
        headers["Allow"] = allow = ", ".join(allowed)
        extra["allowed"] = allowed
        method = request.environ.get("REQUEST_METHOD", request.method)  # (as sent)
        detail = f"{method} is not allowed here; use one of: {allow}"
        if method != request.method and request.method in allowed:
            detail += f" (a method is case-sensitive: {request.method})"
    elif status == 404:
        detail = f"nothing at {request.path}"
    elif status == 413:
        detail = "the request body is larger than this endpoint accepts"
    slug = exc.name.lower().replace(" ", "-")
    return problem(status, slug, exc.name, detail, headers=headers, **extra)


def _unexpected(exc: Exception) -> Response:
    # Log the traceback server-side; the client only learns that something failed.
    log.exception("unexpected error on %s %s", request.method, request.path)
    return problem(
        500, "internal-error", "Internal error",
        "an unexpected error happened; it has been logged",
    )


def init_app(app: Flask) -> None:
    """Install the handlers that give every error the problem+json shape."""
    app.register_error_handler(SasciKgError, problem_for)
    app.register_error_handler(HTTPException, _http_problem)
    app.register_error_handler(Exception, _unexpected)

