"""The :class:`~sasci_kg.store.Backend` interface over the endpoint's query workers.

Connection tracing, the network picture and the funders' overview read the graph through
``backend.query``. On the web that backend is a :class:`PoolBackend`: each query is sent as
a :class:`~sasci_kg.executor.QueryJob` to the long-lived worker processes that answer
``/sparql`` (:mod:`sasci_kg.executor`), serialised there (SPARQL JSON results; N-Triples for
CONSTRUCT and DESCRIBE) and parsed back here. So no tracing query runs in the web process: a
query past its time limit is killed with its worker, which is replaced, and the web process
goes on answering. The command line keeps the in-process backend.

Time limits:

- a hop of a search (:meth:`PoolBackend.query_until`, called by
  :func:`~sasci_kg.trace_links.fetch_links`) may run until the search's deadline; stopped
  there, it ends the search as out of time, the same answer (``timed_out``) as a search whose
  budget ran out between two hops;
- every other query may run for the limit of the request (:meth:`PoolBackend.limit`, the
  ``timeout`` parameter), else the backend's default (the endpoint's); past it the query is
  stopped and :class:`~sasci_kg.executor.QueryTimeoutError` raised (504, like ``/sparql``);
- the label index of a store generation (one whole-graph query, shared by every later
  request) may take the endpoint's longest limit (:class:`PoolTracer`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import pyoxigraph as ox

from ..executor import Outcome, QueryJob, QueryTimeoutError
from ..remote_sparql import prepare_query
from ..store import QueryResult
from ..trace import Tracer
from ..trace_entities import LabelIndex
from ..trace_links import OutOfTime
from ..vocab import PREFIXES

#: Runs a job in a worker with a time limit in seconds (``WorkerPool.run``).
Run = Callable[[QueryJob, float], Outcome]

JSON_RESULTS = "application/sparql-results+json"
N_TRIPLES = "application/n-triples"
_ALL_TRIPLES = "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }"
# Strings (long ones first), comments and IRIs, which are skipped; and the query forms and
# FROM as bare words (not part of a variable, a prefixed name or a longer word).
_KEYWORDS = re.compile("|".join((
    r'"{3}(?:[^"\\]|\\.|"(?!""))*"{3}', r"'{3}(?:[^'\\]|\\.|'(?!''))*'{3}",
    r'"(?:[^"\\\n\r]|\\.)*"', r"'(?:[^'\\\n\r]|\\.)*'",
    r"#[^\n\r]*",
    r"<[^<>\"{}|^`\\\x00-\x20]*>",
    r"(?<![\w?$:.\-])(?P<keyword>SELECT|CONSTRUCT|DESCRIBE|ASK|FROM)(?![\w:\-])",
)), re.IGNORECASE)

# The time limit of the queries of the current request (one per thread or task).
_request_limit: ContextVar[float | None] = ContextVar("sasci_kg_pool_limit", default=None)


class PoolBackend:
    """Run each query in a query worker (``run``), within a time limit and the caps.

    ``timeout``: the limit of a query outside :meth:`limit`; ``max_rows``/``max_bytes``: the
    caps of one answer, as for ``/sparql``. Datasets follow the SPARQL protocol: given
    ``default_graph`` or ``named_graphs``, the query sees those graphs only; otherwise the
    default graph is the union of all graphs (unless the query names its own with FROM).
    """

    def __init__(self, run: Run, *, timeout: float, max_rows: int, max_bytes: int):
        self._run = run
        self.timeout = timeout
        self.max_rows = max_rows
        self.max_bytes = max_bytes

    @contextmanager
    def limit(self, seconds: float) -> Iterator[None]:
        """Within this block (in this thread), each query may run ``seconds``."""
        token = _request_limit.set(seconds)
        try:
            yield
        finally:
            _request_limit.reset(token)

    def current_limit(self) -> float:
        limit = _request_limit.get()
        return self.timeout if limit is None else limit

    # -- the Backend interface

    def query(
        self,
        sparql: str,
        *,
        default_graph: list[str] | None = None,
        named_graphs: list[str] | None = None,
        substitutions: dict[str, ox.NamedNode | ox.Literal] | None = None,
        base_iri: str | None = None,
    ) -> QueryResult:
        """Run a query in a worker; QueryTimeoutError (the worker killed) past the limit."""
        return self._query(sparql, self.current_limit(), default_graph=default_graph,
                           named_graphs=named_graphs, substitutions=substitutions,
                           base_iri=base_iri)

    def query_until(self, sparql: str, deadline: float) -> QueryResult:
        """Run a query that must end by ``deadline`` (``time.monotonic()``): stopped there
        (its worker killed and replaced), :class:`~sasci_kg.trace_links.OutOfTime`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise OutOfTime
        try:
            return self._query(sparql, remaining)
        except QueryTimeoutError:
            raise OutOfTime from None

    def graphs(self) -> list[str]:
        result = self.query("SELECT DISTINCT ?g WHERE { GRAPH ?g { } }")
        assert isinstance(result, ox.QuerySolutions)
        return sorted(g.value for row in result if isinstance(g := row["g"], ox.NamedNode))

    def quads(self, graph: str | None = None) -> Iterator[ox.Quad]:
        values = f"VALUES ?g {{ <{ox.NamedNode(graph).value}> }} " if graph else ""
        result = self.query(f"SELECT ?s ?p ?o ?g WHERE {{ {values}GRAPH ?g {{ ?s ?p ?o }} }}")
        assert isinstance(result, ox.QuerySolutions)
        for row in result:
            s, p, o, g = row["s"], row["p"], row["o"], row["g"]
            assert isinstance(p, ox.NamedNode) and isinstance(g, ox.NamedNode)
            assert s is not None and o is not None
            yield ox.Quad(s, p, o, g)

    def close(self) -> None:
        """Nothing to release: the workers belong to the app."""

    # -- running a job

    def _query(
        self,
        sparql: str,
        limit: float,
        *,
        default_graph: list[str] | None = None,
        named_graphs: list[str] | None = None,
        substitutions: dict[str, ox.NamedNode | ox.Literal] | None = None,
        base_iri: str | None = None,
    ) -> QueryResult:
        if substitutions:  # bound as a leading VALUES block: the workers take text only
            sparql = prepare_query(sparql, prefixes={}, substitutions=substitutions).text
        form, has_from = _shape(sparql)
        graph_form = form in ("CONSTRUCT", "DESCRIBE")
        dataset = bool(default_graph) or bool(named_graphs)
        job = QueryJob(
            sparql=sparql,
            media_type=N_TRIPLES if graph_form else JSON_RESULTS,
            prefixes=PREFIXES,  # the default prefixes travel with the job
            default_graph=tuple(default_graph or ()) if dataset else None,
            named_graphs=tuple(named_graphs or ()) if dataset else None,
            union=not has_from,
            base_iri=base_iri,
            max_rows=self.max_rows,
            max_bytes=self.max_bytes,
        )
        outcome = self._run(job, limit)
        if not graph_form:
            return ox.parse_query_results(outcome.body, ox.QueryResultsFormat.JSON)
        # The triples as the query result type callers expect, from a store of just them.
        answer = ox.Store()
        answer.bulk_extend(ox.parse(outcome.body, ox.RdfFormat.N_TRIPLES))
        return answer.query(_ALL_TRIPLES)


