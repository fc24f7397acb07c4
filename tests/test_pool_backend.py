"""The Backend interface over the query workers (web/pool_backend.py): the same answers as the
embedded store for every query form and for connection tracing; a query past its limit is
stopped in its worker, which is replaced, as a time-out (QueryTimeoutError) or, for a
search's hop, as the search running out of time (OutOfTime)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyoxigraph as ox
import pytest
from project import QUERIES, load_real_store

from sasci_kg.executor import Outcome, QueryJob, QueryTimeoutError, WorkerPool
from sasci_kg.guard import Policy, check_query
from sasci_kg.queries import list_queries
from sasci_kg.store import OxigraphBackend, open_store
from sasci_kg.trace import Tracer
from sasci_kg.trace_links import LINK_KINDS, OutOfTime, frontier_query, graph_query
from sasci_kg.vocab import PREFIXES
from sasci_kg.web.pool_backend import PoolBackend, PoolTracer, _shape

ID = "https://w3id.org/sasci-kg/id/"
SLOW = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_real_store(tmp_path_factory.mktemp("pool-backend") / "store")


@pytest.fixture(scope="module")
def embedded(store_path: Path) -> OxigraphBackend:
    return open_store(store_path)


@pytest.fixture(scope="module")
def pool(store_path: Path) -> Iterator[WorkerPool]:
    workers = WorkerPool(store_path, size=1, max_waiting=4, wait_timeout=10)
    try:
        yield workers
    finally:
        workers.close()


@pytest.fixture()
def jobs() -> list[tuple[QueryJob, float]]:
    return []


@pytest.fixture()
def backend(pool: WorkerPool, jobs: list[tuple[QueryJob, float]]) -> PoolBackend:
    def run(job: QueryJob, limit: float) -> Outcome:
        jobs.append((job, limit))
        return pool.run(job, timeout=limit)

    return PoolBackend(run, timeout=10.0, max_rows=1_000_000, max_bytes=1 << 28)


def _rows(result: Any) -> list[tuple[str, ...]]:
    assert isinstance(result, ox.QuerySolutions)
    names = [v.value for v in result.variables]
    return sorted(tuple(str(row[n]) for n in names) for row in result)


def _replaced(pool: WorkerPool, old: list[int]) -> list[int]:
    """The worker pids once a killed worker's replacement is up."""
    for _ in range(100):
        pids = pool.pids()
        if len(pids) == pool.size and pids != old:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"the worker was not replaced: {pool.pids()} (was {old})")


@pytest.mark.parametrize("sparql", [
    "SELECT ?name WHERE { ?o a schema:Organization ; schema:name ?name }",
    "SELECT ?s (COUNT(*) AS ?n) WHERE { ?s conf:during ?session } GROUP BY ?s",
    "SELECT ?name ?lang WHERE { ?x skos:prefLabel ?name BIND(LANG(?name) AS ?lang) }",
    "ASK { project:sasci schema:funder organisation:esrc }",
    "ASK { project:sasci schema:funder project:sasci }",
])
def test_the_answers_are_the_embedded_stores(backend: PoolBackend, embedded: OxigraphBackend,
                                              sparql: str) -> None:
    mine, theirs = backend.query(sparql), embedded.query(sparql)
    if isinstance(theirs, ox.QueryBoolean):
        assert isinstance(mine, ox.QueryBoolean) and bool(mine) == bool(theirs)
    else:
        assert _rows(mine) == _rows(theirs) != []


