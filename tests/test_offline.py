"""Query processes without a network (offline.py): behind the guard, SERVICE reaches nothing."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pyoxigraph as ox
import pytest
import requests
from conftest import run_live_server

from sasci_kg.offline import take_offline


def _can_go_offline() -> bool:
    """Whether this machine lets a process make a network namespace (tried in a child)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if take_offline() else 1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


needs_namespaces = pytest.mark.skipif(
    not _can_go_offline(), reason="this machine lets no process make a network namespace")


@needs_namespaces
def test_a_service_call_reaches_nothing_once_offline() -> None:
    """What the guard might miss: pyoxigraph, asked directly, calls a loopback listener;
    once the process is offline, the same call reaches nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/sparql"
    calls: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            calls.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    query = f"SELECT * WHERE {{ SERVICE <{url}> {{ ?s ?p ?o }} }}"

    def call() -> None:
        try:
            list(ox.Store().query(query))  # type: ignore[arg-type]
        except (OSError, RuntimeError, ValueError):
            pass

    try:
        call()
        assert len(calls) == 1  # the engine calls out when it can
        pid = os.fork()
        if pid == 0:  # (one thread here: the child of a fork)
            if not take_offline():
                os._exit(2)
            call()
            os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert len(calls) == 1  # the offline child reached nothing
    finally:
        listener.close()
        thread.join(timeout=2)


def _netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@needs_namespaces
def test_prefork_query_processes_are_offline_unless_they_must_call_out(
        store_path: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with run_live_server(store_path, tmp_path / "a", server="prefork", query_workers=2) as live:
        workers = live.workers()
        assert len(workers) == 2
        assert all(_netns(w) != _netns(live.process.pid) for w in workers)
        # They still take connections and answer (their sockets are the server's).
        for _ in range(4):
            assert requests.get(live.sparql, params={"query": "ASK {}"}, timeout=10).ok
    # SERVICE calls the operator allows need the network: the processes keep it.
    with run_live_server(store_path, tmp_path / "b", server="prefork", query_workers=1,
                         service_allow="https://query.example.org/") as live:
        (worker,) = live.workers()
        assert _netns(worker) == _netns(live.process.pid)


@needs_namespaces
def test_pool_query_processes_go_offline_when_asked(store_path: Path) -> None:
    """The query processes of the other servers (granian, gunicorn) and the writer."""
    from sasci_kg.executor import QueryJob, WorkerPool

    for offline in (True, False):
        pool = WorkerPool(store_path, size=1, offline=offline)
        try:
            pool.run(QueryJob("ASK {}", "application/sparql-results+json"), timeout=10)
            (pid,) = pool.pids()
            assert (_netns(pid) != _netns(os.getpid())) == offline
        finally:
            pool.close()
