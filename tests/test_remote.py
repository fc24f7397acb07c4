"""The backend suite against real remote engines: OpenLink Virtuoso 7 and `oxigraph serve`.

``.ci/run`` starts both on loopback (``scripts/virtuoso-ci.sh``, ``scripts/oxigraph-ci.sh``)
and each writes its settings to an env file; every test here runs once per engine, and the
embedded store loaded with the same build is the reference. In CI an engine that is not
up fails the run; elsewhere its tests are skipped with the command that starts it.

Known, documented engine differences (spec-permitted or engine bugs), normalised below:
Virtuoso 7 returns booleans as xsd:integer 1/0 and stores xsd:duration in its own form;
GROUP_CONCAT order (and, on Virtuoso, the language tag of the result) is engine-defined;
Virtuoso's DESCRIBE adds triples where the resource is the object.
"""

from __future__ import annotations

import collections
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyoxigraph as ox
import pytest
from click.testing import CliRunner
from project import QUERIES, built_dataset, load_real_store

from sasci_kg.backends import BackendSettings, LoadSummary, load_dataset, open_remote
from sasci_kg.build import load_inputs
from sasci_kg.cli import main
from sasci_kg.errors import QueryError, RemoteError, RemoteTimeoutError, StoreError
from sasci_kg.export import serialize_quads
from sasci_kg.queries import NamedQuery, get_query, list_queries, run_named_query
from sasci_kg.remote import (
    EMPTY_GRAPH,
    STAGING_NAMESPACE,
    DigestAuth,
    RemoteBackend,
    Secret,
    replace_graphs,
)
from sasci_kg.stats import store_stats
from sasci_kg.store import LoadInput, OxigraphBackend, open_store
from sasci_kg.vocab import BASE

ENGINES = ("virtuoso", "oxigraph")
XSD = "http://www.w3.org/2001/XMLSchema#"
SOURCE_GRAPH = BASE + "graph/source/sasci-final-event"
VOCAB_GRAPH = BASE + "graph/vocab"
FOREIGN_GRAPH = "http://example.org/not-ours"
NAMED = list_queries(QUERIES)


def env_file(name: str) -> Path:
    """Where ``scripts/NAME-ci.sh start`` wrote the engine's settings."""
    given = os.environ.get(f"SASCI_KG_{name.upper()}_ENV")
    return Path(given) if given else Path(os.environ.get("TMPDIR") or "/tmp") / \
        f"sasci-kg-{name}" / "env"


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def unavailable(name: str, why: str) -> None:
    message = (f"the {name} engine is not up ({why}); start it with "
               f"`bash scripts/{name}-ci.sh start`")
    if os.environ.get("CI"):
        pytest.fail(message + " — .ci/run must start it before the tests", pytrace=False)
    pytest.skip(message)


@dataclass
class Engine:
    """A real engine under test: its name, settings, backend and the load that filled it."""

    name: str
    env: dict[str, str]
    settings: BackendSettings
    backend: RemoteBackend
    load: LoadSummary

    def fresh(self) -> RemoteBackend:
        """A new backend object (no cached graph list)."""
        return open_remote(self.settings)

    def reload(self) -> LoadSummary:
        return load_dataset(self.settings, load_inputs(built_dataset()),
                            accept_engine_changes=True)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> OxigraphBackend:
    return open_store(load_real_store(tmp_path_factory.mktemp("reference") / "store"))


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    name = request.param
    path = env_file(name)
    if not path.exists():
        unavailable(name, f"no settings at {path}")
    env = read_env(path)
    settings = BackendSettings.from_env(env)
    backend = open_remote(settings)
    try:
        backend.query("ASK { }", default_graph=[EMPTY_GRAPH], named_graphs=[EMPTY_GRAPH])
    except RemoteError as exc:
        unavailable(name, str(exc))
    summary = load_dataset(settings, load_inputs(built_dataset()), accept_engine_changes=True)
    return Engine(name, env, settings, backend, summary)


# ---------------------------------------------------------------------------------------
# Comparing answers across engines.


