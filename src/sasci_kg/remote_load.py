"""Loading a rebuilt dataset into a remote engine without a half-loaded moment.

:func:`replace_graphs` uploads every graph under a staging name, checks its size (and,
optionally, reads it back to find triples the engine rewrote), then moves all the staged
graphs over the live ones in one update request and drops graphs that are gone. Only graphs
under the backend's namespaces are ever touched.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyoxigraph as ox

from .errors import RemoteError, StoreError
from .remote_http import safe_url
from .store import LoadInput

if TYPE_CHECKING:
    from .remote import RemoteBackend

#: Where staging graphs live while a load runs: outside every namespace we publish, so no
#: query's dataset ever includes one, and any found at the start of a load are leftovers.
STAGING_NAMESPACE = "urn:sasci-kg:staging:"



@dataclass(frozen=True)
class Alteration:
    """A triple the engine stored differently from what was sent (N-Triples text)."""

    graph: str
    sent: str
    stored: str | None

    def __str__(self) -> str:
        came_back = f"came back as {self.stored}" if self.stored else "is missing"
        return f"<{self.graph}>: {self.sent} {came_back}"


@dataclass
class RemoteLoadReport:
    """What a remote load did (sizes as counted by the engine afterwards)."""

    target: str
    quads: int
    graphs: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    altered: list[Alteration] = field(default_factory=list)
    seconds: float = 0.0


def _has_bnode(triple: ox.Triple) -> bool:
    return isinstance(triple.subject, ox.BlankNode) or isinstance(triple.object, ox.BlankNode)


def _alterations(backend: RemoteBackend, store: ox.Store, graph: str, staged: str,
                 size: int) -> list[Alteration]:
    """Triples of ``graph`` that the engine stored differently (blank nodes aside: their
    labels are the engine's own)."""
    sent = {q.triple for q in store.quads_for_pattern(None, None, None, ox.NamedNode(graph))
            if not _has_bnode(q.triple)}
    got = {q.triple for q in backend.graph_quads(staged, size) if not _has_bnode(q.triple)}
    found = []
    extra = sorted(got - sent, key=str)
    for triple in sorted(sent - got, key=str):
        twin = next((t for t in extra if t.subject == triple.subject and
                     t.predicate == triple.predicate), None)
        found.append(Alteration(graph, f"{triple} .", f"{twin} ." if twin else None))
    return found


def _staged_dataset(inputs: Iterable[LoadInput], directory: str,
                    progress: Callable[[str], None] | None) -> ox.Store:
    """The inputs in a scratch on-disk store: the same graphs the embedded load would make."""
    store = ox.Store(directory)
    for item in inputs:
        if progress:
            progress(f"reading {item.label or item.path or 'data'}")
        to_graph = ox.NamedNode(item.graph) if item.graph else None
        try:
            if item.path is not None:
                store.bulk_load(path=str(item.path), format=item.format, to_graph=to_graph)
            else:
                store.bulk_load(item.data, format=item.format, to_graph=to_graph)
        except SyntaxError as exc:
            raise StoreError(f"{item.label or item.path}: not valid {item.format.name} ({exc}); "
                             "fix the file and load again — the engine was not changed") from exc
    return store


def _graph_chunks(store: ox.Store, graph: str, chunk: int) -> Iterator[bytes]:
    """N-Triples of one graph in chunks; a graph with blank nodes goes in one piece (each
    request would otherwise mint its own blank nodes)."""
    name = ox.NamedNode(graph)
    has_bnodes = bool(store.query(
        "ASK { GRAPH ?g { ?s ?p ?o FILTER(isBlank(?s) || isBlank(?o)) } }",
        substitutions={ox.Variable("g"): name}))
    size = chunk if not has_bnodes else None
    batch: list[ox.Triple] = []
    for quad in store.quads_for_pattern(None, None, None, name):
        batch.append(quad.triple)
        if size is not None and len(batch) >= size:
            yield _ntriples(batch)
            batch = []
    if batch or size is None:
        yield _ntriples(batch)


def _ntriples(triples: list[ox.Triple]) -> bytes:
    data = ox.serialize(triples, format=ox.RdfFormat.N_TRIPLES)
    assert data is not None  # None only when writing to a file
    return data


def replace_graphs(
    backend: RemoteBackend,
    inputs: Iterable[LoadInput],
    *,
    progress: Callable[[str], None] | None = None,
    prune: bool = True,
    chunk_triples: int = 50_000,
    verify: bool = True,
    accept_altered: bool = False,
) -> RemoteLoadReport:
    """Replace our graphs in the engine with ``inputs``, safely.

    Each graph is uploaded under a staging name, its size checked against what was sent;
    then one update request moves every staged graph over its live one and (``prune``)
    drops graphs of ours that the new dataset no longer has. Queries never see a
    half-loaded graph; afterwards the engine holds exactly the new graphs of ours — no
    staging graphs, no leftovers. Graphs outside ``backend.graph_namespaces`` are never
    touched, and an input with such a graph (or default-graph triples) is refused.

    With ``verify`` each staged graph is read back and compared with what was sent: an
    engine that rewrites literals (Virtuoso 7 turns ``"P5Y"^^xsd:duration`` into ``"60"``)
    makes the load fail before the swap, unless ``accept_altered``, when the changes are
    only listed in the report.
    """
    started = time.monotonic()
    if not backend.update_url:
        raise StoreError("loading into a remote engine needs its update URL: give --update-url "
                         "(or SASCI_KG_UPDATE_URL)")
    workdir = tempfile.mkdtemp(prefix="sasci-kg-remote-load-")
    try:
        store = _staged_dataset(inputs, workdir, progress)
        if any(True for _ in store.quads_for_pattern(None, None, None, ox.DefaultGraph())):
            raise StoreError("the input has triples in the default graph; a remote engine "
                             "keeps data only in named graphs: put them in a named graph "
                             "(TriG/N-Quads) or load a Turtle/N-Triples file, which gets one")
        graphs = sorted(g.value for g in store.named_graphs() if isinstance(g, ox.NamedNode))
        foreign = [g for g in graphs if not g.startswith(backend.graph_namespaces)]
        if foreign:
            raise StoreError(
                f"graph <{foreign[0]}> is outside our graph namespaces "
                f"({', '.join(backend.graph_namespaces)}); the loader never touches other "
                "graphs: rename the graph, or add its namespace with --graph-namespace / "
                "SASCI_KG_GRAPH_NAMESPACES")
        expected = {g: sum(1 for _ in store.quads_for_pattern(None, None, None,
                                                              ox.NamedNode(g)))
                    for g in graphs}

        # Leftovers of a load that was killed before its swap: ours by construction.
        leftovers = backend.graphs_under([STAGING_NAMESPACE])
        if leftovers:
            backend.update(" ;\n".join(f"DROP SILENT GRAPH <{g}>" for g in leftovers))

        run = f"{STAGING_NAMESPACE}{int(time.time())}-{secrets.token_hex(4)}:"
        staging = {g: f"{run}{index}" for index, g in enumerate(graphs)}
        try:
            for graph in graphs:
                if progress:
                    progress(f"uploading <{graph}> ({expected[graph]} triples)")
                for number, body in enumerate(_graph_chunks(store, graph, chunk_triples)):
                    backend.put_graph(staging[graph], body, append=number > 0)
            sizes = backend.graph_sizes(staging.values())
            for graph in graphs:
                got = sizes.get(staging[graph], 0)
                if got != expected[graph]:
                    raise RemoteError(
                        f"graph <{graph}>: the engine holds {got} triples after the upload, "
                        f"{expected[graph]} were sent; the live graphs were not changed")
            altered: list[Alteration] = []
            if verify:
                if progress:
                    progress("reading the staged graphs back to compare")
                for graph in graphs:
                    altered += _alterations(backend, store, graph, staging[graph],
                                            expected[graph])
            if altered and not accept_altered:
                raise RemoteError(
                    f"the engine stored {len(altered)} triple(s) differently from what was "
                    f"sent, e.g. {altered[0]}; the live graphs were not changed. Change the "
                    "data, or load anyway with --accept-engine-changes (each change is "
                    "listed)")
            live = backend.graphs_uncached()
            dropped = [g for g in live if g not in expected] if prune else []
            operations = [f"MOVE <{staging[g]}> TO <{g}>" for g in graphs]
            operations += [f"DROP SILENT GRAPH <{g}>" for g in dropped]
            if progress:
                progress(f"swapping in {len(graphs)} graphs"
                         f"{f', dropping {len(dropped)}' if dropped else ''}")
            if operations:
                backend.update(" ;\n".join(operations))
        except BaseException:
            _drop_quietly(backend, staging.values())
            raise
        del store
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    # Check the result as the engine now reports it, not as planned.
    listed = backend.graphs_under([*backend.graph_namespaces, run])
    after = [g for g in listed if not g.startswith(run)]
    stray = [g for g in listed if g.startswith(run)]
    sizes = backend.graph_sizes(after)
    wrong = [g for g in graphs if sizes.get(g) != expected[g]]
    extra = [g for g in after if g not in expected] if prune else []
    if stray or wrong or extra:
        problems = [f"graph <{g}> has {sizes.get(g, 0)} triples, not {expected[g]}"
                    for g in wrong[:3]]
        problems += [f"graph <{g}> should have been dropped" for g in extra[:3]]
        if stray:
            problems.append(f"{len(stray)} staging graph(s) remain")
        raise RemoteError("the swap did not finish as planned: " + "; ".join(problems) +
                          "; run the load again (it cleans up) and check the engine's log")
    return RemoteLoadReport(
        target=safe_url(backend.query_url),
        quads=sum(sizes.values()),
        graphs=sorted(after),
        dropped=dropped,
        altered=altered,
        seconds=time.monotonic() - started,
    )


def _drop_quietly(backend: RemoteBackend, graphs: Iterable[str]) -> None:
    """Best-effort removal of staging graphs after a failed load (the next load retries)."""
    names = list(graphs)
    if not names:
        return
    try:
        backend.update(" ;\n".join(f"DROP SILENT GRAPH <{g}>" for g in names))
    except RemoteError:
        pass
