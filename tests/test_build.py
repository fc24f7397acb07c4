"""The build: the real facts become a valid, deterministic dataset equal to the golden file."""

from __future__ import annotations

from pathlib import Path

import pyoxigraph as ox
import pytest
from project import DATA, ONTOLOGY, ROOT, SOURCES, built_dataset
from rdflib import Dataset
from rdflib.compare import isomorphic, to_isomorphic

from sasci_kg.build import build_dataset, check_shapes, write_dataset
from sasci_kg.errors import ShaclError
from sasci_kg.export import serialize_quads
from sasci_kg.vocab import BASE

GOLDEN = ROOT / "tests" / "golden" / "dataset.nq"


def test_build_has_every_graph_and_no_blank_nodes() -> None:
    result = built_dataset()
    sizes = result.graph_sizes()
    assert set(sizes) == {
        f"{BASE}graph/ontology",
        f"{BASE}graph/vocab",
        f"{BASE}graph/source/sasci-final-event",
    }
    assert all(count > 50 for count in sizes.values())
    for quad in result.quads:
        assert not isinstance(quad.subject, ox.BlankNode)
        assert not isinstance(quad.object, ox.BlankNode)
        assert not isinstance(quad.object, ox.Triple)  # plain RDF 1.1


def test_each_triple_lives_in_one_graph() -> None:
    triples = [q.triple for q in built_dataset().quads]
    assert len(triples) == len(set(triples))


def test_evidence_was_checked_against_the_article() -> None:
    if SOURCES is None:
        pytest.skip("the source texts (../shared/sources) are not here")
    assert built_dataset().facts.notices == []  # type: ignore[union-attr]


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = write_dataset(built_dataset(), tmp_path / "a")
    again = build_dataset(DATA, ONTOLOGY, sources_dir=None, shacl=False)
    second = write_dataset(again, tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_matches_golden_as_text_and_as_graph() -> None:
    """tests/golden/dataset.nq is the reviewed output; regenerate it with
    `sasci-kg build --out tests/golden` when a change to the facts is intended."""
    built = serialize_quads(built_dataset().quads, "nq").decode()
    golden = GOLDEN.read_text(encoding="utf-8")
    assert built.splitlines() == golden.splitlines()
    a, b = Dataset(), Dataset()
    a.parse(data=built, format="nquads")
    b.parse(data=golden, format="nquads")
    names = {g.identifier for g in a.graphs() if len(g)}
    assert names == {g.identifier for g in b.graphs() if len(g)}
    for name in names:
        assert isomorphic(to_isomorphic(a.graph(name)), to_isomorphic(b.graph(name))), name


def test_trig_output_is_prefixed_and_parses(tmp_path: Path) -> None:
    trig = write_dataset(built_dataset(), tmp_path)[1].read_text(encoding="utf-8")
    assert trig.startswith("@prefix ")
    assert "@prefix kgo: <https://w3id.org/sasci-kg/def#> ." in trig
    assert "@prefix sh: " not in trig  # only prefixes that are used
    quads = list(ox.parse(trig.encode(), format=ox.RdfFormat.TRIG))
    assert len(quads) == len(built_dataset().quads)


def test_shacl_catches_a_planted_violation() -> None:
    """Remove the holder of one role fact: the shapes must name that fact."""
    fact = ox.NamedNode(f"{BASE}id/fact/opening-panel.chair.lisa-smith")
    held_by = ox.NamedNode("https://w3id.org/scholarlydata/ontology/conference-ontology.owl#isHeldBy")
    quads = [q for q in built_dataset().quads
             if not (q.subject == fact and q.predicate == held_by)]
    assert len(quads) == len(built_dataset().quads) - 1
    with pytest.raises(ShaclError) as info:
        check_shapes(quads, ONTOLOGY / "shapes.ttl")
    message = str(info.value)
    assert "SHACL constraint" in message
    assert f"<{fact.value}> <{held_by.value}>" in message
