"""Shortest connections between two nodes, fetching the graph one hop at a time.

The search grows two balls, one around each end, by one hop per SPARQL query (a
``fetch`` callback over the frontier), so it never holds more of the graph than the
neighbourhood it needs. After each hop it enumerates simple paths in the links fetched so
far (Yen's k shortest paths): with ``a`` hops grown from one end and ``b`` from the other,
every path of at most ``a + b`` links is already fully fetched, so those are exact.
"""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .trace_links import OutOfTime, RawLink

Fetch = Callable[[set[str], float], list[RawLink]]  # (frontier, deadline) → links

# Among paths of equal length, prefer stated facts over implied ones and people, sessions
# and organisations over shared ideas. Each penalty is far below one link, so a path is
# never preferred over a shorter one (8 links x 0.04 < 1).
_KIND_PENALTY = {"idea": 0.02, "quote": 0.01}
_IMPLIED_PENALTY = 0.01


def link_weight(link: RawLink) -> float:
    return 1.0 + _KIND_PENALTY.get(link.kind, 0.0) + (_IMPLIED_PENALTY if link.implied else 0)


@dataclass
class Neighbourhood:
    """The links fetched so far, as an undirected multigraph of node IRIs."""

    adjacency: dict[str, dict[str, list[RawLink]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    seen: set[RawLink] = field(default_factory=set)

    def add(self, links: Iterable[RawLink]) -> None:
        for link in links:
            if link in self.seen or link.subject == link.object:
                continue
            self.seen.add(link)
            self.adjacency[link.subject][link.object].append(link)
            self.adjacency[link.object][link.subject].append(link)

    def neighbours(self, node: str) -> list[str]:
        return sorted(self.adjacency.get(node, {}))

    def links(self, a: str, b: str) -> list[RawLink]:
        return sorted(self.adjacency.get(a, {}).get(b, []), key=link_weight)

    def weight(self, a: str, b: str) -> float:
        return min(link_weight(link) for link in self.adjacency[a][b])

    def __len__(self) -> int:
        return len(self.seen)


def _dijkstra(graph: Neighbourhood, source: str, target: str, banned_nodes: set[str],
              banned_edges: set[frozenset[str]]) -> tuple[float, list[str]] | None:
    """The lightest path avoiding the banned nodes and edges (ties broken by IRI)."""
    best: dict[str, float] = {source: 0.0}
    previous: dict[str, str] = {}
    heap: list[tuple[float, str]] = [(0.0, source)]
    done: set[str] = set()
    while heap:
        cost, node = heapq.heappop(heap)
        if node in done:
            continue
        if node == target:
            path = [node]
            while path[-1] != source:
                path.append(previous[path[-1]])
            return cost, path[::-1]
        done.add(node)
        for other in graph.neighbours(node):
            if other in banned_nodes or other in done or \
                    frozenset((node, other)) in banned_edges:
                continue
            new = cost + graph.weight(node, other)
            if new < best.get(other, float("inf")) - 1e-12:
                best[other] = new
                previous[other] = node
                heapq.heappush(heap, (new, other))
    return None


def _cost(graph: Neighbourhood, path: list[str]) -> float:
    return sum(graph.weight(a, b) for a, b in zip(path, path[1:], strict=False))


def shortest_paths(graph: Neighbourhood, source: str, target: str, *,
                   deadline: float | None = None) -> Iterator[list[str]]:
    """Simple paths from ``source`` to ``target``, lightest first (Yen's algorithm)."""
    first = _dijkstra(graph, source, target, set(), set())
    if first is None:
        return
    found = [first[1]]
    known = {tuple(first[1])}
    yield first[1]
    candidates: list[tuple[float, tuple[str, ...]]] = []
    while True:
        last = found[-1]
        for i in range(len(last) - 1):
            if deadline is not None and time.monotonic() > deadline:
                return
            root = last[:i + 1]
            banned_edges = {frozenset((p[i], p[i + 1])) for p in found
                            if len(p) > i + 1 and p[:i + 1] == root}
            spur = _dijkstra(graph, root[-1], target, set(root[:-1]), banned_edges)
            if spur is None:
                continue
            path = root[:-1] + spur[1]
            if tuple(path) not in known:
                known.add(tuple(path))
                heapq.heappush(candidates, (_cost(graph, path), tuple(path)))
        if not candidates:
            return
        _, best = heapq.heappop(candidates)
        found.append(list(best))
        yield list(best)


def is_detour(path: list[str], accepted: list[list[str]],
              kind_of: Callable[[str], str] = lambda iri: "") -> bool:
    """True when ``path`` adds nothing to a path already accepted: it passes through all
    of its nodes (a detour through a person of a session already named, say), or it is as
    long and swaps just one node for another of the same kind (another person of the same
    delegation, another idea)."""
    nodes = set(path)
    for other in accepted:
        if nodes.issuperset(other):
            return True
        if len(other) == len(path):
            swapped = [(a, b) for a, b in zip(path, other, strict=True) if a != b]
            if len(swapped) == 1 and kind_of(swapped[0][0]) == kind_of(swapped[0][1]):
                return True
    return False


@dataclass
class SearchOutcome:
    """What a search found and how far it looked."""

    paths: list[list[str]]
    graph: Neighbourhood
    searched: int
    complete: bool
    timed_out: bool = False
    truncated: bool = False
    queries: int = 0


def bidirectional_search(fetch: Fetch, source: str, target: str, *, max_length: int,
                         paths: int, timeout: float, max_links: int,
                         kind_of: Callable[[str], str] = lambda iri: "",
                         max_candidates: int = 200) -> SearchOutcome:
    """Up to ``paths`` shortest simple paths of at most ``max_length`` links.

    ``complete`` is True when every path within ``searched`` links has been seen;
    ``timed_out``/``truncated`` say the search stopped at the time or link budget.
    """
    deadline = time.monotonic() + timeout
    graph = Neighbourhood()
    frontier = {source: {source}, target: {target}}
    visited = {source: {source}, target: {target}}
    searched, queries = 0, 0
    complete = timed_out = truncated = False
    accepted: list[list[str]] = []
    while True:
        accepted = []
        considered = 0
        for path in shortest_paths(graph, source, target, deadline=deadline):
            considered += 1
            if len(path) - 1 > (max_length if complete else searched):
                break
            if not is_detour(path, accepted, kind_of):
                accepted.append(path)
            if len(accepted) >= paths or considered >= max_candidates:
                break
        if len(accepted) >= paths or complete or searched >= max_length:
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        if len(graph) >= max_links:
            truncated = True
            break
        # Grow the end whose frontier is smaller: fewer nodes, usually fewer links.
        side = min((source, target), key=lambda s: (len(frontier[s]), s != source))
        try:
            links = fetch(frontier[side], deadline)
        except OutOfTime:
            timed_out = True
            break
        queries += 1
        graph.add(links)
        grown = {link.other(node) for link in links for node in (link.subject, link.object)
                 if node in frontier[side]} - visited[side]
        visited[side] |= grown
        frontier[side] = grown
        searched += 1
        if not grown:
            # One end's whole component is fetched: every path there is, is known.
            complete = True
    return SearchOutcome(accepted, graph, min(searched, max_length) if not complete
                         else max_length, complete, timed_out, truncated, queries)


@dataclass
class Ball:
    """Everything within some hops of one node: distances and shortest-path parents."""

    distance: dict[str, int]
    parents: dict[str, set[str]]
    graph: Neighbourhood
    timed_out: bool = False
    truncated: bool = False


def grow_ball(fetch: Fetch, centre: str, *, hops: int, timeout: float, max_links: int
              ) -> Ball:
    """Breadth-first search from ``centre`` to ``hops`` links, one query per hop."""
    deadline = time.monotonic() + timeout
    graph = Neighbourhood()
    distance = {centre: 0}
    parents: dict[str, set[str]] = {centre: set()}
    frontier = {centre}
    ball = Ball(distance, parents, graph)
    for depth in range(1, hops + 1):
        if not frontier:
            break
        if time.monotonic() > deadline:
            ball.timed_out = True
            break
        if len(graph) >= max_links:
            ball.truncated = True
            break
        try:
            graph.add(fetch(frontier, deadline))
        except OutOfTime:
            ball.timed_out = True
            break
        grown: set[str] = set()
        for node in sorted(frontier):
            for other in graph.neighbours(node):
                if distance.get(other, depth) == depth:
                    distance[other] = depth
                    parents.setdefault(other, set()).add(node)
                    grown.add(other)
        frontier = grown
    return ball
