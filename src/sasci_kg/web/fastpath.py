"""The lean route for ``/sparql`` (and ``/query``): plain WSGI in front of Flask.

A query request is the endpoint's hot path, and Flask's request and response objects, URL
routing and hooks cost more than a light query itself. :class:`QueryFastPath` reads the common
query requests itself — GET with a query string, POST as a form or as
``application/sparql-query`` with a Content-Length — and answers them with the same
:func:`~.sparql.answer_query` as the Flask view: the same guard, negotiation, worker pool,
caps, cache and headers. Errors become the same problem+json responses, made by Flask's own
error handlers. Whatever it does not fully understand (no query, repeated or conflicting
parameters, a chunked body, a body with a Content-Encoding, a URL with raw non-ASCII bytes,
other paths and methods) it passes on to Flask untouched, so the two can never disagree on what
a request means.

The prefork server's workers go one step further: they call :meth:`QueryFastPath.read` and
:meth:`QueryFastPath.answer` with the request they have parsed, without a WSGI environ or the
middleware around the app (``prefork.worker._Worker._answer_lean``), and log it themselves.
"""

from __future__ import annotations

import binascii
import io
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask
from werkzeug.datastructures import MultiDict

from ..store import Generation
from . import EXPOSED_HEADERS, GENERATION, REPLAYABLE
from .problems import error_response
from .sparql import (
    FORM_URLENCODED,
    NO_OTHER_PARAMETERS,
    SINGLE_VALUED,
    Runtime,
    answer_query,
    percent_decoded,
)

QUERY_PATHS = frozenset({"/sparql", "/query"})
SPARQL_QUERY = "application/sparql-query"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PassOn(Exception):
    """This request is for the Flask view."""


# Status lines by code, as WSGI wants them.
_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