def _group_concat_columns(sparql: str) -> dict[str, str]:
    """Variables bound by GROUP_CONCAT, with their separators."""
    pattern = re.compile(r"GROUP_CONCAT\s*\((?:[^()]|\([^()]*\))*?separator\s*=\s*"
                         r"(?:\"([^\"]*)\"|'([^']*)')\s*\)\s*AS\s*\?(\w+)", re.I | re.S)
    return {m.group(3): m.group(1) if m.group(1) is not None else m.group(2)
            for m in pattern.finditer(sparql)}


def _normal(term: object, engine: str, separator: str | None) -> str:
    if term is None:
        return ""
    if isinstance(term, ox.Literal):
        datatype = term.datatype.value
        if separator is not None:  # GROUP_CONCAT: order and language tag are engine-defined
            return "concat:" + separator.join(sorted(term.value.split(separator)))
        if engine == "virtuoso" and datatype == XSD + "boolean":  # Virtuoso: 1/0 integers
            return f'"{1 if term.value == "true" else 0}"^^<{XSD}integer>'
        if engine == "virtuoso" and datatype == XSD + "duration":  # stored in its own form
            return f"duration^^<{datatype}>"
    return str(term)


def normal_rows(result: object, engine: str, sparql: str) -> list[tuple[str, ...]]:
    assert isinstance(result, ox.QuerySolutions)
    concat = _group_concat_columns(sparql)
    names = [v.value for v in result.variables]
    return [tuple(_normal(row[n], engine, concat.get(n)) for n in names) for row in result]


# ---------------------------------------------------------------------------------------
# Load: exactly the graphs the embedded store has.


def test_load_leaves_exactly_the_embedded_graphs(engine: Engine,
                                                 embedded: OxigraphBackend) -> None:
    backend = engine.fresh()
    assert backend.graphs() == embedded.graphs()
    assert engine.load.graphs == embedded.graphs()
    assert backend.graph_sizes() == {g: sum(1 for _ in embedded.quads(g))
                                     for g in embedded.graphs()}
    assert engine.load.quads == len(embedded)
    assert not [g for g in backend._all_graphs() if g.startswith(STAGING_NAMESPACE)]


def test_only_known_literal_rewrites(engine: Engine) -> None:
    if engine.name == "virtuoso":
        assert engine.load.altered, "Virtuoso 7.2.5 rewrites xsd:duration; did that change?"
        assert all(f"^^<{XSD}duration>" in change for change in engine.load.altered)
    else:
        assert engine.load.altered == []


def test_a_rewriting_engine_fails_the_load_unless_accepted(engine: Engine) -> None:
    if engine.name != "virtuoso":
        pytest.skip("only Virtuoso is known to rewrite literals")
    before = engine.fresh().graph_sizes()
    with pytest.raises(RemoteError, match=r'"P5Y"\^\^<http://www.w3.org/2001/XMLSchema#'
                                          r'duration> . came back as'):
        load_dataset(engine.settings, load_inputs(built_dataset()))
    backend = engine.fresh()
    assert backend.graph_sizes() == before
    assert not [g for g in backend._all_graphs() if g.startswith(STAGING_NAMESPACE)]


# ---------------------------------------------------------------------------------------
# Queries: the same answers as embedded Oxigraph.


@pytest.mark.parametrize("named", NAMED, ids=[q.name for q in NAMED])
def test_named_query_answers_as_embedded(engine: Engine, embedded: OxigraphBackend,
                                         named: NamedQuery) -> None:
    expected = normal_rows(run_named_query(embedded, named), engine.name, named.sparql)
    got = normal_rows(run_named_query(engine.backend, named), engine.name, named.sparql)
    assert expected, f"{named.name} has no answer on the embedded store"
    # Rows compare as multisets: ORDER BY ties and plain-vs-tagged literals may order apart.
    assert collections.Counter(got) == collections.Counter(expected)


@pytest.mark.parametrize("name,params", [
    ("person-profile", {"person": BASE + "id/person/adam-lent"}),
    ("quotes", {"speaker": BASE + "id/person/juliette-malley"}),
    ("organisation-sessions", {"organisation": BASE + "id/org/lse"}),
    ("fact-provenance", {"fact": BASE + "id/fact/nothing-here"}),
])
def test_named_query_parameters_bind_as_embedded(engine: Engine, embedded: OxigraphBackend,
                                                 name: str, params: dict[str, str]) -> None:
    named = get_query(name, QUERIES)
    expected = normal_rows(run_named_query(embedded, named, params), engine.name, named.sparql)
    got = normal_rows(run_named_query(engine.backend, named, params), engine.name,
                      named.sparql)
    assert collections.Counter(got) == collections.Counter(expected)


