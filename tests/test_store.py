"""The store: bulk load, atomic swap, a failed load keeps the old store, locks, reopening."""

from __future__ import annotations

import os
from pathlib import Path

import pyoxigraph as ox
import pytest

from sasci_kg.errors import QueryError, StoreError, StoreLockedError
from sasci_kg.store import (
    GenerationWatch,
    LoadInput,
    OxigraphBackend,
    ReloadingStore,
    _WriteLock,
    load_store,
    open_store,
    replace_store,
    store_generation,
)

G1 = "https://w3id.org/sasci-kg/graph/source/one"
G2 = "https://w3id.org/sasci-kg/graph/source/two"


def trig(value: str) -> LoadInput:
    data = (
        f'<http://ex.org/a> <https://schema.org/name> "{value}" <{G1}> .\n'
        f'<http://ex.org/b> <https://schema.org/name> "b" <{G2}> .\n'
    ).encode()
    return LoadInput(format=ox.RdfFormat.N_QUADS, data=data, label="test data")


def names(backend: OxigraphBackend) -> list[str]:
    result = backend.query("SELECT ?n WHERE { ?s schema:name ?n } ORDER BY ?n")
    assert isinstance(result, ox.QuerySolutions)
    return [s["n"].value for s in result]  # type: ignore[union-attr]


def test_load_then_query_union_and_named_graphs(tmp_path: Path) -> None:
    path = tmp_path / "store"
    report = load_store(path, [trig("first")])
    assert report.quads == 2 and report.graphs == [G1, G2]
    backend = open_store(path)
    # default prefixes apply (schema: is not declared) and the default graph is the union
    assert names(backend) == ["b", "first"]
    only_one = backend.query("SELECT ?n WHERE { ?s schema:name ?n }", default_graph=[G2])
    assert [s["n"].value for s in only_one] == ["b"]  # type: ignore[union-attr]
    graphs = backend.query("SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } } ORDER BY ?g")
    assert [s["g"].value for s in graphs] == [G1, G2]  # type: ignore[union-attr]
    assert backend.graphs() == [G1, G2]


def test_store_is_plain_oxigraph_directory(tmp_path: Path) -> None:
    path = tmp_path / "store"
    load_store(path, [trig("x")])
    store = ox.Store(str(path))
    assert len(store) == 2


