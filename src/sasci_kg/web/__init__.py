"""The web app: :func:`create_app` builds a Flask app from a :class:`ServerConfig`.

It wires the blueprints (all registered in :func:`register_blueprints`), the problem+json error
handlers, CORS for reads, ``X-Forwarded-*`` handling when configured, and an access log.
There is no module-level app; :func:`close_app` stops the worker processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote_plus

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import ServerConfig, load_config

access_log = logging.getLogger("sasci_kg.access")

# CORS: reads are open to every origin; writes never are. GET and HEAD are reads everywhere;
# POST is a read only on the endpoints listed here (a blueprint whose POST only reads adds its
# endpoint name to app.config["SASCI_KG_READ_POST_ENDPOINTS"]).
READ_METHODS = ("GET", "HEAD")
SAFE_REQUEST_HEADERS = ("accept", "accept-language", "content-language", "content-type")
EXPOSED_HEADERS = "Content-Disposition, ETag, Retry-After, Server-Timing, X-Result-Rows"


def create_app(config: ServerConfig | None = None) -> Flask:
    """Build the app. Without ``config``, settings come from the environment (see config)."""
    from .fastpath import QueryFastPath
    from .page_cache import PageCache
    from .problems import init_app as init_problems
    from .sparql import Runtime

    config = config or load_config()
    app = _App(__name__)
    app.config["SASCI_KG"] = config
    app.config["MAX_CONTENT_LENGTH"] = max(config.max_body_bytes, config.max_upload_bytes)
    app.config["SASCI_KG_READ_POST_ENDPOINTS"] = {"sparql.query"}
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["sasci_kg"] = Runtime(config)
    init_problems(app)
    register_blueprints(app)
    app.before_request(_asterisk_form)
    app.before_request(_case_sensitive_method)
    if config.cors:
        app.after_request(_cors)
    # The lean route answers plain query requests before Flask (see fastpath); pages are kept
    # per store generation (see page_cache).
    runtime = app.extensions["sasci_kg"]
    fastpath = QueryFastPath(app, app.wsgi_app)
    wsgi: Callable[..., Any] = fastpath
    wsgi = PageCache(wsgi, runtime.generation, config.result_cache_mb * 1024 * 1024 // 2)
    app.extensions["sasci_kg_pages"] = wsgi
    if config.trusted_proxies:
        n = config.trusted_proxies
        wsgi = ProxyFix(wsgi, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)
    else:
        # Nothing between the server and the lean route but the access log: the prefork
        # server may call the lean route with a request it has parsed (no environ; it logs).
        app.extensions["sasci_kg_fastpath"] = fastpath
    app.wsgi_app = AccessLog(wsgi)  # type: ignore[method-assign]
    return app


def register_blueprints(app: Flask) -> None:
    """Every blueprint of the app, in one place."""
    from . import funders, graphstore, named, resources, search, sparql, tracing, ui

    app.register_blueprint(sparql.bp)
    app.register_blueprint(graphstore.bp)
    app.register_blueprint(ui.bp)
    app.register_blueprint(resources.bp)
    app.register_blueprint(funders.bp)
    app.register_blueprint(tracing.bp)
    app.register_blueprint(named.bp)
    app.register_blueprint(search.bp)


def close_app(app: Flask) -> None:
    """Stop the app's worker processes and remove its temporary folders (the search indexes,
    a private download cache): the server calls this when a worker exits. Each object
    removes only its own process's folders: a forked copy leaves its parent's be."""
    runtime = app.extensions.get("sasci_kg")
    try:
        if runtime is not None:
            runtime.close()
    finally:
        for key in ("sasci_kg_graph", "sasci_kg_downloads"):
            owner = app.extensions.get(key)
            if owner is not None:
                owner.close()


class _App(Flask):
    def make_default_options_response(self) -> Response:
        """OPTIONS on a path: 200 with the methods it takes in Allow, sorted as a 405's are
        (werkzeug gathers them in a set: two processes gave them in different orders), and no
        Content-Type, as there is no body (Flask's said text/html)."""
        response = super().make_default_options_response()
        allowed = {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}
        response.headers["Allow"] = ", ".join(sorted(allowed))
        del response.headers["Content-Type"]
        return response


def _asterisk_form() -> Response | None:
    """``OPTIONS *`` (RFC 9112 §3.2.4, RFC 9110 §9.3.7) asks what the server supports anywhere:
    200 with every method of every route in Allow (sorted, as a 405's). No other method may
    use the target ``*`` (400). Both were taken for the path ``/*`` (404)."""
    if request.environ.get("PATH_INFO") != "*":
        return None
    from .problems import BadRequestError

    if request.environ.get("REQUEST_METHOD") != "OPTIONS":  # (as sent, not upper-cased)
        raise BadRequestError(
            "the request target * is only for OPTIONS (what the server supports); "
            "send the request to a path, such as /sparql")
    methods = {m for rule in current_app.url_map.iter_rules() for m in rule.methods or ()}
    response = Response(status=200)
    del response.headers["Content-Type"]  # (no body: not Flask's text/html)
    response.headers["Allow"] = ", ".join(sorted(methods))
    return response


def _case_sensitive_method() -> None:
    """A method is case-sensitive (RFC 9110 §9.1), but werkzeug upper-cases it: ``get`` was
    served as GET. One it changed is a method this server does not know, answered as FOO is:
    405 with Allow where the path exists (404 where not: routing said so already)."""
    sent = request.environ.get("REQUEST_METHOD", request.method)
    if sent == request.method or request.routing_exception is not None:
        return
    adapter = current_app.create_url_adapter(request)
    raise MethodNotAllowed(valid_methods=list(adapter.allowed_methods()) if adapter else [])


def _cors(response: Response) -> Response:
    """Fetch standard CORS: ``*`` for reads, nothing at all for writes (or their preflights)."""
    read_post = request.endpoint in current_app.config["SASCI_KG_READ_POST_ENDPOINTS"]
    if request.method == "OPTIONS":
        wanted = request.headers.get("Access-Control-Request-Method", "").upper()
        allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
        is_read = wanted in READ_METHODS or (wanted == "POST" and read_post)
        if request.headers.get("Origin") and is_read and wanted in allowed:
            methods = [*READ_METHODS, "POST"] if read_post else list(READ_METHODS)
            asked = request.headers.get("Access-Control-Request-Headers", "")
            headers = [h.strip() for h in asked.split(",") if h.strip().lower() in
                       SAFE_REQUEST_HEADERS]
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
            if headers:
                response.headers["Access-Control-Allow-Headers"] = ", ".join(headers)
            response.headers["Access-Control-Max-Age"] = "600"
        return response
    if request.method in READ_METHODS or (request.method == "POST" and read_post):
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return response


def access_path(environ: dict[str, Any]) -> str:
    """The path as the access log writes it: with the parameter names but never their values
    (they can hold queries, tokens or personal data)."""
    return logged_path(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))