def test_hostile_literal_parameters_are_inert(engine: Engine) -> None:
    hostile = ox.Literal('x" } } ; DROP ALL ; SELECT * { ?a ?b "\n\\')
    result = engine.backend.query(
        "SELECT ?name ?p WHERE { ?p schema:name ?name }", substitutions={"name": hostile})
    assert list(result) == []  # type: ignore[arg-type]
    assert engine.fresh().graphs() == engine.load.graphs


def test_default_prefixes_ask_construct_and_counts(engine: Engine,
                                                   embedded: OxigraphBackend) -> None:
    for sparql in ('ASK { ?p schema:name "Juliette Malley" }',
                   'ASK { ?p schema:name "Nobody at all" }'):
        assert bool(engine.backend.query(sparql)) == bool(embedded.query(sparql))
    construct = "CONSTRUCT { ?p schema:name ?n } WHERE { ?p a schema:Person ; schema:name ?n }"
    assert set(engine.backend.query(construct)) == set(embedded.query(construct))  # type: ignore
    count = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
    assert normal_rows(engine.backend.query(count), engine.name, count) == \
        normal_rows(embedded.query(count), engine.name, count)


def test_describe_covers_what_embedded_describes(engine: Engine,
                                                 embedded: OxigraphBackend) -> None:
    sparql = "DESCRIBE person:juliette-malley"
    expected = set(embedded.query(sparql))  # type: ignore[arg-type]
    got = set(engine.backend.query(sparql))  # type: ignore[arg-type]
    assert expected and expected <= got  # Virtuoso also adds the inbound triples


def test_linked_data_descriptions_as_embedded(engine: Engine,
                                              embedded: OxigraphBackend) -> None:
    """What the pages show: a resource's statements, and the labels of a hub's neighbours
    (fetched in one query: a bound parameter must not have to reach into a sub-select)."""
    from sasci_kg.describe import Labels, describe_resource

    person = BASE + "id/person/juliette-malley"
    expected, got = describe_resource(embedded, person), describe_resource(engine.backend, person)
    assert expected is not None and got is not None
    assert set(got.quads()) == set(expected.quads())
    hub = BASE + "id/scheme/ideas"
    embedded_labels, remote_labels = Labels(embedded), Labels(engine.fresh())
    expected = describe_resource(embedded, hub, labels=embedded_labels)
    got = describe_resource(engine.fresh(), hub, labels=remote_labels)
    assert expected is not None and got is not None and len(expected.incoming) > 20
    assert got.labels == expected.labels
    for statement in expected.incoming:
        subject = statement.subject.value
        assert remote_labels.label(subject) == embedded_labels.label(subject), subject


def test_client_dataset_replaces_the_union(engine: Engine, embedded: OxigraphBackend) -> None:
    count = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
    listing = "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }"
    for kwargs in ({"default_graph": [VOCAB_GRAPH]}, {"named_graphs": [VOCAB_GRAPH]},
                   {"default_graph": [VOCAB_GRAPH], "named_graphs": [SOURCE_GRAPH]}):
        for sparql in (count, listing):
            assert sorted(normal_rows(engine.backend.query(sparql, **kwargs), engine.name,
                                      sparql)) == \
                sorted(normal_rows(embedded.query(sparql, **kwargs), engine.name, sparql)), \
                (sparql, kwargs)


def test_a_query_never_sees_graphs_that_are_not_ours(engine: Engine) -> None:
    backend = engine.fresh()
    backend.put_graph(FOREIGN_GRAPH, b'<http://example.org/x> <https://schema.org/name> '
                                     b'"Not ours" .\n')
    try:
        result = backend.query('ASK { ?x schema:name "Not ours" }')
        assert not bool(result)
        assert FOREIGN_GRAPH not in backend.graphs()
    finally:
        backend.update(f"DROP SILENT GRAPH <{FOREIGN_GRAPH}>")


def test_updates_never_go_to_the_query_url(engine: Engine) -> None:
    with pytest.raises(QueryError, match="update, not a query"):
        engine.backend.query("DROP ALL")