class QueryFastPath:
    """WSGI middleware answering plain query requests without Flask; the rest goes to ``wsgi``."""

    def __init__(self, app: Flask, wsgi: WsgiApp):
        self.app = app
        self.wsgi = wsgi
        self.runtime: Runtime = app.extensions["sasci_kg"]
        self.cors = self.runtime.config.cors

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in QUERY_PATHS:
            return self.wsgi(environ, start_response)
        method = environ["REQUEST_METHOD"]
        try:
            params, text = self.read(method, environ.get("QUERY_STRING", ""),
                                     environ.get("CONTENT_TYPE", ""), lambda: self._body(environ))
        except PassOn:
            return self.wsgi(environ, start_response)
        try:
            status, headers, body, replayable = self.answer(
                params, text, method=method, accept=environ.get("HTTP_ACCEPT"),
                if_none_match=environ.get("HTTP_IF_NONE_MATCH"),
                generation=environ.get(GENERATION))
        except Exception as exc:  # noqa: BLE001 - every failure gets Flask's problem response
            return self.problem(exc, environ, start_response)
        if replayable is not None:
            # Asked before, and the same request gives the same answer until the next load:
            # the prefork server may keep this response and send it again (its worker's
            # replay; not kept at the first asking, which would cost every new query).
            environ[REPLAYABLE] = replayable
        start_response(status, headers)
        return [] if method == "HEAD" or status.startswith("304") else [body]

    def answer(self, params: MultiDict[str, str], text: str, *, method: str,
               accept: str | None, if_none_match: str | None, generation: Generation | None,
               later: list[Callable[[], None]] | None = None,
               ) -> tuple[str, list[tuple[str, str]], bytes, Generation | None]:
        """The status line, headers and body of the answer to a query :meth:`read` gave, and
        the store generation it may be sent again for (see :data:`~sasci_kg.web.REPLAYABLE`).
        Raises what :func:`answer_query` raises (:meth:`problem` answers it); ``later`` as
        there."""
        answer = answer_query(self.runtime, params, text, method=method, accept=accept,
                              if_none_match=if_none_match, generation=generation, later=later)
        headers = answer.headers
        if self.cors:
            headers = [*headers, ("Access-Control-Allow-Origin", "*"),
                       ("Access-Control-Expose-Headers", EXPOSED_HEADERS)]
        if answer.status != 304:
            headers = [*headers, ("Content-Length", str(len(answer.body)))]
        return _STATUS[answer.status], headers, answer.body, answer.generation

    def read(self, method: str, query_string: str, content_type: str,
             body: Callable[[], bytes]) -> tuple[MultiDict[str, str], str]:
        """The parameters and the query text of a request (``body``: reads the whole body, or
        raises :class:`PassOn`), or :class:`PassOn` for whatever the Flask view must read.
        (The prefork server calls this with what it has parsed, without a WSGI environ.)"""
        if not query_string.isascii():
            raise PassOn
        url_params = _parse_form(query_string)
        if method in ("GET", "HEAD"):
            if len(url_params) == 1 and url_params[0][0] == "query":
                return NO_OTHER_PARAMETERS, url_params[0][1]  # (the usual request: see there)
            params: MultiDict[str, str] = MultiDict(url_params)
            return params, _only_query(params)
        if method != "POST":
            raise PassOn
        mimetype, _, options = content_type.partition(";")
        mimetype = mimetype.strip().lower()
        if mimetype not in (FORM_URLENCODED, SPARQL_QUERY):
            raise PassOn
        data = body()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PassOn from None
        if mimetype == SPARQL_QUERY:
            charset = options.partition("charset=")[2].strip().strip('"').lower()
            if (charset not in ("", "utf-8", "utf8") or "charset" in options and not charset
                    or any(name in ("query", "update") for name, _ in url_params)):
                raise PassOn
            params = MultiDict(url_params)
            _only_query(params, body_query=True)
            return params, text
        form = _parse_form(text)
        if not url_params and len(form) == 1 and form[0][0] == "query":
            return NO_OTHER_PARAMETERS, form[0][1]
        in_url = {name for name, _ in url_params}
        if any(name in in_url for name, _ in form if name in SINGLE_VALUED):
            raise PassOn
        params = MultiDict(form + url_params)
        return params, _only_query(params)

    def _body(self, environ: dict[str, Any]) -> bytes:
        """The whole request body (when it has a Content-Length within the limit)."""
        if environ.get("HTTP_TRANSFER_ENCODING") or "HTTP_CONTENT_ENCODING" in environ:
            raise PassOn  # (a content coding: the view refuses it, 415, or takes identity)
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            raise PassOn from None
        if not 0 <= length <= self.runtime.config.max_body_bytes:
            raise PassOn
        body: bytes = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # for Flask, if the request is passed on
        if len(body) != length:
            raise PassOn
        return body

    def problem(self, exc: Exception, environ: dict[str, Any],
                start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The error response Flask's handlers give (problem+json, CORS, Retry-After, …)."""
        response = error_response(self.app, exc, environ)
        result: Iterable[bytes] = response(environ, start_response)
        return result


def _parse_form(text: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote")``, with the
    percent-decoding done in C where that gives the same answer: urllib's decoder loops in
    Python over every escape, and a form-encoded query is mostly escapes (~20 µs of a
    lookup's ~60 µs in the web process)."""
    pairs: list[tuple[str, str]] = []
    for part in text.split("&") if text else ():
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name, value = _form_unquote(raw_name), _form_unquote(raw_value)
        if name is None or value is None:
            try:  # text that is not UTF-8 once decoded is refused by the Flask view (400)
                percent_decoded(text)
            except UnicodeDecodeError:
                raise PassOn from None
            return parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote")
        pairs.append((name, value))
    return pairs


def _form_unquote(raw: str) -> str | None:
    """One decoded form field, or None when only urllib's decoder can say."""
    raw = raw.replace("+", " ")
    if "%" not in raw:
        return raw
    if (not raw.isascii() or "=" in raw or "\r" in raw or "\n" in raw
            or raw.rfind("%") > len(raw) - 3):  # (binascii drops an "=" at the very end)
        return None
    decoded = binascii.a2b_qp(raw.replace("%", "="))
    # Each %XX escape becomes one byte; binascii keeps an "=" that starts none (or drops it
    # alone), so anything longer means a malformed escape, which urllib reads its own way.
    # (Checking the escapes with a regular expression first cost ~7 µs a query.)
    if len(decoded) != len(raw) - 2 * raw.count("%"):
        return None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _only_query(params: MultiDict[str, str], *, body_query: bool = False) -> str:
    """The one query text (:class:`PassOn` for anything else: none, several, an update, a
    single-valued parameter given twice)."""
    if "update" in params or any(len(params.getlist(n)) > 1 for n in SINGLE_VALUED if n in params):
        raise PassOn
    if body_query:
        return ""
    text = params.get("query")
    if text is None:
        raise PassOn
    return text
