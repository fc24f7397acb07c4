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
from collections.abc import Callable, Iterator
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
# `serve` in front of a remote engine: the endpoint's protocol checks, run against the
# production server (conftest's run_live_server) once with the embedded store and once per
# engine, read-only (the query URL only, anonymous), with the same limits. The embedded
# store loaded with the same build is the reference.

SERVERS = ("embedded", *ENGINES)
SERVED_MAX_ROWS = 3000  # above every answer below, below the whole dataset (~3,900 quads)
JSON_RESULTS = "application/sparql-results+json"


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
    options: dict[str, object] = {"max_rows": SERVED_MAX_ROWS}
    name = request.param
    if name != "embedded":
        options.update(_server_options(request.getfixturevalue("engine_" + name)))
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
    try:
        summary = load_dataset(settings, load_inputs(built_dataset()),
                               accept_engine_changes=True)
    except RemoteError as exc:
        unavailable(name, str(exc))
    return Engine(name, env, settings, open_remote(settings), summary)


def _bindings(response: object) -> list[tuple[tuple[str, str], ...]]:
    import json as _json

    data = _json.loads(response.content)  # type: ignore[attr-defined]
    return sorted(tuple(sorted((k, v["value"]) for k, v in row.items()))
                  for row in data["results"]["bindings"])


def _without_durations(text: str) -> str:
    """The one literal Virtuoso stores in its own form (see test_only_known_literal_rewrites)."""
    return re.sub(r'"[^"]*"\^\^(<http://www.w3.org/2001/XMLSchema#duration>|xsd:duration)',
                  "DURATION", text)


def _problem(response: object, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["Content-Type"].startswith(  # type: ignore[attr-defined]
        "application/problem+json")
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["type"] == BASE + "problem/" + slug and body["status"] == status, body
    return body


def test_served_queries_answer_as_embedded(served: tuple[str, str],
                                           embedded: OxigraphBackend) -> None:
    import requests

    name, url = served
    funders = get_query("funders", QUERIES).sparql
    got = requests.get(url + "/sparql", params={"query": funders},
                       headers={"Accept": JSON_RESULTS}, timeout=30)
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
                      headers={"Accept": JSON_RESULTS}, timeout=30),
        requests.post(url + "/sparql?default-graph-uri=" + VOCAB_GRAPH, data=count.encode(),
                      headers={"Content-Type": "application/sparql-query",
                               "Accept": JSON_RESULTS}, timeout=30),
    ):
        assert response.status_code == 200, response.text
        assert _bindings(response) == [(("n", vocab_size),)]
    ask = requests.get(url + "/sparql", params={"query": 'ASK { ?p schema:name "Juliette '
                                                         'Malley" }'},
                       headers={"Accept": JSON_RESULTS}, timeout=30)
    assert ask.status_code == 200 and ask.json()["boolean"] is True


def test_served_protocol_dataset_replaces_the_union(served: tuple[str, str],
                                                    embedded: OxigraphBackend) -> None:
    """A dataset part that names no graph is empty, not "our union" (SPARQL 1.1 Protocol
    §2.1.4), and a query's own FROM is kept when the request names no dataset."""
    import requests

    _, url = served
    listing = "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }"
    count = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
    cases = [
        (listing, {"default-graph-uri": VOCAB_GRAPH}, []),  # no named graphs given: none
        (listing, {"named-graph-uri": VOCAB_GRAPH}, [(("g", VOCAB_GRAPH),)]),
        (count, {"named-graph-uri": VOCAB_GRAPH}, [(("n", "0"),)]),  # empty default graph
        (f"SELECT (COUNT(*) AS ?n) FROM <{VOCAB_GRAPH}> WHERE {{ ?s ?p ?o }}", {},
         [(("n", str(sum(1 for _ in embedded.quads(VOCAB_GRAPH)))),)]),
    ]
    for query, dataset, expected in cases:
        response = requests.get(url + "/sparql", params={"query": query, **dataset},
                                headers={"Accept": JSON_RESULTS}, timeout=30)
        assert response.status_code == 200, response.text
        assert _bindings(response) == expected, (query, dataset)


