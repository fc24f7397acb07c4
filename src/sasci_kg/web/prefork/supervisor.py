"""The supervisor of the prefork server: it binds the socket, forks and replaces the workers,
holds idle and queued connections, sends the rest of handed-over answers and the refusals,
and answers for a worker that died.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import math
import multiprocessing
import os
import re
import resource
import select
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import ServiceUnavailable

from ...downloads import MAKER_MEMORY_LIMIT_ENV
from ...executor import (
    ExecutorBusyError,
    QueryTimeoutError,
    crash_error,
)
from ...offline import take_offline
from .. import close_app, create_app
from ..config import ServerConfig
from ..resources import share_downloads
from ..shared_cache import share_results
from .http import (
    _GATHER,
    _TOO_LARGE,
    _WHOLE,
    PEEK_BYTES,
    _bare_environ,
    _Gathering,
    _judge,
    _peek,
    _raw_response,
    _render,
    refusal,
)
from .outbox import _BLOCK, _SPILL, SEND_SLICE
from .slots import _BUSY, _DEAD, _DISPATCH, _ID, _IDLE, _SENDING, _STARTING, _Slots
from .worker import (
    READ_TIMEOUT,
    SEND_TIMEOUT,
    WORKER_NAME,
    _flush_logs,
    _memfd_of,
    _read_memfd,
    _Worker,
)

log = logging.getLogger("sasci_kg.web.prefork")

# A worker past its deadline by this much, still not answering (the GIL held), is SIGKILLed.
KILL_GRACE = 2.0
# Idle keep-alive connections are closed after this time.
KEEP_ALIVE = 30.0
# A refusal the supervisor sends (503, 408, an answer for a dead worker) is given this long
# to be read before the connection closes; the supervisor never waits on it.
LINGER = 2.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# Workers that die before they are ready to take requests, this many times within this many
# seconds, stop the server (a store that cannot be opened, a broken install).
CRASH_LOOP_COUNT, CRASH_LOOP_WINDOW = 5, 60.0
# Requests read here until whole (:class:`.http._Gathering`: bodies past the peek, chunked,
# after a 100 Continue) hold at most this many bytes in all. Past it a new request body is
# refused 503 (Retry-After) rather than handed to a worker to wait for: that would give the
# workers to whoever fills the budget. Small requests (whole in the peek) are not affected.
GATHER_BUDGET = 128 * 1024 * 1024
# At most this much is read from one client in one turn of the loop (then the others).
GATHER_STEP = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass
class _Child:
    index: int
    pid: int
    control: socket.socket
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
    docstring of :mod:`sasci_kg.web.prefork`)."""

    def __init__(self, config: ServerConfig, processes: int):
        _raise_open_files_limit()
        self.config = config
        self.processes = processes
        self.listener = _listen(config.host, config.port)
        self.listener.setblocking(False)
        self.app = create_app(config)
        # One download cache (and lock) for every worker; a private one is named like the
        # workers' folders, so a later server removes it if this one is killed.
        share_downloads(self.app, private_prefix=f"skw{os.getpid()}-downloads_")
        # One answer cache for every worker: a repeated query is answered whichever worker
        # it reaches, and the budget holds each answer once.
        share_results(self.app, processes)
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
        self.expired_at = 0.0  # when _expire_idle last looked
        self.stopping = False
        self.crashes: list[float] = []
        self.failed = False
        self.by_fd: dict[int, int] = {}  # a connection's duplicate: fd -> id
        self.partial: set[int] = set()  # held connections with part of a request
        self.ready: dict[int, float] = {}  # held whole requests waiting for a free worker
        self.outgoing: dict[int, _Outgoing] = {}  # answers being sent from here, by connection
        self.lingering: dict[int, _Lingering] = {}  # refusals being sent, then closed
        self.held = 0  # bytes of the memfds in self.outgoing
        self.gathering: dict[int, _Gathering] = {}  # requests being read here until whole
        self.gathered = 0  # their bytes (at most GATHER_BUDGET)
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
        now = time.monotonic()
        if now - self.expired_at >= 0.1:  # (it walks every connection held here)
            self.expired_at = now
            self._expire_idle()
        self._balance()
        if self.slots.queued() != len(self.ready):
            self.slots.set_queued(len(self.ready))

    # -- workers

    def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.slots.write(index, _STARTING)  # (no request is handed to it until it is ready)
        # The worker's temporary files (search indexes, the isolated pool's forkserver, a
        # private download cache) go in a folder of its own, which we remove when it has
        # ended: a worker killed (at its deadline, by the OOM killer) cannot clean up.
        folder = tempfile.mkdtemp(prefix=f"skw{os.getpid()}-")
        # A stop signal that reached the child before it set its own handlers ran ours there
        # (a copy of the supervisor's loop, which it never runs): the worker missed it, and
        # a stop just after a worker was replaced waited out its full grace. Held back until
        # the worker's handlers are in place.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
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
        self.children[pid] = _Child(index, pid, ours, folder)

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
        # No network for the engine (offline.py: behind the guard, SERVICE and LOAD reach
        # nothing), unless it is meant to have one: a remote engine to ask, or SERVICE calls
        # the operator allows. Now, while this process has one thread.
        if not self.config.is_remote and not self.config.service_allow:
            if not take_offline() and index == 0:
                log.warning("the query processes could not be cut off from the network (no "
                            "network namespace here); the SERVICE refusal rests on the guard "
                            "alone")
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: end with the supervisor
            libc.prctl(15, WORKER_NAME)  # PR_SET_NAME: what ps and top show
        if self.config.worker_memory_mb > 0:
            # The soft limit only: a download's maker, a child of this process, takes it off
            # (making one at 10⁷ triples needs more than a query may use; see downloads.py).
            # The shared answer cache is mapped whole from the start: it is not the query's
            # memory, so it comes on top (a cache as large as the limit left none).
            shared = getattr(self.app.extensions["sasci_kg"].results, "size", 0)
            limit = self.config.worker_memory_mb * 1024 * 1024 + shared
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            os.environ[MAKER_MEMORY_LIMIT_ENV] = str(soft)  # the makers get the server's own
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        bind = getattr(self.app.extensions["sasci_kg"].results, "bind", None)
        if bind is not None:
            bind(index)  # this worker's row of the shared cache's counters
        worker = _Worker(index, self.app, self.wsgi, self.config, self.listener,
                         self.dispatch_in, control, self.slots)
        signal.signal(signal.SIGTERM, worker.stop)
        signal.signal(signal.SIGINT, worker.stop)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # (see _spawn)
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
            elif kind == b"L" and fds:  # a worker's refusal, to send before closing
                response = _read_memfd(fds.pop(0))
                if ident in self.connections:
                    self._refuse_held(ident, response)
            elif kind == b"I" and ident in self.connections:
                self.idle[ident] = time.monotonic()
                if fds:  # with the start of a pipelined request: read the rest here
                    data = _read_memfd(fds.pop(0))
                    self.partial.add(ident)
                    self.gathering[ident] = _Gathering(self.body_limit, self.idle[ident])
                    self.epoll.register(self.connections[ident].fileno(),
                                        select.EPOLLIN | select.EPOLLRDHUP)
                    self._take_bytes(ident, data)
                else:
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
        client closed, close it. A request that cannot be seen whole by peeking is read here
        (:meth:`_gather`)."""
        ident = self.by_fd.get(fd)
        if ident is None or ident not in self.idle:
            return
        if ident in self.gathering:
            self._gather(ident)
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
        judged = _WHOLE if done_sending else _judge(
            memoryview(self.peek_buffer)[:waiting], self.body_limit, self.connections[ident])
        if judged != _WHOLE:
            if ident not in self.partial:  # the request's clock starts with its first bytes
                self.partial.add(ident)
                self.idle[ident] = time.monotonic()
            if judged == _GATHER:  # read from now on (level-triggered: a step at a time)
                self.gathering[ident] = _Gathering(self.body_limit, self.idle[ident])
                self.epoll.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
                self._gather(ident)
            return
        self._hand_over(ident)

    def _hand_over(self, ident: int) -> None:
        """The request on a connection held here is whole (or one a worker refuses at once):
        to a free worker, or to the queue."""
        since = self.idle.pop(ident)
        # The request's clock starts with its first bytes: now, unless it came in pieces
        # (not when the connection went idle: a client idle for longer than queue_timeout
        # got 503 at once whenever every worker was busy).
        arrived = since if ident in self.partial else time.monotonic()
        self.partial.discard(ident)
        with contextlib.suppress(OSError):
            self.epoll.unregister(self.connections[ident].fileno())
        if ident in self.gathering:
            # Read here over up to READ_TIMEOUT: its wait for a worker (queue_timeout) starts
            # now; its logged duration still counts from its first bytes (_dispatch).
            arrived = time.monotonic()
        if self.ready or self._all_busy() or self._dispatch_pending():
            self.ready[ident] = arrived  # waits its turn here, or gets a 503
            if len(self.ready) > self.config.queue_size:
                self._shed(ident)
            return
        self._dispatch(ident, arrived)

    # -- requests read here until whole

    def _gather(self, ident: int) -> None:
        """Read the next bytes of a request being read here."""
        try:
            chunk = self.connections[ident].recv(GATHER_STEP, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._forget(ident)
            return
        if not chunk:  # the client has stopped sending: a worker answers what there is
            self._hand_over(ident)
            return
        self._take_bytes(ident, chunk)

    def _take_bytes(self, ident: int, chunk: bytes) -> None:
        gathering = self.gathering[ident]
        if self.gathered + len(chunk) > GATHER_BUDGET:
            retry_after = max(1, math.ceil(self.config.queue_timeout))
            log.warning("request bodies being received hold %d bytes: a request got 503",
                        self.gathered)
            busy = ServiceUnavailable(
                description="the server is receiving as many request bodies as it can hold; "
                            f"try again in {retry_after} s", retry_after=retry_after)
            self._refuse_held(ident, _raw_response(*_render(self.app, busy,
                                                            _bare_environ(self.config.port))))
            return
        self._count_gathered(len(chunk))
        judged = gathering.add(chunk)
        if judged == _TOO_LARGE:
            self._refuse_held(ident, refusal(
                self.app, 413, f"the request body is larger than {self.body_limit} bytes"))
        elif judged == _WHOLE:
            self._hand_over(ident)
        elif gathering.expects:  # the client waits for this before it sends its body
            gathering.expects = False
            try:
                sent = self.connections[ident].send(_CONTINUE, socket.MSG_DONTWAIT)
            except OSError:
                sent = 0
            if sent != len(_CONTINUE):  # (a client that reads nothing: let it go)
                self._forget(ident)

    def _count_gathered(self, change: int) -> None:
        self.gathered += change

    def _drop_gathering(self, ident: int) -> None:
        gathering = self.gathering.pop(ident, None)
        if gathering is not None:
            self._count_gathered(-len(gathering.data))

    def _dispatch_pending(self) -> bool:
        """Whether a request handed over is still waiting for a worker to take it."""
        try:
            return bool(self.dispatch_in.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return False

    def _dispatch(self, ident: int, arrived: float) -> None:
        gathering = self.gathering.get(ident)
        fds = [self.connections[ident].fileno()]
        try:
            if gathering is not None:  # the request's bytes go with it, in a memfd
                fds.append(_memfd_of(gathering.data, "sasci-kg-request"))
            socket.send_fds(self.dispatch_out, [_DISPATCH.pack(
                ident, arrived if gathering is None else gathering.began,
                gathering is not None)], fds)
        except BlockingIOError:  # the hand-over queue is full: wait here for a free worker
            self.ready[ident] = arrived
        except OSError as exc:
            log.warning("could not hand a connection to a worker: %s", exc)
            self._forget(ident)
        else:
            self._drop_gathering(ident)
        finally:
            for fd in fds[1:]:
                os.close(fd)

    # -- when every worker is busy

    def _all_busy(self) -> bool:
        """Every worker is running a request. (One that answered its last and is ending, or
        is being replaced, will take new ones in a moment: not busy.)"""
        return all(self.slots.read(i)[0] in (_BUSY, _SENDING) for i in range(self.processes))

    def _balance(self) -> None:
        """While every worker is busy, take new connections here (their requests queue, as
        many as ``queue_size``, each at most ``queue_timeout`` seconds, then get a 503);
        once one is free, hand the queued requests over, oldest first: one per idle worker,
        and only once the last ones handed over were taken (a request in the hand-over socket
        is out of reach of ``queue_timeout``)."""
        busy = self._all_busy()
        if busy != self.holding_listener:
            if busy:
                self.epoll.register(self.listener.fileno(), select.EPOLLIN)
            else:
                self.epoll.unregister(self.listener.fileno())
            self.holding_listener = busy
        if not busy and self.ready and not self._dispatch_pending():
            free = sum(self.slots.read(i)[0] == _IDLE for i in range(self.processes))
            for ident in list(self.ready)[:free]:  # oldest first, one per idle worker
                self._dispatch(ident, self.ready.pop(ident))
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
        self._drop_gathering(ident)
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
        self._drop_gathering(ident)
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
            state, _, _, _, deadline, _ = self.slots.read(child.index)
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
        state, query, parsed, ident, deadline, began = self.slots.read(child.index)
        code = os.waitstatus_to_exitcode(status)
        if state == _BUSY and ident in self.connections and ident not in self.outgoing:
            now = time.monotonic()
            if deadline and now > deadline:
                # (the job's own limit: the time from its start to its deadline)
                exc: Exception = QueryTimeoutError(
                    round(deadline - began, 3) if began else self.config.max_timeout)
            else:
                exc = crash_error(parsed=bool(parsed) or not query or not began,
                                  seconds=now - began, exitcode=code,
                                  memory_mb=self.config.worker_memory_mb)
            log.error("query process %s died while answering a request (exit code %s)",
                      child.pid, code)
            status_line, headers, body = _render(self.app, exc, _bare_environ(self.config.port))
            self._refuse_held(ident, _raw_response(status_line, headers, body))
        elif ident and ident not in self.outgoing and ident not in self.idle:
            self._forget(ident)
        if self.stopping:
            return
        now = time.monotonic()
        # Only a death before the worker was ready counts. One that a request caused (a query
        # that crashes the parser or runs out of memory kills its fresh replacement too) is
        # answered and replaced at any pace: counted, a few such queries from any client
        # stopped the server for good.
        if state == _STARTING:
            self.crashes = [t for t in self.crashes if now - t < CRASH_LOOP_WINDOW] + [now]
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
