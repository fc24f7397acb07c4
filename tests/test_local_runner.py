"""The watchdog of the in-process runner (``local_runner.Watchdog``): it answers a request
whose query outlives its limit, on time, and never one that finished."""

from __future__ import annotations

import threading
import time

import pytest

from sasci_kg.local_runner import WATCH_INTERVAL, Watchdog


def _dog() -> tuple[Watchdog, threading.Event, list[float]]:
    fired, when = threading.Event(), []
    dog = Watchdog(lambda limit: (when.append(time.monotonic()), fired.set()))
    time.sleep(0.01)  # (asleep in its idle wait when armed)
    return dog, fired, when


@pytest.mark.parametrize("limit", [0.01, WATCH_INTERVAL / 2, 0.3])
def test_the_watchdog_fires_at_the_limit(limit: float) -> None:
    # A short limit used to wait out the idle sleep (up to 0.1 s late: an independent
    # review's find); a longer one is slept to exactly.
    dog, fired, when = _dog()
    armed = time.monotonic()
    dog.arm(limit)
    assert fired.wait(5)
    assert limit <= when[0] - armed < limit + 0.05, when[0] - armed


def test_a_finished_job_is_never_answered_by_the_watchdog() -> None:
    dog, fired, _ = _dog()
    dog.arm(0.05)
    assert dog.disarm()
    assert not fired.wait(0.3)
