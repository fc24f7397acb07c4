"""Slow readers: the light mix from one client, alone and while other clients ask for a large
answer and read none of it (what held a worker of the prefork server until session 6).

    python -m benchmarks.slow_readers --size 1e6 -- sasci-kg serve --store STORE --port 7921

The server command is started (its own process group), asked ``/healthz`` until it answers,
measured, then stopped with SIGTERM. ``--path /query`` measures ``oxigraph serve``. Prints
one line per phase: requests answered in the time, their median and p95, and the statuses.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .mix import MIX

LIGHT = [q for q in MIX if q.light]
# 90,000 triples as N-Triples: ~13 MB at 10⁶, more than a loopback socket's buffers take.
LARGE = "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o } LIMIT 90000"


def _wait_up(port: int, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _light_run(port: int, path: str, manifest: dict[str, Any], seconds: float,
               first_round: int) -> tuple[list[float], dict[str, int]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times: list[float] = []
    statuses: dict[str, int] = {}
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        q = LIGHT[n % len(LIGHT)]
        body = urllib.parse.urlencode({"query": q.sparql(manifest, first_round + n // len(LIGHT))})
        accept = ("application/sparql-results+json" if q.kind in ("select", "ask")
                  else "application/n-triples")
        started = time.perf_counter()
        try:
            conn.request("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": accept})
            response = conn.getresponse()
            response.read()
            status = str(response.status)
        except OSError as exc:
            status = type(exc).__name__
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1
        n += 1
    return times, statuses


def _slow_readers(port: int, path: str, count: int) -> list[socket.socket]:
    readers = []
    target = f"{path}?query={urllib.parse.quote(LARGE)}"
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: slow
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: bench\r\n"
                     "Accept: application/n-triples\r\n\r\n".encode())
        readers.append(sock)
    return readers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1e6", help="which benchmarks/out/<size> to use")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--port", type=int, default=7921, help="the port the command serves")
    parser.add_argument("--path", default="/sparql", help="the query path (/query: oxigraph)")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the server command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    manifest = json.loads((args.out / args.size / "manifest.json").read_text())
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        _wait_up(args.port)
        _light_run(args.port, args.path, manifest, 3, 1000)  # warm up
        for label, count in (("alone", 0), (f"with {args.readers} slow readers", args.readers)):
            readers = _slow_readers(args.port, args.path, count)
            time.sleep(3 if count else 0)  # the large answers are made meanwhile
            times, statuses = _light_run(args.port, args.path, manifest, args.seconds,
                                         3000 if count else 2000)
            times.sort()
            print(f"{label:22s} requests {len(times):6d}  median "
                  f"{statistics.median(times) * 1000:7.1f} ms  p95 "
                  f"{times[int(len(times) * 0.95)] * 1000:7.1f} ms  statuses {statuses}",
                  flush=True)
            for sock in readers:
                sock.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=90)


if __name__ == "__main__":
    main()
