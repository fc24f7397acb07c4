"""Reading and writing HTTP/1.1 for the prefork server: what makes a request whole (looked at
in a peek, or read by the supervisor until it is), the plain requests read directly (anything
unusual is left to h11), status lines and refusals.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import re
import select
import socket
import sys
import termios
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import h11
from flask import Flask
from werkzeug.exceptions import BadRequest, default_exceptions

from ..problems import error_response

# Request line and headers, at most (as under granian).
MAX_HEADER_BYTES = 64 * 1024
# Header lines, at most (as under granian, whose hyper refuses more with 431).
MAX_HEADERS = 100


class _Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


# The plain requests read here directly; anything else (a chunked or expecting body, two
# Content-Lengths, obs-fold, unusual bytes) is read by h11, which knows every rule and
# refuses what it must. The lean route exists because h11 cost ~200 µs a request.
# (A target may hold raw UTF-8, as browsers and granian allow; WSGI gets it as latin-1.)
_REQUEST_LINE = re.compile(rb"([A-Z]{1,20}) ([\x21-\x7e\x80-\xff]+) HTTP/1\.([01])")
_HEADER_LINE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[\x20\x09\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
_DIGITS = re.compile(rb"[0-9]{1,18}")
# Heads with these go to h11 (and their requests are judged whole by it: :class:`_Gathering`).
_UNUSUAL = re.compile(rb"\n(?:expect|transfer-encoding)[ \t]*:", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:[ \t]*([0-9]{1,18})", re.IGNORECASE)
# The blank line that ends the headers. RFC 9112 §2.2: a recipient MAY take a bare LF as a
# line's end (granian and h11 do, and so do clients typed by hand): such heads go to h11.
_HEAD_END = re.compile(rb"\r?\n\r?\n")
# While a request fits in this many bytes, the supervisor looks at it with MSG_PEEK (leaving it
# in the socket) until it is whole; a client that sends slowly holds no worker while it does.
# Kept below what a socket buffers before the sender must wait.
PEEK_BYTES = 16 * 1024
# What a look at the start of a request says (:func:`_judge`): a worker can answer it now
# (whole, or refused at once); it may become whole in the peek; it must be read (by the
# supervisor: :class:`_Gathering`) to become whole.
_WHOLE, _PEEK, _GATHER = 0, 1, 2


def _judge(data: bytes | memoryview, body_limit: int = 1 << 62,
           sock: socket.socket | None = None) -> int:
    """Whether ``data`` (the start of what waits on a connection, up to :data:`PEEK_BYTES`)
    is a request a worker can answer without waiting for the client: :data:`_WHOLE` when it is
    whole, or will be refused at once (a declared body over ``body_limit``: 413);
    :data:`_PEEK` when the rest will fit in the peek; :data:`_GATHER` when it will not (a
    body past the peek, a chunked body, a client waiting for our 100 Continue), so that the
    supervisor must read it. A full peek looks at how much waits in ``sock`` in all."""
    raw = bytes(data).lstrip(b"\r\n")
    blank = _HEAD_END.search(raw)
    if blank is None:
        if len(raw) > MAX_HEADER_BYTES:
            return _WHOLE  # refused (414/431)
        return _GATHER if len(data) >= PEEK_BYTES else _PEEK
    if _UNUSUAL.search(raw, 0, blank.start() + 1):  # (a chunked body, or 100 Continue awaited)
        return _WHOLE if _Gathering(body_limit).add(raw) != _MORE else _GATHER
    m = _CONTENT_LENGTH.search(raw, 0, blank.start() + 1)
    if m is None:  # no body (or a length that is none: refused at once)
        return _WHOLE
    length = int(m.group(1))
    if length > body_limit:
        return _WHOLE  # refused (413) before its body is read
    end = len(data) - len(raw) + blank.end() + length  # (the blank lines before it count)
    if end <= len(data) or (sock is not None and len(data) >= PEEK_BYTES
                            and end <= _waiting(sock)):
        return _WHOLE
    return _GATHER if end > PEEK_BYTES else _PEEK


def _complete(data: bytes | memoryview, body_limit: int = 1 << 62,
              sock: socket.socket | None = None) -> bool:
    """Whether a worker can answer the request that starts ``data`` now (see :func:`_judge`)."""
    return _judge(data, body_limit, sock) == _WHOLE


def _waiting(sock: socket.socket) -> int:
    """How many bytes wait to be read on ``sock`` (past what a peek sees)."""
    try:
        found = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int.from_bytes(found, sys.byteorder)


# _Gathering.add says:
_MORE, _TOO_LARGE = 1, 3  # (and _WHOLE)


class _Gathering:
    """A request the supervisor reads whole before a worker sees it (one that does not fit in
    the peek, has a chunked body or waits for 100 Continue): a slow sender then costs the
    supervisor a little memory, never a worker. Fed the bytes as they come, it says when they
    hold a whole request, or one a worker refuses at once without reading on (a head that
    is broken or too large, or declares too large a body): :data:`_WHOLE`. A chunked body
    past the limit is :data:`_TOO_LARGE`: the supervisor refuses it (413) itself.

    It decides as the worker will read the request: a plain head by its Content-Length, any
    other by h11 (which also frames chunked bodies), with the worker's own checks."""

    def __init__(self, body_limit: int, began: float = 0.0):
        self.body_limit, self.began = body_limit, began
        self.data = bytearray()
        self.start = 0  # past the blank lines before the request (RFC 9112 §2.2)
        self.looked = 0  # where the search for the head's end goes on
        self.end = -1  # where the request ends, once its head says (plain requests)
        self.http: h11.Connection | None = None  # reading any other request
        self.body = 0  # the bytes of its body so far
        self.expects = False  # the client waits for 100 Continue before it sends its body
        # The bytes kept for one request at most: its head and body, and room for chunk
        # framing (tiny chunks with long extensions would otherwise hold any amount).
        self.most = 2 * body_limit + MAX_HEADER_BYTES

    def add(self, chunk: bytes | bytearray) -> int:
        """Take the next bytes; :data:`_WHOLE`, :data:`_MORE` or :data:`_TOO_LARGE`."""
        self.data += chunk
        if len(self.data) > self.most and self.end < 0:
            return _TOO_LARGE
        if self.http is not None:
            self.http.receive_data(bytes(chunk))
            return self._events()
        if self.end < 0:
            found = self._head()
            if found is not None:
                return found
        return _WHOLE if len(self.data) >= self.end else _MORE

    def _head(self) -> int | None:
        data = self.data
        if self.looked <= self.start:
            while self.start < len(data) and data[self.start] in b"\r\n":
                self.start += 1
            self.looked = self.start
        blank = _HEAD_END.search(data, max(self.start, self.looked - 3))
        if blank is None:
            self.looked = len(data)
            # Past the limit the worker refuses it (414/431) at once.
            return _WHOLE if len(data) - self.start > MAX_HEADER_BYTES else _MORE
        head = bytes(data[self.start:blank.end()])
        request = _parse_plain(head)
        try:
            _check_head_size(head)
            if request is not None:
                _check_target(request.target)
        except _Refused:
            return _WHOLE
        if request is not None:
            if request.length > self.body_limit:
                return _WHOLE
            self.end = blank.end() + request.length
            return None
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.http.receive_data(bytes(data[self.start:]))
        return self._events()

    def _events(self) -> int:
        assert self.http is not None
        try:
            while True:
                event = self.http.next_event()
                if event is h11.NEED_DATA:
                    return _MORE
                if isinstance(event, h11.Request):
                    _check_h11_request(event, self.body_limit)
                    length = next((v for k, v in event.headers if k == b"content-length"), b"0")
                    chunked = any(k == b"transfer-encoding" for k, _ in event.headers)
                    self.expects = (self.http.client_is_waiting_for_100_continue
                                    and (chunked or int(length) > 0))
                elif isinstance(event, h11.Data):
                    self.body += len(event.data)
                    if self.body > self.body_limit:
                        return _TOO_LARGE
                else:  # the end of the message (or of the stream): the worker takes it now
                    return _WHOLE
        except (h11.RemoteProtocolError, _Refused):
            return _WHOLE  # the worker reads the same bytes to the same error, and refuses


