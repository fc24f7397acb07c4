"""Facts → quads: each kind of record becomes the nodes and shortcuts docs/model.md says."""

from __future__ import annotations

from pathlib import Path

import pyoxigraph as ox
from project import ONTOLOGY
from test_facts import GOOD, write_source

from sasci_kg.evidence import excerpt_key
from sasci_kg.facts import load_facts
from sasci_kg.mapping import facts_to_quads, iri
from sasci_kg.vocab import (
    CERTAINTY,
    CONF,
    EVIDENCE,
    KGO,
    OA,
    ORG,
    PROV,
    RDF,
    ROLE,
    SCHEMA,
    SOURCE,
    SOURCE_GRAPH,
)

EXTRA = {
    "more.yaml": """\
        projects:
          - id: project/p
            name: The project
            duration: P5Y
            evidence: the project
        organisations:
          - id: org/centre
            name: The Centre
            type: research-centre
            evidence: of the Centre
        memberships:
          - id: fact/p.member.centre
            member: org/centre
            organisation: project/p
            role: lead-partner
            certainty: implied
            note: led by someone of the Centre
            evidence: led by Dr Ann Example of the Centre
        statements:
          - id: fact/p.funder.rip
            subject: project/p
            predicate: funder
            object: org/research-in-practice
            evidence: [with Research in Practice, the project]
        """,
}


def quads(tmp_path: Path) -> set[ox.Quad]:
    data = write_source(tmp_path, {**GOOD, **EXTRA})
    return set(facts_to_quads(load_facts(data, ONTOLOGY, sources_dir=tmp_path / "sources")))


def triples(tmp_path: Path) -> set[tuple[object, object, object]]:
    found = set()
    for quad in quads(tmp_path):
        assert quad.graph_name == SOURCE_GRAPH.term("doc")
        found.add((quad.subject, quad.predicate, quad.object))
    return found


def test_role_fact_node_and_shortcut(tmp_path: Path) -> None:
    t = triples(tmp_path)
    fact = iri("fact/plenary.presenter.ann-example")
    person, session = iri("person/ann-example"), iri("session/the-event.plenary")
    assert (fact, RDF.type, CONF.RoleDuringEvent) in t
    assert (fact, RDF.type, KGO.Fact) in t
    assert (fact, CONF.isHeldBy, person) in t
    assert (fact, CONF.withRole, ROLE.presenter) in t
    assert (fact, CONF.during, session) in t
    assert (session, SCHEMA.performer, person) in t  # the plain shortcut
    assert (fact, KGO.certainty, CERTAINTY.stated) in t
    assert (fact, PROV.wasDerivedFrom, SOURCE.doc) in t


def test_evidence_selector_is_content_addressed(tmp_path: Path) -> None:
    t = triples(tmp_path)
    fact = iri("fact/plenary.presenter.ann-example")
    selector = EVIDENCE.term(f"doc.{excerpt_key('led by Dr Ann Example')}")
    assert (fact, KGO.evidence, selector) in t
    assert (selector, RDF.type, OA.TextQuoteSelector) in t
    assert (selector, OA.exact, ox.Literal("led by Dr Ann Example")) in t
    assert (selector, PROV.wasQuotedFrom, SOURCE.doc) in t
    # the person record cites the same words: one selector node, two links to it
    assert (iri("person/ann-example"), KGO.evidence, selector) in t


def test_statement_is_reified_and_asserted(tmp_path: Path) -> None:
    t = triples(tmp_path)
    fact, project, rip = iri("fact/p.funder.rip"), iri("project/p"), iri("org/research-in-practice")
    assert (fact, RDF.type, RDF.Statement) in t
    assert (fact, RDF.subject, project) in t
    assert (fact, RDF.predicate, SCHEMA.funder) in t
    assert (fact, RDF.object, rip) in t
    assert (project, SCHEMA.funder, rip) in t
    assert len([1 for s, p, _ in t if s == fact and p == KGO.evidence]) == 2


def test_membership_with_certainty_and_note(tmp_path: Path) -> None:
    t = triples(tmp_path)
    fact, centre, project = iri("fact/p.member.centre"), iri("org/centre"), iri("project/p")
    assert (fact, ORG.member, centre) in t and (fact, ORG.organization, project) in t
    assert (centre, ORG.memberOf, project) in t
    assert (fact, KGO.certainty, CERTAINTY.implied) in t
    assert (centre, RDF.type, ORG.OrganizationalUnit) in t
    assert (project, SCHEMA.duration,
            ox.Literal("P5Y", datatype=ox.NamedNode("http://www.w3.org/2001/XMLSchema#duration"))
            ) in t


def test_quote_and_no_blank_nodes(tmp_path: Path) -> None:
    t = triples(tmp_path)
    quote = iri("quote/ann-example.bold")
    assert (quote, RDF.type, SCHEMA.Quotation) in t
    assert (quote, SCHEMA.text, ox.Literal("Being bold matters - always.", language="en")) in t
    assert (quote, SCHEMA.creator, iri("person/ann-example")) in t
    for s, _, o in t:
        assert not isinstance(s, ox.BlankNode) and not isinstance(o, ox.BlankNode)


def test_mapping_is_deterministic(tmp_path: Path) -> None:
    data = write_source(tmp_path, {**GOOD, **EXTRA})
    facts = load_facts(data, ONTOLOGY)
    assert list(facts_to_quads(facts)) == list(facts_to_quads(facts))
