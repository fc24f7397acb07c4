"""The HTTP and authentication layer under :class:`~sasci_kg.remote.RemoteBackend`.

Credentials (:class:`Secret` and the :class:`Auth` kinds) that no repr, log line or message
ever shows; URLs checked once and shown without credentials; one bounded HTTP request at a
time (a total deadline, a size cap, no redirects), its failures mapped to the
:class:`~sasci_kg.errors.RemoteError` tree.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import secrets
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Protocol

from .errors import (
    RemoteIncompleteError,
    RemoteProtocolError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    StoreError,
)

# ---------------------------------------------------------------------------------------
# Credentials: kept out of every repr, log line and error message.


class Secret:
    """A credential whose ``repr``/``str`` never show it; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)

    def __bool__(self) -> bool:
        return bool(self._value)


class Auth(Protocol):
    """How requests to the engine authenticate: a header, a challenge handler, or a signer.

    ``apply`` may add headers to a request before it is sent (basic, bearer, or a custom
    signer such as AWS SigV4 for Neptune); ``handlers`` gives urllib handlers that answer
    a 401 challenge (digest).
    """

    @property
    def name(self) -> str: ...

    def apply(self, request: urllib.request.Request) -> None: ...

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]: ...


class NoAuth:
    """No authentication."""

    name = "none"

    def apply(self, request: urllib.request.Request) -> None:
        return None

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]:
        return []

    def __repr__(self) -> str:
        return "NoAuth()"


@dataclass(frozen=True)
class BasicAuth:
    """HTTP Basic: the password goes with every request (use HTTPS beyond loopback)."""

    user: str
    password: Secret = field(repr=False)
    name: str = field(default="basic", init=False)

    def apply(self, request: urllib.request.Request) -> None:
        token = f"{self.user}:{self.password.reveal()}".encode()
        request.add_unredirected_header("Authorization",
                                        "Basic " + base64.b64encode(token).decode("ascii"))

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]:
        return []


@dataclass(frozen=True)
class DigestAuth:
    """HTTP Digest (Virtuoso's /sparql-auth and GSP -auth URLs accept only this)."""

    user: str
    password: Secret = field(repr=False)
    name: str = field(default="digest", init=False)

    def apply(self, request: urllib.request.Request) -> None:
        return None

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]:
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        for url in urls:
            manager.add_password(None, url, self.user, self.password.reveal())
        return [urllib.request.HTTPDigestAuthHandler(manager)]


@dataclass(frozen=True)
class BearerAuth:
    """An ``Authorization: Bearer`` token (GraphDB, Stardog, QLever, gateways)."""

    token: Secret = field(repr=False)
    name: str = field(default="bearer", init=False)

    def apply(self, request: urllib.request.Request) -> None:
        request.add_unredirected_header("Authorization", "Bearer " + self.token.reveal())

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]:
        return []


AUTH_KINDS = ("none", "basic", "digest", "bearer")


def make_auth(kind: str, *, user: str | None = None, password: Secret | None = None,
              token: Secret | None = None) -> Auth:
    """The :class:`Auth` for a kind name; StoreError names what is missing."""
    if kind == "none":
        return NoAuth()
    if kind in ("basic", "digest"):
        if not user or not password:
            raise StoreError(f"--auth {kind} needs a user and a password: give --user (or "
                             "SASCI_KG_USER) and SASCI_KG_PASSWORD or --password-file")
        return BasicAuth(user, password) if kind == "basic" else DigestAuth(user, password)
    if kind == "bearer":
        if not token:
            raise StoreError("--auth bearer needs a token: set SASCI_KG_TOKEN or give "
                             "--token-file")
        return BearerAuth(token)
    raise StoreError(f"unknown authentication '{kind}'; use one of: {', '.join(AUTH_KINDS)}")


# ---------------------------------------------------------------------------------------
# URLs: checked once, shown without credentials or query strings.


def safe_url(url: str) -> str:
    """``url`` for messages: no user info, no query string (either may carry a secret)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_url(url: str, option: str) -> str:
    """An absolute http(s) URL without credentials in it, or StoreError naming the option."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"{option}: '{safe_url(url)}' is not an http(s) URL; give the "
                         "engine's full endpoint URL, e.g. http://127.0.0.1:8890/sparql")
    if parts.username or parts.password:
        raise StoreError(f"{option}: the URL carries credentials; remove them from the URL and "
                         "use --auth with --user and SASCI_KG_PASSWORD (or a token) instead")
    if parts.fragment:
        raise StoreError(f"{option}: remove the '#…' fragment from the URL")
    return url


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# HTTP: one request, bounded in time and size, never following redirects.


