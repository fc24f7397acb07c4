"""Connection tracing: how two entities are connected, what is near one, the network.

Takes a :class:`~sasci_kg.store.Backend` and names (or IRIs) as people type them; gives
shortest connections with every step explained in words and backed by the fact nodes'
evidence (:meth:`Tracer.trace`), everything within some links of an entity
(:meth:`Tracer.connections`), and the network for pictures (:meth:`Tracer.network`).
Everything goes through ``backend.query`` in SPARQL 1.1, one query per hop.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import NetworkTooLargeError, QueryError
from .network import NetEdge, NetNode, Network
from .store import Backend
from .trace_describe import Description, describe, make_link, wanted
from .trace_entities import LabelIndex, as_iri, kind_from_iri
from .trace_explain import Link, Node, Path, Step
from .trace_links import LINK_KINDS, RawLink, check_kinds, fetch_all_links, fetch_links
from .trace_result import GROUPS, Connection, Connections, TraceResult
from .trace_search import Fetch, Neighbourhood, bidirectional_search, grow_ball

DEFAULT_MAX_LENGTH = 4
MAX_LENGTH = 8
DEFAULT_PATHS = 3
MAX_PATHS = 20
DEFAULT_TIMEOUT = 10.0
DEFAULT_HOPS = 2
MAX_HOPS = 4
DEFAULT_MAX_LINKS = 100_000
DEFAULT_NETWORK_LINKS = 5_000
DEFAULT_MAX_RESULTS = 1_000
#: What a picture of the network shows unless asked otherwise: people, organisations,
#: sessions, the event, the project and its funder (no ideas, no quote or
#: organisation–session shortcuts, which the person-level links already draw).
NETWORK_KINDS: tuple[str, ...] = ("funding", "partnership", "hosting", "unit",
                                  "affiliation", "role", "session")

__all__ = [
    "Connection", "Connections", "GROUPS", "LINK_KINDS", "Link", "NETWORK_KINDS", "Node",
    "Path", "Step", "TraceResult", "Tracer", "connections", "extract_network", "paths_network",
    "resolve_entity", "trace", "tracer_for",
]


def _bounded(value: int, low: int, high: int, parameter: str) -> int:
    if not low <= value <= high:
        raise QueryError(f"{parameter} must be between {low} and {high}, not {value}")
    return value


class Tracer:
    """Connection tracing over one store generation; build one per backend and reuse it
    (its label index is built by one query, on first use)."""

    def __init__(self, backend: Backend, *, index: LabelIndex | None = None):
        self.backend = backend
        self._index = index
        self._lock = threading.Lock()

    @property
    def index(self) -> LabelIndex:
        with self._lock:
            if self._index is None:
                self._index = LabelIndex.from_backend(self.backend)
            return self._index

    def resolve(self, text: str, *, parameter: str = "ENTITY") -> Node:
        """The entity ``text`` names (name, part of one, acronym, IRI, ``person/x``).

        Raises UnknownEntityError / AmbiguousEntityError (NotFoundError) with suggestions.
        An IRI or ref is checked with one small query, without building the label index.
        """
        iri = as_iri(text)
        if iri is not None and self._index is None:
            node = describe(self.backend, [iri], []).node(iri)
            if node.kind != "other":
                return node
        found = self.index.resolve(text, role=parameter)
        return Node(found.iri, found.label, found.kind)

    def _kind(self, iri: str) -> str:
        if self._index is not None:
            return self._index.kinds.get(iri, "other")
        return kind_from_iri(iri)

    def _fetch(self, kinds: Sequence[str], max_links: int) -> Fetch:
        def fetch(nodes: set[str], deadline: float) -> list[RawLink]:
            return fetch_links(self.backend, nodes, kinds, limit=max_links + 1,
                               deadline=deadline)
        return fetch

    def _described(self, raw_links: Iterable[RawLink], extra: Iterable[str] = ()
                   ) -> Description:
        nodes, facts = wanted(raw_links)
        return describe(self.backend, nodes | set(extra), facts)

    def trace(self, source: str, target: str, *, max_length: int = DEFAULT_MAX_LENGTH,
              paths: int = DEFAULT_PATHS, links: Iterable[str] | None = None,
              timeout: float = DEFAULT_TIMEOUT, max_links: int = DEFAULT_MAX_LINKS
              ) -> TraceResult:
        """Up to ``paths`` shortest connections of at most ``max_length`` links from
        ``source`` to ``target`` through links of the kinds in ``links`` (default: all).

        Finding none is an answer (``result.paths`` empty), not an error.
        """
        _bounded(max_length, 1, MAX_LENGTH, "max_length")
        _bounded(paths, 1, MAX_PATHS, "paths")
        kinds = check_kinds(links)
        start_node = self.resolve(source, parameter="FROM")
        end_node = self.resolve(target, parameter="TO")
        if start_node.iri == end_node.iri:
            raise QueryError(f"FROM and TO are the same entity ({start_node.label}); "
                             "give two different ones")
        started = time.monotonic()
        outcome = bidirectional_search(
            self._fetch(kinds, max_links), start_node.iri, end_node.iri,
            max_length=max_length, paths=paths, timeout=timeout, max_links=max_links,
            kind_of=self._kind)
        found = self._paths(outcome.graph, outcome.paths)
        return TraceResult(
            source=start_node, target=end_node, paths=tuple(found), max_length=max_length,
            searched=outcome.searched,
            complete=not (outcome.timed_out or outcome.truncated),
            timed_out=outcome.timed_out, truncated=outcome.truncated, kinds=kinds,
            seconds=time.monotonic() - started, queries=outcome.queries)

    def _paths(self, graph: Neighbourhood, node_lists: list[list[str]]) -> list[Path]:
        """The found paths, described with one query (per batch) for all of them."""
        pairs = [list(zip(nodes, nodes[1:], strict=False)) for nodes in node_lists]
        raw = [link for steps in pairs for a, b in steps for link in graph.links(a, b)]
        description = self._described(raw, {n for nodes in node_lists for n in nodes})
        node = description.node
        return [Path(tuple(node(n) for n in nodes), tuple(
            Step(node(a), node(b), _sorted_links(make_link(link, description)
                                                 for link in graph.links(a, b)))
            for a, b in steps)) for nodes, steps in zip(node_lists, pairs, strict=True)]

    def connections(self, entity: str, *, hops: int = DEFAULT_HOPS,
                    links: Iterable[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
                    max_links: int = DEFAULT_MAX_LINKS,
                    max_results: int = DEFAULT_MAX_RESULTS) -> Connections:
        """Everything within ``hops`` links of ``entity`` (the nearest ``max_results``),
        grouped by kind, each with the sessions and people that connect it and the links
        of its last step."""
        _bounded(hops, 1, MAX_HOPS, "hops")
        kinds = check_kinds(links)
        centre = self.resolve(entity, parameter="ENTITY")
        started = time.monotonic()
        ball = grow_ball(self._fetch(kinds, max_links), centre.iri, hops=hops,
                         timeout=timeout, max_links=max_links)
        reached = sorted((d, iri) for iri, d in ball.distance.items() if iri != centre.iri)
        total = len(reached)
        reached = reached[:max_results]
        chains = {iri: _ancestors(ball.parents, iri) for _, iri in reached}
        on_paths = {centre.iri}.union(*chains.values(), chains)
        step_links = {child: [link for parent in sorted(ball.parents.get(child, ()))
                              for link in ball.graph.links(parent, child)]
                      for child in on_paths}
        description = self._described(
            [link for found in step_links.values() for link in found], on_paths)
        node = description.node
        found = []
        for distance, iri in reached:
            via = [node(v) for v in chains[iri] - {centre.iri}]
            # People on the way: on the path itself, or behind an organisation's link.
            people = {n for n in via if n.kind == "person"} | {
                node(link.via) for child in chains[iri] | {iri}
                for link in step_links.get(child, ()) if link.via}
            found.append(Connection(
                node=node(iri), distance=distance,
                sessions=tuple(sorted((n for n in via if n.kind == "session"), key=_node_key)),
                people=tuple(sorted((p for p in people if p.kind == "person"
                                     and p.iri != iri), key=_node_key)),
                via=tuple(sorted(via, key=_node_key)),
                links=_sorted_links(make_link(link, description) for link in step_links[iri])))
        found.sort(key=lambda c: (c.distance, _node_key(c.node)))
        return Connections(entity=centre, hops=hops, connections=tuple(found), kinds=kinds,
                           timed_out=ball.timed_out, truncated=ball.truncated,
                           seconds=time.monotonic() - started, total=total)

    def network(self, *, links: Iterable[str] | None = None, around: str | None = None,
                hops: int = DEFAULT_HOPS, highlight: tuple[str, str] | None = None,
                max_links: int | None = None, timeout: float = DEFAULT_TIMEOUT
                ) -> Network:
        """The network of entities and typed links (default :data:`NETWORK_KINDS`), of the
        whole graph or ``around`` one entity within ``hops``, with the shortest path
        between the two ``highlight`` entities marked."""
        kinds = check_kinds(links if links is not None else NETWORK_KINDS)
        if max_links is None:
            max_links = DEFAULT_NETWORK_LINKS
        if around is not None:
            centre = self.resolve(around, parameter="--around")
            ball = grow_ball(self._fetch(kinds, max_links), centre.iri, hops=hops,
                             timeout=timeout, max_links=max_links)
            raw = sorted({link for link in ball.graph.seen if link.subject in ball.distance
                          and link.object in ball.distance})
            title = f"Within {hops} link{'s' if hops != 1 else ''} of {centre.label}"
        else:
            raw = fetch_all_links(self.backend, kinds, limit=max_links + 1)
            title = "The SASCI knowledge graph: who is connected to whom"
        if len(raw) > max_links:
            raise NetworkTooLargeError(max_links)
        path: Path | None = None
        if highlight is not None:
            found = self.trace(highlight[0], highlight[1], paths=1, links=kinds,
                               max_length=MAX_LENGTH, timeout=timeout)
            path = found.paths[0] if found.paths else None
            if path is not None:
                # The path's own links, as fetched (an --around ball may not hold them all).
                pairs = {frozenset((s.source.iri, s.target.iri)) for s in path.steps}
                raw = sorted(set(raw) | {
                    link for link in fetch_links(self.backend, [n.iri for n in path.nodes], kinds)
                    if frozenset((link.subject, link.object)) in pairs})
            title += f" — {found.headline}"
        return build_network(raw, self._described(raw), title=title, path=path)


def _node_key(node: Node) -> tuple[str, str]:
    return (node.label.casefold(), node.iri)


def _sorted_links(links: Iterable[Link]) -> tuple[Link, ...]:
    order = {kind: i for i, kind in enumerate(LINK_KINDS)}
    return tuple(sorted(set(links), key=lambda link: (
        order.get(link.kind, 99), link.certainty != "stated", link.via.label if link.via else "",
        link.subject.iri, link.object.iri, link.fact or "")))


def _ancestors(parents: dict[str, set[str]], node: str) -> set[str]:
    """Every node on some shortest path from the centre to ``node`` (``node`` excluded)."""
    seen: set[str] = set()
    todo = list(parents.get(node, ()))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(parents.get(current, ()))
    return seen


def build_network(raw: Iterable[RawLink], description: Description, *, title: str = "",
                  path: Path | None = None) -> Network:
    """A :class:`Network` from fetched links: one edge per (subject, object, kind)."""
    on_path_nodes = {n.iri for n in path.nodes} if path else set()
    on_path_edges = {(link.subject.iri, link.object.iri, link.kind) for s in path.steps
                     for link in s.links} if path else set()
    grouped: dict[tuple[str, str, str], list[Link]] = {}
    for link in (make_link(r, description) for r in raw):
        grouped.setdefault((link.subject.iri, link.object.iri, link.kind), []).append(link)
    nodes: dict[str, NetNode] = {}
    edges = []
    for (s, o, kind), group in sorted(grouped.items()):
        for node in (group[0].subject, group[0].object):
            nodes[node.iri] = NetNode(node.ref, node.iri, node.label, node.kind,
                                      node.iri in on_path_nodes)
        labels = sorted({link.role_label or link.role or kind for link in group})
        edges.append(NetEdge(
            source=group[0].subject.ref, target=group[0].object.ref, kind=kind,
            label=", ".join(labels),
            certainty="stated" if any(link.certainty == "stated" for link in group) else "implied",
            facts=tuple(sorted({link.fact for link in group if link.fact})),
            highlighted=(s, o, kind) in on_path_edges))
    ordered = tuple(sorted(nodes.values(), key=lambda n: (n.kind, n.label.casefold(), n.id)))
    return Network(ordered, tuple(edges), title=title)


def paths_network(result: TraceResult) -> Network:
    """The connections of a trace as a small network, the shortest one highlighted."""
    nodes: dict[str, NetNode] = {}
    edges: dict[tuple[str, str, str], NetEdge] = {}
    first = result.paths[0] if result.paths else None
    marked = {n.iri for n in first.nodes} if first else set()
    for path in result.paths:
        for step in path.steps:
            for link in step.links:
                for node in (link.subject, link.object):
                    nodes[node.iri] = NetNode(node.ref, node.iri, node.label, node.kind,
                                              node.iri in marked)
                key = (link.subject.ref, link.object.ref, link.kind)
                old = edges.get(key)
                facts = tuple(sorted({*(old.facts if old else ()), *(
                    [link.fact] if link.fact else [])}))
                stated = link.certainty == "stated" or (old is not None
                                                       and old.certainty == "stated")
                edges[key] = NetEdge(
                    key[0], key[1], link.kind, link.role_label or link.role or link.kind,
                    "stated" if stated else "implied", facts,
                    highlighted=(old is not None and old.highlighted) or (
                        path is first and link.subject.iri in marked
                        and link.object.iri in marked))
    for node in (result.source, result.target):
        nodes.setdefault(node.iri, NetNode(node.ref, node.iri, node.label, node.kind, True))
    ordered = tuple(sorted(nodes.values(), key=lambda n: (n.kind, n.label.casefold(), n.id)))
    return Network(ordered, tuple(edges[k] for k in sorted(edges)), title=result.headline)


# -- module-level conveniences: one Tracer per backend object (one store generation) --

_TRACERS: weakref.WeakKeyDictionary[Any, tuple[object, Tracer]] = weakref.WeakKeyDictionary()
_TRACERS_LOCK = threading.Lock()


def tracer_for(backend: Backend, *, generation: object = None) -> Tracer:
    """The Tracer of ``backend``, built once and kept while the backend lives (its label
    index with it). A ReloadingStore gives a new backend when a new store is swapped in;
    a long-lived backend (a remote engine) passes a ``generation`` that changes when its
    data does, and gets a fresh Tracer then."""
    with _TRACERS_LOCK:
        try:
            cached = _TRACERS.get(backend)
        except TypeError:  # not weakly referenceable: no caching
            return Tracer(backend)
        if cached is None or cached[0] != generation:
            cached = _TRACERS[backend] = (generation, Tracer(backend))
        return cached[1]


def resolve_entity(backend: Backend, text: str, *, parameter: str = "ENTITY") -> Node:
    """See :meth:`Tracer.resolve`."""
    return tracer_for(backend).resolve(text, parameter=parameter)


def trace(backend: Backend, source: str, target: str, **options: Any) -> TraceResult:
    """See :meth:`Tracer.trace`."""
    return tracer_for(backend).trace(source, target, **options)


def connections(backend: Backend, entity: str, **options: Any) -> Connections:
    """See :meth:`Tracer.connections`."""
    return tracer_for(backend).connections(entity, **options)


def extract_network(backend: Backend, **options: Any) -> Network:
    """See :meth:`Tracer.network`."""
    return tracer_for(backend).network(**options)

