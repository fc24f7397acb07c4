"""Linked-data pages kept per store generation: WSGI middleware in front of Flask.

A page (``/id/…``, ``/vocab/…``, ``/graph/…``, ``/def``, VoID, the named questions) runs
queries and renders a template, and its bytes only change when a load swaps a new store in.
:class:`PageCache` keeps each finished 200 answer to a GET under the store generation and
everything the answer can depend on (path, query string, Accept, Accept-Language, host,
scheme, script root, forwarded headers), and answers repeats — and ``If-None-Match``
revalidations, with a 304 — without running the view again. Answers with cookies, ranges or
``no-store`` are never kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .result_cache import CachedAnswer, ResultCache, not_modified

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Pages that depend on nothing but the store and the request line and headers below (not the
# VoID page: it lists the downloads made so far, which grow within a generation).
CACHED_PREFIXES = ("/id/", "/vocab/", "/graph/", "/def", "/queries")
KEY_HEADERS = ("PATH_INFO", "QUERY_STRING", "HTTP_ACCEPT", "HTTP_ACCEPT_LANGUAGE", "HTTP_HOST",
               "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME", "wsgi.url_scheme",
               "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
               "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX")


@dataclass(frozen=True)
class CachedPage(CachedAnswer):
    """A kept page: its body, tag and the response headers to send again."""

    headers: tuple[tuple[str, str], ...] = ()


class PageCache:
    """Keep GET answers of :data:`CACHED_PREFIXES` per store generation (see the module)."""

    def __init__(self, wsgi: WsgiApp, generation: Callable[[], Any], max_bytes: int):
        self.wsgi = wsgi
        self.generation = generation
        self.pages = ResultCache(max_bytes, max_entry_bytes=max(max_bytes // 16, 1))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        if (method not in ("GET", "HEAD") or not path.startswith(CACHED_PREFIXES)
                or "HTTP_RANGE" in environ or self.pages.max_bytes <= 0):
            return self.wsgi(environ, start_response)
        generation = self.generation()
        if generation is None:
            return self.wsgi(environ, start_response)
        key = tuple(environ.get(name) for name in KEY_HEADERS)
        page = self.pages.get(generation, key)
        status = "200 OK"
        if not isinstance(page, CachedPage):
            status, page, keep = self._render(environ)
            if keep:
                self.pages.put(generation, key, page)
        condition = environ.get("HTTP_IF_NONE_MATCH")
        if (status.startswith("200") and condition and page.etag
                and not_modified(condition, page.etag)):
            kept = [(k, v) for k, v in page.headers if k.lower() in _NOT_MODIFIED_HEADERS]
            start_response("304 Not Modified", kept)
            return []
        start_response(status, list(page.headers))
        return [] if method == "HEAD" else [page.body]

    def _render(self, environ: dict[str, Any]) -> tuple[str, CachedPage, bool]:
        """Run the view once for the whole answer (unconditionally, as a GET): its status, the
        answer, and whether it may be kept (a 200 without cookies or ``no-store``)."""
        inner = dict(environ)
        inner["REQUEST_METHOD"] = "GET"
        for name in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE"):
            inner.pop(name, None)
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"], seen["headers"] = status, headers
            return lambda data: None

        chunks = self.wsgi(inner, capture)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = seen.get("status", "500 INTERNAL SERVER ERROR"), seen.get("headers", [])
        names = {k.lower(): v for k, v in headers}
        keep = (status.startswith("200") and "set-cookie" not in names
                and "no-store" not in names.get("cache-control", ""))
        etag = names.get("etag", "")
        if keep and not etag:
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            headers = [*headers, ("ETag", etag)]
        unquoted = etag.removeprefix("W/").strip('"')
        return status, CachedPage(body, 0, 0.0, unquoted, headers=tuple(headers)), keep

    def stats(self) -> dict[str, int]:
        return self.pages.stats()


_NOT_MODIFIED_HEADERS = {"etag", "vary", "cache-control", "content-location", "expires",
                         "access-control-allow-origin", "access-control-expose-headers"}
