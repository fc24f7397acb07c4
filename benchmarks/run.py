"""Run the benchmark suite: one command, every figure as a ratio to its anchor in the same run.

    python -m benchmarks.run --size 1e6            # all phases
    python -m benchmarks.run --size 1e5 --phases build,load --rounds 2

Phases (each interleaves the thing measured with its anchor, A B A B …, and reports medians):
  build  facts → validated → quads → N-Quads (``sasci-kg load`` end to end, and per phase)
         against pyoxigraph parsing + bulk-loading + optimising the same N-Quads; SHACL apart
  load   the project's loader on the N-Quads against ``oxigraph load`` (+ ``optimize``)
  query  the mix in ``benchmarks/mix.py``: latency (median, p95, one client), throughput of
         the light part (4 clients, fixed time), server memory at rest and under load,
         through ``sasci-kg serve`` (when it exists), ``oxigraph serve`` on the same store,
         and in-process pyoxigraph (the floor); cached (ETag/304) figures for sasci-kg serve
  named  every ``queries/*.rq`` in-process on the synthetic store, each in its own process
         with a time limit (finds the named queries that do not scale)
Results go to ``benchmarks/out/<size>/results.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .generate import generate, parse_size
from .mix import ACCEPT, MIX

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY = sys.executable


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _p95(values: list[float]) -> float:
    return _quantile(values, 0.95)


def _geomean(values: list[float]) -> float:
    good = [v for v in values if v > 0 and not math.isnan(v)]
    return math.exp(sum(math.log(v) for v in good) / len(good)) if good else math.nan


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


MEMORY_CAP: list[int] = []  # bytes of address space per measured process (--memory-cap)


def run_measured(cmd: list[str], *, timeout: float | None = None,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command; wall time, peak RSS (its own, via wait4), exit status, stdout."""
    if MEMORY_CAP:  # fail alone (MemoryError) rather than wake the OOM killer on a shared box
        cmd = ["prlimit", f"--as={MEMORY_CAP[0]}", "--", *cmd]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env=env)
    timer = threading.Timer(timeout, proc.kill) if timeout else None
    if timer:
        timer.start()
    out = proc.stdout.read()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if timer:
        timer.cancel()
    wall = time.perf_counter() - started
    result = {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024,
              "exit": proc.returncode, "stdout": out.decode(), "stderr": err.decode()[-2000:]}
    if proc.returncode != 0:
        _say(f"  ! {shlex.join(cmd)} exited {proc.returncode}: {result['stderr'][-500:]}")
    return result


def _step(name: str, *args: str, timeout: float | None = None) -> dict[str, Any]:
    result = run_measured([PY, "-m", "benchmarks.steps", name, *args], timeout=timeout)
    if result["exit"] != 0:
        return {"error": result["stderr"][-500:], "wall_s": result["wall_s"]}
    data: dict[str, Any] = json.loads(result["stdout"].strip().splitlines()[-1])
    data["wall_s"] = result["wall_s"]
    return data


@dataclass
class Context:
    size: int
    work: Path
    rounds: int
    query_rounds: int
    duration: float
    clients: int
    shacl_timeout: float
    named_timeout: float
    sasci_serve: str | None
    sasci_path: str
    describe: bool = True
    shacl_engines: tuple[str, ...] = ("sparql", "pyshacl")
    bare_front: bool = False
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def sources(self) -> Path:
        return self.work / "sources"

    @property
    def nq(self) -> Path:
        return self.work / "dataset.nq"

    @property
    def store(self) -> Path:
        return self.work / "store"

    @property
    def ontology(self) -> Path:
        return ROOT / "ontology"

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.work / "manifest.json").read_text())  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# build + load


