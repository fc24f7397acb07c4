"""The graph store: open, query, bulk-load and atomically replace an Oxigraph store.

Every command reaches the graph through the :class:`Backend` interface defined here
(query, graphs, quads), never pyoxigraph directly, so that a remote SPARQL engine can stand
behind the same interface. Loading always builds a fresh store in a sibling directory and
swaps it in by rename, so a failed load leaves the previous store untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import select
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import pyoxigraph as ox

from .errors import QueryError, StoreError, StoreLockedError
from .remote_sparql import prepare_query
from .vocab import PREFIXES

QueryResult = ox.QuerySolutions | ox.QueryBoolean | ox.QueryTriples

DEFAULT_STORE = Path(".sasci-kg") / "store"


def default_store_path() -> Path:
    """The store location: ``SASCI_KG_STORE``, else ``.sasci-kg/store`` under the cwd."""
    env = os.environ.get("SASCI_KG_STORE")
    return Path(env) if env else DEFAULT_STORE


class Backend(Protocol):
    """What every store implementation offers: the embedded Oxigraph store or a remote engine."""

    def query(
        self,
        sparql: str,
        *,
        default_graph: list[str] | None = None,
        named_graphs: list[str] | None = None,
        substitutions: dict[str, ox.NamedNode | ox.Literal] | None = None,
        base_iri: str | None = None,
    ) -> QueryResult:
        """Run a SPARQL query; by default the default graph is the union of all graphs."""
        ...

    def graphs(self) -> list[str]:
        """The IRIs of the named graphs, sorted."""
        ...

    def quads(self, graph: str | None = None) -> Iterator[ox.Quad]:
        """Every quad (of one named graph, when given), in no particular order."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class OxigraphBackend:
    """The embedded Oxigraph store: read-only for serving and querying."""

    def __init__(self, path: Path | str, *, read_only: bool = True):
        self.path = Path(path)
        if not (self.path / "CURRENT").exists():
            raise StoreError(
                f"{self.path}: no Oxigraph store here; run `sasci-kg load` to build one "
                "(or point --store / SASCI_KG_STORE at an existing store)"
            )
        try:
            self._store = ox.Store.read_only(str(self.path)) if read_only else ox.Store(
                str(self.path)
            )
        except (OSError, RuntimeError) as exc:
            # RocksDB reports a damaged store (garbled tables, CURRENT or MANIFEST) as a
            # RuntimeError ("Corruption: …").
            raise StoreError(
                f"{self.path}: cannot open the store ({exc}); if it is damaged, run "
                "`sasci-kg load` to rebuild it"
            ) from exc

    @property
    def store(self) -> ox.Store:
        return self._store

    def query(
        self,
        sparql: str,
        *,
        default_graph: list[str] | None = None,
        named_graphs: list[str] | None = None,
        substitutions: dict[str, ox.NamedNode | ox.Literal] | None = None,
        base_iri: str | None = None,
    ) -> QueryResult:
        kwargs: dict[str, object] = {"prefixes": PREFIXES, "base_iri": base_iri}
        if default_graph:
            kwargs["default_graph"] = [ox.NamedNode(g) for g in default_graph]
        elif not names_own_dataset(sparql):
            kwargs["use_default_graph_as_union"] = True
        if named_graphs:
            kwargs["named_graphs"] = [ox.NamedNode(g) for g in named_graphs]
        if substitutions:
            # Bound as a VALUES block at the start of the WHERE group, not by pyoxigraph's
            # substitutions: those bind after planning, and a lookup that starts from the
            # bound resource then scans (an organisation's page at 10^6: see describe).
            sparql = prepare_query(sparql, prefixes={}, substitutions=substitutions).text
        try:
            return self._store.query(sparql, **kwargs)  # type: ignore[arg-type]
        except SyntaxError as exc:
            raise QueryError(f"SPARQL syntax error: {exc}") from exc
        except (ValueError, RuntimeError) as exc:
            # pyoxigraph raises RuntimeError for e.g. a substitution of an unprojected variable
            raise QueryError(f"query cannot run: {exc}") from exc

    def graphs(self) -> list[str]:
        return sorted(g.value for g in self._store.named_graphs() if isinstance(g, ox.NamedNode))

    def quads(self, graph: str | None = None) -> Iterator[ox.Quad]:
        graph_name = ox.NamedNode(graph) if graph else None
        return iter(self._store.quads_for_pattern(None, None, None, graph_name))

    def shared_triples(self, graph: str) -> int:
        """How many triples of ``graph`` are in another graph too: the default graph (the
        union of the named graphs, a bag in Oxigraph) holds each of them more than once."""
        name = ox.NamedNode(graph)
        shared = 0
        for quad in self._store.quads_for_pattern(None, None, None, name):
            for other in self._store.quads_for_pattern(quad.subject, quad.predicate,
                                                        quad.object, None):
                if other.graph_name != name:
                    shared += 1
                    break
        return shared

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        # pyoxigraph closes the store when the object goes; drop our reference.
        del self._store


