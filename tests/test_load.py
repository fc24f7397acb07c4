"""Load: the production server (prefork by default, real worker processes, the real dataset) under a
real HTTP load generator (Debian's ``wrk``; a threads client where wrk is missing).

Two mixes run at the same time for a fixed time: many connections of fast lookups (ASK, small
SELECTs, a linked-data page, VoID, health) and one connection that keeps sending queries that
run into the time limit. The properties:

- fast requests stay fast (p50/p99 reported; bounded generously, the CI machine is shared)
  and all answer 200 — the slow ones never starve them;
- every slow query is stopped at its limit: 504, never a hung connection;
- no error but the intended limits, no socket error;
- memory stays flat: the HTTP worker's RSS after the run is within a few MB of before (after
  a warm-up), and the query workers are back to their number, idle, their CPU freed.

CI: 10 s of load; ``SASCI_KG_LONG=1``: 4 rounds of 30 s with 4 times the connections, the
HTTP worker's memory measured after each. Figures are printed as
``RELIABILITY`` lines and collected into RELIABILITY.md by ``scripts/reliability.sh``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import requests
from conftest import LiveServer, cpu_ticks, run_live_server
from reliability_load import LoadResult, Request, ThreadsLoad, finish_wrk, have_wrk, start_wrk
from reliability_support import real_store, record, rss_kib, size, tree

pytestmark = pytest.mark.reliability

SECONDS = size(10, 120)
ROUNDS = size(1, 4)  # the long run measures memory after each of 4 rounds of 30 s
FAST_CONNECTIONS = size(8, 32)
SLOW_CONNECTIONS = size(1, 2)
QUERY_WORKERS = size(3, 4)
SLOW_LIMIT = 1.0  # the slow queries' time limit (the timeout parameter), seconds
P50_BOUND = size(100, 300)  # milliseconds
P99_BOUND = size(1000, 2000)

PERSON = "https://w3id.org/sasci-kg/id/person/juliette-malley"
ENDLESS = "SELECT (COUNT(*) AS ?n) WHERE { " + " ".join(
    f"?s{i} ?p{i} ?o{i} ." for i in range(12)) + " }"


def sparql(query: str, **params: str) -> str:
    return "/sparql?" + urlencode({"query": query, **params}, quote_via=quote)


FAST_MIX = [
    Request(sparql("ASK { ?s ?p ?o }")),
    Request(sparql(f"SELECT ?name WHERE {{ <{PERSON}> schema:name ?name }}")),
    Request(sparql("SELECT ?org ?name WHERE { ?org a schema:Organization ; schema:name ?name }"
                   " ORDER BY ?name LIMIT 10"), "text/csv"),
    Request(sparql(f"CONSTRUCT WHERE {{ <{PERSON}> ?p ?o }}"), "text/turtle"),
    Request("/id/person/juliette-malley", "text/turtle"),
    Request("/id/person/juliette-malley", "text/html"),
    Request("/.well-known/void", "application/n-triples"),
    Request("/healthz", "application/json"),
]
SLOW_MIX = [Request(sparql(ENDLESS, timeout=str(SLOW_LIMIT)))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with run_live_server(real_store(), tmp_path_factory.mktemp("load"),
                         query_workers=QUERY_WORKERS, timeout=5.0, max_timeout=5.0,
                         queue_size=64, queue_timeout=10.0, log_level="warning") as live:
        yield live


def http_worker(server: LiveServer) -> int:
    """The HTTP worker: the server's child that runs the app (not a forkserver)."""
    for pid in tree(server.process.pid)[1:]:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(
                server.process.pid):
            return pid
    raise AssertionError("no HTTP worker")


def tree_rss(server: LiveServer) -> int:
    return sum(rss_kib(pid) for pid in tree(server.process.pid))


