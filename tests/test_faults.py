"""Faults: a load or build killed midway (SIGKILL), a disk that fills (``RLIMIT_FSIZE``), a
corrupted or missing store, a store locked by another process, a remote engine that is down,
slow or answers garbage, and a server restarted (gracefully or by SIGKILL) under load.

The properties: the previous graph keeps serving; nothing half-written is ever served (every
answer counts the old graph or the new one, never a mix); the next run recovers, and where it
cannot, it says why in one ``Error: …`` line (never a traceback); no committed write is lost
and no request is answered wrongly; no worker hangs.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import (
    TRIG,
    LiveServer,
    alive,
    app_for,
    free_port,
    make_store,
    run_live_server,
)
from hypothesis import example, given
from hypothesis import strategies as st
from project import DATA, ONTOLOGY, ROOT
from reliability_engine import GOOD_RESULT, BadEngine, Misbehaviour
from reliability_support import (
    assert_no_traceback,
    fuzz_settings,
    problem_shape,
    record,
    size,
    tree,
)

from sasci_kg.errors import (
    QueryError,
    RemoteError,
    RemoteTimeoutError,
    RemoteUnavailableError,
)
from sasci_kg.remote import RemoteBackend
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
# A load killed midway.


def test_a_load_killed_midway_leaves_the_previous_graph_serving(tmp_path: Path) -> None:
    """Deterministic: the loader reads a pipe; half the data is written, then SIGKILL."""
    store = make_store(tmp_path / "store")
    before = served_count(store)
    fifo = tmp_path / "input.nt"
    os.mkfifo(fifo)
    loader = start_load(store, fifo)
    with open(fifo, "w", encoding="utf-8") as pipe:
        for i in range(20_000):
            pipe.write(f"<https://e.example/{i}> <https://e.example/p> \"{i}\" .\n")
        pipe.flush()
        deadline = time.monotonic() + 20
        while not leftovers(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(store), "no staging store appeared"
        loader.send_signal(signal.SIGKILL)
        loader.wait(timeout=20)
    assert loader.returncode == -signal.SIGKILL
    # Half a new store sits beside the old one; the old one is what is served.
    assert leftovers(store) and served_count(store) == before
    # The next load recovers: leftovers cleaned, the new graph swapped in whole.
    source = ntriples(tmp_path / "next.nt", 1000, "next")
    result = start_load(store, source)
    assert result.wait(timeout=60) == 0
    assert served_count(store) == 1000 and leftovers(store) == []
    _survived("load killed midway (SIGKILL): previous graph served, next load recovers")


def test_random_kills_during_loads_never_expose_a_half_graph(tmp_path: Path) -> None:
    """SIGKILL at random moments of repeated loads while a server keeps counting: every
    answer is the old graph's size or the new one's, and the next load always recovers."""
    rounds = size(4, 30)
    store = make_store(tmp_path / "store")
    sizes = {served_count(store)}
    inputs = [ntriples(tmp_path / f"in{k}.nt", n, f"v{k}")
              for k, n in enumerate((60_000, 45_000))]
    sizes |= {60_000, 45_000}
    answers: list[int] = []
    failures: list[str] = []
    with run_live_server(store, tmp_path, query_workers=2) as server:
        stop = threading.Event()

        def count() -> None:
            session = requests.Session()
            while not stop.is_set():
                response = session.get(server.sparql, params={"query": COUNT, "format": "csv"},
                                       timeout=20)
                if response.status_code == 200:
                    answers.append(int(response.text.split()[1]))
                elif response.status_code != 503:
                    failures.append(f"{response.status_code} {response.text[:200]}")
            session.close()

        counter = threading.Thread(target=count)
        counter.start()
        rng = random.Random(20241002)
        kills = 0
        try:
            for k in range(rounds):
                loader = start_load(store, inputs[k % 2])
                time.sleep(rng.uniform(0.0, 1.5))
                if loader.poll() is None:
                    loader.send_signal(signal.SIGKILL)
                    kills += 1
                loader.wait(timeout=60)
                assert served_count(store) in sizes
            finisher = start_load(store, inputs[0])
            assert finisher.wait(timeout=120) == 0
        finally:
            stop.set()
            counter.join(timeout=30)
        assert served_count(store) == 60_000 and leftovers(store) == []
        assert requests.get(server.sparql, params={"query": COUNT, "format": "csv"},
                            timeout=20).text.split()[1] == "60000"
    assert failures == []
    assert answers and set(answers) <= sizes, sorted(set(answers) - sizes)
    record("faults-random-kills", rounds=rounds, kills=kills, answers=len(answers),
           distinct_counts=sorted(set(answers)))
    _survived("loads SIGKILLed at random moments while serving (no half graph served)", kills)


def test_a_build_killed_midway_leaves_complete_outputs_only(tmp_path: Path) -> None:
    out = tmp_path / "build"
    first = cli("build", "--out", str(out), "--no-shacl", "--data", str(DATA),
                "--ontology", str(ONTOLOGY))
    assert first.returncode == 0, first.stderr
    golden = {p.name: p.read_bytes() for p in out.glob("dataset.*")}
    for delay in (0.3, 0.8, 1.5):
        process = subprocess.Popen([*SASCI_KG, "build", "--out", str(out), "--no-shacl",
                                    "--data", str(DATA), "--ontology", str(ONTOLOGY)],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        # The outputs are the complete previous ones (a .tmp may be left; it is never read).
        assert {p.name: p.read_bytes() for p in out.glob("dataset.*")
                if not p.name.endswith(".tmp")} == golden
        _survived("build killed midway (SIGKILL): complete outputs only")
    again = cli("build", "--out", str(out), "--no-shacl", "--data", str(DATA),
                "--ontology", str(ONTOLOGY))
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in out.glob("dataset.*")} == golden


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


def test_a_store_removed_while_serving_is_503_until_a_load_brings_it_back(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path / "store")
    with run_live_server(store, tmp_path) as server:
        assert requests.get(server.sparql, params={"query": COUNT}, timeout=10).ok
        import shutil

        shutil.rmtree(store)
        response = requests.get(server.sparql, params={"query": COUNT}, timeout=10)
        problem_shape(503, response.headers["Content-Type"], response.content)
        assert response.headers.get("Retry-After")
        health = requests.get(server.url + "/healthz", timeout=10)
        assert health.status_code == 503
        assert_clean_error(cli("query", "--store", str(store), COUNT), "sasci-kg load")
        make_store(store)
        deadline = time.monotonic() + 10
        while not (ok := requests.get(server.sparql, params={"query": COUNT}, timeout=10)).ok:
            assert time.monotonic() < deadline, ok.text
            time.sleep(0.2)
        assert "Traceback" not in server.log()
    _survived("store removed while serving: 503, then served again after a load")


def _children(pid: int) -> list[int]:
    """The live direct children of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_a_killed_http_worker_is_replaced_and_its_query_workers_go(tmp_path: Path) -> None:
    """The OOM killer (or a crash in an extension) takes the HTTP worker: the server starts
    a new one with new query workers instead of stopping, and the old ones do not linger.
    (Under the prefork server the HTTP workers are the query workers: one is killed.)"""
    store = make_store(tmp_path / "store")
    with run_live_server(store, tmp_path) as server:
        assert requests.get(server.sparql, params={"query": COUNT}, timeout=10).ok
        children = _children(server.process.pid)
        old_query_workers = server.workers()
        assert old_query_workers
        prefork = set(children) == set(old_query_workers)
        victim = old_query_workers[0] if prefork else children[0]
        if not prefork:
            assert len(children) == 1
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(server.sparql, params={"query": COUNT}, timeout=10).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, server.log()
            assert server.process.poll() is None, server.log()
            time.sleep(0.2)
        gone = [victim] if prefork else old_query_workers
        deadline = time.monotonic() + 10
        while any(alive(p) for p in gone) or len(server.workers()) < len(old_query_workers):
            assert time.monotonic() < deadline, "the dead worker lingered or was not replaced"
            time.sleep(0.1)
        assert not set(server.workers()) & set(gone)
    _survived("HTTP worker killed: replaced, the endpoint answers again")


