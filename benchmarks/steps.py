"""One measured step, run in a fresh process so its time and peak memory are its own.

``python -m benchmarks.steps STEP ARGS…`` prints one JSON object (seconds per phase,
quads, peak RSS) on stdout. The runner (``benchmarks.run``) starts these, interleaved.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyoxigraph as ox


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(data: str, ontology: str, sources: str, out_nq: str, describe: str = "1",
          store: str = "") -> dict[str, object]:
    """``build_dataset`` (no SHACL) → ``load_inputs`` (sorted N-Quads) → file, phases timed.

    The library's own functions run unchanged; ``load_facts`` and ``describe_dataset`` are
    wrapped only to time them, so "map" is the rest of ``build_dataset`` (mapping, ontology,
    one graph per triple).
    """
    import sasci_kg.build as b

    timings: dict[str, float] = {}

    def timed(name: str, func: Any) -> Any:
        def wrapper(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                timings[name] = time.perf_counter() - started
        return wrapper

    b.load_facts = timed("validate_s", b.load_facts)  # type: ignore[attr-defined]
    if hasattr(b, "describe_dataset"):
        if describe == "0":  # --no-describe: measure the pipeline without the VoID graph
            b.describe_dataset = lambda *args, **kwargs: []  # type: ignore[attr-defined]
        b.describe_dataset = timed("describe_s", b.describe_dataset)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    result = b.build_dataset(data, ontology, sources_dir=sources, shacl=False)
    t1 = time.perf_counter()
    data_bytes = b.load_inputs(result)[0].data or b""
    t2 = time.perf_counter()
    Path(out_nq).write_bytes(data_bytes)
    t3 = time.perf_counter()
    if store:  # then into the store, as `sasci-kg load` does (load_store on these bytes)
        from sasci_kg.store import load_store

        shutil.rmtree(store, ignore_errors=True)
        started = time.perf_counter()
        load_store(store, [b.LoadInput(format=ox.RdfFormat.N_QUADS, data=data_bytes)])
        timings["load_s"] = time.perf_counter() - started
    facts = result.facts
    describe = timings.get("describe_s", 0.0)
    return {"validate_s": timings["validate_s"], "describe_s": describe,
            "map_s": t1 - t0 - timings["validate_s"] - describe,
            "serialize_s": t2 - t1, "write_s": t3 - t2, "total_s": t3 - t0,
            "quads": len(result.quads),
            "records": sum(1 for _ in facts.records()) if facts else 0,
            "notices": len(facts.notices) if facts else 0,
            "nq_bytes": len(data_bytes), "load_s": timings.get("load_s"),
            "peak_rss_mib": _peak_mib()}


def shacl(data: str, ontology: str, sources: str, engine: str = "sparql") -> dict[str, object]:
    """The build's SHACL check over the whole built graph, timed on its own: ``engine`` is
    "sparql" (the shapes as Oxigraph queries, the build's default) or "pyshacl"."""
    from sasci_kg.build import build_dataset, check_shapes
    from sasci_kg.errors import ShaclError

    result = build_dataset(data, ontology, sources_dir=sources, shacl=False)
    t0 = time.perf_counter()
    try:
        warnings = check_shapes(result.quads, Path(ontology) / "shapes.ttl", engine=engine)
        outcome = f"conforms ({len(warnings)} warnings)"
    except ShaclError as exc:
        outcome = f"violations: {str(exc).splitlines()[0][:120]}"
    return {"shacl_s": time.perf_counter() - t0, "outcome": outcome, "quads": len(result.quads),
            "peak_rss_mib": _peak_mib()}


def floor(nq: str, store: str) -> dict[str, object]:
    """pyoxigraph alone: parse the N-Quads, then bulk-load them into a fresh store, optimize."""
    t0 = time.perf_counter()
    parsed = sum(1 for _ in ox.parse(path=nq, format=ox.RdfFormat.N_QUADS))
    t1 = time.perf_counter()
    shutil.rmtree(store, ignore_errors=True)
    s = ox.Store(store)
    t2 = time.perf_counter()
    s.bulk_load(path=nq, format=ox.RdfFormat.N_QUADS)
    t3 = time.perf_counter()
    s.optimize()
    s.flush()
    t4 = time.perf_counter()
    return {"parse_s": t1 - t0, "bulk_load_s": t3 - t2, "optimize_s": t4 - t3,
            "quads": parsed, "peak_rss_mib": _peak_mib()}


def load(nq: str, store: str) -> dict[str, object]:
    """The project's loader (staging store, bulk load, optimize, atomic swap) on N-Quads."""
    from sasci_kg.store import LoadInput, load_store

    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    report = load_store(store, [LoadInput(format=ox.RdfFormat.N_QUADS, path=Path(nq))])
    return {"load_s": time.perf_counter() - t0, "quads": report.quads,
            "peak_rss_mib": _peak_mib()}


def named(name: str, store: str, params: str) -> dict[str, object]:
    """One named query on the store: unparameterised (all rows), then with ``params``."""
    from sasci_kg.queries import get_query, run_named_query
    from sasci_kg.store import open_store

    backend = open_store(store)
    query = get_query(name, Path(__file__).resolve().parents[1] / "queries")
    out: dict[str, object] = {}
    runs = [("all", {p.name: "" for p in query.params})]
    if json.loads(params):
        runs.append(("param", json.loads(params)))
    for label, values in runs:
        # A parameter left empty is unbound (all rows) unless the query has a default.
        bound = {k: v for k, v in values.items() if v}
        t0 = time.perf_counter()
        result = run_named_query(backend, query, bound)
        rows = sum(1 for _ in result) if not isinstance(result, ox.QueryBoolean) else 1
        out[f"{label}_ms"] = 1000 * (time.perf_counter() - t0)
        out[f"{label}_rows"] = rows
    return out


STEPS = {"build": build, "shacl": shacl, "floor": floor, "load": load, "named": named}


def main() -> None:
    step, args = sys.argv[1], sys.argv[2:]
    print(json.dumps(STEPS[step](*args)))


if __name__ == "__main__":
    main()