def names_own_dataset(sparql: str) -> bool:
    """Whether a query has FROM / FROM NAMED clauses, which must win over the union default."""
    from .errors import QueryError as _QueryError
    from .guard import tokenize

    try:
        return any(token.keyword == "FROM" for token in tokenize(sparql))
    except _QueryError:
        return False  # the parser will report the syntax error


def open_store(path: Path | str | None = None, *, read_only: bool = True) -> OxigraphBackend:
    """Open the embedded store at ``path`` (default: :func:`default_store_path`)."""
    return OxigraphBackend(path or default_store_path(), read_only=read_only)


# ---------------------------------------------------------------------------------------
# Loading: build a staging store beside the live one, then swap the two directories.


@dataclass(frozen=True)
class LoadInput:
    """One thing to bulk-load: in-memory bytes or a file, with its format.

    ``graph`` is where the triples of a triples-only format go; quads keep their graphs.
    """

    format: ox.RdfFormat
    data: bytes | None = None
    path: Path | None = None
    graph: str | None = None
    label: str = ""


@dataclass
class LoadReport:
    """What a load did."""

    path: Path
    quads: int
    graphs: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


class _WriteLock:
    """An exclusive, non-blocking lock beside the store, held while a load runs."""

    def __init__(self, path: Path):
        self.path = _lock_path(path)
        self._fd: int | None = None

    def __enter__(self) -> _WriteLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StoreLockedError(
                f"{self.path.parent}: another `sasci-kg load` is writing this store "
                f"(lock {self.path}); wait for it to finish and run again"
            ) from exc
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically with renameat2(RENAME_EXCHANGE); False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _swap_in(staging: Path, live: Path) -> None:
    """Make ``staging`` the live store; the old one is removed. Never leaves no store."""
    if not live.exists():
        os.rename(staging, live)
        return
    if _exchange(staging, live):
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old store
        return
    retired = live.with_name(f".{live.name}.retired-{os.getpid()}")
    os.rename(live, retired)
    os.rename(staging, live)
    shutil.rmtree(retired, ignore_errors=True)