# ---------------------------------------------------------------------------------------
# Stats and export: the same figures and the same bytes.


def test_stats_as_embedded(engine: Engine, embedded: OxigraphBackend) -> None:
    assert store_stats(engine.backend) == store_stats(embedded)


@pytest.mark.parametrize("fmt", ["nq", "ttl"])
def test_export_is_byte_identical(engine: Engine, embedded: OxigraphBackend, fmt: str) -> None:
    def text(quads: Iterator[ox.Quad]) -> str:
        data = serialize_quads(quads, fmt).decode()
        if engine.name == "virtuoso":  # the one literal Virtuoso stores in its own form
            data = re.sub(r'"[^"]*"\^\^(<http://www.w3.org/2001/XMLSchema#duration>|'
                          r'xsd:duration)', "DURATION", data)
        return data

    assert text(engine.backend.quads()) == text(embedded.quads())
    assert text(engine.backend.quads(VOCAB_GRAPH)) == text(embedded.quads(VOCAB_GRAPH))


# ---------------------------------------------------------------------------------------
# Reloading: replace, drop what is gone, never touch what is not ours.


def test_reload_replaces_drops_and_leaves_foreign_graphs_alone(
        engine: Engine, embedded: OxigraphBackend, tmp_path: Path) -> None:
    backend = engine.fresh()
    stale = BASE + "graph/source/withdrawn"
    leftover = STAGING_NAMESPACE + "0-deadbeef:0"
    for graph in (stale, leftover, FOREIGN_GRAPH):
        backend.put_graph(graph, b'<http://example.org/x> <http://example.org/p> "1" .\n')
    extra = tmp_path / "extra.ttl"
    extra.write_text('@prefix schema: <https://schema.org/> .\n'
                     '<http://example.org/doc> schema:author [ schema:name "Anon" ] .\n')
    try:
        summary = load_dataset(engine.settings, [
            *load_inputs(built_dataset()),
            LoadInput(format=ox.RdfFormat.TURTLE, path=extra,
                      graph=BASE + "graph/file/extra.ttl", label=str(extra))],
            accept_engine_changes=True)
        after = engine.fresh()
        assert after.graphs() == sorted([*embedded.graphs(), BASE + "graph/file/extra.ttl"])
        assert summary.dropped == [stale]
        everything = after._all_graphs()
        assert leftover not in everything and stale not in everything
        assert FOREIGN_GRAPH in everything  # not ours: untouched
        # the blank node came through and reads back (Virtuoso labels it nodeID://…)
        rows = list(after.query('SELECT ?who ?name WHERE { ?doc schema:author ?who . '  # type: ignore[arg-type]
                                '?who schema:name ?name }'))
        assert len(rows) == 1 and isinstance(rows[0]["who"], ox.BlankNode)
        assert len(list(after.quads(BASE + "graph/file/extra.ttl"))) == 2
    finally:
        backend.update(f"DROP SILENT GRAPH <{FOREIGN_GRAPH}>")
        engine.reload()
    assert engine.fresh().graphs() == embedded.graphs()


