"""A remote SPARQL 1.1 engine behind the :class:`~sasci_kg.store.Backend` interface.

Spoken to only through the standards: queries form-encoded to the query URL (SPARQL 1.1
Protocol), updates form-encoded to a separate update URL (SPARQL 1.1 Update), whole graphs
through the Graph Store Protocol with ``?graph=`` and N-Triples bodies. Data always lives in
named graphs: engines disagree about the default graph (Virtuoso, Neptune and GraphDB use
the union of all graphs, Oxigraph a graph of its own), so every query names its dataset.
:func:`replace_graphs` loads a rebuilt dataset through staging graphs and moves them over
the live ones in one update request. Every engine quirk that could pass off a partial
answer as a whole one (row caps, "anytime" partial results, truncated bodies) is detected
and raised; nothing is printed. The HTTP and credentials layer is :mod:`.remote_http`, the
SPARQL text and result parsing :mod:`.remote_sparql`, loading :mod:`.remote_load`; their
public names are importable from here too.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import pyoxigraph as ox

from .errors import (
    QueryError,
    RemoteError,
    RemoteIncompleteError,
    RemoteProtocolError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    StoreError,
)
from .remote_http import (
    AUTH_KINDS,
    Auth,
    BasicAuth,
    BearerAuth,
    DigestAuth,
    HttpClient,
    HttpResponse,
    NoAuth,
    Secret,
    check_url,
    make_auth,
    safe_url,
)
from .remote_load import (
    STAGING_NAMESPACE,
    Alteration,
    RemoteLoadReport,
    replace_graphs,
)
from .remote_sparql import (
    EMPTY_GRAPH,
    N_TRIPLES,
    SPARQL_RESULTS_JSON,
    PreparedQuery,
    as_query_triples,
    count_rows,
    parse_solutions,
    parse_triples,
    prepare_query,
    term_text,
)
from .store import QueryResult
from .vocab import BASE

__all__ = [
    "AUTH_KINDS",
    "EMPTY_GRAPH",
    "N_TRIPLES",
    "SPARQL_RESULTS_JSON",
    "STAGING_NAMESPACE",
    "Alteration",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "DigestAuth",
    "NoAuth",
    "PreparedQuery",
    "RemoteBackend",
    "RemoteLoadReport",
    "Secret",
    "check_url",
    "make_auth",
    "prepare_query",
    "replace_graphs",
    "safe_url",
]

_VIRTUOSO_PARTIAL = "S1TAT"


# ---------------------------------------------------------------------------------------
# The backend.


class RemoteBackend:
    """A remote SPARQL 1.1 engine: Protocol queries, Update, and the Graph Store Protocol.

    ``graph_namespaces`` are the IRI prefixes of the graphs that are ours: only those are
    listed, queried as the union default graph, replaced and dropped. ``update_url`` and
    ``gsp_url`` may be left out for read-only use (``serve``); without ``gsp_url``, graphs
    are read with CONSTRUCT and written with INSERT DATA.

    ``row_cap`` is the engine's own result cap, when it has one it does not always announce:
    Virtuoso flags a capped SELECT with ``X-SPARQL-MaxRows`` but cuts CONSTRUCT and GSP
    reads at the cap silently, so any answer that reaches ``row_cap`` rows or triples is
    refused as possibly cut short.
    """

    def __init__(
        self,
        query_url: str,
        *,
        update_url: str | None = None,
        gsp_url: str | None = None,
        auth: Auth | None = None,
        timeout: float = 30.0,
        graph_namespaces: Sequence[str] = (BASE,),
        max_bytes: int = 512 << 20,
        graphs_ttl: float = 5.0,
        row_cap: int | None = None,
    ):
        self.query_url = check_url(query_url, "--query-url")
        self.update_url = check_url(update_url, "--update-url") if update_url else None
        self.gsp_url = check_url(gsp_url, "--gsp-url") if gsp_url else None
        if timeout <= 0:
            raise StoreError("the remote timeout must be a positive number of seconds")
        self.auth: Auth = auth or NoAuth()
        self.graph_namespaces = tuple(graph_namespaces)
        if not self.graph_namespaces or any(not ns for ns in self.graph_namespaces):
            raise StoreError("give at least one non-empty graph namespace")
        self.graphs_ttl = graphs_ttl
        if row_cap is not None and row_cap <= 0:
            raise StoreError("the engine's row cap must be a positive number of rows")
        self.row_cap = row_cap
        urls = [u for u in (self.query_url, self.update_url, self.gsp_url) if u]
        self._http = HttpClient(self.auth, urls, timeout=timeout, max_bytes=max_bytes)
        self._graphs: tuple[float, list[str]] | None = None

    @property
    def timeout(self) -> float:
        return self._http.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._http.timeout = value

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """Every request made in the block ends within ``seconds`` from now, all together
        (RemoteTimeoutError past it). For a backend used by one thread at a time."""
        saved = self._http.deadline
        self._http.deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            self._http.deadline = saved

    def __repr__(self) -> str:
        return (f"RemoteBackend(query_url={safe_url(self.query_url)!r}, "
                f"update_url={safe_url(self.update_url) if self.update_url else None!r}, "
                f"gsp_url={safe_url(self.gsp_url) if self.gsp_url else None!r}, "
                f"auth={self.auth.name!r})")

    def describe(self) -> str:
        """A one-line, credential-free description for messages."""
        return f"remote SPARQL engine at {safe_url(self.query_url)}"

    # -- the Backend interface ------------------------------------------------------------

    def query(
        self,
        sparql: str,
        *,
        default_graph: list[str] | None = None,
        named_graphs: list[str] | None = None,
        substitutions: dict[str, ox.NamedNode | ox.Literal] | None = None,
        base_iri: str | None = None,
        timeout: float | None = None,
        prefixes: dict[str, str] | None = None,
    ) -> QueryResult:
        """Run a query; by default its dataset is our graphs (union default graph).

        ``prefixes`` (default: ``vocab.PREFIXES``) are declared for the query when it uses
        them without declaring them; ``timeout`` overrides the backend's for this request.
        """
        prepared = prepare_query(sparql, prefixes=prefixes, substitutions=substitutions,
                                 base_iri=base_iri)
        params: list[tuple[str, str]] = [("query", prepared.text)]
        # Dataset parameters override a query's FROM (SPARQL 1.1 Protocol 2.1.4), as the
        # embedded backend's arguments do; a query with its own FROM and no arguments keeps it.
        if default_graph or named_graphs or not prepared.has_dataset:
            ours: list[str] = []
            if not default_graph or not named_graphs:
                ours = self.graphs() or [EMPTY_GRAPH]
            params += [("default-graph-uri", g) for g in (default_graph or ours)]
            params += [("named-graph-uri", g) for g in (named_graphs or ours)]
        return self._run_query(prepared.form, params, timeout=timeout)

    def graphs(self) -> list[str]:
        """Our named graphs in the engine (under ``graph_namespaces``), sorted; cached briefly."""
        now = time.monotonic()
        cached = self._graphs
        if cached is not None and now - cached[0] < self.graphs_ttl:
            return list(cached[1])
        names = self.graphs_uncached()
        self._graphs = (now, names)
        return list(names)

    def graphs_uncached(self) -> list[str]:
        """Our named graphs, asked of the engine now."""
        return self.graphs_under(self.graph_namespaces)

    def quads(self, graph: str | None = None) -> Iterator[ox.Quad]:
        """Every quad of our graphs (or of one), read whole per graph and size-checked."""
        names = [graph] if graph else self.graphs()
        sizes = self.graph_sizes(names)
        for name in names:
            yield from self.graph_quads(name, sizes[name])

    def __len__(self) -> int:
        total = 0
        for size in self.graph_sizes().values():
            total += size
        return total

    def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""
        self._graphs = None

    # -- reading --------------------------------------------------------------------------

    def _run_query(self, form: str, params: list[tuple[str, str]], *,
                   timeout: float | None = None) -> QueryResult:
        accept = SPARQL_RESULTS_JSON if form in ("SELECT", "ASK") else N_TRIPLES
        # Form-encoded POST: Virtuoso 7 never answers a direct application/sparql-query POST.
        response = self._http.request(
            "POST", self.query_url, what="the SPARQL query",
            data=urllib.parse.urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Accept": f"{accept}, */*;q=0.1"},
            timeout=timeout)
        what = f"the SPARQL query at {safe_url(self.query_url)}"
        self._check(response, what, query=True)
        self._check_complete(response, what)
        if form in ("SELECT", "ASK"):
            result: QueryResult = parse_solutions(response.body, response.media_type, what)
            self._check_cap(count_rows(response.body, response.media_type), what)
        else:
            triples = parse_triples(response.body, response.media_type, what)
            self._check_cap(len(triples), what)
            result = as_query_triples(triples)
        return result

    def _check_cap(self, count: int, what: str) -> None:
        if self.row_cap is not None and count >= self.row_cap:
            raise RemoteIncompleteError(
                f"{what}: the answer has {count} rows or triples, as many as the engine's row "
                f"cap ({self.row_cap}), so it may have been cut short and is refused; ask for "
                "less (LIMIT/OFFSET) or raise the cap (Virtuoso: [SPARQL] ResultSetMaxRows, "
                "then SASCI_KG_REMOTE_ROW_CAP)")

    def _check(self, response: HttpResponse, what: str, *, query: bool = False) -> None:
        status = response.status
        if 200 <= status < 300:
            return
        detail = response.snippet()
        if 300 <= status < 400:
            raise RemoteProtocolError(
                f"{what}: the engine redirected ({status}) to "
                f"{safe_url(response.headers.get('Location') or '?')}; configure that URL "
                "directly (redirects are not followed, so credentials stay put)")
        if status in (401, 403):
            raise RemoteError(
                f"{what}: the engine refused access ({status}); check --auth, --user and "
                "SASCI_KG_PASSWORD / SASCI_KG_TOKEN, and that the account may do this")
        if status == 400 and query:
            raise QueryError(f"the SPARQL engine refused the query (400): {detail}")
        if status == 404:
            raise RemoteProtocolError(f"{what}: not found (404); check the URL — {detail}")
        if status in (502, 503, 504):
            raise RemoteUnavailableError(f"{what}: the engine is unavailable ({status})"
                                         f"{': ' + detail if detail else ''}")
        raise RemoteProtocolError(f"{what}: the engine answered {status}"
                                  f"{': ' + detail if detail else ''}")

    def _check_complete(self, response: HttpResponse, what: str) -> None:
        """Refuse 200s the engine itself marks as cut short (Virtuoso's headers)."""
        state = response.headers.get("X-SQL-State")
        if state:
            message = " ".join((response.headers.get("X-SQL-Message") or "").split())[:200]
            if state.strip().upper() == _VIRTUOSO_PARTIAL:
                raise RemoteTimeoutError(
                    f"{what}: the engine stopped the query at its time limit and returned "
                    f"partial results (X-SQL-State: {state}); the answer is refused. Raise "
                    "the engine's limit (Virtuoso: [SPARQL] MaxQueryExecutionTime) or ask "
                    "for less")
            raise RemoteIncompleteError(f"{what}: the engine flagged its answer as not "
                                        f"complete (X-SQL-State: {state} {message})".rstrip())
        cap = response.headers.get("X-SPARQL-MaxRows")
        if cap is not None:
            try:
                limit = int(cap.strip())
            except ValueError:
                limit = 0
            if limit <= 0 or count_rows(response.body, response.media_type) >= limit:
                raise RemoteIncompleteError(
                    f"{what}: the engine cut the answer at its row cap of {cap.strip()} "
                    "(X-SPARQL-MaxRows); the answer is refused. Raise the cap (Virtuoso: "
                    "[SPARQL] ResultSetMaxRows in virtuoso.ini) or page with LIMIT/OFFSET")

    def _select(self, sparql: str) -> list[dict[str, object]]:
        """Run a SELECT over the engine's whole dataset (no dataset parameters)."""
        result = self._run_query("SELECT", [("query", sparql)])
        assert isinstance(result, ox.QuerySolutions)
        names = [v.value for v in result.variables]
        return [{n: solution[n] for n in names if solution[n] is not None}
                for solution in result]

    def _all_graphs(self) -> list[str]:
        """Every non-empty named graph in the engine, ours or not (the engine's own too)."""
        rows = self._select("SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }")
        return [g.value for g in (r.get("g") for r in rows) if isinstance(g, ox.NamedNode)]

    def graphs_under(self, prefixes: Sequence[str]) -> list[str]:
        """The non-empty named graphs whose IRIs start with one of ``prefixes``, sorted."""
        test = " || ".join(f"STRSTARTS(STR(?g), {term_text('prefix', ox.Literal(p))})"
                           for p in prefixes)
        rows = self._select(f"SELECT DISTINCT ?g WHERE {{ GRAPH ?g {{ ?s ?p ?o }} "
                            f"FILTER({test}) }}")
        return sorted(g.value for g in (r.get("g") for r in rows)
                      if isinstance(g, ox.NamedNode) and g.value.startswith(tuple(prefixes)))

    def graph_sizes(self, graphs: Iterable[str] | None = None) -> dict[str, int]:
        """The number of triples in each of ``graphs`` (default: ours), from the engine."""
        names = list(graphs) if graphs is not None else self.graphs()
        sizes = {name: 0 for name in names}
        if not names:
            return sizes
        values = " ".join(term_text("graph", ox.NamedNode(g)) for g in names)
        rows = self._select("SELECT ?g (COUNT(*) AS ?n) WHERE { VALUES ?g { " + values +
                            " } GRAPH ?g { ?s ?p ?o } } GROUP BY ?g")
        for row in rows:
            g, n = row.get("g"), row.get("n")
            if isinstance(g, ox.NamedNode) and isinstance(n, ox.Literal):
                sizes[g.value] = int(n.value)
        return sizes

    def graph_quads(self, graph: str, expected: int | None = None) -> Iterator[ox.Quad]:
        """One graph read whole, and refused unless it has the ``expected`` (else counted)
        number of triples: Virtuoso cuts GSP and CONSTRUCT reads at its cap silently."""
        name = ox.NamedNode(graph)
        what = f"graph <{graph}>"
        if self.gsp_url:
            response = self._http.request(
                "GET", _graph_url(self.gsp_url, graph), what=f"reading {what}",
                headers={"Accept": f"{N_TRIPLES}, text/turtle;q=0.5"})
            if response.status == 404:
                return
            self._check(response, f"reading {what} from {safe_url(self.gsp_url)}")
            self._check_complete(response, f"reading {what}")
            triples = parse_triples(response.body, response.media_type, f"reading {what}")
            self._check_cap(len(triples), f"reading {what}")
        else:
            result = self._run_query("CONSTRUCT", [(
                "query", f"CONSTRUCT {{ ?s ?p ?o }} WHERE {{ GRAPH <{graph}> {{ ?s ?p ?o }} }}")])
            assert isinstance(result, ox.QueryTriples)
            triples = list(result)
        if expected is None:
            expected = self.graph_sizes([graph])[graph]
        if len(set(triples)) != expected:
            raise RemoteIncompleteError(
                f"reading {what}: the engine sent {len(triples)} triples but counts "
                f"{expected}; the answer was cut short (a row cap?) and is refused")
        for triple in triples:
            yield ox.Quad(triple.subject, triple.predicate, triple.object, name)

    # -- writing --------------------------------------------------------------------------

    def update(self, sparql: str, *, timeout: float | None = None) -> None:
        """Send one SPARQL Update request (form-encoded) to the update URL."""
        if not self.update_url:
            raise StoreError("this remote backend has no update URL; give --update-url (or "
                             "SASCI_KG_UPDATE_URL) to load or change data")
        response = self._http.request(
            "POST", self.update_url, what="the SPARQL update",
            data=urllib.parse.urlencode([("update", sparql)]).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "*/*"},
            timeout=timeout)
        self._check(response, f"the SPARQL update at {safe_url(self.update_url)}")
        self._graphs = None

    def put_graph(self, graph: str, ntriples: bytes, *, append: bool = False) -> None:
        """Replace (PUT) or extend (POST) one graph with an N-Triples body."""
        if self.gsp_url:
            response = self._http.request(
                "POST" if append else "PUT", _graph_url(self.gsp_url, graph),
                what=f"writing graph <{graph}>", data=ntriples,
                headers={"Content-Type": N_TRIPLES})
            self._check(response, f"writing graph <{graph}> to {safe_url(self.gsp_url)}")
        else:
            text = ntriples.decode("utf-8")
            prefix = "" if append else f"DROP SILENT GRAPH <{graph}> ;\n"
            self.update(f"{prefix}INSERT DATA {{ GRAPH <{graph}> {{\n{text}\n}} }}")
        self._graphs = None


def _graph_url(gsp_url: str, graph: str) -> str:
    separator = "&" if urllib.parse.urlsplit(gsp_url).query else "?"
    return f"{gsp_url}{separator}{urllib.parse.urlencode({'graph': graph})}"
