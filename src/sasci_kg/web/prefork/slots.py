"""Shared memory between the supervisor and its workers: one record per worker (its state,
the connection it serves, its deadline), the bytes of answers the supervisor holds, and how
many requests wait in its queue.
"""

from __future__ import annotations

import mmap
import struct
import time

# (_STARTING: forked, not yet taking requests; it then writes _IDLE.)
_IDLE, _BUSY, _SENDING, _ANSWERED, _DEAD, _STARTING = 0, 1, 2, 3, 4, 5
# state, query job?, parsed?, connection id, deadline and when the job began (CLOCK_MONOTONIC,
# 0 when none)
_SLOT = struct.Struct("<BBBxxxxxQdd")
_ID = struct.Struct("<Q")
# A request handed to a worker: the connection's id, when its first bytes arrived
# (CLOCK_MONOTONIC: the time it waited for a worker counts in its logged duration), and whether
# the supervisor read it (its bytes come in a memfd, the second descriptor).
_DISPATCH = struct.Struct("<Qd?")


class _Slots:
    """One record per worker in anonymous shared memory, written by the worker, read by the
    supervisor (a torn read only delays a decision to the next look)."""

    def __init__(self, count: int):
        self.count = count
        # One record per worker, then the bytes of answers the supervisor holds in memfds,
        # then how many whole requests it holds waiting for a free worker.
        self.memory = mmap.mmap(-1, _SLOT.size * count + 2 * _ID.size)

    def read(self, index: int) -> tuple[int, int, int, int, float, float]:
        state, query, parsed, conn, deadline, began = _SLOT.unpack_from(
            self.memory, index * _SLOT.size)
        return state, query, parsed, conn, deadline, began

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
              conn: int = 0, deadline: float = 0.0, began: float = 0.0) -> None:
        _SLOT.pack_into(self.memory, index * _SLOT.size, state, query, parsed, conn, deadline,
                        began)


class _SlotStatus:
    """The runner's :class:`~sasci_kg.local_runner.JobStatus`, kept in this worker's slot."""

    def __init__(self, slots: _Slots, index: int):
        self.slots, self.index = slots, index
        self.conn = 0

    def begin(self, deadline: float, query: bool) -> None:
        self.slots.write(self.index, _BUSY, int(query), 0, self.conn, deadline, time.monotonic())

    def parsed(self) -> None:
        state, query, _, conn, deadline, began = self.slots.read(self.index)
        self.slots.write(self.index, state, query, 1, conn, deadline, began)

    def end(self) -> None:
        self.slots.write(self.index, _BUSY, 0, 0, self.conn, 0.0)