def run_mixes(server: LiveServer, seconds: float) -> tuple[LoadResult, LoadResult]:
    """The fast and the slow mix at the same time, for ``seconds``."""
    if have_wrk():
        fast = start_wrk(server.url, FAST_MIX, connections=FAST_CONNECTIONS,
                         threads=min(2, FAST_CONNECTIONS), seconds=seconds)
        slow = start_wrk(server.url, SLOW_MIX, connections=SLOW_CONNECTIONS, threads=1,
                         seconds=seconds)
        return (finish_wrk(*fast, FAST_CONNECTIONS, grace=seconds + 60),
                finish_wrk(*slow, SLOW_CONNECTIONS, grace=seconds + 60))
    fast_load = ThreadsLoad(server.url, FAST_MIX, connections=FAST_CONNECTIONS,
                            seconds=seconds).start()
    slow_load = ThreadsLoad(server.url, SLOW_MIX, connections=SLOW_CONNECTIONS,
                            seconds=seconds).start()
    return fast_load.finish(), slow_load.finish()


def test_fast_lookups_stay_fast_while_slow_queries_are_stopped(server: LiveServer) -> None:
    worker = http_worker(server)
    # Warm up: caches filled, every code path loaded, so what follows measures steady state.
    run_mixes(server, 3)
    time.sleep(1.0)
    rss_before, tree_before = rss_kib(worker), tree_rss(server)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            samples.append(rss_kib(worker))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rounds: list[tuple[LoadResult, LoadResult, int]] = []
    for _ in range(ROUNDS):
        fast, slow = run_mixes(server, SECONDS / ROUNDS)
        rounds.append((fast, slow, rss_kib(worker)))
    stop.set()
    sampler.join()
    time.sleep(1.5)  # the last killed worker's replacement starts
    rss_after, tree_after = rss_kib(worker), tree_rss(server)
    health = requests.get(server.url + "/healthz", timeout=10).json()
    ticks = cpu_ticks(server.workers())
    time.sleep(1.0)
    idle_ticks = cpu_ticks(server.workers()) - ticks

    fast, slow, _ = rounds[0]
    record("load", seconds=SECONDS / ROUNDS, fast=fast.figures(), slow=slow.figures(),
           later_rounds=[{"fast": f.figures(), "slow": sl.figures(), "http_worker_rss_kib": rss}
                   for f, sl, rss in rounds[1:]],
           query_workers=QUERY_WORKERS, slow_limit_s=SLOW_LIMIT,
           http_worker_rss_kib={"before": rss_before, "after": rss_after,
                                "min": min(samples, default=rss_before),
                                "max": max(samples, default=rss_before),
                                "after_each_round": [rss for _, _, rss in rounds]},
           server_tree_rss_kib={"before": tree_before, "after": tree_after},
           workers_after=health["workers"], idle_cpu_ticks=idle_ticks)

    for fast, slow, _ in rounds:
        check_round(fast, slow, SECONDS / ROUNDS)
    # Memory flat: the HTTP worker holds no per-request state.
    assert rss_after - rss_before < 20 * 1024, (rss_before, rss_after, samples)
    # The pool is whole again, and nothing is still burning CPU.
    assert health["workers"]["alive"] == QUERY_WORKERS, health
    assert idle_ticks < 20, idle_ticks
    assert "Traceback" not in server.log(), server.log()[-3000:]


def check_round(fast: LoadResult, slow: LoadResult, seconds: float) -> None:
    # No error but the intended limits; no socket errors.
    assert set(fast.statuses) == {200}, fast.statuses
    assert set(slow.statuses) <= {504}, slow.statuses
    assert not any(fast.socket_errors.values()), fast.socket_errors
    assert not any(slow.socket_errors.values()), slow.socket_errors
    # Fast stays fast (the bounds allow for a shared CI machine; the long run uses 4 times
    # the connections); slow is stopped at its limit (each answer ~1 s, none hung).
    assert fast.requests >= 50 * seconds, fast.figures()
    assert fast.p50_ms < P50_BOUND, fast.figures()
    assert fast.p99_ms < P99_BOUND, fast.figures()
    assert slow.requests >= seconds * SLOW_CONNECTIONS / 3, slow.figures()
    assert slow.p50_ms >= SLOW_LIMIT * 1000 * 0.9, slow.figures()
    assert slow.max_ms < (SLOW_LIMIT + 3) * 1000, slow.figures()
