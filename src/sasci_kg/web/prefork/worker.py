"""A worker process of the prefork server: it takes a connection, reads one request at a time,
runs the app (and the query, under a watchdog) and sends the answer.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import select
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
from flask import Flask
from werkzeug.exceptions import InternalServerError

from ...executor import QueryTimeoutError
from ...local_runner import InProcessRunner
from ...store import Generation
from .. import (
    FILE_BODY,
    GENERATION,
    QUEUED_SECONDS,
    REPLAYABLE,
    SENT_BYTES,
    access_path,
    log_access,
    logged_path,
)
from ..config import ServerConfig
from ..fastpath import PassOn, QueryFastPath
from ..result_cache import AnswerCache, CachedAnswer
from .http import (
    _HEAD_END,
    _HOP_BY_HOP,
    _WHOLE,
    MAX_HEADER_BYTES,
    PEEK_BYTES,
    _bare_environ,
    _check_h11_request,
    _check_head_size,
    _check_target,
    _complete,
    _date,
    _done_sending,
    _drain,
    _judge,
    _parse_plain,
    _peek,
    _raw_response,
    _Refused,
    _render,
    _Request,
    _response_headers,
    _status_line,
    refusal,
)
from .outbox import _Outbox
from .slots import _ANSWERED, _BUSY, _DISPATCH, _ID, _IDLE, _SENDING, _Slots, _SlotStatus

log = logging.getLogger("sasci_kg.web.prefork")
access_log = logging.getLogger("sasci_kg.access")  # the app's access log (web/__init__.py)

# A request whose line and headers are not in within this time is answered 408.
READ_TIMEOUT = 15.0
# A client that does not take the response within this time is dropped (an answer the
# supervisor sends: no byte taken for this long).
SEND_TIMEOUT = 60.0
# A worker keeps an idle connection this long (unless others wait: then it returns it at
# once), then returns it. A request on a returned connection goes through the supervisor (two
# processes to wake, not one): with 1 s, a client pausing for a second or two (a heavy query
# of its own elsewhere) paid ~0.3 ms more on a ~1 ms light query (subunit paths 1.89x
# `oxigraph serve` against 1.59x with 5 s, same run of code).
STICKY = 5.0
# The longest a worker waits in one poll: how soon it sees a stop while it holds an idle
# connection (a signal does not end the wait: Python goes on waiting after its handler).
POLL_STEP = 1.0
# While other requests wait for a worker, one keeps serving the connection it has for this
# long, then gives it back to join the queue. Giving it back after every answer cost ~10 %
# of the throughput under load (a trip through the supervisor each time); a turn of this
# length costs one trip per ~15 light queries and keeps the wait of the others short.
TURN = 0.01
# After a request that took this long (a heavy query: pyoxigraph freed many blocks of memory),
# malloc is made to sort its free lists at once, while the client reads the answer. Left for
# later, the first larger allocation of the next request did it: 0.5-1.5 ms added to a light
# query of ~1 ms, on the request right after a heavy one (measured in the worker).
TIDY_AFTER = 0.005
# Request targets that may have an answer to send again (the lean route's paths).
_QUERY_TARGETS = frozenset({b"/sparql", b"/query"})
# Its size: too large for malloc's per-size caches (so it sorts the free lists to serve it),
# below its mmap threshold (so it is served from them at all).
_TIDY_BYTES = 65536
# The name of a worker process (/proc/PID/comm).
WORKER_NAME = b"sasci-kg-query"


@dataclass
class _Connection:
    sock: socket.socket
    ident: int
    peer: tuple[str, int]
    buffer: bytes = b""  # read, not yet used: the start of the next request
    deadline: float = 0.0  # the request being read must be in by then (time.monotonic())
    arrived: float = 0.0  # when the request the supervisor handed over began (0: none)
    answered: float = 0.0  # when its last answer was done (time.monotonic()): idle since

    def wait(self, deadline: float, what: str) -> None:
        """Give the next blocking call on the socket what is left of ``deadline``: each
        request (and each answer) has one time budget, not one per piece."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Refused(408, f"{what} did not arrive in time")
        self.sock.settimeout(left)


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
        # The request being answered (its environ, made when asked for): a timeout's 504.
        self.current: tuple[_Connection, Callable[[], dict[str, Any]]] | None = None
        self._serial = 0
        runtime = app.extensions["sasci_kg"]
        self.runner = InProcessRunner(
            config.backend_settings if config.is_remote else config.store,
            on_expire=self._answer_timeout, status=self.status,
            stats=lambda: slots.stats(index))
        runtime.use_runner(self.runner)
        self.runtime = runtime
        self.results: AnswerCache = runtime.results
        self.fastpath: QueryFastPath | None = app.extensions.get("sasci_kg_fastpath")
        self.query_body_limit = config.max_body_bytes

    # -- the loop

    def run(self) -> None:
        self.runner.warm_up()
        self.slots.write(self.index, _IDLE)  # ready: the supervisor may hand requests over
        conn: _Connection | None = None
        turn_ends = 0.0  # while others wait, this connection is served until then
        while not self.stopping:
            if conn is not None and conn.buffer:
                # RFC 9112 §2.2: blank lines before a request are ignored (some clients end
                # a body with one). Left here, one read as a request begun: the worker
                # waited for the rest while the client sat idle.
                conn.buffer = conn.buffer.lstrip(b"\r\n")
            if conn is not None and conn.buffer:
                # A pipelined request is already here, or its start: the rest is waited for
                # by the supervisor, not here (a client could send one slowly on purpose).
                if (_complete(conn.buffer, self.body_limit)
                        or _complete(self._read_waiting(conn), self.body_limit)
                        or _done_sending(conn.sock)):
                    conn = self._serve(conn)
                else:
                    self._hand_back(conn)
                    conn = None
                continue
            poller = select.poll()
            poller.register(self.listener, select.POLLIN)
            poller.register(self.dispatch, select.POLLIN)
            if conn is not None:
                poller.register(conn.sock, select.POLLIN)
            wait = 0.5
            if conn is not None:
                wait = min(POLL_STEP, max(0.0, conn.answered + STICKY - time.monotonic()))
            ready = {fd for fd, _ in poller.poll(1000 * wait)}
            # Clients take turns: a request the supervisor handed over, or a new connection,
            # goes before this connection's next request once its turn is over, so a client
            # that sends its next request at once does not keep the others waiting.
            others = bool(ready - {conn.sock.fileno() if conn else -1})
            if (conn is not None and conn.sock.fileno() in ready
                    and (not others or time.monotonic() < turn_ends)):
                conn = self._serve(conn)
            else:
                new = self._take() if others else None
                if conn is not None and (new is not None or (
                        not ready and time.monotonic() >= conn.answered + STICKY)):
                    self._hand_back(conn)  # someone else is waiting, or it has gone quiet
                    conn = None
                if new is not None:
                    turn_ends = time.monotonic() + TURN
                    conn = self._serve(new)
            if (conn is not None and not conn.buffer and self.slots.queued()
                    and time.monotonic() >= turn_ends):
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
            message, fds, _, _ = socket.recv_fds(self.dispatch, _DISPATCH.size, 2,
                                                 socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        else:
            if fds:
                sock = socket.socket(fileno=fds[0])
                ident, arrived, gathered = _DISPATCH.unpack(message)
                conn = self._adopt(sock, ident, announce=False)
                conn.arrived = arrived
                if gathered:  # the request, read whole by the supervisor: in a memfd
                    if len(fds) < 2:  # (lost: at the open-files limit)
                        log.warning("a request handed over arrived without its bytes; closing")
                        self._close(conn)
                        return None
                    conn.buffer = _read_memfd(fds[1])
                return conn
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
        """Give the connection back to the supervisor, with the start of a request already
        read here (in a memfd), if any."""
        self.slots.write(self.index, _IDLE)
        with contextlib.suppress(OSError):
            if conn.buffer:
                memfd = _memfd_of(conn.buffer, "sasci-kg-request")
                try:
                    socket.send_fds(self.control, [b"I" + _ID.pack(conn.ident)], [memfd])
                finally:
                    os.close(memfd)
            else:
                self.control.send(b"I" + _ID.pack(conn.ident))
        conn.sock.close()

    def _read_waiting(self, conn: _Connection) -> bytes:
        """``conn.buffer`` with what waits on the socket now added to it (no waiting)."""
        with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
            if conn.sock.gettimeout() is not None:  # (with one, recv would wait for it)
                conn.sock.settimeout(None)
            more = conn.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            if more:
                conn.buffer += more
        return conn.buffer

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
                _judge(memoryview(self.peek_buffer)[:waiting], self.body_limit,
                       conn.sock) == _WHOLE
                or _done_sending(conn.sock)))
            if not whole:
                self._hand_back(conn)
                return None
            if waiting and conn.sock.gettimeout() is None:
                # All of it is here: take exactly that (no wait, no 64 KiB buffer to allocate).
                conn.buffer = conn.sock.recv(waiting)
        began = time.perf_counter()
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
            if time.perf_counter() - began > TIDY_AFTER:
                bytearray(_TIDY_BYTES)  # a large-bin allocation: malloc sorts its free lists
        if keep is None:
            conn.sock.close()  # the supervisor's duplicate stays open: it sends the rest
            return None
        if keep and not self.stopping:
            conn.answered = time.monotonic()
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
        started = time.perf_counter()
        if conn.arrived:  # queued in the supervisor first: that wait counts too
            started -= max(0.0, time.monotonic() - conn.arrived)
        try:
            head = self._read_head(conn)
            if head is None:
                return False
            request = _parse_plain(head)
            if request is None:
                return self._answer_h11(conn, head)
            _check_target(request.target)
            if request.length > self.body_limit:
                raise _Refused(413, f"the request body is larger than {self.body_limit} bytes")
            body = self._read_exactly(conn, request.length)
        except _Refused as exc:
            return self._refuse(conn, exc.status, exc.detail)
        replay = self._replay_key(request, head, body)
        seen = False
        if replay is not None:
            kept = self.results.get(replay[0], replay[1], replay=True)
            if kept is not None and kept.body:
                return self._send_again(conn, request, kept.body, started)
            seen = kept is not None  # these very bytes were asked before (a mark)
        if self.fastpath is not None and request.target.partition(b"?")[0] in _QUERY_TARGETS:
            try:
                return self._answer_lean(conn, request, body, replay, seen, started)
            except PassOn:
                pass
        environ = self._environ(conn, request.method, request.target, request.minor,
                                request.headers, body)
        if replay is not None:
            environ[GENERATION] = replay[0]  # (read just now: the app need not again)
        status, headers, chunks = self._run_app(conn, environ)
        return self._send_plain(conn, request, status, headers, chunks, environ,
                                replay=replay, seen=seen)

    def _answer_lean(self, conn: _Connection, request: _Request, body: bytes,
                     replay: tuple[Generation, tuple[str, bytes]] | None, seen: bool,
                     started: float) -> bool | None:
        """A plain query request, answered by the lean route (:mod:`..fastpath`) straight
        from the parsed request: no WSGI environ, no middleware (each step of a request costs
        several times more when the process has sat idle, and a light query is ~1 ms). The
        same answer as through the app, logged as the app would. Raises :class:`PassOn`
        before doing anything when the app must read the request itself."""
        assert self.fastpath is not None
        target = request.target
        if b"#" in target or not target.isascii():
            raise PassOn
        content_type = accept = if_none_match = None
        coded = False
        for name, value in request.headers:  # (joined as in an environ)
            if name == b"content-type":
                if content_type is not None:
                    raise PassOn
                content_type = value
            elif name == b"accept":
                accept = value if accept is None else accept + b"," + value
            elif name == b"if-none-match":
                if_none_match = value if if_none_match is None else if_none_match + b"," + value
            elif name == b"content-encoding":
                coded = True
        method = request.method

        def whole_body() -> bytes:
            if len(body) > self.query_body_limit or coded:
                raise PassOn  # (the app refuses it: 413; 415 for a content coding)
            return body

        path, _, query = target.decode("ascii").partition("?")
        params, text = self.fastpath.read(
            method, query, "" if content_type is None else content_type.decode("latin-1"),
            whole_body)

        def environ_of() -> dict[str, Any]:
            return self._environ(conn, method, target, request.minor, request.headers, body)

        self.current = (conn, environ_of)
        marks: dict[str, Any] = {}
        later: list[Callable[[], None]] = []  # what the answer need not wait for
        try:
            status, headers, data, replayable = self.fastpath.answer(
                params, text, method=method,
                accept=None if accept is None else accept.decode("latin-1"),
                if_none_match=None if if_none_match is None else if_none_match.decode("latin-1"),
                generation=None if replay is None else replay[0], later=later)
        except Exception as exc:  # noqa: BLE001 - the app's problem response, as on its route
            status, headers, problem = self._call_app(
                environ_of(), functools.partial(self.fastpath.problem, exc))
            chunks = _whole(problem)  # (a problem is small: sent, and logged with its size)
        else:
            chunks = [] if method == "HEAD" or status.startswith("304") else [data]
            if replayable is not None:
                marks[REPLAYABLE] = replayable
        self.slots.write(self.index, _SENDING, conn=conn.ident)
        conn.deadline = time.monotonic() + SEND_TIMEOUT
        conn.arrived = 0.0  # (its wait is in ``started``)
        try:
            return self._send_plain(conn, request, status, headers, chunks, marks,
                                    replay=replay, seen=seen)
        finally:
            # Once the answer is on its way: the log line, and keeping the answer in the
            # cache (~0.1-0.3 ms of a light query's, measured right after an idle spell).
            log_access(method, logged_path(path, query), status[:3],
                       time.perf_counter() - started, sum(map(len, chunks)))
            for work in later:
                try:
                    work()
                except Exception:  # noqa: BLE001 - the client has its answer; say what failed
                    log.exception("after answering %s %s", method, path)

    # -- answers sent again

    def _replay_key(self, request: _Request, head: bytes, body: bytes
                    ) -> tuple[Generation, tuple[str, bytes]] | None:
        """Where the answer to these very bytes is kept (with the store generation now), if
        it may be. A query answer depends on nothing but the request (its method, target,
        headers and body) and the store generation, so the same bytes get the same answer
        until the next load: sent again from here, it skips the app (~3x the answers per
        second of CPU for a repeated light query). Only answers the lean route marks are
        kept (:data:`~sasci_kg.web.REPLAYABLE`), as they were sent but for the Date."""
        if (self.results.max_bytes <= 0 or not request.keep_alive or self.stopping
                or request.method not in ("GET", "POST", "HEAD")
                or request.target.partition(b"?")[0] not in _QUERY_TARGETS):
            return None  # (only the lean query route marks answers to keep)
        generation = self.runtime.generation()
        if generation is None:
            return None
        return generation, ("replay", head + body)

    def _keep_to_send_again(self, replay: tuple[Generation, tuple[str, bytes]],
                            environ: dict[str, Any], lines: list[str], body: bytes,
                            seen: bool) -> None:
        """Keep the response, if the lean route marked it, once its bytes are asked for the
        second time; the first time, a mark (an empty record) says they were. Kept at once,
        every request with bytes of its own (a trace or request id, a new client) would
        keep a response never sent again."""
        generation = environ.get(REPLAYABLE)
        if generation is None:
            return
        # Kept without its Date line (the second), which is written anew each time.
        kept = "\r\n".join([lines[0], *lines[2:]]).encode("latin-1") + body if seen else b""
        self.results.put(generation, replay[1], CachedAnswer(kept, 0, 0.0, ""))

    def _send_again(self, conn: _Connection, request: _Request, kept: bytes,
                    started: float) -> bool | None:
        """Send a kept answer (see :meth:`_replay_key`) and log it as the app would."""
        self.slots.write(self.index, _SENDING, conn=conn.ident)
        conn.deadline = time.monotonic() + SEND_TIMEOUT
        conn.arrived = 0.0  # (its wait is in ``started``)
        line_end = kept.index(b"\r\n") + 2
        outbox = _Outbox(self, conn, True)
        try:
            outbox.write(kept[:line_end] + f"Date: {_date.now()}\r\n".encode("ascii")
                         + kept[line_end:])
            stays = outbox.finish()
        finally:
            outbox.abort()
        path, query = _split_target(request.target)
        log_access(request.method, logged_path(path, query), kept[9:12].decode("ascii"),
                   time.perf_counter() - started,
                   len(kept) - kept.index(b"\r\n\r\n") - 4)
        return stays

    def _run_app(self, conn: _Connection, environ: dict[str, Any]
                 ) -> tuple[str, list[tuple[str, str]], Iterable[bytes]]:
        """Call the app (the watchdog may answer for it meanwhile), then start the answer's
        time budget."""
        self.current = (conn, lambda: environ)
        answer = self._call_app(environ)
        self.slots.write(self.index, _SENDING, conn=conn.ident)
        conn.deadline = time.monotonic() + SEND_TIMEOUT  # (the outbox waits within it)
        return answer

    def _send_plain(self, conn: _Connection, request: _Request, status: str,
                    headers: list[tuple[str, str]], chunks: Iterable[bytes],
                    environ: dict[str, Any],
                    replay: tuple[Generation, tuple[str, bytes]] | None = None,
                    seen: bool = False) -> bool | None:
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
            if replay is not None and keep and code in (200, 304) and isinstance(chunks, list):
                self._keep_to_send_again(replay, environ, lines, body, seen)
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
            _check_h11_request(event, self.body_limit)
            body = self._h11_body(conn, http)
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

    def _h11_body(self, conn: _Connection, http: h11.Connection) -> bytes:
        # No 100 Continue from here: a worker is given a request whole (the supervisor sent
        # the 100 while it read the body), or one it refuses (RFC 9110 §10.1.1: no 100 then).
        limit = self.body_limit
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

    def _refuse(self, conn: _Connection, status: int, detail: str) -> bool | None:
        """An answer for a request the app never sees (malformed, too large, too slow).

        The supervisor sends it and closes the connection (None: it has it now), reading
        what the client still sends meanwhile, as it does for its own refusals: closing with
        unread bytes would reset the connection before the client reads the answer. A worker
        that did this itself was held up to a second per refusal by a client that declared a
        body over the limit and then sent nothing (the slow-sender work's find)."""
        if status == 501:  # a transfer coding other than chunked: the client's error
            status = 400
        log.info("refused a request from %s: %s %s", conn.peer[0], status, detail)
        response = refusal(self.app, status, detail)
        try:
            memfd = _memfd_of(response, "sasci-kg-refusal")
            try:
                socket.send_fds(self.control, [b"L" + _ID.pack(conn.ident)], [memfd])
            finally:
                os.close(memfd)
            return None
        except OSError:  # (no descriptor to be had, or the supervisor is gone): as before
            pass
        with contextlib.suppress(OSError):
            conn.sock.settimeout(5.0)
            conn.sock.sendall(response)
            _drain(conn.sock)
        return False

    def _environ(self, conn: _Connection, method: str, target: bytes, minor: int,
                 headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
        target = target.partition(b"#")[0]  # (never sent by a browser; granian drops it)
        path, query = _split_target(target)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
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
        if conn.arrived:  # the first request on a connection the supervisor had queued
            environ[QUEUED_SECONDS] = max(0.0, time.monotonic() - conn.arrived)
            conn.arrived = 0.0
        return environ

    def _call_app(self, environ: dict[str, Any],
                  wsgi: Callable[..., Iterable[bytes]] | None = None
                  ) -> tuple[str, list[tuple[str, str]], Iterable[bytes]]:
        """Call the app (or ``wsgi``) on ``environ``: its status, headers and body."""
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        try:
            chunks = (wsgi or self.wsgi)(environ, start_response)
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
                conn, environ_of = current
                environ = environ_of()
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


def _whole(body: Iterable[bytes]) -> list[bytes]:
    """A WSGI body read whole (and closed)."""
    try:
        return [b"".join(body)]
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _memfd_of(data: bytes | bytearray, name: str) -> int:
    """A memfd holding ``data`` (to hand bytes to another process with a descriptor)."""
    memfd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(memfd, view):]
    except BaseException:
        os.close(memfd)
        raise
    return memfd


def _read_memfd(memfd: int) -> bytes:
    """The bytes of a memfd handed over (then closed)."""
    try:
        size = os.fstat(memfd).st_size
        parts, done = [], 0
        while done < size:
            part = os.pread(memfd, size - done, done)
            if not part:
                break
            parts.append(part)
            done += len(part)
        return b"".join(parts)
    finally:
        os.close(memfd)


def _flush_logs() -> None:
    for handler in logging.getLogger("sasci_kg").handlers:
        with contextlib.suppress(Exception):
            handler.flush()


def _split_target(target: bytes) -> tuple[str, str]:
    """PATH_INFO and QUERY_STRING of a request target."""
    target = target.partition(b"#")[0]  # (never sent by a browser; granian drops it)
    path, _, query = target.partition(b"?")
    if path.startswith(b"http://") or path.startswith(b"https://"):  # absolute form
        path = b"/" + path.split(b"/", 3)[3] if path.count(b"/") >= 3 else b"/"
    return unquote_to_bytes(path).decode("latin-1"), query.decode("latin-1")

