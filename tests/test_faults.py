"""Faults: a load or build killed midway (SIGKILL), a disk that fills (``RLIMIT_FSIZE``), a
corrupted or missing store, a store locked by another process, a remote engine that is down,
slow or answers garbage, and a server restarted (gracefully or by SIGKILL) under load.

The properties: the previous graph keeps serving; nothing half-written is ever served (every
answer counts the old graph or the new one, never a mix); the next run recovers, and where it
cannot, it says why in one ``Error: …`` line (never a traceback); no committed write is lost
and no request is answered wrongly; no worker hangs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    app_for,
    make_store,
)
from project import DATA, ONTOLOGY, ROOT
from reliability_support import (
    assert_no_traceback,
    problem_shape,
    record,
)

from sasci_kg.store import OxigraphBackend, store_generation

pytestmark = pytest.mark.reliability

PYTHON = sys.executable
SASCI_KG = [PYTHON, "-c", "from sasci_kg.cli import main; main()"]
GRAPH = "https://w3id.org/sasci-kg/graph/file/faults"
COUNT = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
TOKEN = "faults-test-token-0123456789abcdef"
SURVIVED: dict[str, int] = {}


def _survived(fault: str, n: int = 1) -> None:
    SURVIVED[fault] = SURVIVED.get(fault, 0) + n


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    started = time.monotonic()
    yield
    record("faults", survived=dict(sorted(SURVIVED.items())), total=sum(SURVIVED.values()),
           seconds=round(time.monotonic() - started, 1))


# ---------------------------------------------------------------------------------------
# Helpers: data of known sizes, loads in a child process, counting what a store serves.


def ntriples(path: Path, n: int, tag: str) -> Path:
    """``n`` triples (about 110 bytes each) whose objects carry ``tag``."""
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            out.write(f'<https://w3id.org/sasci-kg/id/x/{i}> <https://schema.org/name> '
                      f'"{tag} {i} with a little padding to make the file bigger" .\n')
    return path


LOADER = """
import resource, signal, sys
import pyoxigraph as ox
from sasci_kg.store import LoadInput, load_store
store, source, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    # Python ignores SIGXFSZ (writes past the limit fail with EFBIG, as on a full disk);
    # "default" restores the default action, which kills the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN if sys.argv[4] == "ignore" else signal.SIG_DFL)