def test_reload_swaps_and_leaves_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "store"
    load_store(path, [trig("first")])
    before = store_generation(path)
    load_store(path, [trig("second")])
    assert store_generation(path) != before
    assert names(open_store(path)) == ["b", "second"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store.lock", "store"]


def test_failed_load_keeps_previous_store(tmp_path: Path) -> None:
    path = tmp_path / "store"
    load_store(path, [trig("first")])
    bad = LoadInput(format=ox.RdfFormat.N_QUADS, data=b"<http://a> <http://b> broken .\n",
                    label="bad.nq")
    expected = r"bad.nq: not valid N-Quads \(Parser error at line 1.*previous store is still"
    with pytest.raises(StoreError, match=expected):
        load_store(path, [trig("second"), bad])
    assert names(open_store(path)) == ["b", "first"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store.lock", "store"]


def test_data_without_a_name_is_named_in_the_error(tmp_path: Path) -> None:
    """(It said "None: not valid TriG".)"""
    bad = LoadInput(format=ox.RdfFormat.TRIG, data=b"<urn:a> <urn:b> <urn:c> <urn:g> .\n")
    with pytest.raises(StoreError, match=r"^the data given: not valid TriG \(Parser error"):
        load_store(tmp_path / "store", [bad])


def test_replace_store_swaps_in_what_build_made_or_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "store"
    load_store(path, [trig("first")])
    seen: list[Path] = []

    def build(staging: Path) -> None:
        seen.append(staging)
        store = ox.Store(str(staging))
        store.load(f'<http://ex.org/a> <https://schema.org/name> "built" <{G1}> .\n'.encode(),
                   format=ox.RdfFormat.N_QUADS)
        store.flush()

    replace_store(path, build)
    assert names(open_store(path)) == ["built"]
    assert seen[0].parent == tmp_path and seen[0] != path  # built beside, not in place

    def failing(staging: Path) -> None:
        build(staging)
        raise StoreError("the build gave up")

    with pytest.raises(StoreError, match="gave up"):
        replace_store(path, failing)
    assert names(open_store(path)) == ["built"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store.lock", "store"]


def test_leftover_staging_from_a_killed_load_is_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "store"
    load_store(path, [trig("first")])
    leftover = tmp_path / ".store.staging-99999"
    leftover.mkdir()
    (leftover / "junk").write_text("half-written")
    load_store(path, [trig("second")])
    assert not leftover.exists()


def test_concurrent_load_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with _WriteLock(path):
        pid = os.fork()
        if pid == 0:  # child: try to load while the parent holds the lock
            try:
                load_store(path, [trig("x")])
            except StoreLockedError:
                os._exit(3)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 3
    assert not path.exists()


def test_missing_or_damaged_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no Oxigraph store here; run `sasci-kg load`"):
        open_store(tmp_path / "nowhere")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "CURRENT").write_text("MANIFEST-999999\n")
    with pytest.raises(StoreError, match="cannot open the store"):
        open_store(damaged)


def test_syntax_error_is_a_query_error(tmp_path: Path) -> None:
    path = tmp_path / "store"
    load_store(path, [trig("x")])
    with pytest.raises(QueryError, match="SPARQL syntax error: error at 1:"):
        open_store(path).query("SELECT * WHERE { ?s ?p }")


def test_reloading_store_picks_up_a_swap(tmp_path: Path) -> None:
    path = tmp_path / "store"
    load_store(path, [trig("first")])
    reloading = ReloadingStore(path, check_interval=0)
    held = reloading.get()
    assert names(held) == ["b", "first"]
    load_store(path, [trig("second")])
    assert names(reloading.get()) == ["b", "second"]
    # a handle taken before the swap still answers (requests in flight do not fail)
    assert names(held) == ["b", "first"]


def test_a_query_with_its_own_from_is_not_overridden_by_the_union(tmp_path: Path) -> None:
    path = tmp_path / "store"
    load_store(path, [trig("x")])
    backend = open_store(path)
    result = backend.query(f"SELECT ?n FROM <{G2}> WHERE {{ ?s schema:name ?n }}")
    assert [s["n"].value for s in result] == ["b"]  # type: ignore[union-attr]
    # a FROM inside a string or IRI is not a dataset clause
    result = backend.query('SELECT ?n WHERE { ?s schema:name ?n FILTER(?n != "FROM") } ORDER BY ?n')
    assert [s["n"].value for s in result] == ["b", "x"]  # type: ignore[union-attr]


def test_the_generation_watch_sees_every_change_at_once(tmp_path: Path) -> None:
    # It reads the generation again only when inotify reports a change; each change below
    # is seen by the very next call, as store_generation sees it.
    live = tmp_path / "store"
    watch = GenerationWatch(live)
    assert watch() is None  # no store yet
    load_store(live, [trig("1")])
    assert watch() == store_generation(live) is not None
    seen = {watch()}
    for value in ("2", "3"):  # loads: each a swap of the whole directory
        load_store(live, [trig(value)])
        assert watch() == store_generation(live) not in seen
        seen.add(watch())
    current = live / "CURRENT"  # the store's CURRENT file rewritten in place, or replaced
    os.utime(current, ns=(1, 1))
    assert watch() == store_generation(live) not in seen
    seen.add(watch())
    (live / "CURRENT.new").write_bytes(current.read_bytes())
    os.rename(live / "CURRENT.new", current)
    assert watch() == store_generation(live) not in seen
    (live / "LOG.other").write_text("not the store's identity")
    assert watch() == store_generation(live)
    watch.close()


def test_the_generation_watch_asks_the_kernel_once_when_nothing_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = tmp_path / "store"
    load_store(live, [trig("1")])
    watch = GenerationWatch(live)
    first = watch()
    looked: list[str] = []
    monkeypatch.setattr("sasci_kg.store.store_generation",
                        lambda path: looked.append(path) or first)
    assert [watch() for _ in range(5)] == [first] * 5
    assert looked == []
    load_store(live, [trig("2")])
    watch()
    assert looked == [str(live)]
    watch.close()


def test_the_generation_watch_falls_back_to_looking_each_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without inotify (another kernel, a limit reached), every call reads the generation.
    import ctypes

    class NoInotify:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def inotify_init1(self, flags: int) -> int:
            return -1

    monkeypatch.setattr(ctypes, "CDLL", NoInotify)
    live = tmp_path / "store"
    load_store(live, [trig("1")])
    watch = GenerationWatch(live)
    assert watch() == store_generation(live)
    load_store(live, [trig("2")])
    assert watch() == store_generation(live)