def test_a_failed_upload_leaves_the_live_graphs(engine: Engine,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    backend = engine.fresh()
    before = backend.graph_sizes()
    calls = 0
    original = RemoteBackend.put_graph

    def failing(self: RemoteBackend, graph: str, ntriples: bytes, *, append: bool = False
                ) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RemoteError("simulated: the connection dropped mid-load")
        original(self, graph, ntriples, append=append)

    monkeypatch.setattr(RemoteBackend, "put_graph", failing)
    with pytest.raises(RemoteError, match="simulated"):
        replace_graphs(backend, load_inputs(built_dataset()), accept_altered=True)
    monkeypatch.undo()
    after = engine.fresh()
    assert after.graph_sizes() == before
    assert not [g for g in after._all_graphs() if g.startswith(STAGING_NAMESPACE)]


def _bulk(version: int, size: int) -> LoadInput:
    lines = "".join(f'<{BASE}id/fact/bulk-{i}> <https://schema.org/position> "{version}" .\n'
                    for i in range(size))
    return LoadInput(format=ox.RdfFormat.N_TRIPLES, data=lines.encode(),
                     graph=BASE + "graph/source/bulk", label=f"bulk v{version}")


def test_queries_never_see_a_half_loaded_graph(engine: Engine) -> None:
    count = ("SELECT ?v (COUNT(*) AS ?n) WHERE { GRAPH <" + BASE + "graph/source/bulk> "
             "{ ?s <https://schema.org/position> ?v } } GROUP BY ?v")
    backend = engine.fresh()
    base = load_inputs(built_dataset())
    replace_graphs(backend, [*base, _bulk(1, 2000)], accept_altered=True)
    seen: list[list[tuple[str, ...]]] = []
    done = threading.Event()

    def watch() -> None:
        reader = engine.fresh()
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            seen.append(sorted(normal_rows(reader.query(count), engine.name, count)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # 3000 triples in 500-triple chunks: six uploads into the staging graph.
        replace_graphs(backend, [*base, _bulk(2, 3000)], chunk_triples=500,
                       accept_altered=True)
        time.sleep(0.2)
    finally:
        done.set()
        watcher.join()
    old = [('"1"', f'"2000"^^<{XSD}integer>')]
    new = [('"2"', f'"3000"^^<{XSD}integer>')]
    assert all(rows in (old, new) for rows in seen), seen
    assert old in seen and seen[-1] == new  # the reader ran during the load
    engine.reload()


# ---------------------------------------------------------------------------------------
# The command line, end to end: build → load → query / stats / export.


def test_cli_against_the_engine(engine: Engine, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {**engine.env, "SASCI_KG_STORE": "", "SASCI_KG_DATA": str(QUERIES.parent / "data"),
           "SASCI_KG_ONTOLOGY": str(QUERIES.parent / "ontology")}
    local = {"SASCI_KG_BACKEND": "embedded", "SASCI_KG_QUERY_URL": "",
             "SASCI_KG_STORE": str(tmp_path / "store"),
             "SASCI_KG_DATA": env["SASCI_KG_DATA"], "SASCI_KG_ONTOLOGY": env["SASCI_KG_ONTOLOGY"]}

    def run(args: list[str], environ: dict[str, str]) -> str:
        result = runner.invoke(main, args, env=environ, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    loaded = run(["load", "--no-shacl", "--accept-engine-changes"], env)
    assert "Loaded" in loaded and "remote SPARQL engine at http://127.0.0.1:" in loaded
    password = engine.env.get("SASCI_KG_PASSWORD")
    assert not password or password not in loaded
    run(["load", "--no-shacl"], local)
    for args in (["query", "--name", "funders"], ["query", "--name", "sessions", "--format",
                                                  "csv"],
                 ["stats"], ["export", "--graph", VOCAB_GRAPH, "--format", "ttl"]):
        remote_output, local_output = run(args, env), run(args, local)
        if args[:2] == ["query", "--name"] and args[2] == "sessions":
            assert sorted(remote_output.splitlines()) == sorted(local_output.splitlines())
        else:
            assert remote_output == local_output, args


def test_cli_names_a_missing_engine_and_exits_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(main, ["stats", "--query-url",
                                       f"http://127.0.0.1:{port}/sparql"])
    assert result.exit_code == 1
    assert "cannot connect (connection refused)" in result.output


# ---------------------------------------------------------------------------------------
# Virtuoso's security defaults are gone, and its quirks are caught on the real thing.


def _virtuoso(engine: Engine) -> None:
    if engine.name != "virtuoso":
        pytest.skip("Virtuoso only")


def test_virtuoso_default_dba_password_is_gone(engine: Engine) -> None:
    _virtuoso(engine)
    assert engine.settings.update_url
    dba = RemoteBackend(engine.settings.query_url or "", update_url=engine.settings.update_url,
                        auth=DigestAuth("dba", Secret("dba")), timeout=10)
    with pytest.raises(RemoteError, match="refused access"):
        dba.update(f"CLEAR SILENT GRAPH <{EMPTY_GRAPH}>")


def test_virtuoso_refuses_anonymous_and_wrong_password_writes(engine: Engine) -> None:
    _virtuoso(engine)
    query_url = engine.settings.query_url or ""
    anonymous = RemoteBackend(query_url, update_url=query_url, timeout=10)
    with pytest.raises(RemoteError):
        anonymous.update(f"INSERT DATA {{ GRAPH <{FOREIGN_GRAPH}> {{ <http://ex/a> "
                         "<http://ex/b> <http://ex/c> }} }}")
    wrong = "not-the-password-at-all"
    stranger = RemoteBackend(query_url, update_url=engine.settings.update_url,
                             auth=DigestAuth(engine.settings.user or "x", Secret(wrong)),
                             timeout=10)
    with pytest.raises(RemoteError, match="refused access") as caught:
        stranger.update(f"CLEAR SILENT GRAPH <{EMPTY_GRAPH}>")
    assert wrong not in str(caught.value)
    assert FOREIGN_GRAPH not in engine.fresh()._all_graphs()


def test_virtuoso_partial_results_are_refused(engine: Engine) -> None:
    # Virtuoso's "anytime" mode (the timeout= parameter, or MaxQueryExecutionTime in the
    # ini) answers 200 with whatever it found in time. The backend never asks for it; here
    # the test does, to prove the X-SQL-State check on the real engine.
    _virtuoso(engine)
    heavy = (f"SELECT DISTINCT ?c ?f WHERE {{ GRAPH <{SOURCE_GRAPH}> {{ ?a ?b ?c . ?d ?e ?f . "
             "?g ?h ?i } FILTER(STR(?i) != STR(?c)) } ORDER BY ?c ?f LIMIT 2")
    with pytest.raises(RemoteTimeoutError, match="S1TAT"):
        engine.backend._run_query("SELECT", [("query", heavy), ("timeout", "300"),
                                             ("default-graph-uri", SOURCE_GRAPH)])


def test_load_needs_write_access(engine: Engine) -> None:
    settings = BackendSettings.from_options(query_url=engine.settings.query_url)
    with pytest.raises(StoreError, match="update URL"):
        load_dataset(settings, load_inputs(built_dataset()))


# ---------------------------------------------------------------------------------------
# `serve` in front of a remote engine: a representative subset of the endpoint's protocol
# checks, run against the production server (conftest's run_live_server) once with the
# embedded store and once per engine. The remote runs need the endpoint's backend settings
# (ServerConfig.query_url & co., see the module docstring of sasci_kg.backends); until the
# endpoint has them, those runs skip and say so.

SERVERS = ("embedded", *ENGINES)


def _endpoint_has_remote_hook() -> bool:
    from dataclasses import fields

    from sasci_kg.web.config import ServerConfig

    return {"backend", "query_url"} <= {f.name for f in fields(ServerConfig)}


def _server_options(engine: Engine) -> dict[str, object]:
    """Read-only serving: the query URL only — no update URL, no write credentials."""
    options: dict[str, object] = {"backend": "remote", "query_url": engine.settings.query_url}
    if engine.settings.row_cap:
        options["remote_row_cap"] = engine.settings.row_cap
    return options


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, str]]:
    """(name, base URL) of a live server on the real dataset, embedded or remote."""
    conftest = pytest.importorskip("conftest")
    store = load_real_store(tmp_path_factory.mktemp("served") / "store")
    options: dict[str, object] = {}
    name = request.param
    if name != "embedded":
        if not _endpoint_has_remote_hook():
            pytest.skip("the endpoint cannot front a remote engine yet: ServerConfig has no "
                        "backend/query_url settings (the hook asked of the web layer)")
        options = _server_options(request.getfixturevalue("engine_" + name))
    with conftest.run_live_server(store, tmp_path_factory.mktemp("live-" + name),
                                  **options) as server:
        yield name, server.url


@pytest.fixture(scope="module")
def engine_virtuoso() -> Engine:
    return _engine_named("virtuoso")


@pytest.fixture(scope="module")
def engine_oxigraph() -> Engine:
    return _engine_named("oxigraph")


def _engine_named(name: str) -> Engine:
    path = env_file(name)
    if not path.exists():
        unavailable(name, f"no settings at {path}")
    env = read_env(path)
    settings = BackendSettings.from_env(env)
    summary = load_dataset(settings, load_inputs(built_dataset()), accept_engine_changes=True)
    return Engine(name, env, settings, open_remote(settings), summary)


def _bindings(response: object) -> list[tuple[tuple[str, str], ...]]:
    import json as _json

    data = _json.loads(response.content)  # type: ignore[attr-defined]
    return sorted(tuple(sorted((k, v["value"]) for k, v in row.items()))
                  for row in data["results"]["bindings"])


def test_served_queries_answer_as_embedded(served: tuple[str, str],
                                           embedded: OxigraphBackend) -> None:
    import requests

    name, url = served
    funders = get_query("funders", QUERIES).sparql
    got = requests.get(url + "/sparql", params={"query": funders},
                       headers={"Accept": "application/sparql-results+json"}, timeout=30)
    assert got.status_code == 200, got.text
    expected = run_named_query(embedded, get_query("funders", QUERIES))
    assert isinstance(expected, ox.QuerySolutions)
    names = [v.value for v in expected.variables]
    assert _bindings(got) == sorted(tuple(sorted((n, row[n].value) for n in names  # type: ignore[union-attr]
                                                 if row[n] is not None)) for row in expected)
    # POST, form-encoded and direct, with a protocol dataset.
    count = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
    vocab_size = str(sum(1 for _ in embedded.quads(VOCAB_GRAPH)))
    for response in (
        requests.post(url + "/sparql", data={"query": count, "default-graph-uri": VOCAB_GRAPH},
                      headers={"Accept": "application/sparql-results+json"}, timeout=30),
        requests.post(url + "/sparql?default-graph-uri=" + VOCAB_GRAPH, data=count.encode(),
                      headers={"Content-Type": "application/sparql-query",
                               "Accept": "application/sparql-results+json"}, timeout=30),
    ):
        assert response.status_code == 200, response.text
        assert _bindings(response) == [(("n", vocab_size),)]
    ask = requests.get(url + "/sparql", params={"query": 'ASK { ?p schema:name "Juliette '
                                                         'Malley" }'},
                       headers={"Accept": "application/sparql-results+json"}, timeout=30)
    assert ask.status_code == 200 and ask.json()["boolean"] is True


def test_served_construct_negotiates_rdf(served: tuple[str, str],
                                         embedded: OxigraphBackend) -> None:
    import requests

    _, url = served
    construct = "CONSTRUCT { ?p schema:name ?n } WHERE { ?p a schema:Person ; schema:name ?n }"
    response = requests.get(url + "/sparql", params={"query": construct},
                            headers={"Accept": "text/turtle"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/turtle")
    got = {quad.triple for quad in ox.parse(response.content, format=ox.RdfFormat.TURTLE)}
    assert got == set(embedded.query(construct))  # type: ignore[arg-type]


def test_served_errors_keep_the_problem_shape(served: tuple[str, str]) -> None:
    import requests

    _, url = served
    bad = requests.get(url + "/sparql", params={"query": "SELECT * WHERE { ?s ?p }"},
                       timeout=30)
    assert bad.status_code == 400
    assert bad.headers["Content-Type"].startswith("application/problem+json")
    service = requests.get(url + "/sparql", params={
        "query": "SELECT * WHERE { SERVICE <http://127.0.0.1:9/sparql> { ?s ?p ?o } }"},
        timeout=30)
    assert 400 <= service.status_code < 500  # refused here, never forwarded to the engine
    update = requests.post(url + "/update", data={"update": "DROP ALL"}, timeout=30)
    assert update.status_code in (401, 403, 404, 405)


def test_served_remote_failures_are_502_and_504(tmp_path: Path) -> None:
    """A server whose engine refuses connections answers 502; a silent engine, 504."""
    import socket

    import requests

    conftest = pytest.importorskip("conftest")
    if not _endpoint_has_remote_hook():
        pytest.skip("the endpoint cannot front a remote engine yet: ServerConfig has no "
                    "backend/query_url settings (the hook asked of the web layer)")
    store = load_real_store(tmp_path / "store")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        for port, status in ((dead, 502), (silent.getsockname()[1], 504)):
            options = {"backend": "remote", "query_url": f"http://127.0.0.1:{port}/sparql",
                       "remote_timeout": 1.0}
            with conftest.run_live_server(store, tmp_path, **options) as server:
                started = time.monotonic()
                response = requests.get(server.url + "/sparql", params={
                    "query": "SELECT * WHERE { ?s ?p ?o } LIMIT 1"}, timeout=30)
                assert response.status_code == status, response.text
                assert response.headers["Content-Type"].startswith("application/problem+json")
                assert time.monotonic() - started < 10