print("loading", flush=True)
load_store(store, [LoadInput(format=ox.RdfFormat.N_TRIPLES, path=source, graph=sys.argv[5])])
print("loaded", flush=True)
"""


def start_load(store: Path, source: Path, *, fsize: int = 0, sigxfsz: str = "default",
               capture: bool = False) -> subprocess.Popen[str]:
    """A load in a child process; with ``capture``, read its output with communicate()."""
    return subprocess.Popen([PYTHON, "-c", LOADER, str(store), str(source), str(fsize),
                             sigxfsz, GRAPH],
                            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, text=True)


def served_count(store: Path) -> int:
    """What a fresh reader of the store sees (opened read-only, as the server does)."""
    backend = OxigraphBackend(store)
    try:
        result = backend.query(COUNT)
        return int(next(iter(result))["n"].value)  # type: ignore[call-overload, index]
    finally:
        backend.close()


def leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.parent.glob(f".{store.name}.*")
                  if not p.name.endswith(".lock"))


def cli(*args: str, env: dict[str, str] | None = None, preexec: Any = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SASCI_KG, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, preexec_fn=preexec, cwd=ROOT)


def assert_clean_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1 with one ``Error: …`` naming the problem, and no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Error: " in result.stderr, output[-3000:]
    assert_no_traceback(output)
    for word in words:
        assert word.lower() in result.stderr.lower(), (word, result.stderr)


def fsize_limit(limit: int, *, ignore: bool = True) -> Any:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        if ignore:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply


# ---------------------------------------------------------------------------------------
# A disk that fills.


def test_a_full_disk_during_a_load_is_a_clear_error_and_the_graph_stays(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    before = served_count(store)
    source = ntriples(tmp_path / "big.nt", 60_000, "big")
    # Writes fail with EFBIG (as with ENOSPC): a library error, the old store untouched.
    loader = start_load(store, source, fsize=1 << 20, sigxfsz="ignore", capture=True)
    output, _ = loader.communicate(timeout=60)
    assert loader.returncode == 1 and "StoreError" in output, output[-2000:]
    assert "previous store is still in place" in output, output[-2000:]
    assert served_count(store) == before and leftovers(store) == []
    _survived("disk full during a load (EFBIG): clear error, graph unchanged")
    # The default action of SIGXFSZ kills the loader outright: the same as a SIGKILL.
    loader = start_load(store, source, fsize=1 << 20)
    loader.wait(timeout=60)
    assert loader.returncode == -signal.SIGXFSZ
    assert served_count(store) == before
    _survived("disk full during a load (SIGXFSZ kill): graph unchanged")
    # With room again, the next load recovers.
    assert start_load(store, source).wait(timeout=120) == 0
    assert served_count(store) == 60_000 and leftovers(store) == []


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["--data", str(DATA), "--ontology", str(ONTOLOGY), "--no-shacl"]
    assert cli("load", "--store", str(store), *args).returncode == 0
    before = served_count(store)
    generation = store_generation(store)
    out = tmp_path / "build"
    assert cli("build", "--out", str(out), *args).returncode == 0
    golden = {p.name: p.read_bytes() for p in out.glob("*")}
    small = fsize_limit(64 * 1024)
    assert_clean_error(cli("load", "--store", str(store), *args, preexec=small), "too large")
    assert store_generation(store) == generation and served_count(store) == before
    assert leftovers(store) == []
    assert_clean_error(cli("build", "--out", str(out), *args, preexec=small), "too large")
    assert {p.name: p.read_bytes() for p in out.glob("*")} == golden  # no .tmp left either
    assert_clean_error(cli("export", "--store", str(store), "--format", "nt", "-o",
                           str(tmp_path / "export.nt"), preexec=small), "too large")
    _survived("disk full: load, build and export say so in one line", 3)


def test_a_full_disk_in_the_servers_writer_fails_the_write_not_the_graph(tmp_path: Path) -> None:
    import resource

    from sasci_kg.executor import UpdateJob, WorkerPool

    store = make_store(tmp_path / "store")
    before = served_count(store)
    pool = WorkerPool(store, size=1, writer=True)
    try:
        (writer,) = pool.pids()
        _, hard = resource.prlimit(writer, resource.RLIMIT_FSIZE)
        resource.prlimit(writer, resource.RLIMIT_FSIZE, (4096, hard))
        big = " ".join(f"<https://e.example/{i}> <https://e.example/p> \"{'x' * 200}\" ."
                       for i in range(2000))
        with pytest.raises(Exception) as info:
            pool.run(UpdateJob(f"INSERT DATA {{ GRAPH <{GRAPH}> {{ {big} }} }}"), timeout=30)
        assert type(info.value).__module__.startswith("sasci_kg"), repr(info.value)
        assert served_count(store) == before and leftovers(store) == []
        # Room again (the operator freed some space): the next write lands.
        resource.prlimit(writer, resource.RLIMIT_FSIZE, (hard, hard))
        pool.run(UpdateJob(f"INSERT DATA {{ GRAPH <{GRAPH}> {{ <a:b> <a:c> <a:d> }} }}"),
                 timeout=30)
    finally:
        pool.close()
    assert served_count(store) == before + 1
    _survived("disk full in the server's writer: write refused, graph unchanged, next write ok")


# ---------------------------------------------------------------------------------------
# A corrupted or missing store.


def corrupt(store: Path, how: str) -> None:
    if how == "garbled tables":
        for table in store.glob("*.sst"):
            data = bytearray(table.read_bytes())
            for i in range(0, len(data), 97):
                data[i] ^= 0xFF
            table.write_bytes(bytes(data))
    elif how == "garbled CURRENT":
        (store / "CURRENT").write_text("garbage\n")
    elif how == "truncated MANIFEST":
        with open(next(store.glob("MANIFEST-*")), "r+b") as manifest:
            manifest.truncate(10)
    elif how == "tables missing":
        for table in store.glob("*.sst"):
            table.unlink()
    else:
        raise AssertionError(how)


CORRUPTIONS = ["garbled tables", "garbled CURRENT", "truncated MANIFEST", "tables missing"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_corrupted_store_is_a_clear_error_and_a_load_repairs_it(tmp_path: Path,
                                                                  how: str) -> None:
    store = make_store(tmp_path / "store")
    before = served_count(store)
    corrupt(store, how)
    result = cli("query", "--store", str(store), COUNT)
    assert_clean_error(result, "sasci-kg load")
    # The server answers 503 with the same advice (never a 400 or a 500), then a load
    # repairs it without a restart.
    with app_for(store) as app:
        client = app.test_client()
        response = client.get("/sparql", query_string={"query": COUNT})
        assert response.status_code == 503, response.data
        problem_shape(503, response.headers["Content-Type"], response.data)
        assert client.get("/healthz").status_code in (200, 503)
        make_store(store)
        deadline = time.monotonic() + 10
        while (response := client.get("/sparql", query_string={"query": COUNT})).status_code \
                != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert response.status_code == 200, response.data
    assert served_count(store) == before
    _survived(f"corrupted store ({how}): clear error, 503, repaired by a load")