def _shape(sparql: str) -> tuple[str, bool]:
    """The query's form (which serialisation to ask for) and whether it names its own
    dataset with FROM (which default graph to query). One regular-expression scan that
    skips strings, comments and IRIs, so a keyword inside them does not count: a trace
    query's prefixes alone make hundreds of tokens, which the SPARQL tokenizer took 2.4 ms
    to make into objects. A text that is no query is left to the worker's parser."""
    form: str | None = None
    has_from = False
    for match in _KEYWORDS.finditer(sparql):
        keyword = (match.group("keyword") or "").upper()
        if keyword == "FROM":
            has_from = True
        elif form is None and keyword:
            form = keyword
    return form or "SELECT", has_from


class PoolTracer(Tracer):
    """A :class:`~sasci_kg.trace.Tracer` over a :class:`PoolBackend` whose label index (two
    whole-graph queries, once per store generation, for every later request) may run for
    ``index_timeout`` rather than the limit of the request that happens to need it first."""

    def __init__(self, backend: PoolBackend, *, index_timeout: float):
        super().__init__(backend)
        self.pool = backend
        self.index_timeout = index_timeout

    @property
    def index(self) -> LabelIndex:
        with self.pool.limit(max(self.index_timeout, self.pool.current_limit())):
            return super().index