def logged_path(path: str, query_string: str) -> str:
    """:func:`access_path` of a path and a query string."""
    if query_string:
        # The names as parse_qsl decodes them (its values are never needed here).
        names = dict.fromkeys(
            unquote_plus(name) if "%" in name or "+" in name else name
            for name in (part.partition("=")[0] for part in query_string.split("&") if part))
        if names:
            path += "?" + "&".join(f"{name}=…" for name in names)
    return path


def log_access(method: str, path: str, status: str, seconds: float, size: int) -> None:
    """Write one access-log line (``path`` as :func:`access_path` gives it)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    # makeRecord + handle, not info(): the caller's file and line (a stack walk on every
    # request) say nothing in an access log.
    access_log.handle(access_log.makeRecord(
        access_log.name, logging.INFO, __file__, 0, "%s %s %s %.1fms %dB",
        (method, path, status, seconds * 1000, size), None))


# Environ keys between the app and the prefork server: the app names a response body that
# is a file (the server sends it from the file with sendfile, never reading it into memory),
# and the server says how many bytes that body came to, and how long the request waited for a
# free worker before it reached the app (both for the access log).
FILE_BODY = "sasci_kg.file_body"
SENT_BYTES = "sasci_kg.sent_bytes"
QUEUED_SECONDS = "sasci_kg.queued_seconds"
# The store generation, as the prefork server read it at the start of the request.
GENERATION = "sasci_kg.generation"
# Set by the lean query route on an answer the answer cache gave (so asked before), which the
# same request bytes would get again until the next load (its value: that store
# generation): the prefork server may keep the whole response and send it again.
REPLAYABLE = "sasci_kg.replayable"


class AccessLog:
    """WSGI middleware: one log line per request, to the ``sasci_kg.access`` logger.

    ``method path?names status duration bytes``: query-string values are left out (they can
    hold queries, tokens or personal data); only the parameter names are kept. Under the
    prefork server the duration counts from the request's first bytes (as nginx's
    ``$request_time`` does), so time spent queued for a worker is in it.
    """

    def __init__(self, app: Callable[..., Any]):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter() - environ.get(QUEUED_SECONDS, 0.0)
        seen: dict[str, str] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"] = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info)

        body = self.app(environ, capture)
        if isinstance(body, list):
            # A finished body (the lean route, the caches): log now and hand the list on as
            # it is, so that the server can send it in one piece (granian writes a list
            # straight from Rust, but iterates anything else through Python).
            logged = _Logged(body, environ, seen, started)
            logged.sent = sum(len(chunk) for chunk in body)
            logged.close()
            return body
        return _Logged(body, environ, seen, started)


class _Logged:
    """The response body, passed through; logs the line once the body is sent or closed."""

    def __init__(self, body: Iterable[bytes], environ: dict[str, Any], seen: dict[str, str],
                 started: float):
        self.body = body
        self.environ = environ
        self.seen = seen
        self.started = started
        self.sent = 0
        self.logged = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk
        self._log()

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self._log()

    def _log(self) -> None:
        if self.logged:
            return
        self.logged = True
        if not access_log.isEnabledFor(logging.INFO):
            return
        log_access(self.environ.get("REQUEST_METHOD", "-"), access_path(self.environ),
                   self.seen.get("status", "-"), time.perf_counter() - self.started,
                   self.environ.get(SENT_BYTES, self.sent))


__all__ = ["ServerConfig", "close_app", "create_app", "load_config", "register_blueprints"]