def _check_target(target: bytes) -> None:
    """400 for raw bytes in the request target that are not UTF-8: the app decodes the target
    as UTF-8, and such a byte (``?x=\\xff``) failed it with a 500; granian answers 400.
    (RFC 3986 has them percent-encoded; raw UTF-8, as curl sends it, is read as before.)"""
    if not target.isascii():
        try:
            target.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(400, "the request target holds raw bytes that are not UTF-8; "
                                "percent-encode its UTF-8 bytes (é is %C3%A9)") from None


def _check_h11_request(event: h11.Request, body_limit: int) -> None:
    """The refusals of a request h11 read that come before its body is read."""
    if not event.http_version.startswith(b"1."):  # (1.2 and on are read as 1.1)
        raise _Refused(505, f"HTTP/{event.http_version.decode('ascii', 'replace')} "
                            "is not served here; use HTTP/1.1")
    _check_target(event.target)
    names = {name for name, _ in event.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        # RFC 9112 §6.3: a smuggling attempt, or a broken client; either way, refuse.
        raise _Refused(400, "both Content-Length and Transfer-Encoding; send one")
    length = next((v for k, v in event.headers if k == b"content-length"), None)
    if length is not None and int(length) > body_limit:
        raise _Refused(413, f"the request body is larger than {body_limit} bytes")


def _check_head_size(head: bytes) -> None:
    """Refuse a request line past :data:`MAX_HEADER_BYTES` (414), or a head past it or with
    more than :data:`MAX_HEADERS` lines (431), as granian does."""
    if len(head) > MAX_HEADER_BYTES:
        line_end = head.find(b"\n")
        if line_end < 0 or line_end > MAX_HEADER_BYTES:
            raise _Refused(414, f"the request line passes {MAX_HEADER_BYTES} bytes")
        raise _Refused(431, f"the request line and headers pass {MAX_HEADER_BYTES} bytes")
    if head.count(b"\n") > MAX_HEADERS + 2:
        raise _Refused(431, f"more than {MAX_HEADERS} header lines")


def _done_sending(sock: socket.socket) -> bool:
    """Whether the client has shut its side for writing: what has arrived is all there
    will be (a request cut short is answered at once, not after READ_TIMEOUT)."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    return bool(poller.poll(0))


# (Or-ed once: IntFlag's "|" runs enum's Python code, three calls, on every request.)
_PEEK_FLAGS = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)


def _peek(sock: socket.socket, buffer: bytearray) -> int | None:
    """How many bytes wait on ``sock`` (copied into ``buffer``, left in the socket); 0 at
    end of stream, None when nothing waits."""
    try:
        return sock.recv_into(buffer, len(buffer), _PEEK_FLAGS)
    except (BlockingIOError, InterruptedError):
        return None


# Connection-level headers: the server writes its own.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade",
                         "proxy-connection", "te", "trailer"})


@dataclass
class _Request:
    method: str
    target: bytes
    minor: int  # HTTP/1.<minor>
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    keep_alive: bool
    length: int


def _parse_plain(head: bytes) -> _Request | None:
    """The request in ``head`` (line and headers, CRLF-terminated), or None when it is not a
    plain one and h11 must read it."""
    if not head.endswith(b"\r\n\r\n") or head.count(b"\n") != head.count(b"\r\n"):
        return None  # a bare LF somewhere: h11's
    lines = head[:-4].split(b"\r\n")
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        return None
    headers = []
    hosts = lengths = 0
    length = 0
    connection = b""
    for line in lines[1:]:
        h = _HEADER_LINE.fullmatch(line)
        if h is None:
            return None
        name, value = h.group(1).lower(), h.group(2)
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if _DIGITS.fullmatch(value) is None:
                return None
            lengths += 1
            length = int(value)
        elif name in (b"transfer-encoding", b"expect"):
            return None
        elif name == b"connection":
            connection += b"," + value.lower()
        headers.append((name, value))
    minor = int(m.group(3))
    if lengths > 1 or hosts > 1 or (minor == 1 and hosts != 1):
        return None
    if connection:
        tokens = {t.strip() for t in connection.split(b",")}
        keep_alive = b"close" not in tokens and (minor == 1 or b"keep-alive" in tokens)
    else:
        keep_alive = minor == 1
    return _Request(m.group(1).decode("ascii"), m.group(2), minor, headers, keep_alive, length)


class _DateHeader:
    """The Date header (RFC 9110 §6.6.1), formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second, self.value = second, formatdate(second, usegmt=True)
        return self.value


_date = _DateHeader()


def _drain(sock: socket.socket, seconds: float = 1.0, limit: int = 1 << 20) -> None:
    """After a refusal: stop writing and read what the client still sends (briefly), so
    that closing with unread bytes does not reset the connection before it reads ours."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        read = 0
        while read < limit and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                return
            read += len(chunk)


# The status lines with their standard reason phrases (werkzeug's are in capitals).
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}" for s in HTTPStatus}


def _status_line(code: int, status: str) -> str:
    return _STATUS_LINES.get(code) or f"HTTP/1.1 {status}"


def _response_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _raw_response(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [_status_line(int(status[:3]), status)]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def _render(app: Flask, exc: Exception, environ: dict[str, Any]
            ) -> tuple[str, list[tuple[str, str]], bytes]:
    """The response the app's error handlers give for ``exc`` on this request, in parts."""
    response = error_response(app, exc, environ)
    return response.status, list(response.headers.items()), response.get_data()


def _bare_environ(port: int) -> dict[str, Any]:
    """Enough of a request for the app's error handlers (which answer problem+json)."""
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "localhost",
            "SERVER_PORT": str(port), "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(b""), "HTTP_ACCEPT": "application/problem+json"}


def refusal(app: Flask, status: int, detail: str) -> bytes:
    """A whole response (closing the connection) for an HTTP-level refusal, in the app's
    problem+json shape."""
    exc = default_exceptions.get(status, BadRequest)(description=detail)
    line, headers, body = _render(app, exc, _bare_environ(0))
    return _raw_response(line, headers, body)
