"""Shared pieces of the reliability tests (fuzz, hostile, load, faults): run sizes for CI and
for the long run, the problem+json check, process-tree memory, and the figures each test
reports (printed, and appended as JSON lines to ``$SASCI_KG_RELIABILITY_REPORT`` when set;
``scripts/reliability.sh`` collects them).

CI sizes are fixed; ``SASCI_KG_LONG=1`` switches every test to its long size.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

LONG = os.environ.get("SASCI_KG_LONG", "") not in ("", "0")
PROBLEM_JSON = "application/problem+json"
PROBLEM_KEYS = ("type", "title", "status", "detail")
PROBLEM_BASE = "https://w3id.org/sasci-kg/problem/"


def size(ci: int, long: int) -> int:
    """A case count or a duration: ``ci`` by default, ``long`` with SASCI_KG_LONG=1."""
    return long if LONG else ci


def fuzz_settings(ci: int, long: int) -> settings:
    """Hypothesis settings with a fixed case count. CI runs are derandomised (the same cases
    every run, so a red CI is a real, reproducible finding); the long run explores."""
    return settings(
        max_examples=size(ci, long),
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
            HealthCheck.large_base_example,
        ],
    )


def record(name: str, **figures: Any) -> None:
    """Report the figures of one test: on stdout (pytest -s / -rP) and to the report file."""
    line = json.dumps({"test": name, "long": LONG, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       **figures}, default=str)
    print(f"RELIABILITY {line}", file=sys.stderr)
    target = os.environ.get("SASCI_KG_RELIABILITY_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def problem_shape(status: int, content_type: str, body: bytes) -> dict[str, Any]:
    """Assert an error response is RFC 9457 problem+json with our members; return it."""
    assert content_type.startswith(PROBLEM_JSON), (status, content_type, body[:300])
    data = json.loads(body)
    assert isinstance(data, dict), body[:300]
    for key in PROBLEM_KEYS:
        assert key in data, (key, data)
    assert data["status"] == status, data
    assert isinstance(data["detail"], str) and data["detail"].strip(), data
    assert str(data["type"]).startswith(PROBLEM_BASE), data
    assert_no_traceback(body)
    return data


def assert_no_traceback(body: bytes | str) -> None:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    for marker in ("Traceback (most recent call last)", 'File "/', "werkzeug.exceptions",
                   "site-packages"):
        assert marker not in text, text[:500]


@functools.cache
def real_store() -> Path:
    """A read-only store of the real dataset (built once per session, removed at exit)."""
    from project import load_real_store

    folder = Path(tempfile.mkdtemp(prefix="sasci-real-store-"))
    atexit.register(shutil.rmtree, folder, True)
    return load_real_store(folder / "store")


def fresh_real_store(folder: Path) -> Path:
    """A store of the real dataset of the caller's own (to write, swap, break)."""
    from project import load_real_store

    return load_real_store(folder / "store")


# ---------------------------------------------------------------------------------------
# Processes and memory (from /proc).


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children = _children()
    found = [pid]
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_kib(pid: int) -> int:
    """Resident memory of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""
