"""Where a worker writes an answer, and how the rest of a large or slowly read answer goes to
the supervisor to send (:class:`_Outbox`).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from typing import TYPE_CHECKING

from .slots import _ID

if TYPE_CHECKING:
    from .worker import _Connection, _Worker

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
        # Sent with MSG_DONTWAIT on the socket in blocking mode (no timeout: with one, a send
        # would wait for room), so the common answer costs one system call, not three.
        if conn.sock.gettimeout() is not None:
            conn.sock.settimeout(None)

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
        sock.setblocking(False)  # (sendfile has no flags)
        try:
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
        finally:
            sock.setblocking(True)
        if offset < end:
            self.file = (fd, offset, end - offset)
        return length

    def finish(self) -> bool | None:
        """Whether the connection stays open; None when the supervisor sends the rest."""
        self._push()
        if self.spill < 0:
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
                data = data[sock.send(data, socket.MSG_DONTWAIT):]
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