def _clean_leftovers(live: Path) -> None:
    """Remove staging or retired stores a killed load left behind (we hold the lock)."""
    for pattern in (f".{live.name}.staging-*", f".{live.name}.retired-*"):
        for leftover in live.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def replace_store(path: Path | str, build: Callable[[Path], None]) -> None:
    """Build a new store with ``build(staging)`` and swap it in at ``path``.

    ``build`` gets a staging directory beside the live store, which it fills with a complete
    Oxigraph store. The write lock is held throughout (another load or write: locked), leftovers
    of a killed run are removed first, and if ``build`` fails the live store is untouched.
    """
    live = Path(path)
    with _WriteLock(live):
        _clean_leftovers(live)
        staging = live.with_name(f".{live.name}.staging-{os.getpid()}")
        try:
            build(staging)
            _swap_in(staging, live)
        except OSError as exc:
            # A full disk (ENOSPC, EFBIG), a missing permission: the machine, not the data.
            raise StoreError(
                f"{live}: cannot write the new store ({exc}); free some disk space (or fix "
                "the permissions) and run again — the previous store is still in place"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already after a swap


def load_store(
    path: Path | str,
    inputs: Iterable[LoadInput],
    *,
    progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Bulk-load ``inputs`` into a new store and swap it in at ``path``.

    The new store is built beside the old one and compacted (``optimize``: an uncompacted
    store answers several times slower); only then does it replace the live store. If
    anything fails, the live store is untouched and the staging directory is removed.
    """
    live = Path(path)
    started = time.monotonic()
    loaded: dict[str, Any] = {}

    def build(staging: Path) -> None:
        store = ox.Store(str(staging))
        for item in inputs:
            if progress:
                progress(f"loading {item.label or item.path or 'data'}")
            to_graph = ox.NamedNode(item.graph) if item.graph else None
            source: bytes | IO[bytes] | None = item.data
            try:
                if item.path is not None:
                    store.bulk_load(path=str(item.path), format=item.format, to_graph=to_graph)
                else:
                    store.bulk_load(source, format=item.format, to_graph=to_graph)
            except SyntaxError as exc:
                raise StoreError(
                    f"{item.label or item.path or 'the data given'}: not valid "
                    f"{item.format.name} ({exc}); "
                    "fix the file and load again — the previous store is still in place"
                ) from exc
        if progress:
            progress("compacting the store")
        store.optimize()
        store.flush()
        loaded["quads"] = len(store)
        loaded["graphs"] = sorted(
            g.value for g in store.named_graphs() if isinstance(g, ox.NamedNode)
        )
        del store

    replace_store(live, build)
    return LoadReport(path=live, quads=loaded["quads"], graphs=loaded["graphs"],
                      seconds=time.monotonic() - started)


Generation = tuple[int, int, int]


def store_generation(path: Path | str) -> Generation | None:
    """An identity of the store directory that changes when a load swaps a new one in.

    Inode numbers alone are not enough: the directory a load removes frees its inodes for the
    next load's, so two loads between two looks could give the same pair again. The time the
    store's ``CURRENT`` file was written (nanoseconds) tells those apart; answers are cached
    under this identity, so it must never repeat.
    """
    try:  # os.path, not pathlib: this runs on every query request
        st = os.stat(os.path.join(path, "CURRENT"))
        directory = os.stat(path)
    except FileNotFoundError:
        return None
    return (directory.st_ino, st.st_ino, st.st_mtime_ns)


# inotify(7): what can change the store's generation. In the parent directory, an entry of
# the store's name made, removed or renamed (a load's swap); in the store, its CURRENT file
# written or replaced; either directory itself removed or moved; events lost.
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_SELF = 0x400 | 0x800  # IN_DELETE_SELF, IN_MOVE_SELF
_IN_LOST = 0x4000 | 0x8000  # IN_Q_OVERFLOW, IN_IGNORED
_IN_ONLYDIR, _IN_NONBLOCK, _IN_CLOEXEC = 0x01000000, 0o4000, 0o2000000
_IN_ENTRIES = _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
_PARENT_EVENTS = _IN_ENTRIES | _IN_SELF | _IN_ONLYDIR
_STORE_EVENTS = _IN_ENTRIES | _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_SELF | _IN_ONLYDIR
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name after it


class GenerationWatch:
    """:func:`store_generation` of one store, read again only when the kernel has said
    something that could change it happened (inotify), instead of on every call.

    Every query request asks for the generation (answers are cached under it): two ``stat``
    calls down the store's path, 4.5 µs warm but ~60 µs in a worker that has sat idle, a
    tenth of what the endpoint adds to a light query. Asked with nothing changed, this costs
    one ``poll`` of the inotify descriptor. A swap is seen by the next call after it: the
    kernel queues the event before the rename returns. Where inotify is not to be had, every
    call reads the generation, as :func:`store_generation` does. Each process makes its own
    descriptor (a forked copy would share the parent's events).
    """

    def __init__(self, path: Path | str):
        self.path = str(path)
        self._names = {os.path.basename(os.path.normpath(self.path)).encode(), b"CURRENT"}
        self._pid = -1
        self._libc: Any = None
        self._fd = -1
        self._poller: select.poll | None = None
        self._known: Generation | None = None
        self._stale = True
        self._lock = threading.Lock()  # (threads of one process share the events)

    def __call__(self) -> Generation | None:
        with self._lock:
            if self._pid != os.getpid():
                self._start()
            if self._poller is None:
                return store_generation(self.path)
            if self._poller.poll(0):
                self._stale = self._read_events() or self._stale
            if self._stale:
                self._stale = False
                self._watch_store()  # (a new store directory: watched from now on)
                self._known = store_generation(self.path)
            return self._known

    def close(self) -> None:
        """Let go of this process's descriptor."""
        with self._lock:
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
            self._fd, self._poller, self._pid = -1, None, -1

    def _start(self) -> None:
        self._pid, self._poller, self._stale = os.getpid(), None, True
        if self._fd >= 0:
            os.close(self._fd)  # (this process's copy of its parent's descriptor)
            self._fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd < 0:
            return
        parent = os.path.dirname(os.path.abspath(self.path)).encode()
        if libc.inotify_add_watch(fd, parent, _PARENT_EVENTS) < 0:
            os.close(fd)
            return
        self._libc, self._fd = libc, fd
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN)

    def _watch_store(self) -> None:
        # (No store there yet is fine: the parent's watch sees it come.)
        self._libc.inotify_add_watch(self._fd, self.path.encode(), _STORE_EVENTS)

    def _read_events(self) -> bool:
        """Whether any queued event may have changed the generation (all are taken)."""
        changed = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return changed
            at = 0
            while at + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size:at + _EVENT.size + length].rstrip(b"\0")
                at += _EVENT.size + length
                if mask & (_IN_SELF | _IN_LOST) or name in self._names:
                    changed = True


class ReloadingStore:
    """A read-only store that reopens itself when a load has swapped in a new one.

    Requests in flight keep the handle they started with (the old files stay readable
    until closed), so a swap never fails a request.
    """

    def __init__(self, path: Path | str, *, check_interval: float = 0.5):
        self.path = Path(path)
        self.check_interval = check_interval
        self._backend: OxigraphBackend | None = None
        self._generation: Generation | None = None
        self._checked = 0.0

    def get(self) -> OxigraphBackend:
        now = time.monotonic()
        if self._backend is None or now - self._checked >= self.check_interval:
            self._checked = now
            generation = store_generation(self.path)
            if self._backend is None or generation != self._generation:
                self._backend = open_store(self.path)
                self._generation = generation
        return self._backend
