"""The dataset's description: VoID figures equal counts taken by SPARQL on the loaded store,
the description never counts itself, states nothing about the downloads it cannot know at
build time, and the same inputs give the same bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pyoxigraph as ox
import pytest
from project import DATA, ONTOLOGY, built_dataset, load_real_store

from sasci_kg.build import build_dataset
from sasci_kg.errors import FactsError
from sasci_kg.export import serialize_quads
from sasci_kg.store import OxigraphBackend, open_store
from sasci_kg.vocab import BASE
from sasci_kg.void import (
    DATASET,
    DOWNLOADS,
    META_GRAPH,
    RIGHTS,
    build_time,
    count,
)

VOID = "http://rdfs.org/ns/void#"
NOT_META = f"FILTER(?g != <{META_GRAPH.value}>)"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> OxigraphBackend:
    return open_store(load_real_store(tmp_path_factory.mktemp("void") / "store"))


def number(backend: OxigraphBackend, sparql: str) -> int:
    result = backend.query(sparql)
    assert isinstance(result, ox.QuerySolutions)
    (row,) = list(result)
    value = row["n"]
    assert isinstance(value, ox.Literal)
    return int(value.value)


def stated(backend: OxigraphBackend, subject: str, prop: str) -> int:
    return number(backend, f"SELECT ?n WHERE {{ GRAPH <{META_GRAPH.value}> "
                           f"{{ <{subject}> <{VOID}{prop}> ?n }} }}")


def test_dataset_figures_equal_sparql_counts(store: OxigraphBackend) -> None:
    d = DATASET.value
    assert stated(store, d, "triples") == number(
        store, f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH ?g {{ ?s ?p ?o }} {NOT_META} }}")
    assert stated(store, d, "distinctSubjects") == number(
        store, f"SELECT (COUNT(DISTINCT ?s) AS ?n) WHERE {{ GRAPH ?g {{ ?s ?p ?o }} {NOT_META} }}")
    assert stated(store, d, "distinctObjects") == number(
        store, f"SELECT (COUNT(DISTINCT ?o) AS ?n) WHERE {{ GRAPH ?g {{ ?s ?p ?o }} {NOT_META} }}")
    assert stated(store, d, "properties") == number(
        store, f"SELECT (COUNT(DISTINCT ?p) AS ?n) WHERE {{ GRAPH ?g {{ ?s ?p ?o }} {NOT_META} }}")
    assert stated(store, d, "classes") == number(
        store, f"SELECT (COUNT(DISTINCT ?c) AS ?n) WHERE {{ GRAPH ?g {{ ?s a ?c }} {NOT_META} }}")
    assert stated(store, d, "entities") == number(
        store, f"SELECT (COUNT(DISTINCT ?s) AS ?n) WHERE {{ GRAPH ?g {{ ?s ?p ?o }} {NOT_META} "
               f"FILTER(isIRI(?s) && STRSTARTS(STR(?s), \"{BASE}id/\")) }}")


def test_partitions_and_subsets_equal_sparql_counts(store: OxigraphBackend) -> None:
    meta = META_GRAPH.value
    rows = store.query(f"SELECT ?c ?n WHERE {{ GRAPH <{meta}> {{ <{DATASET.value}> "
                       f"void:classPartition ?part . ?part void:class ?c ; void:entities ?n }} }}")
    assert isinstance(rows, ox.QuerySolutions)
    classes = {r["c"].value: int(r["n"].value) for r in rows}  # type: ignore[union-attr]
    assert len(classes) == stated(store, DATASET.value, "classes")
    for cls, n in classes.items():
        assert n == number(store, f"SELECT (COUNT(DISTINCT ?s) AS ?n) WHERE {{ GRAPH ?g "
                                  f"{{ ?s a <{cls}> }} {NOT_META} }}"), cls
    rows = store.query(f"SELECT ?p ?n WHERE {{ GRAPH <{meta}> {{ <{DATASET.value}> "
                       "void:propertyPartition ?part . ?part void:property ?p ; "
                       "void:triples ?n } }")
    assert isinstance(rows, ox.QuerySolutions)
    properties = {r["p"].value: int(r["n"].value) for r in rows}  # type: ignore[union-attr]
    assert len(properties) == stated(store, DATASET.value, "properties")
    for prop, n in properties.items():
        assert n == number(store, f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH ?g "
                                  f"{{ ?s <{prop}> ?o }} {NOT_META} }}"), prop
    graphs = [g for g in store.graphs() if g != meta]
    for graph in graphs:
        assert stated(store, graph, "triples") == number(
            store, f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH <{graph}> {{ ?s ?p ?o }} }}")
    subsets = store.query(f"SELECT ?g WHERE {{ GRAPH <{meta}> {{ <{DATASET.value}> "
                          "void:subset ?g } }")
    assert isinstance(subsets, ox.QuerySolutions)
    assert sorted(r["g"].value for r in subsets) == graphs  # type: ignore[union-attr]


def test_each_triple_lives_in_one_graph_and_meta_does_not_count_itself() -> None:
    result = built_dataset()
    data = {q.triple for q in result.quads}
    meta = {q.triple for q in result.meta}
    assert not data & meta
    assert {q.graph_name for q in result.meta} == {META_GRAPH}
    assert not any(q.graph_name == META_GRAPH for q in result.quads)
    assert not any(isinstance(t, ox.BlankNode) for q in result.meta
                   for t in (q.subject, q.object))


def test_licence_rights_and_sources(store: OxigraphBackend) -> None:
    meta = {(q.subject.value, q.predicate.value, getattr(q.object, "value", ""))
            for q in store.quads(META_GRAPH.value)}
    licence = "https://creativecommons.org/licenses/by/4.0/"
    assert (DATASET.value, "http://purl.org/dc/terms/license", licence) in meta
    assert (DATASET.value, "http://purl.org/dc/terms/rights", RIGHTS) in meta
    assert "fair dealing" in RIGHTS and "third-party" in RIGHTS
    source_graph = BASE + "graph/source/sasci-final-event"
    assert (source_graph, "http://purl.org/dc/terms/source",
            BASE + "id/source/sasci-final-event") in meta
    assert (BASE + "graph/ontology", "http://purl.org/dc/terms/source",
            BASE + "id/file/ontology/sasci.ttl") in meta


def test_build_provenance_names_every_input_with_its_hash() -> None:
    meta = {(q.subject.value, q.predicate.value): q.object for q in built_dataset().meta}
    for path in sorted((DATA / "sasci-final-event").glob("*.yaml")):
        node = f"{BASE}id/file/data/sasci-final-event/{path.name}"
        assert meta[(node, "https://schema.org/sha256")].value == \
            hashlib.sha256(path.read_bytes()).hexdigest()
    builds = {s for s, p in meta if p == "http://www.w3.org/ns/prov#endedAtTime"}
    assert len(builds) == 1
    versions = {o.value for (s, p), o in meta.items()
                if p == "https://schema.org/softwareVersion"}
    assert ox.__version__ in versions


def test_downloads_are_described_by_url_and_format_only() -> None:
    """The server makes the downloads on first request, from whatever the store then holds
    (more graphs after `sasci-kg load FILE…`, literals rewritten by a remote engine): a size
    or checksum computed here could be false, so the VoID gives none."""
    meta = built_dataset().meta
    stated = {(q.subject.value, q.predicate.value): q.object.value for q in meta}
    for download in DOWNLOADS:
        node = download.node.value
        assert (DATASET.value, "http://www.w3.org/ns/dcat#distribution") in stated
        assert stated[(node, "http://www.w3.org/ns/dcat#downloadURL")] == \
            f"{BASE}download/{download.filename}"
        assert stated[(node, "http://www.w3.org/ns/dcat#mediaType")] == \
            f"http://www.iana.org/assignments/media-types/{download.media_type}"
        assert stated[(node, "http://purl.org/dc/terms/format")].startswith(
            "http://www.w3.org/ns/formats/")
        compressed = stated.get((node, "http://www.w3.org/ns/dcat#compressFormat"))
        assert compressed == ("http://www.iana.org/assignments/media-types/application/gzip"
                              if download.gzip else None)
    said = {q.predicate.value for q in meta}
    assert "http://www.w3.org/ns/dcat#byteSize" in said  # of the input files, known here
    assert not any(q.predicate.value.startswith("http://spdx.org/") for q in meta)
    assert not any(q.subject.value.startswith(f"{BASE}id/distribution/")
                   and q.predicate.value == "http://www.w3.org/ns/dcat#byteSize" for q in meta)


def _q(s: str, p: str, o: ox.NamedNode | ox.Literal | str, g: str | None) -> ox.Quad:
    obj = ox.NamedNode(o) if isinstance(o, str) else o
    graph = ox.NamedNode(g) if g else ox.DefaultGraph()
    return ox.Quad(ox.NamedNode(s), ox.NamedNode(p), obj, graph)


def test_count_reads_every_kind_of_term_as_a_store_holds_it() -> None:
    """count() reads N-Quads lines as text: literals with spaces, quotes and IRIs in them,
    the default graph, typed literals that a store writes in canonical form (two of which
    become one quad), the description's graph (not counted)."""
    rdf_type = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
    integer = ox.NamedNode("http://www.w3.org/2001/XMLSchema#integer")
    g1, g2 = BASE + "graph/source/a", BASE + "graph/source/b"
    s1, s2 = BASE + "id/person/a", "http://example.org/b"
    quads = [
        _q(s1, rdf_type, "https://schema.org/Person", g1),
        _q(s2, rdf_type, "https://schema.org/Person", g1),
        _q(s1, "http://p/name", ox.Literal("a b <http://x> c"), g1),
        _q(s1, "http://p/name", ox.Literal('say "<http://y>" <z>', language="en"), g2),
        _q(s1, "http://p/note", ox.Literal("x <http://z>", datatype=ox.NamedNode("http://d")),
           None),
        _q(s2, "http://p/link", BASE + "graph/x", None),
        _q(s2, "http://p/n", ox.Literal("01", datatype=integer), g2),
        _q(s2, "http://p/n", ox.Literal("1", datatype=integer), g2),  # the same, in a store
        _q(s2, "http://p/n", ox.Literal("1", datatype=integer), g1),
        _q(s1, "http://p/when", ox.Literal("PT1H0M", datatype=ox.NamedNode(
            "http://www.w3.org/2001/XMLSchema#duration")), g1),
        _q(DATASET.value, "http://p/x", ox.Literal("not counted"), META_GRAPH.value),
    ]
    store = ox.Store()
    store.extend(quads)
    held = [q for q in store if q.graph_name != META_GRAPH]
    figures = count(quads, keep=(BASE + "id/",))
    assert figures.triples == len(held) == 9
    assert figures.distinct_subjects == len({q.subject for q in held})
    assert figures.distinct_objects == len({q.object for q in held})
    assert figures.entities == 1
    assert figures.classes == {"https://schema.org/Person": 2}
    assert figures.examples == {"https://schema.org/Person": s2}
    assert figures.properties == {p: sum(1 for q in held if q.predicate.value == p)
                                  for p in sorted({q.predicate.value for q in held})}
    assert figures.graphs == {"": 2, g1: 5, g2: 2}
    assert figures.statements == {f"{q.subject} {q.predicate} {q.object}" for q in held
                                  if q.subject.value.startswith(BASE + "id/")}


def test_the_time_comes_from_source_date_epoch_or_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1727827200")
    first = build_dataset(DATA, ONTOLOGY, shacl=False).meta
    again = build_dataset(DATA, ONTOLOGY, shacl=False).meta
    assert serialize_quads(first, "nq") == serialize_quads(again, "nq")
    assert b'"2024-10-02T00:00:00Z"' in serialize_quads(first, "nq")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "not-a-time")
    with pytest.raises(FactsError, match="SOURCE_DATE_EPOCH"):
        build_time(DATA)
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    done = subprocess.run(["git", "log", "-1", "--format=%ct", "--", "."], cwd=DATA,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        pytest.skip("data/ is not in a git checkout here")
    assert build_time(DATA) == int(done.stdout.strip())


def test_outside_git_the_newest_input_file_dates_the_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    folder = tmp_path / "data"
    folder.mkdir()
    file = folder / "x.yaml"
    file.write_text("x: 1\n")
    os.utime(file, (1_700_000_000, 1_700_000_000))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert build_time(folder, [file]) == 1_700_000_000
