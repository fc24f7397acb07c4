"""The prefork server (``--server prefork``): each HTTP process runs its own queries, one
request at a time, and is itself the process that is killed when a query overruns.

Why. Under granian a light query crosses three processes on two cores — granian's worker,
then a query process over a pipe, and back — and that hop (pickling, two wake-ups, request
threads handing the GIL to each other) cost more CPU than the query. Here the request is read,
run and answered by one single-threaded process (``benchmarks/README.md``, session 5).

What keeps it safe:

- **The supervisor** (the ``serve`` process) binds the socket, builds the app once, forks the
  workers and keeps a duplicate of every open connection (each worker hands it over when it
  accepts one). It replaces a worker that dies. If the worker died in the middle of a request,
  the supervisor answers that request on its duplicate: 400 when the query killed the parser,
  500 otherwise, 504 when it had to kill a worker past its deadline.
- **Time limits**: :class:`~sasci_kg.local_runner.Watchdog` (a thread of the worker: pyoxigraph
  releases the GIL) answers 504 itself when a query outlives its limit and ends the process;
  a worker that holds the GIL past the deadline plus :data:`KILL_GRACE` is SIGKILLed by the
  supervisor, which answers 504.
- **Memory**: each worker has the address-space limit of a query process.
- **Idle connections** go back to the supervisor: a worker keeps its keep-alive connection
  only while no other client is waiting, so a few idle clients cannot hold every worker.
  The supervisor watches idle connections and hands one to a free worker when it has a request.
- **Slow readers**: a worker sends what the socket takes at once; the rest of a larger
  answer (in a memfd, or a download's own file) goes to the supervisor, which sends it as
  the client reads (:class:`_Outbox`), so a client reading slowly holds no worker. (Except
  behind a pipelined request, or past :data:`HANDOVER_BUDGET`: then the worker sends it, within
  :data:`SEND_TIMEOUT`.) The supervisor's own refusals never make it wait (:class:`_Lingering`).

Plain HTTP/1.1 requests are read here; anything unusual (chunked bodies, ``Expect:
100-continue``, obs-fold, …) by h11. The WSGI app is the same as under granian.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import logging
import math
import mmap
import multiprocessing
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
from flask import Flask
from werkzeug.exceptions import BadRequest, InternalServerError, default_exceptions

from ..downloads import MAKER_MEMORY_LIMIT_ENV
from ..executor import (
    ExecutorBusyError,
    QueryTimeoutError,
    QueryTooComplexError,
    WorkerCrashedError,
)
from ..local_runner import InProcessRunner
from . import FILE_BODY, SENT_BYTES, access_path, close_app, create_app
from .config import ServerConfig
from .problems import error_response

log = logging.getLogger("sasci_kg.web.prefork")
access_log = logging.getLogger("sasci_kg.access")  # the app's access log (web/__init__.py)

# A worker past its deadline by this much, still not answering (the GIL held), is SIGKILLed.
KILL_GRACE = 2.0
# A request whose line and headers are not in within this time is answered 408.
READ_TIMEOUT = 15.0
# A client that does not take the response within this time is dropped (an answer the
# supervisor sends: no byte taken for this long).
SEND_TIMEOUT = 60.0
# Idle keep-alive connections are closed after this time.
KEEP_ALIVE = 30.0
# A refusal the supervisor sends (503, 408, an answer for a dead worker) is given this long
# to be read before the connection closes; the supervisor never waits on it.
LINGER = 2.0
# A worker keeps an idle connection this long (unless others wait), then returns it.
STICKY = 1.0
# Request line and headers, at most (as under granian).
MAX_HEADER_BYTES = 64 * 1024
# Header lines, at most (as under granian, whose hyper refuses more with 431).
MAX_HEADERS = 100
# A worker that dies within this time of its start, this many times running, stops the server.
CRASH_LOOP_SECONDS, CRASH_LOOP_COUNT = 5.0, 5

# The name of a worker process (/proc/PID/comm).
WORKER_NAME = b"sasci-kg-query"

_IDLE, _BUSY, _SENDING, _ANSWERED, _DEAD = 0, 1, 2, 3, 4
# state, query job?, parsed?, connection id, deadline (CLOCK_MONOTONIC, 0 when none)
_SLOT = struct.Struct("<BBBxxxxxQd")
_ID = struct.Struct("<Q")


class _Slots:
    """One record per worker in anonymous shared memory, written by the worker, read by the
    supervisor (a torn read only delays a decision to the next look)."""

    def __init__(self, count: int):
        self.count = count
        # One record per worker, then the bytes of answers the supervisor holds in memfds,
        # then how many whole requests it holds waiting for a free worker.
        self.memory = mmap.mmap(-1, _SLOT.size * count + 2 * _ID.size)

    def read(self, index: int) -> tuple[int, int, int, int, float]:
        state, query, parsed, conn, deadline = _SLOT.unpack_from(self.memory, index * _SLOT.size)
        return state, query, parsed, conn, deadline

    def stats(self, asking: int) -> dict[str, int]:
        """The workers as ``/healthz`` reports them (the pool's fields), from worker
        ``asking``: it counts as idle, since it is free once it has answered."""
        states = [_IDLE if i == asking else self.read(i)[0] for i in range(self.count)]
        return {"size": self.count, "alive": sum(s != _DEAD for s in states),
                "idle": states.count(_IDLE), "waiting": 0}

    def held(self) -> int:
        return int(_ID.unpack_from(self.memory, _SLOT.size * self.count)[0])

    def set_held(self, size: int) -> None:
        _ID.pack_into(self.memory, _SLOT.size * self.count, size)

    def queued(self) -> int:
        return int(_ID.unpack_from(self.memory, _SLOT.size * self.count + _ID.size)[0])

    def set_queued(self, count: int) -> None:
        _ID.pack_into(self.memory, _SLOT.size * self.count + _ID.size, count)

    def write(self, index: int, state: int, query: int = 0, parsed: int = 0,
              conn: int = 0, deadline: float = 0.0) -> None:
        _SLOT.pack_into(self.memory, index * _SLOT.size, state, query, parsed, conn, deadline)


class _SlotStatus:
    """The runner's :class:`~sasci_kg.local_runner.JobStatus`, kept in this worker's slot."""

    def __init__(self, slots: _Slots, index: int):
        self.slots, self.index = slots, index
        self.conn = 0

    def begin(self, deadline: float, query: bool) -> None:
        self.slots.write(self.index, _BUSY, int(query), 0, self.conn, deadline)

    def parsed(self) -> None:
        state, query, _, conn, deadline = self.slots.read(self.index)
        self.slots.write(self.index, state, query, 1, conn, deadline)

    def end(self) -> None:
        self.slots.write(self.index, _BUSY, 0, 0, self.conn, 0.0)


# ---------------------------------------------------------------------------------------
# A worker process.


@dataclass
class _Connection:
    sock: socket.socket
    ident: int
    peer: tuple[str, int]
    buffer: bytes = b""  # read, not yet used: the start of the next request
    deadline: float = 0.0  # the request being read must be in by then (time.monotonic())

    def wait(self, deadline: float, what: str) -> None:
        """Give the next blocking call on the socket what is left of ``deadline``: each
        request (and each answer) has one time budget, not one per piece."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Refused(408, f"{what} did not arrive in time")
        self.sock.settimeout(left)


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


def _peek(sock: socket.socket, buffer: bytearray) -> int | None:
    """How many bytes wait on ``sock`` (copied into ``buffer``, left in the socket); 0 at
    end of stream, None when nothing waits."""
    try:
        return sock.recv_into(buffer, len(buffer), socket.MSG_PEEK | socket.MSG_DONTWAIT)
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
    tokens = {t.strip() for t in connection.split(b",")}
    keep_alive = b"close" not in tokens and (minor == 1 or b"keep-alive" in tokens)
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


# An answer larger than the socket takes at once is handed to the supervisor to send.
_SPILL = struct.Struct("<c8s?QQ")  # b"S", connection id, keep alive?, file offset, file bytes
_BLOCK = 1 << 20
# Answers the supervisor holds in memfds, at most this many bytes in all; past it a worker
# sends its answer itself, as the client reads (a download's file costs no memory: not counted).
HANDOVER_BUDGET = 256 * 1024 * 1024
# The supervisor sends at most this much to one client before it looks at its other work.
SEND_SLICE = 4 * _BLOCK


class _Outbox:
    """Where a worker writes an answer. Bytes go straight to the socket while it takes them
    without waiting; once it would make us wait (a slow reader, or an answer larger than the
    socket's buffer), the rest goes into a memfd (a file body: its descriptor) and both go to
    the supervisor, which sends them from its event loop: a slow client holds no worker.

    The worker waits and sends itself (within the answer's time budget), as before, when a
    pipelined request is already read (``conn.buffer``: handing over would lose those bytes)
    or when the answers the supervisor holds in memory pass :data:`HANDOVER_BUDGET`."""

    def __init__(self, worker: _Worker, conn: _Connection, keep: bool):
        self.worker, self.conn, self.keep = worker, conn, keep
        self.pending: list[bytes] = []
        self.size = 0
        self.spill = -1  # the memfd, once the socket has made us wait
        self.file: tuple[int, int, int] | None = None  # fd, offset, bytes: sent after it
        conn.sock.setblocking(False)

    def write(self, data: bytes) -> None:
        if self.spill >= 0:
            _write_all(self.spill, data)
            return
        self.pending.append(data)
        self.size += len(data)
        if self.size >= 65536:
            self._push()

    def send_file(self, fd: int, offset: int, length: int) -> int:
        """Send ``length`` bytes of the file from ``offset``; the bytes it came to."""
        self._push()
        sock = self.conn.sock
        end = offset + length
        while self.spill < 0 and offset < end:
            try:
                sent = os.sendfile(sock.fileno(), fd, offset, min(end - offset, _BLOCK))
            except (BlockingIOError, InterruptedError):
                if self._hand_over():
                    break
                continue
            if sent == 0:  # the file is shorter than it said: the client sees a short body
                self.keep = False
                return length - (end - offset)
            offset += sent
        if offset < end:
            self.file = (fd, offset, end - offset)
        return length

    def finish(self) -> bool | None:
        """Whether the connection stays open; None when the supervisor sends the rest."""
        self._push()
        if self.spill < 0:
            self.conn.sock.setblocking(True)
            return self.keep
        fds = [self.spill]
        offset = length = 0
        if self.file is not None:
            fds.append(self.file[0])
            offset, length = self.file[1], self.file[2]
        try:
            message = _SPILL.pack(b"S", _ID.pack(self.conn.ident), self.keep, offset, length)
            socket.send_fds(self.worker.control, [message], fds)
        finally:
            self.abort()
        return None

    def abort(self) -> None:
        """Let go of the memfd (once handed over, or when the answer failed)."""
        spill, self.spill = self.spill, -1
        if spill >= 0:
            os.close(spill)

    def _push(self) -> None:
        if not self.pending:
            return
        data = memoryview(b"".join(self.pending))
        self.pending, self.size = [], 0
        sock = self.conn.sock
        while data and self.spill < 0:
            try:
                data = data[sock.send(data):]
            except (BlockingIOError, InterruptedError):
                self._hand_over()
        if data:
            _write_all(self.spill, data)

    def _hand_over(self) -> bool:
        """The socket would make us wait: start the memfd the supervisor will send from, or
        (when it cannot take this answer) wait until the socket takes more."""
        if not self.conn.buffer and self.worker.slots.held() < HANDOVER_BUDGET:
            self.spill = os.memfd_create("sasci-kg-answer", os.MFD_CLOEXEC)
            return True
        left = self.conn.deadline - time.monotonic()
        poller = select.poll()
        poller.register(self.conn.sock, select.POLLOUT)
        if left <= 0 or not poller.poll(left * 1000):
            raise TimeoutError("the client did not read the answer in time")
        return False


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Worker:
    def __init__(self, index: int, app: Flask, wsgi: Callable[..., Iterable[bytes]],
                 config: ServerConfig, listener: socket.socket, dispatch: socket.socket,
                 control: socket.socket, slots: _Slots):
        self.index, self.app, self.wsgi, self.config = index, app, wsgi, config
        self.listener, self.dispatch, self.control, self.slots = listener, dispatch, control, slots
        self.server_name, self.server_port = listener.getsockname()[:2]
        self.status = _SlotStatus(slots, index)
        self.body_limit = max(config.max_body_bytes, config.max_upload_bytes)
        self.peek_buffer = bytearray(PEEK_BYTES)
        self.stopping = False
        self.current: tuple[_Connection, dict[str, Any]] | None = None
        self._serial = 0
        runtime = app.extensions["sasci_kg"]
        self.runner = InProcessRunner(
            config.backend_settings if config.is_remote else config.store,
            on_expire=self._answer_timeout, status=self.status,
            stats=lambda: slots.stats(index))
        runtime.use_runner(self.runner)

    # -- the loop

    def run(self) -> None:
        self.runner.warm_up()
        conn: _Connection | None = None
        while not self.stopping:
            if conn is not None and conn.buffer:
                conn = self._serve(conn)  # a pipelined request is already here
                continue
            poller = select.poll()
            poller.register(self.listener, select.POLLIN)
            poller.register(self.dispatch, select.POLLIN)
            if conn is not None:
                poller.register(conn.sock, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(1000 * (STICKY if conn else 0.5))}
            # A request the supervisor handed over, or a new connection, goes first: a
            # client that sends its next request at once must not keep the others waiting.
            new = self._take() if ready - {conn.sock.fileno() if conn else -1} else None
            if conn is not None and new is None and conn.sock.fileno() in ready:
                conn = self._serve(conn)
            else:
                if conn is not None and (new is not None or not ready):
                    self._hand_back(conn)  # someone else is waiting, or it has gone quiet
                    conn = None
                if new is not None:
                    conn = self._serve(new)
            if conn is not None and not conn.buffer and self.slots.queued():
                # Requests wait in the supervisor for a free worker: this connection joins
                # them at the back (its next request waits its turn), and the supervisor,
                # woken by the hand-back, gives this process the oldest. (Not with a
                # pipelined request already read: those bytes are only here.)
                self._hand_back(conn)
                conn = None
        if conn is not None:
            self._close(conn)

    def _take(self) -> _Connection | None:
        """A connection with a request waiting (from the supervisor) or a new one."""
        try:
            message, fds, _, _ = socket.recv_fds(self.dispatch, _ID.size, 1, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        else:
            if fds:
                sock = socket.socket(fileno=fds[0])
                return self._adopt(sock, _ID.unpack(message)[0], announce=False)
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:  # EMFILE and the like: wait, do not spin
            log.warning("accept failed: %s", exc)
            time.sleep(0.1)
            return None
        self._serial += 1
        return self._adopt(sock, (os.getpid() << 24) | (self._serial & 0xFFFFFF), announce=True)

    def _adopt(self, sock: socket.socket, ident: int, *, announce: bool) -> _Connection:
        sock.setblocking(True)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            peer = sock.getpeername()[:2]
        except OSError:
            peer = ("", 0)
        if announce:  # the supervisor keeps a duplicate, to answer if this process dies
            socket.send_fds(self.control, [b"N" + _ID.pack(ident)], [sock.fileno()])
        return _Connection(sock, ident, peer)

    def _hand_back(self, conn: _Connection) -> None:
        self.slots.write(self.index, _IDLE)
        with contextlib.suppress(OSError):
            self.control.send(b"I" + _ID.pack(conn.ident))
        conn.sock.close()

    def _close(self, conn: _Connection) -> None:
        self.slots.write(self.index, _IDLE)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)  # the supervisor's duplicate keeps it open
        conn.sock.close()
        with contextlib.suppress(OSError):
            self.control.send(b"C" + _ID.pack(conn.ident))

    # -- one request

    def _serve(self, conn: _Connection) -> _Connection | None:
        """Answer one request on ``conn``; the connection if it stays open. A request that
        is not all there yet goes back to the supervisor, to wait without holding us."""
        if not conn.buffer:
            try:
                waiting = _peek(conn.sock, self.peek_buffer)
            except OSError:
                waiting = 0  # reset: the read below sees it
            whole = waiting == 0 or (waiting is not None and (
                _complete(memoryview(self.peek_buffer)[:waiting], self.body_limit)
                or _done_sending(conn.sock)))
            if not whole:
                self._hand_back(conn)
                return None
        self.status.conn = conn.ident
        self.slots.write(self.index, _BUSY, conn=conn.ident)  # reading counts as busy
        keep: bool | None = False
        try:
            keep = self._answer(conn)
        except (OSError, h11.LocalProtocolError):
            keep = False
        except Exception:  # noqa: BLE001 - a body that failed while being sent
            log.exception("a response failed while it was being sent")
            keep = False
        finally:
            # Handed over: the supervisor has the connection now, not this slot.
            self.slots.write(self.index, _IDLE, conn=0 if keep is None else conn.ident)
            self.current = None
        if keep is None:
            conn.sock.close()  # the supervisor's duplicate stays open: it sends the rest
            return None
        if keep and not self.stopping:
            return conn
        self._close(conn)
        return None

    def _read_head(self, conn: _Connection) -> bytes | None:
        """The request line and headers (up to the blank line), or None if the client closed
        or went quiet before starting a request."""
        conn.deadline = time.monotonic() + READ_TIMEOUT
        data = conn.buffer.lstrip(b"\r\n")  # RFC 9112 §2.2: ignore blank lines before it
        while True:
            blank = _HEAD_END.search(data)
            if blank is not None:
                conn.buffer = data[blank.end():]
                head = data[:blank.end()]
                _check_head_size(head)
                return head
            _check_head_size(data)
            try:
                conn.wait(conn.deadline, "the request")
                more = conn.sock.recv(65536)
            except (TimeoutError, _Refused):
                if not data:
                    return None
                raise _Refused(408, "the request did not arrive in time") from None
            if not more:
                if data.strip():
                    raise _Refused(400, "the connection closed in the middle of a request")
                return None
            data = (data + more).lstrip(b"\r\n")

    def _read_exactly(self, conn: _Connection, length: int) -> bytes:
        parts, size = [conn.buffer], len(conn.buffer)
        while size < length:
            try:
                conn.wait(conn.deadline, "the request body")
                more = conn.sock.recv(min(length - size, 1 << 20))
            except TimeoutError:
                raise _Refused(408, "the request body did not arrive in time") from None
            if not more:
                raise _Refused(400, "the connection closed in the middle of the request body")
            parts.append(more)
            size += len(more)
        data = b"".join(parts)
        conn.buffer = data[length:]
        return data[:length]

    def _answer(self, conn: _Connection) -> bool | None:
        """Read one request, run the app, send its answer; whether the connection stays
        (None: it went to the supervisor, with the rest of the answer to send)."""
        try:
            head = self._read_head(conn)
            if head is None:
                return False
            request = _parse_plain(head)
            if request is None:
                return self._answer_h11(conn, head)
            if request.length > self.body_limit:
                raise _Refused(413, f"the request body is larger than {self.body_limit} bytes")
            body = self._read_exactly(conn, request.length)
        except _Refused as exc:
            return self._refuse(conn, exc.status, exc.detail)
        environ = self._environ(conn, request.method, request.target, request.minor,
                                request.headers, body)
        status, headers, chunks = self._run_app(conn, environ)
        return self._send_plain(conn, request, status, headers, chunks, environ)

    def _run_app(self, conn: _Connection, environ: dict[str, Any]
                 ) -> tuple[str, list[tuple[str, str]], Iterable[bytes]]:
        """Call the app (the watchdog may answer for it meanwhile), then start the answer's
        time budget."""
        self.current = (conn, environ)
        answer = self._call_app(environ)
        self.slots.write(self.index, _SENDING, conn=conn.ident)
        conn.deadline = time.monotonic() + SEND_TIMEOUT  # (the outbox waits within it)
        return answer

    def _send_plain(self, conn: _Connection, request: _Request, status: str,
                    headers: list[tuple[str, str]], chunks: Iterable[bytes],
                    environ: dict[str, Any]) -> bool | None:
        """Send the answer; whether the connection stays open, or None when the rest of it
        went to the supervisor to send (a slow reader, a large answer: see :class:`_Outbox`)."""
        code = int(status[:3])
        keep = request.keep_alive and not self.stopping
        no_body = request.method == "HEAD" or code in (204, 304) or code < 200
        lines = [_status_line(code, status), f"Date: {_date.now()}"]
        length = None
        content_range = ""
        for name, value in headers:
            lowered = name.lower()
            if lowered in _HOP_BY_HOP or lowered == "date":  # (ours is above)
                continue
            if lowered == "content-length":
                length = value
            elif lowered == "content-range":
                content_range = value
            lines.append(f"{name}: {value}")
        body = b""
        file = environ.get(FILE_BODY) if code in (200, 206) and not no_body else None
        if length is None:
            file = None  # (a download always has its length; read it as any body if not)
        outbox: _Outbox | None = None
        try:
            if no_body or file is not None:
                pass
            elif length is not None or isinstance(chunks, list):
                if isinstance(chunks, list):
                    body = b"".join(chunks)
                    if length is None:
                        lines.append(f"Content-Length: {len(body)}")
            elif request.minor == 0:
                keep = False  # no length and no chunked coding in HTTP/1.0: the close ends it
            else:
                lines.append("Transfer-Encoding: chunked")
            if not keep:
                lines.append("Connection: close")
            elif request.minor == 0:
                lines.append("Connection: keep-alive")
            lines.append("\r\n")
            outbox = _Outbox(self, conn, keep)
            outbox.write("\r\n".join(lines).encode("latin-1") + body)
            if file is not None:
                start = int(content_range.split(" ", 1)[1].split("-", 1)[0]) if content_range else 0
                sent = outbox.send_file(file.fileno(), start, int(length or 0))
                environ[SENT_BYTES] = sent
            elif not no_body and not isinstance(chunks, list):
                chunked = length is None and request.minor == 1
                whole = self._stream(outbox, chunks, chunked=chunked,
                                     length=None if length is None else int(length))
                outbox.keep = outbox.keep and whole
            return outbox.finish()
        finally:
            if outbox is not None:
                outbox.abort()  # (after a failure: the memfd it may have started)
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _stream(self, outbox: _Outbox, chunks: Iterable[bytes], *, chunked: bool,
                length: int | None) -> bool:
        """Send a body the app produces piece by piece; False if the connection must close
        (the app sent more or less than its Content-Length)."""
        sent = 0
        for chunk in chunks:
            if not chunk:
                continue
            if length is not None and sent + len(chunk) > length:
                chunk = chunk[:length - sent]  # never more than the declared length
                if not chunk:
                    return False
            sent += len(chunk)
            outbox.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            outbox.write(b"0\r\n\r\n")
        return length is None or sent == length

    # -- the rest of HTTP/1.1, by h11

    def _answer_h11(self, conn: _Connection, head: bytes) -> bool | None:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        http.receive_data(head + conn.buffer)
        conn.buffer = b""
        try:
            event = self._h11_event(conn, http)
            if isinstance(event, h11.ConnectionClosed):
                return False
            assert isinstance(event, h11.Request)
            if not event.http_version.startswith(b"1."):  # (1.2 and on are read as 1.1)
                raise _Refused(505, f"HTTP/{event.http_version.decode('ascii', 'replace')} "
                                    "is not served here; use HTTP/1.1")
            self.slots.write(self.index, _BUSY, conn=conn.ident)
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                # RFC 9112 §6.3: a smuggling attempt, or a broken client; either way, refuse.
                raise _Refused(400, "both Content-Length and Transfer-Encoding; send one")
            body = self._h11_body(conn, http, event)
        except h11.RemoteProtocolError as exc:
            return self._refuse(conn, exc.error_status_hint, str(exc))
        except _Refused as exc:
            return self._refuse(conn, exc.status, exc.detail)
        environ = self._environ(conn, event.method.decode("ascii"), event.target,
                                int(event.http_version[-1:] == b"1"), list(event.headers), body)
        status_line, headers, chunks = self._run_app(conn, environ)
        code, _, reason = _status_line(int(status_line[:3]), status_line)[9:].partition(" ")
        headers = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP | {"date"}]
        headers.append(("Date", _date.now()))
        conn.buffer = bytes(http.trailing_data[0])  # a pipelined request, already here
        outbox = _Outbox(self, conn, keep=True)
        head_only = environ["REQUEST_METHOD"] == "HEAD"
        try:
            outbox.write(http.send(h11.Response(
                status_code=int(code), reason=reason.encode("latin-1"),
                headers=_response_headers(headers))) or b"")
            for chunk in chunks:
                if chunk and not head_only:
                    outbox.write(http.send(h11.Data(data=chunk)) or b"")
            outbox.write(http.send(h11.EndOfMessage()) or b"")
        except BaseException:
            outbox.abort()
            raise
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        outbox.keep = (http.our_state is not h11.MUST_CLOSE and http.their_state is h11.DONE
                       and not self.stopping)
        return outbox.finish()

    def _h11_event(self, conn: _Connection, http: h11.Connection) -> Any:
        while True:
            event = http.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                conn.wait(conn.deadline, "the request")
                data = conn.sock.recv(65536)
            except TimeoutError:
                raise _Refused(408, "the request did not arrive in time") from None
            http.receive_data(data)

    def _h11_body(self, conn: _Connection, http: h11.Connection, request: h11.Request) -> bytes:
        limit = self.body_limit
        length = next((v for k, v in request.headers if k == b"content-length"), None)
        if length is not None and int(length) > limit:
            raise _Refused(413, f"the request body is larger than {limit} bytes")
        chunked = any(k == b"transfer-encoding" for k, _ in request.headers)
        if http.client_is_waiting_for_100_continue and (chunked or int(length or 0) > 0):
            go_on = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            conn.sock.sendall(http.send(go_on) or b"")
        parts: list[bytes] = []
        size = 0
        while True:
            event = self._h11_event(conn, http)
            if isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            if isinstance(event, h11.ConnectionClosed):
                raise _Refused(400, "the connection closed in the middle of the request body")
            size += len(event.data)
            if size > limit:
                raise _Refused(413, f"the request body is larger than {limit} bytes")
            parts.append(bytes(event.data))

    def _refuse(self, conn: _Connection, status: int, detail: str) -> bool:
        """An answer for a request the app never sees (malformed, too large, too slow)."""
        if status == 501:  # a transfer coding other than chunked: the client's error
            status = 400
        log.info("refused a request from %s: %s %s", conn.peer[0], status, detail)
        with contextlib.suppress(OSError):
            conn.sock.settimeout(5.0)
            conn.sock.sendall(refusal(self.app, status, detail))
            _drain(conn.sock)
        return False

    def _environ(self, conn: _Connection, method: str, target: bytes, minor: int,
                 headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
        target = target.partition(b"#")[0]  # (never sent by a browser; granian drops it)
        path, _, query = target.partition(b"?")
        if path.startswith(b"http://") or path.startswith(b"https://"):  # absolute form
            path = b"/" + path.split(b"/", 3)[3] if path.count(b"/") >= 3 else b"/"
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "RAW_URI": target.decode("latin-1"),
            "REQUEST_URI": target.decode("latin-1"),
            "SERVER_NAME": str(self.server_name),
            "SERVER_PORT": str(self.server_port),
            "SERVER_PROTOCOL": f"HTTP/1.{minor}",
            "REMOTE_ADDR": conn.peer[0],
            "REMOTE_PORT": str(conn.peer[1]),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in headers:
            if b"_" in name:  # X_Forwarded_For would pass for X-Forwarded-For: dropped
                continue
            key = name.decode("latin-1").upper().replace("-", "_")
            if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                continue  # the body is read whole: its length is CONTENT_LENGTH above
            if key != "CONTENT_TYPE":
                key = "HTTP_" + key
            text = value.decode("latin-1")
            if key in environ:
                text = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
            environ[key] = text
        return environ

    def _call_app(self, environ: dict[str, Any]
                  ) -> tuple[str, list[tuple[str, str]], Iterable[bytes]]:
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        try:
            chunks = self.wsgi(environ, start_response)
            if not started:  # a generator body: start_response comes with its first chunk
                iterator = iter(chunks)
                first = next(iterator, b"")
                chunks = _Prepended(first, iterator, chunks)
        except Exception:  # noqa: BLE001 - Flask answers its own errors; this is a bug
            log.exception("the app failed on %s %s", environ["REQUEST_METHOD"],
                          environ["PATH_INFO"])
            line, headers, body = _render(self.app, InternalServerError(), _bare_environ(0))
            return line, headers, [body]
        return started[0], started[1], chunks

    # -- a query past its limit (from the watchdog thread; the main thread is in pyoxigraph)

    def _answer_timeout(self, limit: float) -> None:
        try:
            current = self.current
            state = self.slots.read(self.index)[0]
            if current is not None and state == _BUSY:
                conn, environ = current
                log.warning("query process %s ended after the %.1f s limit", os.getpid(), limit)
                status, headers, body = _render(self.app, QueryTimeoutError(limit), environ)
                access_log.info("%s %s %s %.1fms %dB", environ["REQUEST_METHOD"],
                                access_path(environ),
                                status.split(" ")[0], limit * 1000, len(body))
                _flush_logs()
                # Everything else first: the process ends right after the client has it.
                self.slots.write(self.index, _ANSWERED, conn=conn.ident)
                conn.sock.settimeout(5.0)
                conn.sock.sendall(_raw_response(status, headers, body))
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001 - the process ends either way
            log.exception("could not answer a timed-out request")
        finally:
            _flush_logs()
            os._exit(3)

    def stop(self, *_: Any) -> None:
        self.stopping = True


class _Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class _Prepended:
    """A WSGI body whose first chunk has been read already (to see the status)."""

    def __init__(self, first: bytes, rest: Iterable[bytes], original: Iterable[bytes]):
        self.first, self.rest, self.original = first, rest, original

    def __iter__(self) -> Any:
        yield self.first
        yield from self.rest

    def close(self) -> None:
        close = getattr(self.original, "close", None)
        if close is not None:
            close()


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


def _flush_logs() -> None:
    for handler in logging.getLogger("sasci_kg").handlers:
        with contextlib.suppress(Exception):
            handler.flush()


# ---------------------------------------------------------------------------------------
# The supervisor.


@dataclass
class _Child:
    index: int
    pid: int
    control: socket.socket
    started: float
    folder: str  # its temporary folder: removed once it has ended, however it ended


@dataclass
class _Lingering:
    """A short answer the supervisor sends before closing: the rest to send, and when to give
    up. What the client still sends meanwhile is read and dropped (closing with unread bytes
    would reset the connection before the client reads the answer)."""
    rest: memoryview
    until: float
    written: bool = False  # all sent, and our side shut for writing
    closed: bool = False  # the client has shut its side: nothing more to read


@dataclass
class _Outgoing:
    """The rest of an answer a worker handed over, sent here as the client takes it."""
    parts: list[list[int]]  # [fd, offset, end], in order: the memfd, then a file's part
    keep: bool  # the connection stays open after it
    progress: float  # when the client last took bytes (time.monotonic())
    memory: int  # the memfd's bytes (counted against HANDOVER_BUDGET until it is let go)


class Supervisor:
    """Forks and watches the workers; holds a duplicate of every connection (see the module
    docstring)."""

    def __init__(self, config: ServerConfig, processes: int):
        _raise_open_files_limit()
        self.config = config
        self.processes = processes
        self.listener = _listen(config.host, config.port)
        self.listener.setblocking(False)
        self.app = create_app(config)
        self.wsgi = self.app.wsgi_app
        self.slots = _Slots(processes)
        self.dispatch_out, self.dispatch_in = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.dispatch_in.setblocking(False)
        self.dispatch_out.setblocking(False)  # a full queue must not stop the supervisor
        self.children: dict[int, _Child] = {}  # by pid
        self.connections: dict[int, socket.socket] = {}  # every open connection's duplicate
        self.idle: dict[int, float] = {}  # connections held here: id -> since
        self.epoll = select.epoll()
        self.stopping = False
        self.crashes: list[float] = []
        self.failed = False
        self.by_fd: dict[int, int] = {}  # a connection's duplicate: fd -> id
        self.partial: set[int] = set()  # held connections with part of a request
        self.ready: dict[int, float] = {}  # held whole requests waiting for a free worker
        self.outgoing: dict[int, _Outgoing] = {}  # answers being sent from here, by connection
        self.lingering: dict[int, _Lingering] = {}  # refusals being sent, then closed
        self.held = 0  # bytes of the memfds in self.outgoing
        self.holding_listener = False
        self.serial = 0
        self.peek_buffer = bytearray(PEEK_BYTES)
        self.body_limit = max(config.max_body_bytes, config.max_upload_bytes)
        wake_r, self.wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.wake_r = wake_r
        self.epoll.register(wake_r, select.EPOLLIN)

    def serve(self) -> None:
        _remove_stale_folders()
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            for index in range(self.processes):
                self._spawn(index)
            log.info("prefork server on %s:%s, %d processes", self.config.host,
                     self.listener.getsockname()[1], self.processes)
            while not self.stopping:
                self._step()
            self._shut_down()
        finally:
            signal.set_wakeup_fd(-1)
            close_app(self.app)

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _step(self) -> None:
        try:
            # While requests wait for a free worker, look often: a worker that finished
            # without a message to say so (a keep-alive answer) is free now.
            events = self.epoll.poll(0.005 if self.ready else 0.1)
        except InterruptedError:
            events = []
        by_fd = {c.control.fileno(): c for c in self.children.values()}
        for fd, mask in events:
            if fd == self.wake_r:
                with contextlib.suppress(OSError):
                    os.read(fd, 4096)
            elif fd in by_fd:
                self._messages(by_fd[fd])
            elif fd == self.listener.fileno():
                self._accept()
            elif self.by_fd.get(fd) in self.outgoing:
                self._writable(self.by_fd[fd])
            elif self.by_fd.get(fd) in self.lingering:
                self._linger(self.by_fd[fd])
            else:
                self._readable(fd, mask)
        self._reap()
        self._enforce_deadlines()
        self._expire_idle()
        self._balance()
        if self.slots.queued() != len(self.ready):
            self.slots.set_queued(len(self.ready))

    # -- workers

    def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.slots.write(index, _IDLE)
        # The worker's temporary files (search indexes, the isolated pool's forkserver, a
        # private download cache) go in a folder of its own, which we remove when it has
        # ended: a worker killed (at its deadline, by the OOM killer) cannot clean up.
        folder = tempfile.mkdtemp(prefix=f"skw{os.getpid()}-")
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                _use_temporary_folder(folder)
                ours.close()
                self._become_worker(index, theirs)
            except BaseException:  # noqa: BLE001
                log.exception("prefork worker %s failed", index)
                code = 1
            finally:
                _flush_logs()
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        self.epoll.register(ours.fileno(), select.EPOLLIN)
        self.children[pid] = _Child(index, pid, ours, time.monotonic(), folder)

    def _become_worker(self, index: int, control: socket.socket) -> None:
        signal.set_wakeup_fd(-1)
        self.epoll.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        for sock in self.connections.values():
            sock.close()
        for child in self.children.values():
            child.control.close()
        self.dispatch_out.close()
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: end with the supervisor
            libc.prctl(15, WORKER_NAME)  # PR_SET_NAME: what ps and top show
        if self.config.worker_memory_mb > 0:
            # The soft limit only: a download's maker, a child of this process, takes it off
            # (making one at 10⁷ triples needs more than a query may use; see downloads.py).
            limit = self.config.worker_memory_mb * 1024 * 1024
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            os.environ[MAKER_MEMORY_LIMIT_ENV] = str(soft)  # the makers get the server's own
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        worker = _Worker(index, self.app, self.wsgi, self.config, self.listener,
                         self.dispatch_in, control, self.slots)
        signal.signal(signal.SIGTERM, worker.stop)
        signal.signal(signal.SIGINT, worker.stop)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        worker.run()
        close_app(self.app)

    def _messages(self, child: _Child) -> None:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(child.control, _SPILL.size, 2)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not message:
                return
            kind, ident = message[:1], _ID.unpack(message[1:1 + _ID.size])[0]
            if kind == b"S":
                if ident in self.connections and fds:
                    self._send_rest(ident, message, fds)
                else:  # (descriptors lost: at the open-files limit) the answer cannot be sent
                    for fd in fds:
                        os.close(fd)
                    log.warning("a handed-over answer arrived without its file; closing")
                    self._forget(ident)
                continue
            if kind == b"N" and fds:
                self.connections[ident] = socket.socket(fileno=fds[0])
                self.by_fd[fds[0]] = ident
            elif kind == b"C":
                self._forget(ident)
            elif kind == b"I" and ident in self.connections:
                self.idle[ident] = time.monotonic()
                # Edge-triggered: woken when more arrives, not again for what is there.
                self.epoll.register(self.connections[ident].fileno(),
                                    select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
            for fd in fds[1:] if kind == b"N" else fds:
                os.close(fd)

    # -- answers handed over by workers

    def _send_rest(self, ident: int, message: bytes, fds: list[int]) -> None:
        _, _, keep, offset, length = _SPILL.unpack(message)
        size = os.fstat(fds[0]).st_size
        parts = [[fds[0], 0, size]]
        if len(fds) > 1:
            parts.append([fds[1], offset, offset + length])
        self.outgoing[ident] = _Outgoing(parts, keep, time.monotonic(), size)
        self._count_held(size)
        sock = self.connections[ident]
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            self.epoll.unregister(sock.fileno())
        self.epoll.register(sock.fileno(), select.EPOLLOUT)
        self._writable(ident)

    def _writable(self, ident: int) -> None:
        """Send what the client takes now; once all is sent, hold the connection as idle
        (keep-alive) or close it."""
        out = self.outgoing[ident]
        sock = self.connections[ident]
        budget = SEND_SLICE  # then the loop's other work (EPOLLOUT brings us back)
        try:
            while out.parts and budget > 0:
                fd, offset, end = out.parts[0]
                while offset < end and budget > 0:
                    sent = os.sendfile(sock.fileno(), fd, offset, min(end - offset, _BLOCK))
                    if sent == 0:  # the file was shorter than its worker said
                        raise OSError(errno.EIO, "the answer's file ended early")
                    offset += sent
                    budget -= sent
                    out.parts[0][1] = offset
                    out.progress = time.monotonic()
                if offset >= end:
                    os.close(out.parts.pop(0)[0])
        except (BlockingIOError, InterruptedError):
            return  # EPOLLOUT says when it takes more
        except OSError as exc:
            log.info("an answer could not be sent whole: %s", exc)
            self._forget(ident)
            return
        if out.parts:
            return
        del self.outgoing[ident]
        self._count_held(-out.memory)
        if not out.keep or self.stopping:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            self._forget(ident)
            return
        self.idle[ident] = time.monotonic()  # the next request is waited for here
        self.epoll.modify(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
        self._readable(sock.fileno())  # it may have come already

    def _readable(self, fd: int, mask: int = 0) -> None:
        """Bytes arrived on a connection held here: once a whole request is there (or the
        client has stopped sending: it never will be), hand it to a free worker; if the
        client closed, close it."""
        ident = self.by_fd.get(fd)
        if ident is None or ident not in self.idle:
            return
        try:
            waiting = _peek(self.connections[ident], self.peek_buffer)
        except OSError:
            waiting = 0
        if waiting is None:
            return
        if waiting == 0:
            self._forget(ident)
            return
        done_sending = bool(mask & (select.EPOLLRDHUP | select.EPOLLHUP))
        if not done_sending and not _complete(memoryview(self.peek_buffer)[:waiting],
                                              self.body_limit):
            if ident not in self.partial:  # the request's clock starts with its first bytes
                self.partial.add(ident)
                self.idle[ident] = time.monotonic()
            return
        since = self.idle.pop(ident)
        self.partial.discard(ident)
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)
        if self._all_busy():
            self.ready[ident] = since  # waits here for a free worker, or gets a 503
            if len(self.ready) > self.config.queue_size:
                self._shed(ident)
            return
        self._dispatch(ident)

    def _dispatch(self, ident: int) -> None:
        try:
            socket.send_fds(self.dispatch_out, [_ID.pack(ident)],
                            [self.connections[ident].fileno()])
        except BlockingIOError:  # the hand-over queue is full: wait here for a free worker
            self.ready[ident] = time.monotonic()
        except OSError as exc:
            log.warning("could not hand a connection to a worker: %s", exc)
            self._forget(ident)

    # -- when every worker is busy

    def _all_busy(self) -> bool:
        """Every worker is running a request. (One that answered its last and is ending, or
        is being replaced, will take new ones in a moment: not busy.)"""
        return all(self.slots.read(i)[0] in (_BUSY, _SENDING) for i in range(self.processes))

    def _balance(self) -> None:
        """While every worker is busy, take new connections here (their requests queue, as
        many as ``queue_size``, each at most ``queue_timeout`` seconds, then get a 503);
        once one is free, hand the queued requests over, oldest first."""
        busy = self._all_busy()
        if busy != self.holding_listener:
            if busy:
                self.epoll.register(self.listener.fileno(), select.EPOLLIN)
            else:
                self.epoll.unregister(self.listener.fileno())
            self.holding_listener = busy
        if not busy:
            free = sum(self.slots.read(i)[0] == _IDLE for i in range(self.processes))
            for ident in list(self.ready)[:max(free, 1)]:  # oldest first, one per free worker
                del self.ready[ident]
                self._dispatch(ident)
            return
        now = time.monotonic()
        for ident, since in list(self.ready.items()):
            if now - since > self.config.queue_timeout:
                self._shed(ident)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            self.serial += 1
            ident = (1 << 62) | self.serial
            self.connections[ident] = sock
            self.by_fd[sock.fileno()] = ident
            self.idle[ident] = time.monotonic()
            self.epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)

    def _shed(self, ident: int) -> None:
        """Answer a queued request 503 (Retry-After), having read it."""
        retry_after = max(1, math.ceil(self.config.queue_timeout))
        log.warning("every query process is busy: a request got 503")
        line, headers, body = _render(self.app, ExecutorBusyError(retry_after),
                                      _bare_environ(self.config.port))
        self._refuse_held(ident, _raw_response(line, headers, body))

    def _refuse_held(self, ident: int, response: bytes) -> None:
        """Answer a connection held here with ``response`` and close it (:class:`_Lingering`);
        the loop goes on meanwhile."""
        self.idle.pop(ident, None)
        self.partial.discard(ident)
        self.ready.pop(ident, None)
        sock = self.connections[ident]
        sock.setblocking(False)
        self.lingering[ident] = _Lingering(memoryview(response), time.monotonic() + LINGER)
        with contextlib.suppress(OSError):
            self.epoll.unregister(sock.fileno())
        self.epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP)
        self._linger(ident)

    def _linger(self, ident: int) -> None:
        item, sock = self.lingering[ident], self.connections[ident]
        try:
            for _ in range(16):  # the request (or the rest of it): read and dropped, a little
                if item.closed:  # at a time
                    break
                if not sock.recv(65536):
                    if item.written:  # the client has read the answer and closed
                        self._forget(ident)
                        return
                    item.closed = True  # (level-triggered: never ask for EPOLLIN again)
                    self.epoll.modify(sock.fileno(), select.EPOLLOUT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._forget(ident)
            return
        try:
            while item.rest:
                item.rest = item.rest[sock.send(item.rest):]
            if not item.written:
                item.written = True
                sock.shutdown(socket.SHUT_WR)
                if item.closed:  # both sides done
                    self._forget(ident)
                    return
                self.epoll.modify(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._forget(ident)

    def _count_held(self, change: int) -> None:
        self.held += change
        self.slots.set_held(self.held)

    def _forget(self, ident: int) -> None:
        self.lingering.pop(ident, None)
        out = self.outgoing.pop(ident, None)
        if out is not None:
            for fd, _, _ in out.parts:
                os.close(fd)
            self._count_held(-out.memory)
        sock = self.connections.pop(ident, None)
        self.idle.pop(ident, None)
        self.partial.discard(ident)
        self.ready.pop(ident, None)
        if sock is not None:
            self.by_fd.pop(sock.fileno(), None)
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(sock.fileno())
            sock.close()

    def _expire_idle(self) -> None:
        """Close idle connections after :data:`KEEP_ALIVE`; answer 408 to a request still
        incomplete after :data:`READ_TIMEOUT` (a slow or stalled client)."""
        now = time.monotonic()
        for ident, out in list(self.outgoing.items()):
            if now - out.progress > SEND_TIMEOUT:  # the client stopped reading
                self._forget(ident)
        for ident, item in list(self.lingering.items()):
            if now > item.until:
                self._forget(ident)
        for ident, since in list(self.idle.items()):
            partial = ident in self.partial
            if now - since <= (READ_TIMEOUT if partial else KEEP_ALIVE):
                continue
            if partial:
                late = refusal(self.app, 408, "the request did not arrive in time")
                self._refuse_held(ident, late)
                continue
            with contextlib.suppress(OSError):
                self.connections[ident].shutdown(socket.SHUT_RDWR)
            self._forget(ident)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            state, _, _, _, deadline = self.slots.read(child.index)
            if state == _BUSY and deadline and now > deadline + KILL_GRACE:
                log.warning("query process %s killed: %.1f s past its time limit", child.pid,
                            now - deadline)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self._messages(child)  # what it said before it died
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(child.control.fileno())
            child.control.close()
            shutil.rmtree(child.folder, ignore_errors=True)
            self._after_death(child, status)
            if child.index not in {c.index for c in self.children.values()}:
                state = self.slots.read(child.index)
                self.slots.write(child.index, _DEAD, *state[1:])

    def _after_death(self, child: _Child, status: int) -> None:
        state, query, parsed, ident, deadline = self.slots.read(child.index)
        code = os.waitstatus_to_exitcode(status)
        if state == _BUSY and ident in self.connections and ident not in self.outgoing:
            if deadline and time.monotonic() > deadline:
                exc: Exception = QueryTimeoutError(self.config.max_timeout)
            elif query and not parsed:
                exc = QueryTooComplexError("parse", code)
            else:
                exc = WorkerCrashedError("run", code)
            log.error("query process %s died while answering a request (exit code %s)",
                      child.pid, code)
            status_line, headers, body = _render(self.app, exc, _bare_environ(self.config.port))
            self._refuse_held(ident, _raw_response(status_line, headers, body))
        elif ident and ident not in self.outgoing and ident not in self.idle:
            self._forget(ident)
        if self.stopping:
            return
        now = time.monotonic()
        if now - child.started < CRASH_LOOP_SECONDS and code != 3:
            self.crashes = [t for t in self.crashes if now - t < 60] + [now]
            if len(self.crashes) >= CRASH_LOOP_COUNT:
                log.error("workers keep dying at start; stopping the server")
                self.stopping = True
                self.failed = True
                return
        self._spawn(child.index)

    def _shut_down(self) -> None:
        log.info("stopping: letting requests in flight finish")
        if self.holding_listener:  # (the workers' copies would keep its epoll entry alive)
            self.epoll.unregister(self.listener.fileno())
            self.holding_listener = False
        self.listener.close()
        for ident in list(self.idle):
            self._forget(ident)
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.max_timeout + 5
        while ((self.children or self.outgoing or self.lingering)
               and time.monotonic() < deadline):
            # Workers finish their requests (handing over large answers); answers being
            # sent from here go on.
            by_fd = {c.control.fileno(): c for c in self.children.values()}
            with contextlib.suppress(InterruptedError):
                for fd, _ in self.epoll.poll(0.05):
                    if fd == self.wake_r:
                        with contextlib.suppress(OSError):
                            os.read(fd, 4096)
                    elif fd in by_fd:
                        self._messages(by_fd[fd])
                    elif self.by_fd.get(fd) in self.outgoing:
                        self._writable(self.by_fd[fd])
                    elif self.by_fd.get(fd) in self.lingering:
                        self._linger(self.by_fd[fd])
            for pid in list(self.children):
                with contextlib.suppress(ChildProcessError):
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if done:
                        child = self.children.pop(pid)
                        self._messages(child)
                        with contextlib.suppress(OSError, ValueError):
                            self.epoll.unregister(child.control.fileno())
                        child.control.close()
                        shutil.rmtree(child.folder, ignore_errors=True)
            self._expire_idle()
        for pid, child in self.children.items():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            shutil.rmtree(child.folder, ignore_errors=True)
        for ident in list(self.connections):
            self._forget(ident)


_WORKER_FOLDER = re.compile(r"skw([0-9]+)-[A-Za-z0-9_]+")


def _remove_stale_folders() -> None:
    """Remove the worker folders a supervisor that no longer runs left behind (killed with
    its workers, it could not remove them). Folders of a live process are left be."""
    root = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(root):
            m = _WORKER_FOLDER.fullmatch(name)
            if m is None:
                continue
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            except OSError:
                pass  # alive (another user's): not ours to touch


def _use_temporary_folder(folder: str) -> None:
    """Make ``folder`` this process's temporary folder, its children's, and multiprocessing's
    own (its forkserver's socket goes straight in it, not in a ``pymp-…`` folder inside:
    the socket's path must stay under 108 bytes)."""
    tempfile.tempdir = folder
    os.environ["TMPDIR"] = folder
    config = getattr(multiprocessing.current_process(), "_config", None)
    if isinstance(config, dict):
        config["tempdir"] = folder


def _raise_open_files_limit() -> None:
    # The supervisor holds a duplicate of every open connection: two descriptors each.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 16), hard))


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, f"{host}:{port} is in use; choose another --port") from None
        raise
    sock.listen(1024)
    return sock


def default_processes(config: ServerConfig) -> int:
    """Processes = queries run at once, as the query processes of the granian layout."""
    return max(1, config.query_workers * config.http_workers)


def run_prefork(config: ServerConfig) -> None:
    supervisor = Supervisor(config, default_processes(config))
    supervisor.serve()
    if supervisor.failed:
        raise OSError("the prefork workers kept dying at start (see the log lines above)")