# ---------------------------------------------------------------------------------------
# A store locked by another process.


LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@contextmanager
def locked(store: Path, seconds: float = 60) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the store's write lock (as a running load does)."""
    lock = store.with_name(f".{store.name}.lock")
    holder = subprocess.Popen([PYTHON, "-c", LOCKER, str(lock), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_locked_store_refuses_loads_and_writes_clearly_and_keeps_serving(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path / "store")
    before, generation = served_count(store), store_generation(store)
    with run_live_server(store, tmp_path, updates=True, update_token=TOKEN) as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        insert = f"INSERT DATA {{ GRAPH <{GRAPH}> {{ <a:b> <a:c> <a:d> }} }}"
        with locked(store):
            result = cli("load", "--store", str(store), "--no-shacl", "--data", str(DATA),
                         "--ontology", str(ONTOLOGY))
            assert_clean_error(result, "another", "wait")
            response = requests.post(server.url + "/update", data={"update": insert},
                                     headers=auth, timeout=20)
            problem_shape(503, response.headers["Content-Type"], response.content)
            assert response.headers["Retry-After"]
            count = requests.get(server.sparql, params={"query": COUNT, "format": "csv"},
                                 timeout=10)
            assert count.ok and count.text.split()[1] == str(before)
            assert store_generation(store) == generation
        # The lock is gone with its holder: the write goes through.
        response = requests.post(server.url + "/update", data={"update": insert},
                                 headers=auth, timeout=20)
        assert response.status_code == 204, response.text
        count = requests.get(server.sparql, params={"query": COUNT, "format": "csv"}, timeout=10)
        assert count.text.split()[1] == str(before + 1)
    _survived("store locked by another process: load and write refused clearly, reads go on", 2)


def test_a_store_opened_for_writing_elsewhere_does_not_stop_reads_or_loads(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path / "store")
    holder = subprocess.Popen(
        [PYTHON, "-c", "import sys, time, pyoxigraph as ox\n"
         "s = ox.Store(sys.argv[1]); print('open', flush=True); time.sleep(60)", str(store)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert served_count(store) > 0
        with app_for(store) as app:
            response = app.test_client().get("/sparql", query_string={"query": COUNT})
            assert response.status_code == 200, response.data
        source = ntriples(tmp_path / "new.nt", 100, "new")
        assert start_load(store, source).wait(timeout=60) == 0
        assert served_count(store) == 100
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    _survived("store held open read-write by another process: reads and loads go on")


def _lock_is_free(store: Path) -> bool:
    fd = os.open(store.with_name(f".{store.name}.lock"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_killed_load_releases_its_lock(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    loader = start_load(store, ntriples(tmp_path / "in.nt", 60_000, "x"))
    time.sleep(0.5)
    loader.kill()
    loader.wait()
    assert _lock_is_free(store)
    _survived("lock released by a killed load")


# ---------------------------------------------------------------------------------------
# A remote engine that is down, slow or answers garbage.

REMOTE_TIMEOUT = 1.0
SELECT = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"


def remote(url: str) -> RemoteBackend:
    return RemoteBackend(url, timeout=REMOTE_TIMEOUT, graph_namespaces=("https://e.example/",))


def ask(backend: RemoteBackend) -> Any:
    return backend.query(SELECT, default_graph=["https://e.example/g"],
                         named_graphs=["https://e.example/g"])


def http_status(exc: RemoteError) -> int:
    """The status the web layer gives this library error (web/problems.py's table)."""
    from sasci_kg.web import problems

    return next(status for cls, status, _, _ in problems._MAP if isinstance(exc, cls))


misbehaviours = st.one_of(
    st.builds(Misbehaviour, kind=st.just("slow"), delay=st.floats(1.3, 3.0)),
    st.builds(Misbehaviour, kind=st.just("silent")),
    st.builds(Misbehaviour, kind=st.just("drip"), delay=st.floats(0.02, 0.2)),
    st.builds(Misbehaviour, kind=st.just("garbage"), body=st.binary(max_size=300)),
    st.builds(Misbehaviour, kind=st.just("garbage"),
              body=st.sampled_from([GOOD_RESULT[: n] for n in range(1, len(GOOD_RESULT), 7)])),
    st.builds(Misbehaviour, kind=st.just("truncated")),
    st.builds(Misbehaviour, kind=st.just("type"),
              content_type=st.sampled_from(["text/html", "", "application/octet-stream",
                                            "text/plain", "application/sparql-results+xml"])),
    st.builds(Misbehaviour, kind=st.just("status"),
              status=st.sampled_from([201, 204, 301, 400, 401, 403, 404, 500, 502, 503, 504]),
              body=st.binary(max_size=100)),
    st.builds(Misbehaviour, kind=st.sampled_from(["reset", "close"])),
)


@pytest.fixture(scope="module")
def engine() -> Iterator[BadEngine]:
    with BadEngine() as bad:
        yield bad


@fuzz_settings(ci=30, long=600)
@given(how=misbehaviours)
@example(how=Misbehaviour(kind="status", status=400))
def test_a_misbehaving_remote_engine_is_a_clear_502_or_504_in_time(engine: BadEngine,
                                                                   how: Misbehaviour) -> None:
    engine.misbehaviour = how
    started = time.monotonic()
    try:
        result = ask(remote(engine.url))
    except RemoteError as exc:
        elapsed = time.monotonic() - started
        status = http_status(exc)
        assert status in (502, 504), (how, exc)
        assert (status == 504) == isinstance(exc, RemoteTimeoutError), (how, exc)
        if how.kind in ("slow", "silent", "drip"):
            assert isinstance(exc, RemoteTimeoutError), (how, exc)
        assert str(exc).strip() and "Traceback" not in str(exc)
    except QueryError as exc:
        # The engine refused the query itself (400): the client's to fix, so a 400 here too.
        elapsed = time.monotonic() - started
        assert how.kind == "status" and how.status == 400, (how, exc)
    except Exception as exc:  # anything else is a bug: it would be a 500
        raise AssertionError(f"{how}: {type(exc).__name__}: {exc}") from exc
    else:
        elapsed = time.monotonic() - started
        # Only an answer that is a whole, valid result may come back as one.
        rows = list(result)  # type: ignore[call-overload]
        assert how.kind in ("garbage", "type") and rows, (how, rows)
    assert elapsed < REMOTE_TIMEOUT + 2.0, (how, elapsed)
    _survived("remote engine misbehaving (slow, silent, garbage, cut short, …): 502/504 in time")


def test_a_remote_engine_that_is_down_is_a_502_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}/sparql"
    started = time.monotonic()
    with pytest.raises(RemoteUnavailableError) as info:
        ask(remote(url))
    assert time.monotonic() - started < 1.0 and http_status(info.value) == 502
    assert "Traceback" not in str(info.value)
    _survived("remote engine down: 502 at once")


def test_a_silent_remote_engine_hangs_no_worker(engine: BadEngine) -> None:
    """Many callers at once against an engine that never answers: all give up in time,
    and no thread or connection is left hanging on either side."""
    engine.misbehaviour = Misbehaviour(kind="silent")
    def clients() -> int:  # threads of this process that are not the fake engine's
        return sum(1 for t in threading.enumerate() if "process_request" not in t.name)

    baseline = clients()
    outcomes: list[BaseException | None] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            ask(remote(engine.url))
            outcome: BaseException | None = None
        except BaseException as exc:  # noqa: BLE001 - recorded and checked below
            outcome = exc
        with lock:
            outcomes.append(outcome)

    started = time.monotonic()
    callers = [threading.Thread(target=call) for _ in range(size(8, 32))]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=REMOTE_TIMEOUT + 10)
    elapsed = time.monotonic() - started
    assert not any(c.is_alive() for c in callers)
    assert all(isinstance(o, RemoteTimeoutError) for o in outcomes), outcomes
    assert elapsed < REMOTE_TIMEOUT + 3.0, elapsed
    assert clients() <= baseline
    engine.misbehaviour = Misbehaviour()
    ask(remote(engine.url))  # the engine and the client still work
    _survived("remote engine silent, many callers at once: all 504 in time, none hung",
              len(callers))


def _served_level_available() -> bool:
    from dataclasses import fields

    from sasci_kg.web.config import ServerConfig

    return any(f.name == "query_url" for f in fields(ServerConfig))


@pytest.mark.skipif(not _served_level_available(), reason="serve has no remote backend yet")
def test_serve_in_front_of_a_misbehaving_engine_answers_502_504_and_stays_up(
    tmp_path: Path,
) -> None:
    with BadEngine() as bad:
        with run_live_server(tmp_path / "unused-store", tmp_path, query_url=bad.url,
                             remote_timeout=REMOTE_TIMEOUT, timeout=2.0) as server:
            for how, statuses in ((Misbehaviour(kind="silent"), {504}),
                                  (Misbehaviour(kind="slow", delay=2.5), {504}),
                                  (Misbehaviour(kind="garbage", body=b"{not json"), {502}),
                                  (Misbehaviour(kind="truncated"), {502, 504}),
                                  (Misbehaviour(kind="status", status=500), {502}),
                                  (Misbehaviour(kind="reset"), {502})):
                bad.misbehaviour = how
                started = time.monotonic()
                response = requests.get(server.sparql, params={"query": SELECT}, timeout=30)
                assert response.status_code in statuses, (how, response.text[:300])
                body = problem_shape(response.status_code, response.headers["Content-Type"],
                                     response.content)
                assert bad.url not in body["detail"], body
                assert time.monotonic() - started < 2.0 + 3.0
                _survived("serve in front of a misbehaving engine: 502/504, stays up")
            bad.misbehaviour = Misbehaviour()
            assert requests.get(server.url + "/healthz", timeout=10).status_code in (200, 503)


# ---------------------------------------------------------------------------------------
# A server restarted under load: no committed write lost, no request answered wrongly.


@dataclass
class Ledger:
    """What the clients saw: inserts acknowledged (204) or uncertain, and every count read."""

    committed: dict[int, float] = field(default_factory=dict)  # id → when its 204 arrived
    started: dict[int, float] = field(default_factory=dict)  # id → when it was sent
    uncertain: set[int] = field(default_factory=set)
    reads: list[tuple[float, float, int]] = field(default_factory=list)  # sent, answered, n
    statuses: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, what: str) -> None:
        with self.lock:
            self.statuses[what] = self.statuses.get(what, 0) + 1


def _insert(i: int) -> str:
    # Three triples per insert: a count that is not a multiple of 3 would be half an update.
    return (f"INSERT DATA {{ GRAPH <{GRAPH}> {{ <https://e.example/w/{i}> <https://e.example/p> "
            f"1, 2, 3 }} }}")


READ = (f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH <{GRAPH}> "
        "{ ?s <https://e.example/p> ?o } }")


@contextmanager
def server_on(port: int, store: Path, log_dir: Path, **settings: Any) -> Iterator[LiveServer]:
    """``run_live_server`` on a port of our choosing, so that clients find the next server
    at the same address."""
    import conftest

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conftest, "free_port", lambda: port)
        with run_live_server(store, log_dir, **settings) as server:
            patch.undo()
            yield server


def test_restarts_under_load_lose_no_committed_write_and_answer_nothing_wrongly(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path / "store", TRIG)
    port = free_port()
    seconds = size(9, 60)
    ledger = Ledger()
    stop = threading.Event()
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def writer() -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            ledger.started[i] = time.monotonic()
            try:
                response = session.post(url + "/update", data={"update": _insert(i)},
                                        headers=auth, timeout=20)
            except requests.RequestException:
                ledger.uncertain.add(i)
                ledger.saw("connection error")
                session = requests.Session()
                time.sleep(0.05)
                continue
            ledger.saw(str(response.status_code))
            if response.status_code == 204:
                ledger.committed[i] = time.monotonic()
            elif response.status_code == 503:
                problem_shape(503, response.headers["Content-Type"], response.content)
            else:
                ledger.uncertain.add(i)  # recorded, and failed below
        session.close()

    def reader() -> None:
        session = requests.Session()
        while not stop.is_set():
            sent = time.monotonic()
            try:
                response = session.get(url + "/sparql", params={"query": READ, "format": "csv"},
                                       timeout=20)
            except requests.RequestException:
                ledger.saw("connection error")
                session = requests.Session()
                time.sleep(0.05)
                continue
            ledger.saw(str(response.status_code))
            if response.status_code == 200:
                with ledger.lock:
                    ledger.reads.append((sent, time.monotonic(),
                                         int(response.text.split()[1])))
            elif response.status_code != 503:
                raise AssertionError(response.text)
        session.close()

    restarts: list[str] = []
    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(3)]
    with server_on(port, store, tmp_path, updates=True, update_token=TOKEN) as one:
        for thread in threads:
            thread.start()
        time.sleep(seconds / 3)
        pid = one.process.pid
        one.process.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish
        one.process.wait(timeout=60)
        restarts.append("SIGTERM")
    with server_on(port, store, tmp_path, updates=True, update_token=TOKEN) as two:
        time.sleep(seconds / 3)
        everyone = tree(two.process.pid)
        for process in everyone:  # a crash: every process of the server at once
            try:
                os.kill(process, signal.SIGKILL)
            except ProcessLookupError:
                pass
        two.process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in everyone) and time.monotonic() < deadline:
            time.sleep(0.05)
        restarts.append("SIGKILL")
    with server_on(port, store, tmp_path, updates=True, update_token=TOKEN) as three:
        time.sleep(seconds / 3)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        final = requests.get(three.sparql, timeout=20, params={
            "query": f"SELECT ?s WHERE {{ GRAPH <{GRAPH}> {{ ?s ?p ?o }} }}", "format": "csv"})
        assert final.status_code == 200
        present: dict[int, int] = {}
        for line in final.text.split()[1:]:
            i = int(line.rsplit("/", 1)[1])
            present[i] = present.get(i, 0) + 1
        logs = one.log() + two.log() + three.log()
    assert pid not in tree(os.getpid())

    # No committed write lost; nothing written that was never sent; no half update.
    assert set(ledger.committed) <= set(present), sorted(set(ledger.committed) - set(present))
    assert set(present) <= set(ledger.committed) | ledger.uncertain
    assert all(n == 3 for n in present.values()), present
    # No request answered wrongly: each count lies between the writes acknowledged before
    # the read was sent and the writes sent before its answer arrived, in whole updates.
    for sent, answered, n in ledger.reads:
        assert n % 3 == 0, n
        low = sum(1 for t in ledger.committed.values() if t < sent)
        high = sum(1 for t in ledger.started.values() if t < answered)
        assert low <= n // 3 <= high, (sent, answered, n, low, high)
    assert not (set(ledger.statuses) - {"200", "204", "503", "connection error"}), ledger.statuses
    assert ledger.uncertain <= {i for i in ledger.started}, ledger.uncertain
    assert "Traceback" not in logs
    record("faults-restart", seconds=seconds, restarts=restarts,
           writes_committed=len(ledger.committed), writes_uncertain=len(ledger.uncertain),
           writes_uncertain_but_present=len(ledger.uncertain & set(present)),
           reads_checked=len(ledger.reads), statuses=ledger.statuses)
    _survived("server restarted under load (SIGTERM, then SIGKILL of every process): "
              "no committed write lost, no wrong answer", 2)