def phase_build(ctx: Context) -> None:
    """`sasci-kg load` from facts (A) vs pyoxigraph parse + bulk_load + optimize (B)."""
    scratch = ctx.work / "scratch"
    scratch.mkdir(exist_ok=True)
    _say("build: phase breakdown (validate, map, serialize) and the N-Quads for the anchor")
    flag = "1" if ctx.describe else "0"
    breakdown = [_step("build", str(ctx.data), str(ctx.ontology), str(ctx.sources), str(ctx.nq),
                       flag)]
    cli = [str(BIN / "sasci-kg"), "load", "--no-shacl", "--data", str(ctx.data),
           "--ontology", str(ctx.ontology), "--sources", str(ctx.sources),
           "--store", str(scratch / "store-a")]
    ours: list[dict[str, Any]] = []
    floor: list[dict[str, Any]] = []
    for k in range(ctx.rounds):
        for which in (("A", "B") if k % 2 == 0 else ("B", "A")):
            if which == "A" and not ctx.describe:
                _say(f"build round {k + 1}/{ctx.rounds}: build_dataset without describe_dataset"
                     " + load_store (facts → store)")
                step = _step("build", str(ctx.data), str(ctx.ontology), str(ctx.sources),
                             str(scratch / "dataset.nq"), flag, str(scratch / "store-a"))
                ours.append({"wall_s": step["wall_s"], "peak_rss_mib": step.get("peak_rss_mib"),
                             "exit": 1 if "error" in step else 0})
            elif which == "A":
                _say(f"build round {k + 1}/{ctx.rounds}: sasci-kg load --no-shacl (facts → store)")
                ours.append(run_measured(cli))
            else:
                _say(f"build round {k + 1}/{ctx.rounds}: pyoxigraph parse + bulk_load + optimize")
                floor.append(_step("floor", str(ctx.nq), str(scratch / "store-b")))
        if k + 1 < ctx.rounds:
            breakdown.append(_step("build", str(ctx.data), str(ctx.ontology), str(ctx.sources),
                                   str(scratch / "dataset.nq"), flag))
    shutil.rmtree(scratch, ignore_errors=True)
    shacl: dict[str, Any] = {"skipped": "not measured"}
    shacl_sparql: dict[str, Any] = {"skipped": "not measured"}
    if (ctx.ontology / "shapes.ttl").exists() and "sparql" in ctx.shacl_engines:
        _say("build: SHACL by SPARQL (the build's default), no limit")
        shacl_sparql = _step("shacl", str(ctx.data), str(ctx.ontology), str(ctx.sources),
                             "sparql")
    if (ctx.ontology / "shapes.ttl").exists() and "pyshacl" in ctx.shacl_engines:
        _say(f"build: SHACL (pySHACL over everything, limit {ctx.shacl_timeout:.0f} s)")
        shacl = _step("shacl", str(ctx.data), str(ctx.ontology), str(ctx.sources), "pyshacl",
                      timeout=ctx.shacl_timeout)
        if "error" in shacl and shacl["wall_s"] >= ctx.shacl_timeout - 1:
            shacl = {"timed_out_after_s": ctx.shacl_timeout}
    quads = breakdown[0].get("quads", 0)
    med = {key: _median([b[key] for b in breakdown if key in b])
           for key in ("validate_s", "map_s", "describe_s", "serialize_s", "write_s",
                       "total_s", "peak_rss_mib")}
    ours_s = _median([r["wall_s"] for r in ours if r["exit"] == 0])
    floor_bulk = _median([f["bulk_load_s"] for f in floor if "bulk_load_s" in f])
    floor_opt = _median([f["bulk_load_s"] + f["optimize_s"] for f in floor if "optimize_s" in f])
    ctx.results["build" if ctx.describe else "build_no_describe"] = {
        "quads": quads, "records": breakdown[0].get("records"),
        "notices": breakdown[0].get("notices"),
        "breakdown_median": med,
        "sasci_load_s": ours_s,
        "sasci_load_peak_rss_mib": _median([r["peak_rss_mib"] for r in ours]),
        "sasci_load_triples_per_s": quads / ours_s if ours_s else math.nan,
        "floor_parse_s": _median([f["parse_s"] for f in floor if "parse_s" in f]),
        "floor_bulk_load_s": floor_bulk,
        "floor_bulk_load_optimize_s": floor_opt,
        "floor_peak_rss_mib": _median([f["peak_rss_mib"] for f in floor if "peak_rss_mib" in f]),
        "ratio_vs_bulk_load": ours_s / floor_bulk,
        "ratio_vs_bulk_load_optimize": ours_s / floor_opt,
        "shacl": shacl,
        "shacl_sparql": shacl_sparql,
        "samples": {"sasci_load_s": [r["wall_s"] for r in ours],
                    "floor": floor, "breakdown": breakdown},
    }


def phase_load(ctx: Context) -> None:
    """The project's loader (load_store: staging, bulk_load, optimize, swap) vs `oxigraph load`."""
    if not ctx.nq.exists():
        _say("load: no dataset.nq yet; running the build step once")
        _step("build", str(ctx.data), str(ctx.ontology), str(ctx.sources), str(ctx.nq),
              "1" if ctx.describe else "0")
    scratch = ctx.work / "scratch"
    scratch.mkdir(exist_ok=True)
    ours: list[dict[str, Any]] = []
    cli: list[dict[str, Any]] = []
    sizes: dict[str, int] = {}
    for k in range(ctx.rounds):
        for which in (("A", "B") if k % 2 == 0 else ("B", "A")):
            if which == "A":
                _say(f"load round {k + 1}/{ctx.rounds}: sasci_kg.store.load_store")
                ours.append(_step("load", str(ctx.nq), str(scratch / "store-a")))
                sizes["sasci"] = _du(scratch / "store-a")
            else:
                _say(f"load round {k + 1}/{ctx.rounds}: oxigraph load (+ optimize)")
                target = scratch / "store-b"
                shutil.rmtree(target, ignore_errors=True)
                loaded = run_measured([str(BIN / "oxigraph"), "load", "--location", str(target),
                                       "--file", str(ctx.nq)])
                sizes["oxigraph_load"] = _du(target)
                optimized = run_measured([str(BIN / "oxigraph"), "optimize", "--location",
                                          str(target)])
                sizes["oxigraph_load_optimize"] = _du(target)
                cli.append({"load_s": loaded["wall_s"], "optimize_s": optimized["wall_s"],
                            "peak_rss_mib": loaded["peak_rss_mib"]})
    # Keep the last store of ours as the store the query phase serves.
    shutil.rmtree(ctx.store, ignore_errors=True)
    os.rename(scratch / "store-a", ctx.store)
    shutil.rmtree(scratch, ignore_errors=True)
    ours_s = _median([r["load_s"] for r in ours if "load_s" in r])
    cli_s = _median([r["load_s"] for r in cli])
    cli_opt = _median([r["load_s"] + r["optimize_s"] for r in cli])
    ctx.results["load"] = {
        "sasci_load_store_s": ours_s,
        "sasci_peak_rss_mib": _median([r["peak_rss_mib"] for r in ours if "peak_rss_mib" in r]),
        "oxigraph_load_s": cli_s, "oxigraph_load_optimize_s": cli_opt,
        "oxigraph_peak_rss_mib": _median([r["peak_rss_mib"] for r in cli]),
        "ratio_vs_oxigraph_load": ours_s / cli_s,
        "ratio_vs_oxigraph_load_optimize": ours_s / cli_opt,
        "store_bytes": sizes, "dataset_nq_bytes": ctx.nq.stat().st_size,
        "samples": {"sasci": ours, "oxigraph": cli},
    }


# ---------------------------------------------------------------------------------------
# query


