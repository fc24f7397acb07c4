"""Jobs run in the calling process, under a watchdog: the executor of the prefork server.

:class:`~sasci_kg.executor.WorkerPool` sends every query to a process of its own, so that a
runaway query can be killed without the web process. Under the prefork server
(:mod:`sasci_kg.web.prefork`) each HTTP process serves one request at a time and *is* the
process that gets killed, so the pipe, the pickling and the second wake-up per query go.

The same code runs the job (``executor._dispatch``: parse, evaluate, serialise within the
row and byte caps), and a failure comes back as the same exception the pool would raise.
What the pool did with a kill, :class:`Watchdog` does here: pyoxigraph releases the GIL while
it evaluates, so a thread of this process sees the deadline pass and calls the server's
``on_expire``, which answers 504 and ends the process. A job that never gives the GIL back
is the supervisor's to kill (it reads the deadline from :class:`JobStatus`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .backends import BackendSettings
from .errors import SasciKgError
from .executor import (
    Job,
    Outcome,
    QueryJob,
    _dispatch,
    _error_reply,
    _rebuild_error,
    _RemoteHandle,
    _StoreHandle,
)
from .store import default_store_path

# How often an idle watchdog wakes to look for a deadline. Armed, it sleeps until the
# deadline (in steps of at most this), so a timeout is answered on time. (It woke every 20 ms
# before: 50 wake-ups a second per worker, each taking the GIL, for nothing while idle.)
WATCH_INTERVAL = 0.1


class JobStatus(Protocol):
    """Where the runner says what it is doing (the prefork server keeps it in shared memory,
    so that its supervisor can tell a query that crashed the parser from one that ran)."""

    def begin(self, deadline: float, query: bool) -> None: ...

    def parsed(self) -> None: ...

    def end(self) -> None: ...


class _NoStatus:
    def begin(self, deadline: float, query: bool) -> None:
        pass

    def parsed(self) -> None:
        pass

    def end(self) -> None:
        pass


class Watchdog:
    """A daemon thread that calls ``on_expire(limit)`` when a job outlives its deadline.

    Arming and disarming only set an attribute (no lock, no wake-up per request: the thread
    looks every :data:`WATCH_INTERVAL`, and sleeps until the deadline once one is set; a
    limit shorter than that interval wakes it at once).
    :meth:`claim` decides, under a lock, between the job finishing and the watchdog firing,
    so that only one of them answers the request.
    """

    def __init__(self, on_expire: Callable[[float], None]):
        self.on_expire = on_expire
        self._armed: tuple[float, float] | None = None  # (deadline, limit)
        self._lock = threading.Lock()
        self._fired = False
        self._pid = os.getpid()
        self._wake = threading.Event()
        threading.Thread(target=self._watch, name="sasci-kg-watchdog", daemon=True).start()

    def arm(self, limit: float) -> None:
        self._armed = (time.monotonic() + limit, limit)
        if limit < WATCH_INTERVAL:  # (it may be asleep for longer than that)
            self._wake.set()

    def disarm(self) -> bool:
        """Clear the deadline; False if the watchdog has already fired (the request is being
        answered by it, and the process is about to end)."""
        with self._lock:
            self._armed = None
            return not self._fired

    def _watch(self) -> None:
        while os.getpid() == self._pid:
            armed = self._armed
            left = WATCH_INTERVAL if armed is None else armed[0] - time.monotonic()
            if armed is None or left > 0:
                if self._wake.wait(min(left, WATCH_INTERVAL)):
                    self._wake.clear()
                continue
            with self._lock:
                if self._armed is not armed:  # finished meanwhile
                    continue
                self._fired = True
            self.on_expire(armed[1])
            return


class InProcessRunner:
    """Runs jobs in this process, with the interface of :class:`WorkerPool` (``run``,
    ``stats``, ``pids``, ``close``). Used by one thread at a time: the prefork server's."""

    def __init__(self, target: Path | str | BackendSettings, *,
                 on_expire: Callable[[float], None], status: JobStatus | None = None,
                 stats: Callable[[], dict[str, int]] | None = None):
        if isinstance(target, BackendSettings) and target.is_remote:
            self.handle: _StoreHandle | _RemoteHandle = _RemoteHandle(target)
        else:
            if isinstance(target, BackendSettings):
                target = target.store_path or default_store_path()
            self.handle = _StoreHandle(Path(target))
        self.status: JobStatus = status or _NoStatus()
        self._stats = stats
        self.watchdog = Watchdog(on_expire)
        self.owner_pid = os.getpid()
        self.closed = False
        self._busy = False

    def run(self, job: Job, *, timeout: float, wait: float | None = None) -> Outcome:
        """Run ``job`` here; raise what :meth:`WorkerPool.run` would (a timeout never
        returns: the watchdog answers the request and ends the process)."""
        started = time.perf_counter()
        self._busy = True
        self.status.begin(time.monotonic() + timeout, isinstance(job, QueryJob))
        self.watchdog.arm(timeout)
        try:
            outcome = _dispatch(job, self.handle, self.status.parsed, timeout, time.monotonic())
        except SasciKgError:
            raise
        except Exception as exc:  # noqa: BLE001 - the same error the pool would give
            raise _rebuild_error(_error_reply(exc)) from None
        finally:
            if not self.watchdog.disarm():
                _wait_for_the_end()
            self.status.end()
            self._busy = False
        info = dict(outcome.info)
        info.setdefault("generation", self.handle.generation)
        return Outcome(outcome.body, rows=outcome.rows,
                       seconds=time.perf_counter() - started, info=info)

    def warm_up(self) -> None:
        """Open the store now, so that the first request does not pay for it."""
        if isinstance(self.handle, _StoreHandle):
            try:
                self.handle.get()
            except SasciKgError:
                pass

    def stats(self) -> dict[str, int]:
        """The pool's fields: of the server's processes when it says, else of this one."""
        if self._stats is not None:
            return self._stats()
        return {"size": 1, "alive": 1, "idle": 0 if self._busy else 1, "waiting": 0}

    def pids(self) -> list[int]:
        return [self.owner_pid]

    def close(self) -> None:
        self.closed = True


def _wait_for_the_end() -> None:
    # The watchdog is answering this request and will end the process: sending a second
    # answer would corrupt the first.
    while True:
        time.sleep(60)
