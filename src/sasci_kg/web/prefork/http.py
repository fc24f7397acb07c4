"""Reading and writing HTTP/1.1 for the prefork server: what makes a request whole, the
plain requests read directly (anything unusual is left to h11), status lines and refusals.
"""

from __future__ import annotations

import contextlib
import io
import re
import select
import socket
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

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
_EXPECT = re.compile(rb"\nexpect[ \t]*:", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:[ \t]*([0-9]{1,18})", re.IGNORECASE)
# The blank line that ends the headers. RFC 9112 §2.2: a recipient MAY take a bare LF as a
# line's end (granian and h11 do, and so do clients typed by hand): such heads go to h11.
_HEAD_END = re.compile(rb"\r?\n\r?\n")
# A request is handed to a worker once its line, headers and Content-Length body are all
# there, or this much of it (MSG_PEEK looks without reading): a client that sends slowly holds
# no worker while it does. Kept below what a socket buffers before the sender must wait.
PEEK_BYTES = 16 * 1024


def _complete(data: bytes | memoryview, body_limit: int = 1 << 62) -> bool:
    """Whether ``data`` (the start of what waits on a connection) is a whole request, or
    enough of one to be worth a worker's time (one whose declared body is over
    ``body_limit`` is: it is refused 413 at once)."""
    if len(data) >= PEEK_BYTES:
        return True
    raw = bytes(data).lstrip(b"\r\n")
    blank = _HEAD_END.search(raw)
    if blank is None:
        return False
    if _EXPECT.search(raw, 0, blank.start() + 1):  # the client sends its body after our 100
        return True
    m = _CONTENT_LENGTH.search(raw, 0, blank.start() + 1)
    return (m is None or len(raw) >= blank.end() + int(m.group(1))
            or int(m.group(1)) > body_limit)


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
