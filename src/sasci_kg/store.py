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
import shutil
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