@dataclass(frozen=True)
class HttpResponse:
    """An engine's answer: status, headers and the whole body."""

    status: int
    headers: Message
    body: bytes

    @property
    def media_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def snippet(self, limit: int = 300) -> str:
        text = " ".join(self.body[:4096].decode("utf-8", "replace").split())
        return text[:limit] + ("…" if len(text) > limit else "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: credentials must not follow a request to another URL."""

    def redirect_request(self, req: urllib.request.Request, fp: object, code: int, msg: str,
                         headers: object, newurl: str) -> None:
        return None


def _socket_of(response: object) -> socket.socket | None:
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _read_body(response: http.client.HTTPResponse, deadline: float, limit: int,
               what: str) -> bytes:
    """The whole body, or RemoteTimeoutError past the deadline / RemoteProtocolError."""
    chunks: list[bytes] = []
    total = 0
    sock = _socket_of(response)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RemoteTimeoutError(f"{what}: the answer did not arrive in full in time")
        if sock is not None:
            sock.settimeout(remaining)
        chunk = response.read1(65536)
        if not chunk:
            if response.length:  # fewer bytes than Content-Length announced
                raise http.client.IncompleteRead(b"".join(chunks), response.length)
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise RemoteIncompleteError(
                f"{what}: the answer is larger than {limit // (1 << 20)} MiB; ask for less "
                "(LIMIT, a narrower pattern) or raise the backend's max_bytes")
        chunks.append(chunk)


class HttpClient:
    """Requests to one engine with one authentication, a total time limit and a size cap.

    ``deadline`` (a ``time.monotonic()`` value), when set, also ends every request by then:
    several requests made for one job share the job's time limit.
    """

    def __init__(self, auth: Auth, urls: Sequence[str], *, timeout: float, max_bytes: int):
        self.auth = auth
        self.urls = list(urls)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.deadline: float | None = None

    def request(self, method: str, url: str, *, what: str, data: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float | None = None,
                ) -> HttpResponse:
        limit = timeout if timeout is not None else self.timeout
        if self.deadline is not None:
            limit = min(limit, self.deadline - time.monotonic())
            if limit <= 0:
                raise RemoteTimeoutError(f"{what} at {safe_url(url)}: not sent, the time "
                                         "limit of the work it is part of has run out")
        deadline = time.monotonic() + limit
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        request.add_header("User-Agent", "sasci-kg")
        self.auth.apply(request)
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect(),
                                                      *self.auth.handlers(self.urls)]
        if _is_loopback(url):
            handlers.append(urllib.request.ProxyHandler({}))
        opener = urllib.request.build_opener(*handlers)
        where = f"{what} at {safe_url(url)}"
        try:
            try:
                response = opener.open(request, timeout=limit)
            except urllib.error.HTTPError as exc:
                # Read a bounded piece of the error body for the message.
                try:
                    body = exc.read(65536) if exc.fp is not None else b""
                except (OSError, http.client.HTTPException):
                    body = b""
                finally:
                    exc.close()
                return HttpResponse(exc.code, exc.headers, body)
            with response:
                body = _read_body(response, deadline, self.max_bytes, where)
                return HttpResponse(response.status, response.headers, body)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise RemoteTimeoutError(
                    f"{where}: no answer within {limit:g} s; the engine is busy or the query "
                    "too costly (raise the timeout with --remote-timeout or "
                    "SASCI_KG_REMOTE_TIMEOUT)") from None
            raise RemoteUnavailableError(
                f"{where}: cannot connect ({_reason(reason)}); is the engine running, and is "
                "the URL right?") from None
        except TimeoutError:
            raise RemoteTimeoutError(
                f"{where}: no complete answer within {limit:g} s; the engine is busy or the "
                "query too costly (raise the timeout with --remote-timeout or "
                "SASCI_KG_REMOTE_TIMEOUT)") from None
        except http.client.IncompleteRead:
            raise RemoteProtocolError(f"{where}: the engine closed the connection in the "
                                      "middle of its answer") from None
        except (ConnectionError, http.client.RemoteDisconnected) as exc:
            raise RemoteUnavailableError(f"{where}: the connection failed "
                                         f"({_reason(exc)})") from None
        except http.client.HTTPException as exc:
            raise RemoteProtocolError(f"{where}: not a valid HTTP answer "
                                      f"({type(exc).__name__})") from None
        except OSError as exc:
            raise RemoteUnavailableError(f"{where}: {_reason(exc)}") from None


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)