@pytest.mark.parametrize("accept,content_type", [
    ("application/sparql-results+json", "application/sparql-results+json"),
    ("application/sparql-results+xml", "application/sparql-results+xml"),
    ("text/csv", "text/csv"),
    ("text/tab-separated-values", "text/tab-separated-values"),
])
def test_served_results_negotiate(served: tuple[str, str], accept: str,
                                  content_type: str) -> None:
    import requests

    _, url = served
    query = ("SELECT ?name WHERE { ?p a schema:Person ; schema:name ?name } "
             "ORDER BY ?name LIMIT 5")
    response = requests.get(url + "/sparql", params={"query": query},
                            headers={"Accept": accept}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(content_type)
    assert response.headers["X-Result-Rows"] == "5"
    assert "Adam Lent" in response.text
    refused = requests.get(url + "/sparql", params={"query": query},
                           headers={"Accept": "image/png"}, timeout=30)
    _problem(refused, 406, "not-acceptable")


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
    for accept, fmt in (("application/n-triples", ox.RdfFormat.N_TRIPLES),
                        ("application/rdf+xml", ox.RdfFormat.RDF_XML)):
        other = requests.get(url + "/sparql", params={"query": construct},
                             headers={"Accept": accept}, timeout=30)
        assert other.status_code == 200, other.text
        assert {q.triple for q in ox.parse(other.content, format=fmt)} == got


def test_served_errors_keep_the_problem_shape(served: tuple[str, str]) -> None:
    import requests

    _, url = served
    bad = requests.get(url + "/sparql", params={"query": "SELECT * WHERE { ?s ?p }"},
                       timeout=30)
    body = _problem(bad, 400, "syntax-error")
    assert body["line"] == 1 and body["column"]  # the same message as embedded, pre-checked
    for query in ("SELECT * WHERE { SERVICE <http://127.0.0.1:9/sparql> { ?s ?p ?o } }",
                  "PREFIX ex: <http://127.0.0.1:9/> SELECT * { SERVICE ex:x { ?s ?p ?o } }"):
        service = requests.get(url + "/sparql", params={"query": query}, timeout=30)
        _problem(service, 403, "remote-access-refused")  # refused here, never forwarded
    load = requests.get(url + "/sparql", params={"query": "LOAD <http://127.0.0.1:9/x.ttl>"},
                        timeout=30)
    assert load.status_code in (400, 403), load.text
    for path in ("/update", "/sparql"):
        update = requests.post(url + path, data={"update": "DROP ALL"}, timeout=30)
        assert update.status_code in (400, 403), update.text
    write = requests.put(url + "/rdf-graph-store", params={"graph": VOCAB_GRAPH},
                         data=b"", headers={"Content-Type": "application/n-triples"}, timeout=30)
    _problem(write, 403, "forbidden")


def test_served_limits_hold(served: tuple[str, str]) -> None:
    import requests

    _, url = served
    everything = requests.get(url + "/sparql", params={"query": "SELECT * { ?s ?p ?o }"},
                              headers={"Accept": JSON_RESULTS}, timeout=30)
    body = _problem(everything, 507, "result-too-large")
    assert body["cap"] == "max-rows" and body["limit"] == SERVED_MAX_ROWS
    dump = requests.get(url + "/rdf-graph-store", headers={"Accept": "application/n-quads"},
                        timeout=30)
    _problem(dump, 507, "result-too-large")
    page = requests.get(url + "/sparql", params={"query": "SELECT * { ?s ?p ?o } LIMIT 7"},
                        headers={"Accept": JSON_RESULTS}, timeout=30)
    assert page.status_code == 200 and len(_bindings(page)) == 7
    too_long = requests.post(url + "/sparql", data={"query": "SELECT * {}" + " " * 200_000},
                             timeout=30)
    _problem(too_long, 413, "query-too-large")


def test_served_graph_store_reads(served: tuple[str, str], embedded: OxigraphBackend) -> None:
    import requests

    name, url = served
    graph = requests.get(url + "/rdf-graph-store", params={"graph": VOCAB_GRAPH},
                         headers={"Accept": "application/n-triples"}, timeout=30)
    assert graph.status_code == 200, graph.text
    assert graph.headers["Content-Type"].startswith("application/n-triples")
    expected = serialize_quads(embedded.quads(VOCAB_GRAPH), "nt").decode()
    assert sorted(graph.text.splitlines()) == sorted(expected.splitlines())
    missing = requests.get(url + "/rdf-graph-store", params={"graph": FOREIGN_GRAPH},
                           timeout=30)
    _problem(missing, 404, "not-found")
    head = requests.head(url + "/rdf-graph-store", params={"graph": VOCAB_GRAPH},
                         headers={"Accept": "text/turtle"}, timeout=30)
    assert head.status_code == 200 and head.headers["Content-Type"].startswith("text/turtle")


def test_served_linked_data_as_embedded(served: tuple[str, str],
                                        embedded: OxigraphBackend) -> None:
    import html

    import requests

    from sasci_kg.describe import Labels, describe_resource
    from sasci_kg.void import data_quads, download_bytes, find_download

    name, url = served
    person = BASE + "id/person/juliette-malley"
    data = requests.get(url + "/id/person/juliette-malley",
                        headers={"Accept": "application/n-quads"}, timeout=30)
    assert data.status_code == 200, data.text
    description = describe_resource(embedded, person)
    assert description is not None
    got = {q for q in ox.parse(data.content, format=ox.RdfFormat.N_QUADS)}
    assert got == set(description.quads())
    # A hub's page names its neighbours (their labels come in one query, on every backend).
    hub = BASE + "id/scheme/ideas"
    page = requests.get(url + "/id/scheme/ideas", headers={"Accept": "text/html"}, timeout=30)
    assert page.status_code == 200, page.text
    labels = Labels(embedded)
    hub_description = describe_resource(embedded, hub, labels=labels)
    assert hub_description is not None and len(hub_description.incoming) > 20
    for statement in hub_description.incoming:
        label = labels.label(statement.subject.value)
        assert label is None or html.escape(label, quote=False) in page.text, label
    # VoID (the graph/meta graph) and a download: the same as the embedded store serves.
    void = requests.get(url + "/.well-known/void", headers={"Accept": "application/n-triples"},
                        timeout=30)
    assert void.status_code == 200, void.text
    meta = serialize_quads(embedded.quads(BASE + "graph/meta"), "nt").decode()
    assert sorted(void.text.splitlines()) == sorted(meta.splitlines())
    download = requests.get(url + "/download/sasci-kg.nq", timeout=60)
    assert download.status_code == 200, download.text
    found = find_download("sasci-kg.nq")
    assert found is not None
    expected = download_bytes(list(data_quads(embedded.quads())), found).decode()
    assert _without_durations(download.text) == _without_durations(expected)
    missing = requests.get(url + "/id/person/nobody-at-all",
                           headers={"Accept": "text/turtle"}, timeout=30)
    _problem(missing, 404, "not-found")


def test_served_health_and_description_keep_credentials_out(served: tuple[str, str],
                                                            embedded: OxigraphBackend) -> None:
    import requests

    name, url = served
    health = requests.get(url + "/healthz", timeout=30)
    assert health.status_code == 200, health.text
    assert health.json()["quads"] == len(embedded)
    assert health.json()["graphs"] == len(embedded.graphs())
    description = requests.get(url + "/sparql", headers={"Accept": "text/turtle"}, timeout=30)
    assert description.status_code == 200, description.text
    text = description.text
    names = {q.object.value for q in ox.parse(description.content, format=ox.RdfFormat.TURTLE)
             if q.predicate.value == "http://www.w3.org/ns/sparql-service-description#name"}
    assert names == set(embedded.graphs())
    if name != "embedded":
        assert "remote SPARQL 1.1 engine" in text
        engine_url = read_env(env_file(name))["SASCI_KG_QUERY_URL"]
        port = engine_url.split(":")[-1].split("/")[0]
        assert engine_url not in text and f":{port}" not in text  # the engine is not named
        password = read_env(env_file(name)).get("SASCI_KG_PASSWORD")
        assert not password or password not in text


# ---------------------------------------------------------------------------------------
# `serve` in front of an engine that misbehaves: the fake engine of test_remote_quirks.


@pytest.fixture
def fake() -> Iterator[object]:
    from test_remote_quirks import FakeEngine

    engine = FakeEngine()
    yield engine
    engine.close()


FAKE_GRAPH = BASE + "graph/source/fake"
SECRET_WORD = "fake-engine-pa55-never-shown"


def _fake_reply(mode: dict[str, str]) -> Callable[[object], object]:
    """Answer the backend's own listing and counting queries; misbehave on the rest."""
    from test_remote_quirks import Reply, literal_rows, solutions

    def reply(seen: object) -> object:
        query = seen.form.get("query", [""])[0]  # type: ignore[attr-defined]
        if "SELECT DISTINCT ?g" in query:
            return Reply(body=solutions(["g"], [{"g": {"type": "uri", "value": FAKE_GRAPH}}]))
        if "COUNT(*) AS ?n" in query and "VALUES ?g" in query:
            return Reply(body=solutions(["g", "n"], [{
                "g": {"type": "uri", "value": FAKE_GRAPH},
                "n": {"type": "literal", "value": "3", "datatype": XSD + "integer"}}]))
        how = mode["now"]
        if how == "silent":
            return Reply(body=literal_rows(1), delay=5)
        if how == "garbage":
            return Reply(body=b"<html>Service temporarily overloaded</html>")
        if how == "partial":
            return Reply(body=literal_rows(2), headers={"X-SQL-State": "S1TAT"})
        if how == "capped":
            return Reply(body=literal_rows(3), headers={"X-SPARQL-MaxRows": "3"})
        if how == "unavailable":
            return Reply(status=503, body=b"down for maintenance", content_type="text/plain")
        if how == "refuses":
            return Reply(status=400, body=b"Virtuoso 37000 Error SP030: no such feature",
                         content_type="text/plain")
        return Reply(body=literal_rows(1))

    return reply


def test_served_engine_failures_are_502_and_504_in_time(fake: object, tmp_path: Path) -> None:
    """Each way an engine fails comes back as a problem (502, or 504 for time), within the
    time limit, and the workers carry on; SERVICE, LOAD and updates never reach it."""
    import requests

    from sasci_kg.web.sparql import REMOTE_INFO_SECONDS

    conftest = pytest.importorskip("conftest")
    mode = {"now": "fine"}
    fake.reply = _fake_reply(mode)  # type: ignore[attr-defined]
    secret = tmp_path / "password"
    secret.write_text(SECRET_WORD + "\n")
    options = {"backend": "remote", "query_url": fake.url + "/sparql",  # type: ignore[attr-defined]
               "auth": "basic", "user": "kg", "password_file": str(secret),
               "remote_timeout": 1.0}
    store = tmp_path / "no-store-needed"
    with conftest.run_live_server(store, tmp_path, **options) as server:
        workers = sorted(server.workers())

        def ask(**params: str) -> requests.Response:
            started = time.monotonic()
            response = requests.get(server.sparql, params={
                "query": "SELECT ?x WHERE { ?s ?p ?x } LIMIT 1", **params},
                headers={"Accept": JSON_RESULTS}, timeout=30)
            assert time.monotonic() - started < 3.5, "not answered within the time limit"
            return response

        assert ask().status_code == 200
        for how, status, slug in (("silent", 504, "remote-timeout"),
                                  ("garbage", 502, "remote-error"),
                                  ("partial", 504, "remote-timeout"),
                                  ("capped", 502, "remote-error"),
                                  ("unavailable", 502, "remote-error"),
                                  ("refuses", 400, "query-error")):
            mode["now"] = how
            body = _problem(ask(), status, slug)
            assert fake.url not in str(body) and SECRET_WORD not in str(body), body  # type: ignore[attr-defined]
        # The job's own time limit, when shorter than the engine's: a query-timeout, and the
        # worker was not killed (it only waited on a socket).
        mode["now"] = "silent"
        _problem(ask(timeout="0.5"), 504, "query-timeout")
        mode["now"] = "fine"
        assert ask().status_code == 200
        assert sorted(server.workers()) == workers
        sent = len(fake.seen)  # type: ignore[attr-defined]
        for query in ("SELECT * { SERVICE <http://127.0.0.1:9/> { ?s ?p ?o } }",
                      "LOAD <http://127.0.0.1:9/x.ttl>", "DROP ALL", "SELECT * { ?s ?p }"):
            refused = requests.get(server.sparql, params={"query": query}, timeout=30)
            assert 400 <= refused.status_code < 500, refused.text
        assert len(fake.seen) == sent  # type: ignore[attr-defined]
        assert all(s.headers.get("Authorization", "").startswith("Basic ")  # type: ignore[attr-defined]
                   for s in fake.seen)  # type: ignore[attr-defined]
        fake.close()  # type: ignore[attr-defined]  # the engine goes away: refused connections
        _problem(ask(), 502, "remote-error")
        # /healthz reuses the engine's counts for a few seconds, then says it is unhealthy.
        deadline = time.monotonic() + REMOTE_INFO_SECONDS + 10
        health = requests.get(server.url + "/healthz", timeout=30)
        while health.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            health = requests.get(server.url + "/healthz", timeout=30)
        _problem(health, 503, "store-unavailable")
        log = server.log()
    assert "cannot connect (connection refused)" in log  # the details are in the log ...
    assert SECRET_WORD not in log  # ... but never the password


# ---------------------------------------------------------------------------------------
# The endpoint's configuration and command line for a remote engine.


def test_serve_settings_are_named_as_the_cli_options(tmp_path: Path) -> None:
    from sasci_kg.web.config import ConfigError, load_config

    secret = tmp_path / "token"
    secret.write_text(SECRET_WORD)
    config = load_config({}, environ={
        "SASCI_KG_QUERY_URL": "http://127.0.0.1:9/sparql", "SASCI_KG_AUTH": "bearer",
        "SASCI_KG_TOKEN_FILE": str(secret), "SASCI_KG_REMOTE_TIMEOUT": "4",
        "SASCI_KG_REMOTE_ROW_CAP": "10000",
        "SASCI_KG_GRAPH_NAMESPACES": f"{BASE} https://example.org/graphs,2024/"})
    settings = config.backend_settings
    assert config.is_remote and settings.is_remote and settings.auth == "bearer"
    assert settings.token is not None and settings.token.reveal() == SECRET_WORD
    assert settings.timeout == 4 and settings.row_cap == 10000
    assert settings.graph_namespaces == (BASE, "https://example.org/graphs,2024/")
    for text in (repr(config), str(config), repr(settings), settings.describe()):
        assert SECRET_WORD not in text
    password = load_config({"query_url": "http://127.0.0.1:9/sparql", "auth": "digest",
                            "user": "kg", "password": SECRET_WORD}, environ={})
    assert SECRET_WORD not in repr(password) and SECRET_WORD not in repr(
        password.backend_settings)
    assert not load_config({}, environ={}).is_remote
    for options, message in (
        ({"backend": "remote"}, "--query-url"),
        ({"query_url": "ftp://x/sparql"}, "--query-url"),
        ({"query_url": "http://x/sparql", "auth": "digest"}, "needs a user and a password"),
        ({"query_url": "http://x/sparql", "updates": True, "update_token": "t" * 20},
         "never writes to a remote engine"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(options, environ={})


def test_serve_command_fronts_the_engine_without_building(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: object) -> None:
    from test_remote_quirks import Reply, solutions

    import sasci_kg.web.server as server_module

    started: list[object] = []
    monkeypatch.setattr(server_module, "run_server", started.append)
    fake.reply = lambda _: Reply(body=solutions(["g"], []))  # type: ignore[attr-defined]
    store = tmp_path / "store"
    result = CliRunner().invoke(main, [
        "serve", "--query-url", fake.url + "/sparql", "--remote-timeout", "2",  # type: ignore[attr-defined]
        "--store", str(store), "--port", "9"], env={"SASCI_KG_CONFIG": ""},
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "holds none of our graphs" in result.output
    assert "sasci-kg load --backend remote" in result.output
    assert "Serving remote SPARQL engine at http://127.0.0.1:" in result.output
    assert not store.exists()  # nothing built or loaded locally
    (config,) = started
    assert config.is_remote and config.remote_timeout == 2  # type: ignore[attr-defined]
    bad = CliRunner().invoke(main, ["serve", "--backend", "remote"], env={
        "SASCI_KG_QUERY_URL": "", "SASCI_KG_CONFIG": ""})
    assert bad.exit_code == 1 and "--query-url" in bad.output
