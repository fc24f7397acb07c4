"""Counts over a store: triples, triples per graph, entities per class (by SPARQL, so the
same figures come from any backend)."""

from __future__ import annotations

from dataclasses import dataclass

import pyoxigraph as ox

from .results import compact
from .store import Backend


@dataclass(frozen=True)
class StoreStats:
    triples: int
    graphs: dict[str, int]
    classes: dict[str, int]


def _count_rows(backend: Backend, sparql: str, key: str) -> dict[str, int]:
    rows: dict[str, int] = {}
    result = backend.query(sparql)
    assert isinstance(result, ox.QuerySolutions)
    for solution in result:
        name, count = solution[key], solution["n"]
        if isinstance(count, ox.Literal):
            rows[compact(name) if key == "class" else str(getattr(name, "value", name))] = int(
                count.value)
    return rows


def store_stats(backend: Backend) -> StoreStats:
    """Triples (union of all graphs), per named graph, and distinct subjects per class."""
    graphs = _count_rows(
        backend, "SELECT ?g (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } } GROUP BY ?g "
        "ORDER BY ?g", "g")
    classes = _count_rows(
        backend, "SELECT ?class (COUNT(DISTINCT ?s) AS ?n) WHERE { ?s a ?class } "
        "GROUP BY ?class ORDER BY DESC(?n) ?class", "class")
    total = backend.query("SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }")
    assert isinstance(total, ox.QuerySolutions)
    count = next(iter(total))["n"]
    assert isinstance(count, ox.Literal)
    triples = int(count.value)
    return StoreStats(triples=triples, graphs=graphs, classes=classes)
