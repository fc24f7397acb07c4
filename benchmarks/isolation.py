"""What isolation costs: the light queries through minimal servers, interleaved with
``oxigraph serve`` and ``sasci-kg serve`` on the same store.

    python -m benchmarks.isolation --size 1e6 --rounds 30

Each prototype is this module's WSGI app run by granian, as ``sasci-kg serve`` is, with
``ISOLATION_MODE`` saying where the query runs:

- ``direct``: in the request thread (no isolation at all);
- ``thread``: handed to a thread of the same process (what a cancellable engine would need);
- ``process``: sent over a pipe to a forked process (isolation and nothing else).

The figure is the geometric mean, over the light part of the mix, of each server's median
÷ ``oxigraph serve``'s (every process wakes cold, as in ``benchmarks.run``'s latency phase).
Also: ``--pingpong`` times a pipe round trip between two processes on one CPU and on two.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import multiprocessing
import os
import queue
import signal
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

import pyoxigraph as ox

_Reply = tuple[str, bytes]


def _answer(store: ox.Store, text: str) -> _Reply:
    result = store.query(text, use_default_graph_as_union=True)
    if isinstance(result, ox.QueryTriples):
        return "text/turtle", ox.serialize(result, format=ox.RdfFormat.TURTLE) or b""
    return "application/sparql-results+json", result.serialize(
        format=ox.QueryResultsFormat.JSON) or b""


def _child(conn: Connection, location: str) -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: end with the server
    store = ox.Store.read_only(location)
    while True:
        conn.send(_answer(store, conn.recv()))


def _make_app() -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    mode = os.environ.get("ISOLATION_MODE", "direct")
    location = os.environ["ISOLATION_STORE"]
    store = ox.Store.read_only(location)
    run: Callable[[str], _Reply]
    if mode == "direct":
        def run(text: str) -> _Reply:
            return _answer(store, text)
    elif mode == "thread":
        jobs: queue.SimpleQueue[tuple[str, list[_Reply], threading.Event]] = queue.SimpleQueue()

        def runner() -> None:
            while True:
                text, box, done = jobs.get()
                box.append(_answer(store, text))
                done.set()

        for _ in range(4):
            threading.Thread(target=runner, daemon=True).start()

        def run(text: str) -> _Reply:
            box: list[_Reply] = []
            done = threading.Event()
            jobs.put((text, box, done))
            done.wait(30)
            return box[0]
    elif mode == "process":
        pipes: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        context = multiprocessing.get_context("fork")
        for _ in range(2):
            ours, theirs = context.Pipe()
            context.Process(target=_child, args=(theirs, location), daemon=True).start()
            pipes.put(ours)

        def run(text: str) -> _Reply:
            conn = pipes.get()
            try:
                conn.send(text)
                reply: _Reply = conn.recv()
                return reply
            finally:
                pipes.put(conn)
    else:
        raise SystemExit(f"ISOLATION_MODE={mode!r}: direct, thread or process")

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        form = urllib.parse.parse_qs(environ["wsgi.input"].read(size).decode())
        media_type, body = run(form["query"][0])
        start_response("200 OK", [("Content-Type", media_type),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return wsgi


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The prototype server (built on the first request, in granian's worker process)."""
    global _APP
    if _APP is None:
        _APP = _make_app()
    return _APP(environ, start_response)


_APP: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]] | None = None


def _pong(conn: Connection) -> None:
    while (message := conn.recv()) is not None:
        conn.send(message)


def pingpong() -> None:
    """A pipe round trip between two processes, on one CPU and on two."""
    context = multiprocessing.get_context("fork")
    everywhere = os.sched_getaffinity(0)
    for placement in ("one CPU", "two CPUs"):
        ours, theirs = context.Pipe()
        child = context.Process(target=_pong, args=(theirs,))
        child.start()
        assert child.pid is not None
        os.sched_setaffinity(0, {0})
        os.sched_setaffinity(child.pid, {0} if placement == "one CPU" else {1})
        message = ("x" * 500, 1, 2.0, {"generation": (1, 2, 3)}, b"y" * 300)
        for _ in range(1000):
            ours.send(message)
            ours.recv()
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(2000):
                ours.send(message)
                ours.recv()
            rounds.append((time.perf_counter() - started) / 2000 * 1e6)
        print(f"{placement}: round trip {statistics.median(rounds):.0f} µs")
        ours.send(None)
        child.join()
        os.sched_setaffinity(0, everywhere)


def main() -> None:
    from benchmarks.mix import ACCEPT, MIX
    from benchmarks.run import BIN, ROOT, HttpEndpoint, _free_port

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1e6")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--pingpong", action="store_true")
    args = parser.parse_args()
    if args.pingpong:
        pingpong()
        return
    base = ROOT / "benchmarks" / "out" / args.size
    manifest = json.loads((base / "manifest.json").read_text())
    store = str(base / "store")
    endpoints = []
    port = _free_port()
    endpoints.append(HttpEndpoint("oxigraph serve", [
        str(BIN / "oxigraph"), "serve-read-only", "--location", store,
        "--bind", f"127.0.0.1:{port}", "--union-default-graph"], port, "/query"))
    port = _free_port()
    endpoints.append(HttpEndpoint("sasci-kg serve (cache off)", [
        "env", "SASCI_KG_RESULT_CACHE_MB=0", str(BIN / "sasci-kg"), "serve", "--store", store,
        "--host", "127.0.0.1", "--port", str(port)], port, "/sparql"))
    for mode in ("direct", "thread", "process"):
        port = _free_port()
        endpoints.append(HttpEndpoint(f"prototype: {mode}", [
            "env", f"ISOLATION_MODE={mode}", f"ISOLATION_STORE={store}",
            f"PYTHONPATH={ROOT}",
            str(BIN / "granian"), "--interface", "wsgi", "--port", str(port),
            # PR_SET_PDEATHSIG follows the thread that forked: the ``process`` children are
            # forked from a request thread, which granian ends after 30 s idle by default.
            "--blocking-threads", "4", "--blocking-threads-idle-timeout", "600",
            "benchmarks.isolation:app"], port, "/"))
    light = [q for q in MIX if q.light]
    times: dict[str, dict[str, list[float]]] = {
        e.name: {q.name: [] for q in light} for e in endpoints}
    try:
        for round_ in range(args.rounds + 2):
            turn = round_ % len(endpoints)
            for q in light:
                text = q.sparql(manifest, round_)
                for e in endpoints[turn:] + endpoints[:turn]:
                    started = time.perf_counter()
                    status, body, _ = e.request(text, ACCEPT[q.kind])
                    took = time.perf_counter() - started
                    if status != 200:
                        raise SystemExit(f"{e.name}: HTTP {status} {body[:200]!r}")
                    if round_ >= 2:  # the first two rounds warm up
                        times[e.name][q.name].append(took * 1000)
    finally:
        for e in endpoints:
            e.close()
    anchor = {q: statistics.median(v) for q, v in times["oxigraph serve"].items()}
    for name, per_query in times.items():
        medians = {q: statistics.median(v) for q, v in per_query.items()}
        ratio = math.exp(statistics.fmean(math.log(medians[q] / anchor[q]) for q in medians))
        print(f"{name:28s} {ratio:.2f}×  " + "  ".join(
            f"{q}={m:.2f} ms" for q, m in medians.items()))


if __name__ == "__main__":
    main()
