"""Exports: the same data gives the same bytes in every format, and independent parsers
(rdflib, Raptor's rapper, pyoxigraph) read every export back into the same graph."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pyoxigraph as ox
import pytest
import rdflib
from click.testing import CliRunner
from project import built_dataset, load_real_store
from rdflib.compare import isomorphic, to_isomorphic

from sasci_kg.cli import main
from sasci_kg.export import (
    FORMATS,
    JSONLD_CONTEXT,
    canonical_nquads,
    compact_jsonld,
    gzip_bytes,
    serialize_quads,
)
from sasci_kg.vocab import BASE
from sasci_kg.void import META_GRAPH, normalise

RAPPER = shutil.which("rapper")
# Raptor has no JSON-LD parser; rdflib and pyoxigraph check that one.
RAPPER_SYNTAX = {"ttl": "turtle", "nt": "ntriples", "nq": "nquads", "trig": "trig",
                 "rdfxml": "rdfxml"}
RDFLIB_SYNTAX = {"ttl": "turtle", "nt": "nt", "nq": "nquads", "trig": "trig",
                 "jsonld": "json-ld", "rdfxml": "xml"}


@pytest.fixture(scope="module")
def quads() -> list[ox.Quad]:
    """The real dataset as a store holds it."""
    return normalise(built_dataset().quads)


def shuffled(items: list[ox.Quad]) -> list[ox.Quad]:
    copy = list(items)
    random.Random(7).shuffle(copy)
    return copy


def need_rapper() -> str:
    if RAPPER is None:
        if os.environ.get("CI"):
            pytest.fail("rapper is missing: CI installs raptor2-utils")
        pytest.skip("Raptor's rapper is not installed (apt-get install raptor2-utils)")
    return RAPPER


# ---------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("name", list(FORMATS))
def test_same_data_same_bytes_in_any_order(quads: list[ox.Quad], name: str) -> None:
    first = serialize_quads(quads, name)
    assert serialize_quads(shuffled(quads), name) == first
    assert serialize_quads(reversed(quads), name) == first


def test_canonical_and_gzip_are_deterministic(quads: list[ox.Quad]) -> None:
    canonical = serialize_quads(quads, "nq", canonical=True)
    assert serialize_quads(shuffled(quads), "nq", canonical=True) == canonical
    assert gzip_bytes(canonical) == gzip_bytes(canonical)


def test_canonical_nquads_relabel_blank_nodes_and_sort_by_code_point() -> None:
    def dataset(label: str) -> list[ox.Quad]:
        node = ox.BlankNode(label)
        return [
            ox.Quad(ox.NamedNode("http://example.org/a"), ox.NamedNode("http://example.org/p"),
                    node, ox.DefaultGraph()),
            ox.Quad(node, ox.NamedNode("http://example.org/q"), ox.Literal("é\n\"x\""),
                    ox.NamedNode("http://example.org/g")),
        ]

    one, two = canonical_nquads(dataset("b1")), canonical_nquads(dataset("zz9"))
    assert one == two
    lines = one.decode().splitlines()
    assert lines == sorted(lines)
    assert "_:c14n0" in one.decode()
    assert one.endswith(b" .\n")


def test_gzip_is_reproducible_and_names_no_file() -> None:
    data = b"<http://example.org/s> <http://example.org/p> \"o\" .\n"
    packed = gzip_bytes(data)
    assert packed[:3] == b"\x1f\x8b\x08"
    assert packed[3] & 0x08 == 0  # FNAME flag: no file name
    assert packed[4:8] == b"\0\0\0\0"  # MTIME 0
    assert gzip.decompress(packed) == data


# ---------------------------------------------------------------------------------------
# Pretty, prefixed, compacted


def test_turtle_and_trig_are_pretty_with_only_used_prefixes(quads: list[ox.Quad]) -> None:
    for name in ("ttl", "trig"):
        text = serialize_quads(quads, name).decode()
        head = [line for line in text.splitlines() if line.startswith("@prefix ")]
        body = text[text.index("\n\n"):]
        assert head == sorted(head)
        for line in head:
            prefix = line.split()[1]
            assert prefix in body, f"{name}: {prefix} is declared but not used"
        assert "@prefix sh:" not in text and "@prefix sd:" not in text
        assert "person:adam-lent a foaf:Person , schema:Person ;" in text
        assert "\n\n" in body  # subjects are set apart


def test_jsonld_is_compacted_with_the_context_inline(quads: list[ox.Quad]) -> None:
    document = json.loads(serialize_quads(quads, "jsonld"))
    assert document["@context"] == JSONLD_CONTEXT["@context"]
    graphs = {g["@id"]: g["@graph"] for g in document["@graph"]}
    assert set(graphs) == {"graph:ontology", "graph:vocab", "sourcegraph:sasci-final-event"}
    people = {n["@id"]: n for n in graphs["sourcegraph:sasci-final-event"]}
    adam = people["person:adam-lent"]
    assert adam["@type"] == ["foaf:Person", "schema:Person"]
    assert adam["schema:name"] == "Adam Lent"
    assert adam["prov:wasDerivedFrom"] == {"@id": "source:sasci-final-event"}
    event = people["event:sasci-final-2024"]
    assert event["schema:startDate"] == {"@value": "2024-10-02", "@type": "xsd:date"}


def test_jsonld_of_a_default_graph_has_no_graph_objects() -> None:
    quad = ox.Quad(ox.NamedNode(BASE + "id/person/x"), ox.NamedNode("https://schema.org/name"),
                   ox.Literal("X", language="en"), ox.DefaultGraph())
    document = json.loads(compact_jsonld([quad]))
    assert document["@graph"] == [
        {"@id": "person:x", "schema:name": {"@value": "X", "@language": "en"}}
    ]


# ---------------------------------------------------------------------------------------
# Round trips through independent parsers


def rdflib_dataset(quads: list[ox.Quad], triples_only: bool) -> rdflib.Dataset:
    data = serialize_quads(quads, "nq")
    dataset = rdflib.Dataset()
    dataset.parse(data=data.decode(), format="nquads")
    if triples_only:
        merged = rdflib.Dataset()
        for s, p, o, _ in dataset.quads((None, None, None, None)):
            merged.add((s, p, o))
        return merged
    return dataset


def same_graphs(a: rdflib.Dataset, b: rdflib.Dataset) -> None:
    names_a = {g.identifier for g in a.graphs() if len(g)}
    names_b = {g.identifier for g in b.graphs() if len(g)}
    assert names_a == names_b
    for name in names_a:
        assert isomorphic(to_isomorphic(a.graph(name)), to_isomorphic(b.graph(name))), name


@pytest.mark.parametrize("name", list(FORMATS))
def test_rdflib_reads_every_export_back(quads: list[ox.Quad], name: str) -> None:
    fmt = FORMATS[name]
    parsed = rdflib.Dataset()
    parsed.parse(data=serialize_quads(quads, name), format=RDFLIB_SYNTAX[name])
    if fmt.quads:
        same_graphs(parsed, rdflib_dataset(quads, triples_only=False))
    else:
        expected = rdflib_dataset(quads, triples_only=True).default_graph
        assert isomorphic(to_isomorphic(parsed.default_graph), to_isomorphic(expected))


@pytest.mark.parametrize("name", list(RAPPER_SYNTAX))
def test_rapper_reads_every_export_back(quads: list[ox.Quad], name: str,
                                        tmp_path: Path) -> None:
    rapper = need_rapper()
    path = tmp_path / f"export.{FORMATS[name].extension}"
    path.write_bytes(serialize_quads(quads, name))
    done = subprocess.run([rapper, "-q", "-i", RAPPER_SYNTAX[name], "-o", "nquads", str(path),
                           BASE], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    back = set(ox.parse(done.stdout, format=ox.RdfFormat.N_QUADS))
    if FORMATS[name].quads:
        assert back == set(quads)
    else:
        assert {q.triple for q in back} == {q.triple for q in quads}


def test_pyoxigraph_reads_the_jsonld_back(quads: list[ox.Quad]) -> None:
    back = set(ox.parse(serialize_quads(quads, "jsonld"), format=ox.RdfFormat.JSON_LD))
    assert back == set(quads)


# ---------------------------------------------------------------------------------------
# The command


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_real_store(tmp_path_factory.mktemp("export") / "store")


def run(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout_bytes, result.stderr


def test_export_command_formats_canonical_gzip(store: Path, tmp_path: Path) -> None:
    data = [q for q in normalise(built_dataset().quads)]
    code, out, err = run("export", "--store", str(store), "--format", "trig")
    assert code == 0, err
    assert out == serialize_quads(data, "trig")  # the description graph is left out
    assert b"graph:meta" not in out

    code, out, err = run("export", "--store", str(store), "--canonical", "--gzip")
    assert code == 0, err
    assert gzip.decompress(out) == serialize_quads(data, "nq", canonical=True)

    target = tmp_path / "meta.nq"
    code, _, err = run("export", "--store", str(store), "--graph", META_GRAPH.value,
                       "--format", "nq", "-o", str(target))
    assert code == 0, err
    assert f"Wrote {target.stat().st_size} bytes" in err
    assert {q.graph_name for q in ox.parse(path=str(target), format=ox.RdfFormat.N_QUADS)} \
        == {META_GRAPH}


def test_export_command_refuses_canonical_turtle(store: Path) -> None:
    code, _, err = run("export", "--store", str(store), "--canonical", "--format", "ttl")
    assert code == 2
    assert "--canonical writes N-Quads" in err