class Endpoint:
    """Something that answers the mix: an HTTP server (its process tree) or in-process."""

    name: str
    pid: int | None = None

    def request(self, sparql: str, accept: str, headers: dict[str, str] | None = None,
                method: str = "POST") -> tuple[int, bytes, dict[str, str]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpEndpoint(Endpoint):
    def __init__(self, name: str, cmd: list[str], port: int, path: str):
        self.name, self.port, self.path = name, port, path
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=open(Path(os.environ.get("TMPDIR", "/tmp")) /
                                                 f"bench-{name}.log", "wb"))
        self.pid = self.proc.pid
        self._local = threading.local()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name}: {shlex.join(cmd)} exited {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: not listening on {port} after 60 s") from None
                time.sleep(0.1)

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            self._local.conn = conn
        return conn  # type: ignore[no-any-return]

    def request(self, sparql: str, accept: str, headers: dict[str, str] | None = None,
                method: str = "POST") -> tuple[int, bytes, dict[str, str]]:
        """POST as a form (the mix), or GET with the query in the URL (conditional requests:
        RFC 9110 answers If-None-Match with 304 on GET and HEAD only)."""
        encoded = urllib.parse.urlencode({"query": sparql})
        hdrs = {"Accept": accept, **(headers or {})}
        target, body = self.path, None
        if method == "GET":
            target += "?" + encoded
        else:
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            body = encoded
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request(method, target, body=body, headers=hdrs)
                response = conn.getresponse()
                data = response.read()
                return response.status, data, {k.lower(): v for k, v in response.getheaders()}
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class InProcess(Endpoint):
    """pyoxigraph in the benchmark's own process: query + serialise, no HTTP (the floor)."""

    def __init__(self, store: Path):
        import pyoxigraph as ox

        self.ox = ox
        self.name = "pyoxigraph"
        self.store = ox.Store.read_only(str(store))

    def request(self, sparql: str, accept: str, headers: dict[str, str] | None = None,
                method: str = "POST") -> tuple[int, bytes, dict[str, str]]:
        ox = self.ox
        result = self.store.query(sparql, use_default_graph_as_union=True)
        if isinstance(result, ox.QueryTriples):
            return 200, ox.serialize(result, format=ox.RdfFormat.N_TRIPLES), {}
        return 200, result.serialize(format=ox.QueryResultsFormat.JSON), {}


def _count(kind: str, body: bytes) -> int:
    if kind in ("construct", "describe"):
        return body.count(b"\n")
    data = json.loads(body)
    if "boolean" in data:
        return int(data["boolean"])
    return len(data["results"]["bindings"])


def _tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants (a server may fork query workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return total / 1024


def _start_endpoints(ctx: Context) -> list[Endpoint]:
    endpoints: list[Endpoint] = []
    sasci = ctx.sasci_serve or _detect_sasci_serve()
    if sasci:
        port = _free_port()
        cmd = shlex.split(sasci.format(store=ctx.store, port=port, bin=BIN, python=PY))
        _say(f"query: starting sasci-kg serve: {shlex.join(cmd)}")
        endpoints.append(HttpEndpoint("sasci-kg", cmd, port, ctx.sasci_path))
    else:
        _say("query: sasci-kg serve is not available yet; measuring oxigraph serve and "
             "in-process pyoxigraph only")
    port = _free_port()
    endpoints.append(HttpEndpoint("oxigraph", [
        str(BIN / "oxigraph"), "serve-read-only", "--location", str(ctx.store),
        "--bind", f"127.0.0.1:{port}", "--union-default-graph"], port, "/query"))
    if ctx.bare_front:  # the floor of a Python HTTP front (benchmarks/bare_front.py)
        port = _free_port()
        endpoints.append(HttpEndpoint("python-floor", [
            PY, "-m", "benchmarks.bare_front", str(ctx.store), str(port)], port, "/query"))
    endpoints.append(InProcess(ctx.store))
    return endpoints


def _detect_sasci_serve() -> str | None:
    probe = subprocess.run([str(BIN / "sasci-kg"), "serve", "--help"], capture_output=True,
                           text=True, cwd=ROOT)
    if probe.returncode != 0:
        # No CLI command yet: start the library's server (run_server) directly, if it is there.
        library = subprocess.run([PY, "-c", "import sasci_kg.web.server"], capture_output=True,
                                 cwd=ROOT)
        return "{python} -m benchmarks.serve_sasci {store} {port}" if library.returncode == 0 \
            else None
    text = probe.stdout
    if "--port" in text:
        bind = "--host 127.0.0.1 --port {port}" if "--host" in text else "--port {port}"
    elif "--bind" in text:
        bind = "--bind 127.0.0.1:{port}"
    else:
        return None
    return "{bin}/sasci-kg serve --store {store} " + bind


def phase_query(ctx: Context) -> None:
    if not (ctx.store / "CURRENT").exists():
        raise SystemExit(f"{ctx.store}: no store; run the load phase first")
    manifest = ctx.manifest()
    endpoints = _start_endpoints(ctx)
    names = [e.name for e in endpoints]
    servers = [e for e in endpoints if e.pid]
    try:
        memory: dict[str, dict[str, float]] = {
            e.name: {"started_mib": _tree_rss_mib(e.pid)} for e in servers if e.pid}
        _say("query: warm-up round (not recorded)")
        for q in MIX:
            for e in endpoints:
                e.request(q.sparql(manifest, 10_000), ACCEPT[q.kind])
        for e in servers:
            memory[e.name]["rest_after_warmup_mib"] = _tree_rss_mib(e.pid)  # type: ignore[arg-type]
        latency, mismatches = _latency(ctx, endpoints, manifest)
        cached = _cached(ctx, endpoints, manifest)
        throughput = _throughput(ctx, endpoints, manifest, memory)
        for e in servers:
            memory[e.name]["rest_after_load_mib"] = _tree_rss_mib(e.pid)  # type: ignore[arg-type]
    finally:
        for e in endpoints:
            e.close()
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    for q in MIX:
        per_query[q.name] = {
            n: {"median_ms": 1000 * _median(latency[n].get(q.name, [])),
                "p95_ms": 1000 * _p95(latency[n].get(q.name, [])),
                "ok": len(latency[n].get(q.name, [])),
                "results": statistics.median(latency[n].get(q.name + "#n") or [0])}
            for n in names}
    summary: dict[str, Any] = {}
    for n in names:
        if n == "oxigraph":
            continue
        ratios = [per_query[q.name][n]["median_ms"] / per_query[q.name]["oxigraph"]["median_ms"]
                  for q in MIX]
        light = [r for r, q in zip(ratios, MIX, strict=True) if q.light]
        summary[n] = {"geomean_ratio_vs_oxigraph": _geomean(ratios),
                      "geomean_ratio_vs_oxigraph_light": _geomean(light),
                      "p95_geomean_ratio_vs_oxigraph": _geomean(
                          [per_query[q.name][n]["p95_ms"] / per_query[q.name]["oxigraph"]["p95_ms"]
                           for q in MIX])}
    ctx.results["query"] = {
        "endpoints": names, "rounds": ctx.query_rounds, "per_query": per_query,
        "summary": summary, "mismatches": mismatches, "cached": cached,
        "throughput": throughput, "memory": memory,
        "store_bytes": _du(ctx.store),
    }


def _latency(ctx: Context, endpoints: list[Endpoint], manifest: dict[str, Any]
             ) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """Each query, each round with a new parameter, on every endpoint in rotating order."""
    latency: dict[str, dict[str, list[float]]] = {e.name: {} for e in endpoints}
    mismatches: list[str] = []
    for r in range(ctx.query_rounds):
        _say(f"query: latency round {r + 1}/{ctx.query_rounds} (load {_loadavg()})")
        order = endpoints[r % len(endpoints):] + endpoints[:r % len(endpoints)]
        for q in MIX:
            sparql = q.sparql(manifest, r)
            counts = {}
            for e in order:
                started = time.perf_counter()
                status, body, _ = e.request(sparql, ACCEPT[q.kind])
                took = time.perf_counter() - started
                if status != 200:
                    mismatches.append(f"{e.name} {q.name} round {r}: HTTP {status} "
                                      f"{body[:200]!r}")
                    continue
                latency[e.name].setdefault(q.name, []).append(took)
                counts[e.name] = _count(q.kind, body)
                latency[e.name].setdefault(q.name + "#n", []).append(counts[e.name])
            if len(set(counts.values())) > 1 and q.kind != "describe":
                mismatches.append(f"{q.name} round {r}: result counts differ {counts}")
    return latency, mismatches


def _cached(ctx: Context, endpoints: list[Endpoint], manifest: dict[str, Any]
            ) -> dict[str, Any]:
    """The same query again: a conditional request (If-None-Match → 304) and a plain repeat."""
    out: dict[str, Any] = {}
    http_eps = [e for e in endpoints if isinstance(e, HttpEndpoint)]
    for q in MIX:
        sparql = q.sparql(manifest, 0)
        row: dict[str, Any] = {}
        for e in http_eps:
            status, _, headers = e.request(sparql, ACCEPT[q.kind], method="GET")
            etag = headers.get("etag")
            repeat, conditional, statuses = [], [], set()
            for _ in range(max(2, ctx.query_rounds // 3)):
                started = time.perf_counter()
                e.request(sparql, ACCEPT[q.kind], method="GET")
                repeat.append(time.perf_counter() - started)
                if etag:
                    started = time.perf_counter()
                    status, _, _ = e.request(sparql, ACCEPT[q.kind], {"If-None-Match": etag},
                                             method="GET")
                    conditional.append(time.perf_counter() - started)
                    statuses.add(status)
            row[e.name] = {"repeat_median_ms": 1000 * _median(repeat),
                           "conditional_median_ms": 1000 * _median(conditional)
                           if conditional else None,
                           "etag": bool(etag), "conditional_status": sorted(statuses)}
        out[q.name] = row
    return out


def _throughput(ctx: Context, endpoints: list[Endpoint], manifest: dict[str, Any],
                memory: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Light queries from N client threads for a fixed time; slots interleaved A B A B."""
    light = [q for q in MIX if q.light]
    result: dict[str, dict[str, list[float]]] = {e.name: {"rps": [], "p50_ms": [], "p99_ms": []}
                                                 for e in endpoints}
    slots = max(2, ctx.rounds)
    counter = [100_000]
    lock = threading.Lock()
    for slot in range(slots):
        order = endpoints[slot % len(endpoints):] + endpoints[:slot % len(endpoints)]
        for e in order:
            _say(f"query: throughput slot {slot + 1}/{slots} {e.name}, {ctx.clients} clients, "
                 f"{ctx.duration:.0f} s (load {_loadavg()})")
            done: list[float] = []
            errors = [0]
            stop = time.monotonic() + ctx.duration

            def client(e: Endpoint = e, done: list[float] = done,
                       stop: float = stop, errors: list[int] = errors) -> None:
                while time.monotonic() < stop:
                    with lock:
                        n = counter[0]
                        counter[0] += 1
                    q = light[n % len(light)]
                    started = time.perf_counter()
                    try:
                        status, _, _ = e.request(q.sparql(manifest, n // len(light)),
                                                 ACCEPT[q.kind])
                    except OSError:
                        status = 0
                    if status == 200:
                        done.append(time.perf_counter() - started)
                    else:
                        errors[0] += 1

            peak = [0.0]
            sampling = threading.Event()

            def sample(e: Endpoint = e, peak: list[float] = peak,
                       sampling: threading.Event = sampling) -> None:
                while not sampling.wait(0.25):
                    if e.pid:
                        peak[0] = max(peak[0], _tree_rss_mib(e.pid))

            threads = [threading.Thread(target=client) for _ in range(ctx.clients)]
            sampler = threading.Thread(target=sample)
            started = time.perf_counter()
            sampler.start()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
            sampling.set()
            sampler.join()
            result[e.name]["rps"].append(len(done) / elapsed)
            result[e.name]["p50_ms"].append(1000 * _median(done))
            # The tail shows a client kept waiting while others are served (fairness).
            result[e.name]["p99_ms"].append(1000 * _quantile(done, 0.99))
            result[e.name].setdefault("errors", []).append(errors[0])
            if e.pid:
                memory[e.name]["peak_under_load_mib"] = max(
                    memory[e.name].get("peak_under_load_mib", 0.0), peak[0])
    summary: dict[str, Any] = {
        n: {"rps_median": _median(v["rps"]), "p50_ms_median": _median(v["p50_ms"]),
            "p99_ms_median": _median(v["p99_ms"]),
            "samples_rps": v["rps"], "errors": v.get("errors")}
        for n, v in result.items()}
    base = summary["oxigraph"]["rps_median"]
    for n in summary:
        summary[n]["ratio_vs_oxigraph"] = summary[n]["rps_median"] / base if base else math.nan
        # Slot by slot (each slot ran the endpoints back to back): how far the median swings.
        summary[n]["slot_ratios_vs_oxigraph"] = [
            a / b if b else math.nan
            for a, b in zip(summary[n]["samples_rps"], summary["oxigraph"]["samples_rps"],
                            strict=True)]
    return summary


# ---------------------------------------------------------------------------------------
# named queries


NAMED_BINDINGS = {  # a parameter name → the synthetic entity to bind (else its default)
    "person": lambda m: f"https://w3id.org/sasci-kg/id/{m['people'][0]['id']}",
    "speaker": lambda m: f"https://w3id.org/sasci-kg/id/{m['people'][0]['id']}",
    "organisation": lambda m: f"https://w3id.org/sasci-kg/id/{m['organisations'][0]['id']}",
    "project": lambda m: "https://w3id.org/sasci-kg/id/project/p00000",
    "event": lambda m: "https://w3id.org/sasci-kg/id/event/e00000",
    "session": lambda m: "https://w3id.org/sasci-kg/id/session/e00000.s0",
    "fact": lambda m: "https://w3id.org/sasci-kg/id/fact/project-00000.funder",
    "idea": lambda m: "https://w3id.org/sasci-kg/id/concept/idea-00000",
}


def phase_named(ctx: Context) -> None:
    """Every named query, unparameterised (all rows) and with a synthetic parameter."""
    from sasci_kg.queries import list_queries

    manifest = ctx.manifest()
    rows: dict[str, Any] = {}
    for named in list_queries(ROOT / "queries"):
        params = {p.name: NAMED_BINDINGS[p.name](manifest) for p in named.params
                  if p.name in NAMED_BINDINGS}
        _say(f"named: {named.name} (limit {ctx.named_timeout:.0f} s)")
        result = _step("named", named.name, str(ctx.store), json.dumps(params),
                       timeout=ctx.named_timeout)
        if "error" in result and result["wall_s"] >= ctx.named_timeout - 1:
            result = {"timed_out_after_s": ctx.named_timeout}
        rows[named.name] = result
    ctx.results["named"] = rows


def phase_trace(ctx: Context) -> None:
    """`sasci-kg trace A B` between organisation pairs (CLI, so with Python start-up, which
    `sasci-kg --version` measures alone) against the mix's trace query in-process."""
    import pyoxigraph as ox

    from .mix import MIX

    manifest = ctx.manifest()
    pairs = manifest["org_pairs"][:5]
    trace_query = next(q for q in MIX if q.name == "trace-two-organisations")
    startup = [run_measured([str(BIN / "sasci-kg"), "--version"])["wall_s"] for _ in range(3)]
    rows = []
    for r, (a, b) in enumerate(pairs):
        _say(f"trace: {a} → {b}")
        cli = run_measured([str(BIN / "sasci-kg"), "trace", "--store", str(ctx.store), a, b],
                           timeout=ctx.named_timeout)
        store = ox.Store.read_only(str(ctx.store))
        started = time.perf_counter()
        found = list(store.query(trace_query.sparql(manifest, r), use_default_graph_as_union=True))
        floor = time.perf_counter() - started
        del store
        rows.append({"pair": [a, b], "cli_s": cli["wall_s"], "exit": cli["exit"],
                     "cli_peak_rss_mib": cli["peak_rss_mib"], "sparql_s": floor,
                     "sparql_rows": len(found), "stdout_head": cli["stdout"][:300]})
    ctx.results["trace"] = {"startup_s": _median(startup), "pairs": rows,
                            "cli_median_s": _median([x["cli_s"] for x in rows]),
                            "sparql_median_s": _median([x["sparql_s"] for x in rows])}


# ---------------------------------------------------------------------------------------
# report


TARGETS = """\
| figure | measured | target | floor of acceptable | verdict |
|---|---|---|---|---|
"""


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _verdict(value: float, target: float, floor: float | None, higher_is_better: bool) -> str:
    if value is None or math.isnan(value):
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "meets target"
    if floor is not None and (value >= floor if higher_is_better else value <= floor):
        return "acceptable (between target and floor)"
    return "MISSES"


def report(ctx: Context) -> str:
    r = ctx.results
    meta = r["meta"]
    commands = [m["command"] for m in r.get("runs", [meta])]
    built = r.get("build") or r.get("build_no_describe") or {}
    lines = [f"# Benchmark results: {meta['size_label']} triples", "",
             "- command" + ("s" if len(commands) > 1 else "") + ": "
             + "; ".join(f"`{c}`" for c in commands),
             f"- date: {meta['date']}; machine: {meta['machine']}",
             f"- code: commit {meta.get('commit')}"
             + (f" plus uncommitted changes in src/: {', '.join(meta['uncommitted_src'])}"
                if meta.get("uncommitted_src") else " (src/ clean)"),
             f"- load average at start / end: {meta['load_start']} / {meta.get('load_end', '?')}",
             f"- data: {meta.get('records', '?')} records in {meta.get('sources', '?')} source "
             f"folders, {built.get('quads', '?')} quads; evidence "
             f"{'checked' if built.get('notices') == 0 else 'see notices'}",
             ""]
    rows = []
    if "build" in r:
        b = r["build"]
        rows.append(("build + load from facts (`sasci-kg load --no-shacl`) ÷ pyoxigraph "
                     "bulk_load + optimize", b["ratio_vs_bulk_load_optimize"], 3.0, None, False))
    if "build_no_describe" in r:
        b = r["build_no_describe"]
        rows.append(("the same without describe_dataset (VoID) ÷ pyoxigraph bulk_load + optimize",
                     b["ratio_vs_bulk_load_optimize"], 3.0, None, False))
    if "query" in r and "sasci-kg" in r["query"]["summary"]:
        s = r["query"]["summary"]["sasci-kg"]
        rows.append(("query latency, geomean of median ratios ÷ oxigraph serve (uncached)",
                     s["geomean_ratio_vs_oxigraph"], 1.2, 1.5, False))
        t = r["query"]["throughput"]["sasci-kg"]
        rows.append(("throughput, light mix, 4 clients ÷ oxigraph serve",
                     t["ratio_vs_oxigraph"], 0.8, 0.5, True))
        cached = r["query"].get("cached", {})
        for label, key in (("repeated query", "repeat_median_ms"),
                           ("conditional GET (If-None-Match)", "conditional_median_ms")):
            ratios = [row["sasci-kg"][key] / row["oxigraph"]["repeat_median_ms"]
                      for row in cached.values()
                      if "sasci-kg" in row and "oxigraph" in row and row["sasci-kg"].get(key)]
            if ratios:
                rows.append((f"{label}, geomean ÷ oxigraph serve repeating it (no cache there)",
                             _geomean(ratios), 1.0, None, False))
    if rows:
        lines += ["## Against the targets", "", TARGETS.rstrip("\n")]
        for name, value, target, floor, higher in rows:
            lines.append(f"| {name} | {_fmt(value, '×')} | {'≥' if higher else '≤'} {target}× | "
                         f"{_fmt(floor, '×') if floor else '–'} | "
                         f"{_verdict(value, target, floor, higher)} |")
        lines.append("")
    for key in ("build", "build_no_describe"):
        if key not in r:
            continue
        b = r[key]
        m = b["breakdown_median"]
        described = key == "build"
        lines += [
            "## 1. Validate + build (facts → quads)" + ("" if described else
                                                       ", without describe_dataset"), "",
            "| what | median |", "|---|---|",
            f"| validate (read YAML, check, evidence) | {_fmt(m['validate_s'], ' s')} |",
            f"| map to quads (+ ontology, one graph per triple) | {_fmt(m['map_s'], ' s')} |",
            f"| describe the dataset (VoID/DCAT figures; downloads made on request) | "
            f"{_fmt(m.get('describe_s'), ' s')} |",
            f"| serialise sorted N-Quads | {_fmt(m['serialize_s'], ' s')} |",
            f"| facts → N-Quads total | {_fmt(m['total_s'], ' s')} "
            f"({_fmt(b['quads'] / m['total_s'], ' triples/s', 0)}), peak "
            f"{_fmt(m['peak_rss_mib'], ' MiB', 0)} |",
            ("| **`sasci-kg load --no-shacl`: facts → compacted store** | "
             if described else
             "| **facts → compacted store, without describe_dataset (library: build_dataset, "
             "load_store)** | ") +
            f"**{_fmt(b['sasci_load_s'], ' s')}** "
            f"({_fmt(b['sasci_load_triples_per_s'], ' triples/s', 0)}), "
            f"peak {_fmt(b['sasci_load_peak_rss_mib'], ' MiB', 0)} |",
            f"| anchor: pyoxigraph parse only | {_fmt(b['floor_parse_s'], ' s')} |",
            f"| anchor: pyoxigraph bulk_load | {_fmt(b['floor_bulk_load_s'], ' s')} |",
            "| anchor: pyoxigraph bulk_load + optimize | "
            f"{_fmt(b['floor_bulk_load_optimize_s'], ' s')}"
            f" (peak {_fmt(b['floor_peak_rss_mib'], ' MiB', 0)}) |",
            "| ratio ÷ bulk_load / ÷ bulk_load + optimize | "
            f"{_fmt(b['ratio_vs_bulk_load'], '×')} / "
            f"{_fmt(b['ratio_vs_bulk_load_optimize'], '×')} |",
            f"| SHACL (pySHACL, whole graph), separately | "
            f"{_fmt(b['shacl'].get('shacl_s'), ' s')} {b['shacl'].get('outcome', '')}"
            f"{b['shacl'].get('skipped', '')}"
            + (f"timed out after {b['shacl']['timed_out_after_s']:.0f} s"
               if b["shacl"].get("timed_out_after_s") else "") + " |",
            "| SHACL by SPARQL (the build's default), separately | "
            + (f"{_fmt(b['shacl_sparql'].get('shacl_s'), ' s')} "
               f"{b['shacl_sparql'].get('outcome', '')}, peak "
               f"{_fmt(b['shacl_sparql'].get('peak_rss_mib'), ' MiB', 0)}"
               if "shacl_sparql" in b else "not measured") + " |",
            ""]
    if "load" in r:
        lo = r["load"]
        lines += [
            "## 2. Load (N-Quads → embedded store)", "",
            "| what | median |", "|---|---|",
            f"| `store.load_store` (staging, bulk_load, optimize, swap) | "
            f"{_fmt(lo['sasci_load_store_s'], ' s')} "
            f"(peak {_fmt(lo['sasci_peak_rss_mib'], ' MiB', 0)}) |",
            f"| anchor: `oxigraph load` | {_fmt(lo['oxigraph_load_s'], ' s')} "
            f"(peak {_fmt(lo['oxigraph_peak_rss_mib'], ' MiB', 0)}) |",
            "| anchor: `oxigraph load` + `oxigraph optimize` | "
            f"{_fmt(lo['oxigraph_load_optimize_s'], ' s')} |",
            f"| ratio ÷ load / ÷ load + optimize | {_fmt(lo['ratio_vs_oxigraph_load'], '×')} / "
            f"{_fmt(lo['ratio_vs_oxigraph_load_optimize'], '×')} |",
            "| store on disk (ours / oxigraph load / + optimize) | "
            + " / ".join(f"{lo['store_bytes'].get(k, 0) / 2**20:.0f} MiB"
                         for k in ("sasci", "oxigraph_load", "oxigraph_load_optimize"))
            + f" (N-Quads {lo['dataset_nq_bytes'] / 2**20:.0f} MiB) |", ""]
    if "query" in r:
        qr = r["query"]
        names = qr["endpoints"]
        lines += ["## 3. Query latency (one client, uncached: a new parameter each round)", "",
                  f"{qr['rounds']} rounds, endpoints interleaved in rotating order; "
                  "median / p95 in ms; ratio = median ÷ oxigraph serve's median.", "",
                  "| query | light | " + " | ".join(names) + " | rows | "
                  + " | ".join(f"{n} ÷ oxigraph" for n in names if n != "oxigraph") + " |",
                  "|---|---|" + "---|" * (len(names) + 1 + len(names) - 1)]
        for q in MIX:
            pq = qr["per_query"][q.name]
            cells = [f"{_fmt(pq[n]['median_ms'], '', 1)} / {_fmt(pq[n]['p95_ms'], '', 1)}"
                     for n in names]
            ratios = [_fmt(pq[n]["median_ms"] / pq["oxigraph"]["median_ms"], "×")
                      for n in names if n != "oxigraph"]
            lines.append(f"| {q.name} | {'yes' if q.light else ''} | " + " | ".join(cells)
                         + f" | {_fmt(pq['oxigraph']['results'], '', 0)} | " + " | ".join(ratios)
                         + " |")
        lines.append("")
        for n, s in qr["summary"].items():
            lines.append(f"- **geomean of {n} ÷ oxigraph serve**: "
                         f"{_fmt(s['geomean_ratio_vs_oxigraph'], '×')} over the whole mix, "
                         f"{_fmt(s['geomean_ratio_vs_oxigraph_light'], '×')} over the light part, "
                         f"{_fmt(s['p95_geomean_ratio_vs_oxigraph'], '×')} on p95")
        if qr["mismatches"]:
            lines += ["", "Mismatches / errors: " + "; ".join(qr["mismatches"][:10])]
        lines += ["", "### Throughput (light part of the mix, fixed time, slots interleaved)", "",
                  "| endpoint | requests/s (median) | p50 / p99 under load | ÷ oxigraph serve | "
                  "slot by slot | errors |",
                  "|---|---|---|---|---|---|"]
        for n, t in qr["throughput"].items():
            slots = ", ".join(_fmt(r, "×") for r in t.get("slot_ratios_vs_oxigraph", []))
            lines.append(f"| {n} | {_fmt(t['rps_median'], '', 1)} | "
                         f"{_fmt(t['p50_ms_median'], ' ms', 1)} / "
                         f"{_fmt(t.get('p99_ms_median'), ' ms', 1)} "
                         f"| {_fmt(t['ratio_vs_oxigraph'], '×')} | {slots or '–'} "
                         f"| {sum(t['errors'] or [])} |")
        lines += ["", "### Cached (the same query again)", "",
                  "| query | " + " | ".join(f"{n} repeat / 304" for n in qr["cached"][MIX[0].name])
                  + " |", "|---|" + "---|" * len(qr["cached"][MIX[0].name])]
        for q in MIX:
            row = qr["cached"][q.name]
            lines.append(f"| {q.name} | " + " | ".join(
                f"{_fmt(v['repeat_median_ms'], '', 1)} / "
                f"{_fmt(v['conditional_median_ms'], '', 1) if v['etag'] else 'no ETag'}"
                f"{' ' + str(v['conditional_status']) if v['etag'] else ''}"
                for v in row.values()) + " |")
        lines += ["", "## 4. Memory and disk", "", "| server | started | at rest (after warm-up) "
                  "| peak under load | at rest after load |", "|---|---|---|---|---|"]
        for n, mem in qr["memory"].items():
            lines.append(f"| {n} | {_fmt(mem.get('started_mib'), ' MiB', 0)} | "
                         f"{_fmt(mem.get('rest_after_warmup_mib'), ' MiB', 0)} | "
                         f"{_fmt(mem.get('peak_under_load_mib'), ' MiB', 0)} | "
                         f"{_fmt(mem.get('rest_after_load_mib'), ' MiB', 0)} |")
        lines += ["", f"Store on disk: {qr['store_bytes'] / 2**20:.0f} MiB.", ""]
    if "trace" in r:
        t = r["trace"]
        lines += ["## `sasci-kg trace` between two organisations", "",
                  f"Median over {len(t['pairs'])} pairs: **{t['cli_median_s']:.2f} s** for the "
                  f"command (of which Python start-up, `sasci-kg --version`: "
                  f"{t['startup_s']:.2f} s) vs {1000 * t['sparql_median_s']:.1f} ms for the "
                  "mix's three-hop trace query in-process.", "",
                  "| pair | CLI s (exit) | SPARQL ms (rows) |", "|---|---|---|"]
        for x in t["pairs"]:
            lines.append(f"| {x['pair'][0]} → {x['pair'][1]} | {x['cli_s']:.2f} ({x['exit']}) | "
                         f"{1000 * x['sparql_s']:.1f} ({x['sparql_rows']}) |")
        lines.append("")
    if "named" in r:
        lines += ["## Named queries (`queries/*.rq`, in-process, unparameterised = all rows)", "",
                  "| query | all rows: ms (rows) | with a parameter: ms (rows) |", "|---|---|---|"]
        for name, v in r["named"].items():
            if "timed_out_after_s" in v:
                lines.append(f"| {name} | > {v['timed_out_after_s']:.0f} s (stopped) | |")
            elif "error" in v:
                lines.append(f"| {name} | error: {v['error'][-120:]!r} | |")
            else:
                lines.append(f"| {name} | {v['all_ms']:.1f} ({v['all_rows']}) | "
                             + (f"{v['param_ms']:.1f} ({v['param_rows']})"
                                if v.get("param_ms") is not None else "–") + " |")
        lines.append("")
    return "\n".join(lines)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip()


PHASES: dict[str, Callable[[Context], None]] = {
    "build": phase_build, "load": phase_load, "query": phase_query, "named": phase_named,
    "trace": phase_trace}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the sasci-kg benchmark suite.")
    parser.add_argument("--size", default="1e5", help="target triples: 1e5, 1e6, 1e7")
    parser.add_argument("--phases", default="build,load,query,named")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds for build and load, "
                        "and throughput slots per endpoint")
    parser.add_argument("--query-rounds", type=int, default=21)
    parser.add_argument("--duration", type=float, default=15, help="seconds per throughput slot")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--shacl-timeout", type=float, default=900)
    parser.add_argument("--named-timeout", type=float, default=120)
    parser.add_argument("--sasci-serve", default=None, help="command to start sasci-kg serve "
                        "({store} {port} {bin} filled in) [default: detected]")
    parser.add_argument("--sasci-path", default="/sparql", help="SPARQL path of sasci-kg serve")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--shacl-engines", default="sparql,pyshacl",
                        help="SHACL checks to time in the build phase (comma-separated: "
                             "sparql, pyshacl; empty for none)")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--no-describe", action="store_true", help="build without the VoID "
                        "description (describe_dataset), measured with the library instead "
                        "of the CLI: for sizes where describing the dataset does not fit")
    parser.add_argument("--bare-front", action="store_true", help="also measure the plainest "
                        "Python HTTP front over pyoxigraph, with no safety (benchmarks/"
                        "bare_front.py): what answering from Python costs at all")
    parser.add_argument("--memory-cap", type=float, default=None, metavar="GIB",
                        help="address-space limit of each measured process (prlimit)")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    label = f"{size:.0e}".replace("+0", "").replace("+", "")
    work = (args.out / label).resolve()
    ctx = Context(size=size, work=work, rounds=args.rounds, query_rounds=args.query_rounds,
                  duration=args.duration, clients=args.clients, shacl_timeout=args.shacl_timeout,
                  named_timeout=args.named_timeout, sasci_serve=args.sasci_serve,
                  sasci_path=args.sasci_path, describe=not args.no_describe,
                  shacl_engines=tuple(e for e in args.shacl_engines.split(",") if e),
                  bare_front=args.bare_front)
    if args.memory_cap:
        MEMORY_CAP.append(int(args.memory_cap * 2**30))
    results_path = work / "results.json"
    if results_path.exists():
        ctx.results = json.loads(results_path.read_text())
    import pyoxigraph

    ctx.results["meta"] = {
        "size": size, "size_label": label, "date": dt.datetime.now().isoformat(timespec="minutes"),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None
                                                          else sys.argv[1:]),
        "machine": f"{platform.platform()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
                   f"Python {platform.python_version()}, pyoxigraph {pyoxigraph.__version__}",
        "load_start": _loadavg(),
        "describe": not args.no_describe,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_src": _git("status", "--porcelain", "--", "src").splitlines(),
    }
    # Several commands may add to one results.json (e.g. --no-describe after a full run):
    # keep every command's meta.
    ctx.results.setdefault("runs", []).append(ctx.results["meta"])
    if args.regenerate or not (work / "manifest.json").exists():
        _say(f"generating {size} triples of facts into {work}")
        started = time.perf_counter()
        manifest = generate(work, size)
        ctx.results["generate"] = {"seconds": time.perf_counter() - started,
                                   "counts": manifest.counts}
    counts = ctx.manifest()["counts"]
    ctx.results["meta"]["records"] = sum(counts.values())
    ctx.results["meta"]["sources"] = sum(1 for _ in ctx.data.iterdir())
    for phase in args.phases.split(","):
        PHASES[phase.strip()](ctx)
        ctx.results["meta"]["load_end"] = _loadavg()
        results_path.write_text(json.dumps(ctx.results, indent=1, default=str))
    text = report(ctx)
    (work / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
