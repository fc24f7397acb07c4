"""Shared fixtures: a small two-graph store (via ``load_store``), the app and its test client,
and ``live_server``: the real production server (``run_server``: the default, prefork, or the
one ``SASCI_KG_TEST_SERVER`` names) in a subprocess on a free loopback port, stopped at the
end with a check that it left no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyoxigraph as ox
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from sasci_kg.store import LoadInput, load_store
from sasci_kg.web import close_app, create_app
from sasci_kg.web.config import ServerConfig, load_config

GRAPH_A = "https://w3id.org/sasci-kg/graph/source/alpha"
GRAPH_B = "https://w3id.org/sasci-kg/graph/source/beta"
PERSON = "https://w3id.org/sasci-kg/id/person/"
ORG = "https://w3id.org/sasci-kg/id/org/"

TRIG = f"""\
@prefix schema: <https://schema.org/> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
@prefix person: <{PERSON}> .
@prefix organisation: <{ORG}> .

<{GRAPH_A}> {{
  person:ada a schema:Person ; schema:name "Ada Lovelace"@en ;
      schema:affiliation organisation:engine .
  person:bob a schema:Person ; schema:name "Bob \\"Quote\\" Smith" .
  organisation:engine a schema:Organization ; schema:name "Engine Works" ;
      schema:foundingDate "1843-10-02"^^xsd:date .
}}

<{GRAPH_B}> {{
  person:cy a schema:Person ; schema:name "Cy" ; schema:age 42 ;
      schema:affiliation organisation:engine .
  organisation:fund a schema:Organization ; schema:name "50%25 Fund" ;
      schema:funder organisation:engine .
}}
"""
QUADS = 13  # the statements above

# Settings for tests: short limits so that time-outs are quick to prove.
TEST_SETTINGS: dict[str, Any] = {
    "timeout": 2.0,
    "max_timeout": 3.0,
    "query_workers": 2,
    "queue_size": 16,
    "queue_timeout": 3.0,
    "log_level": "info",
}


def make_store(path: Path, trig: str = TRIG) -> Path:
    """Load ``trig`` into a store at ``path`` (swapping out one that is there)."""
    load_store(path, [LoadInput(format=ox.RdfFormat.TRIG, data=trig.encode("utf-8"))])
    return path


def make_config(store: Path, **overrides: Any) -> ServerConfig:
    """A test configuration, independent of the environment the tests run in."""
    return load_config({"store": store, **TEST_SETTINGS, **overrides}, environ={})


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only store shared by the tests that do not change it."""
    return make_store(tmp_path_factory.mktemp("store") / "store")


@pytest.fixture
def fresh_store(tmp_path: Path) -> Path:
    """A store of the test's own, for tests that write or swap it."""
    return make_store(tmp_path / "store")


@pytest.fixture(scope="session")
def app(store_path: Path) -> Iterator[Flask]:
    application = create_app(make_config(store_path))
    yield application
    close_app(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@contextmanager
def app_for(store: Path, **overrides: Any) -> Iterator[Flask]:
    """An app with its own settings; its worker processes stop at the end."""
    application = create_app(make_config(store, **overrides))
    try:
        yield application
    finally:
        close_app(application)


# ---------------------------------------------------------------------------------------
# The real server.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cpu_ticks(pids: list[int]) -> int:
    """User + system CPU ticks used so far by the live processes among ``pids``."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def query_workers(pid: int) -> list[int]:
    """The query worker processes under a server: children of its forkserver, or the
    prefork server's workers (which run the queries themselves)."""
    found = []
    for child in descendants(pid):
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "sasci-kg-query":
                found.append(child)
                continue
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            parent = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
            parent_cmd = Path(f"/proc/{parent}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"forkserver" in cmdline and b"forkserver" in parent_cmd:
            found.append(child)
    return found


@dataclass
class LiveServer:
    """A running ``run_server`` process and where to reach it."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def sparql(self) -> str:
        return self.url + "/sparql"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        return query_workers(self.process.pid)


@contextmanager
def run_live_server(
    store: Path, log_dir: Path, *, defaults: bool = False, **overrides: Any
) -> Iterator[LiveServer]:
    """Start the production server on ``store``; stop it and check no process outlives it.

    The test settings apply unless ``defaults`` asks for the shipped defaults.
    """
    port = free_port()
    base = {} if defaults else TEST_SETTINGS
    options = {**base, "store": str(store), "port": port, **overrides}
    if os.environ.get("SASCI_KG_TEST_SERVER") and "server" not in overrides:
        options["server"] = os.environ["SASCI_KG_TEST_SERVER"]  # the suite over another server
    code = (
        "import json, sys\n"
        "from sasci_kg.web.config import load_config\n"
        "from sasci_kg.web.server import run_server\n"
        "run_server(load_config(json.loads(sys.argv[1]), environ={}))\n"
    )
    log_path = log_dir / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(options)],
            stdout=log, stderr=subprocess.STDOUT, cwd=log_dir,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_up(server)
        yield server
    finally:
        everyone = descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                "the server did not stop on SIGTERM:\n" + server.log()
            ) from None
        deadline = time.monotonic() + 5
        while any(alive(p) for p in everyone) and time.monotonic() < deadline:
            time.sleep(0.05)
        orphans = [p for p in everyone if alive(p)]
        assert not orphans, f"processes outlived the server: {orphans}\n{server.log()}"


def _wait_until_up(server: LiveServer) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError("the server exited at start:\n" + server.log())
        try:
            if requests.get(server.url + "/healthz", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or a slow first answer
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not come up in 30 s:\n" + server.log())


@pytest.fixture(scope="session")
def live_server(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The production server on the shared store, for the whole session."""
    with run_live_server(store_path, tmp_path_factory.mktemp("live")) as server:
        yield server