def test_constructs_graphs_quads_and_substitutions(backend: PoolBackend,
                                                   embedded: OxigraphBackend) -> None:
    construct = "CONSTRUCT { ?p schema:name ?n } WHERE { ?p a schema:Person ; schema:name ?n }"
    mine, theirs = backend.query(construct), embedded.query(construct)
    assert isinstance(mine, ox.QueryTriples) and isinstance(theirs, ox.QueryTriples)
    assert sorted(map(str, mine)) == sorted(map(str, set(theirs)))
    assert backend.graphs() == embedded.graphs()
    graph = embedded.graphs()[0]
    assert sorted(map(str, backend.quads(graph))) == sorted(map(str, embedded.quads(graph)))
    bound = {"person": ox.NamedNode(ID + "person/jenny-pitts")}
    sparql = "SELECT ?person ?name WHERE { ?person schema:name ?name }"
    assert _rows(backend.query(sparql, substitutions=bound)) == [
        (f"<{ID}person/jenny-pitts>", '"Jenny Pitts"')]


def test_a_query_past_its_limit_is_stopped_and_its_worker_replaced(
        backend: PoolBackend, pool: WorkerPool, jobs: list[tuple[QueryJob, float]]) -> None:
    before = pool.pids()
    started = time.monotonic()
    with backend.limit(0.5), pytest.raises(QueryTimeoutError) as caught:
        backend.query(SLOW)
    assert caught.value.limit == 0.5 and time.monotonic() - started < 3
    assert jobs[-1][1] == 0.5
    _replaced(pool, before)
    assert backend.current_limit() == 10.0  # the limit holds within its block only
    assert backend.query("ASK { ?s ?p ?o }")  # the next query runs


def test_a_hop_stops_at_the_searchs_deadline(backend: PoolBackend, pool: WorkerPool) -> None:
    before = pool.pids()
    started = time.monotonic()
    with pytest.raises(OutOfTime):
        backend.query_until(SLOW, started + 0.5)
    assert 0.4 < time.monotonic() - started < 3
    _replaced(pool, before)
    with pytest.raises(OutOfTime):  # a deadline already past: no query at all
        backend.query_until("ASK { ?s ?p ?o }", time.monotonic() - 1)


def test_tracing_over_the_workers_finds_what_the_embedded_store_finds(
        backend: PoolBackend, embedded: OxigraphBackend,
        jobs: list[tuple[QueryJob, float]]) -> None:
    def answer(tracer: Tracer) -> dict[str, Any]:
        found = tracer.trace("Equal Care Co-op", "Thurrock Council").to_dict()
        near = tracer.connections("org/esrc", hops=2).to_dict()
        for data in (found, near):
            data.pop("seconds", None)
        return {"trace": found, "connections": near,
                "network": tracer.network().to_dict()}

    mine = answer(PoolTracer(backend, index_timeout=30))
    assert mine == answer(Tracer(embedded))
    assert mine["trace"]["paths"] and mine["connections"]["groups"]
    assert len(jobs) >= 6  # the label index, hops, descriptions: all in the workers
    index_limits = [limit for job, limit in jobs if "?label" in job.sparql]
    assert index_limits and set(index_limits) == {30}


@pytest.mark.parametrize("sparql", [
    *(q.sparql for q in list_queries(QUERIES)),
    frontier_query([ID + "org/esrc", ID + "person/jenny-pitts"], LINK_KINDS),
    graph_query(LINK_KINDS),
    'SELECT ?from WHERE { ?s ex:from ?from . FILTER(?s != "FROM x") } # FROM <g>',
    "select * from <http://example.org/g> where { ?s ?p ?o }",
    "PREFIX ask: <http://example.org/ask#> CONSTRUCT { ?s ask:from ?o } "
    "FROM NAMED <http://example.org/g> WHERE { GRAPH ?g { ?s ?p ?o } }",
    "DESCRIBE <http://example.org/FROM>",
    "ASK { ?s ?p '''select\nFROM''' }",
    'ASK { ?s ?p """a " FROM""" }',
])
def test_the_form_and_dataset_are_read_as_the_guard_reads_them(sparql: str) -> None:
    checked = check_query(sparql, Policy(max_bytes=1 << 20, default_prefixes=PREFIXES))
    assert _shape(sparql) == (checked.form, checked.has_dataset_clause)
