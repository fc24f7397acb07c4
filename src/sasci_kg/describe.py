"""Describe one resource of the graph: what the linked-data pages and documents show.

:func:`describe_resource` takes a :class:`~sasci_kg.store.Backend` and an IRI and gives a
:class:`Description`: every outgoing statement, the incoming ones (up to a limit), labels
for every linked IRI, and tables for the kind of thing it is (a person's roles, sessions,
organisations and quotes; an organisation's people, sessions, partnerships and funding; a
fact's provenance and evidence). Every query binds the IRI as a constant term through
``substitutions`` and starts from it, so no lookup scans the graph and no text from a
request is ever pasted into SPARQL (the one query for many labels lists IRIs that came
out of the graph, checked again before they are written).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyoxigraph as ox

from .store import Backend
from .vocab import DCTERMS, KGO, ORG, OWL, PROV, RDF, RDFS, SCHEMA, SKOS

Term = ox.NamedNode | ox.Literal | ox.BlankNode

INCOMING_LIMIT = 200
# Label properties, best first.
LABEL_PROPERTIES = (RDFS.label, SKOS.prefLabel, SCHEMA.name, DCTERMS.title)

_OUTGOING = "SELECT ?s ?p ?o ?g WHERE { GRAPH ?g { ?s ?p ?o } }"
_INCOMING = "SELECT ?o ?s ?p ?g WHERE { GRAPH ?g { ?s ?p ?o } } LIMIT {limit}"
_INCOMING_COUNT = "SELECT ?o (COUNT(*) AS ?n) WHERE { ?s ?p ?o } GROUP BY ?o"
# The labels of many IRIs in one query (a hub's page shows hundreds of neighbours). The IRIs
# are listed, not bound: a remote engine binds a parameter with a VALUES block in the outer
# group, where it cannot reach into a sub-select with a LIMIT.
_MANY_LABELS = """SELECT ?x ?p ?label ?g WHERE {
  VALUES ?x { {iris} }
  VALUES ?p { rdfs:label skos:prefLabel schema:name dcterms:title }
  GRAPH ?g { ?x ?p ?label }
}"""
_UNSAFE_IN_IRI = re.compile(r"[<>\"{}|^`\\\x00-\x20]")
_LABELS = """SELECT ?x ?p ?label ?g WHERE {
  VALUES ?p { rdfs:label skos:prefLabel schema:name dcterms:title }
  GRAPH ?g { ?x ?p ?label }
}"""


@dataclass(frozen=True)
class Statement:
    """One triple about the resource and the named graph it lives in."""

    subject: ox.NamedNode | ox.BlankNode
    predicate: ox.NamedNode
    object: Term
    graph: ox.NamedNode | None

    @property
    def quad(self) -> ox.Quad:
        return ox.Quad(self.subject, self.predicate, self.object,
                       self.graph if self.graph is not None else ox.DefaultGraph())


@dataclass(frozen=True)
class Table:
    """A titled table of rows for one aspect of the resource (``key``: person-roles, …)."""

    key: str
    title: str
    columns: tuple[tuple[str, str], ...]  # (variable, heading)
    rows: tuple[Mapping[str, Term], ...]


@dataclass
class Description:
    """Everything the pages and documents say about one IRI."""

    iri: str
    outgoing: list[Statement]
    incoming: list[Statement]
    incoming_total: int
    labels: dict[str, str] = field(default_factory=dict)
    label_quads: list[ox.Quad] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    extra_quads: list[ox.Quad] = field(default_factory=list)

    @property
    def node(self) -> ox.NamedNode:
        return ox.NamedNode(self.iri)

    @property
    def types(self) -> list[str]:
        return sorted({s.object.value for s in self.outgoing
                       if s.predicate == RDF.type and isinstance(s.object, ox.NamedNode)})

    @property
    def label(self) -> str | None:
        return self.labels.get(self.iri)

    def values(self, predicate: ox.NamedNode) -> list[Term]:
        return [s.object for s in self.outgoing if s.predicate == predicate]

    @property
    def replaced_by(self) -> str | None:
        """The replacement of a retired IRI (``dcterms:isReplacedBy``), if any."""
        found = [v.value for v in self.values(DCTERMS.isReplacedBy)
                 if isinstance(v, ox.NamedNode)]
        return min(found) if found else None

    @property
    def retired(self) -> bool:
        """A tombstone: ``owl:deprecated true`` (and perhaps a replacement)."""
        return any(isinstance(v, ox.Literal) and v.value in ("true", "1")
                   for v in self.values(OWL.deprecated)) or self.replaced_by is not None

    @property
    def retired_reason(self) -> str | None:
        notes = [v.value for v in self.values(SKOS.changeNote) if isinstance(v, ox.Literal)]
        return notes[0] if notes else None

    @property
    def truncated(self) -> bool:
        return self.incoming_total > len(self.incoming)

    def quads(self) -> list[ox.Quad]:
        """The document about the resource: its statements both ways, the labels of what
        they link to, and the evidence of its facts (each quad in its own graph)."""
        quads = [s.quad for s in (*self.outgoing, *self.incoming)]
        return list(dict.fromkeys([*quads, *self.label_quads, *self.extra_quads]))


# ---------------------------------------------------------------------------------------
# Labels, cached per store generation by the caller.


def _label_rank(predicate: ox.NamedNode, literal: ox.Literal) -> tuple[int, int, str]:
    lang = literal.language or ""
    lang_rank = 0 if lang in ("en", "en-gb", "en-GB") else 1 if not lang else 2
    return (LABEL_PROPERTIES.index(predicate), lang_rank, literal.value)


class Labels:
    """The best label of each IRI (and the label quads), asked one IRI at a time with the
    IRI bound, and remembered: build one per store generation."""

    def __init__(self, backend: Backend, *, max_entries: int = 50_000):
        self.backend = backend
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str | None, tuple[ox.Quad, ...]]] = {}

    def lookup(self, iri: str) -> tuple[str | None, tuple[ox.Quad, ...]]:
        with self._lock:
            found = self._cache.get(iri)
        if found is not None:
            return found
        node = ox.NamedNode(iri)
        return self._remember({iri: _select(self.backend, _LABELS, x=node)})[iri]

    def prefetch(self, iris: Iterable[str], limit: int) -> None:
        """Look up, in one query, the labels of (up to ``limit`` of) ``iris``; those without
        one are remembered as unlabelled."""
        wanted = {iri for iri in iris if not _UNSAFE_IN_IRI.search(iri)}
        with self._lock:
            wanted -= set(self._cache)
        if not wanted:
            return
        chosen = sorted(wanted)[:max(0, int(limit))]
        rows: dict[str, list[dict[str, Term]]] = {iri: [] for iri in chosen}
        query = _MANY_LABELS.replace("{iris}", " ".join(f"<{iri}>" for iri in chosen))
        for row in _select(self.backend, query):
            subject = row.get("x")
            if isinstance(subject, ox.NamedNode) and subject.value in rows:
                rows[subject.value].append(row)
        self._remember(rows)

    def _remember(self, rows: Mapping[str, list[dict[str, Term]]]
                  ) -> dict[str, tuple[str | None, tuple[ox.Quad, ...]]]:
        found_all = {}
        for iri, iri_rows in rows.items():
            node = ox.NamedNode(iri)
            best: tuple[tuple[int, int, str], str] | None = None
            quads = []
            for row in iri_rows:
                label, predicate, graph = row.get("label"), row.get("p"), row.get("g")
                if not isinstance(label, ox.Literal) or not isinstance(predicate, ox.NamedNode):
                    continue
                quads.append(ox.Quad(node, predicate, label, graph if isinstance(
                    graph, ox.NamedNode) else ox.DefaultGraph()))
                rank = _label_rank(predicate, label)
                if best is None or rank < best[0]:
                    best = (rank, label.value)
            found_all[iri] = (best[1] if best else None, tuple(sorted(quads, key=str)))
        with self._lock:
            if len(self._cache) + len(found_all) >= self.max_entries:
                self._cache.clear()
            self._cache.update(found_all)
        return found_all

    def label(self, iri: str) -> str | None:
        return self.lookup(iri)[0]

    def many(self, iris: Iterable[str]) -> dict[str, str]:
        out = {}
        for iri in sorted(set(iris)):
            label = self.label(iri)
            if label is not None:
                out[iri] = label
        return out


# ---------------------------------------------------------------------------------------
# Queries.


def _select(backend: Backend, sparql: str, **bound: ox.NamedNode) -> list[dict[str, Term]]:
    """Rows of a SELECT whose variables ``bound`` are fixed to constant terms.

    A ``VALUES_s`` marker is replaced by ``VALUES ?s { <iri> }`` (the IRI checked by
    pyoxigraph and written by it): the table queries put one in each UNION branch, because
    Oxigraph does not push a VALUES block at the top of the group into the branches — an
    organisation's people took 43 ms that way at 10^6 triples, 0.2 ms with one per branch.
    """
    subject = bound.get("s")
    if subject is not None and "VALUES_s" in sparql:
        sparql = sparql.replace("VALUES_s", f"VALUES ?s {{ {subject} }}")
        bound = {k: v for k, v in bound.items() if k != "s"}
    result = backend.query(sparql, substitutions=dict(bound))
    if not isinstance(result, ox.QuerySolutions):
        raise TypeError("expected a SELECT query")
    names = [v.value for v in result.variables]
    rows = []
    for solution in result:
        row: dict[str, Term] = {}
        for name in names:
            value = solution[name]
            if isinstance(value, (ox.NamedNode, ox.Literal, ox.BlankNode)):
                row[name] = value
        rows.append(row)
    return rows


def _statement(row: Mapping[str, Term]) -> Statement | None:
    s, p, o, g = row.get("s"), row.get("p"), row.get("o"), row.get("g")
    if not isinstance(s, (ox.NamedNode, ox.BlankNode)) or not isinstance(p, ox.NamedNode) \
            or o is None:
        return None
    return Statement(s, p, o, g if isinstance(g, ox.NamedNode) else None)


def _order(statements: Iterable[Statement]) -> list[Statement]:
    return sorted(statements, key=lambda s: (s.predicate.value, str(s.subject), str(s.object),
                                             str(s.graph)))


@dataclass(frozen=True)
class TableQuery:
    """A table shown for resources of some kinds: a SELECT with ``?s`` bound to the IRI."""

    key: str
    title: str
    kinds: frozenset[str]
    sparql: str
    columns: tuple[tuple[str, str], ...]


_PERSON = frozenset({"person"})
_ORGANISATION = frozenset({"organisation"})
_FACT = frozenset({"fact"})
_SESSION = frozenset({"session"})

TABLE_QUERIES: tuple[TableQuery, ...] = (
    TableQuery("person-roles", "Roles", _PERSON, """
SELECT ?s ?role ?session ?org ?certainty ?fact WHERE {
  ?fact conf:isHeldBy ?s ; conf:withRole ?role ; conf:during ?session .
  OPTIONAL { ?fact kgo:onBehalfOf ?org }
  OPTIONAL { ?fact kgo:certainty ?certainty }
} ORDER BY ?session ?role""",
        (("role", "Role"), ("session", "Session"), ("org", "On behalf of"),
         ("certainty", "Certainty"), ("fact", "Fact"))),
    TableQuery("person-sessions", "Sessions", _PERSON, """
SELECT DISTINCT ?s ?session ?event WHERE {
  { VALUES_s ?fact conf:isHeldBy ?s ; conf:during ?session }
  UNION { VALUES_s ?said schema:creator ?s ; schema:recordedAt ?session }
  OPTIONAL { ?session schema:superEvent ?event }
} ORDER BY ?session""",
        (("session", "Session"), ("event", "Event"))),
    TableQuery("person-organisations", "Organisations", _PERSON, """
SELECT DISTINCT ?s ?org ?how ?fact WHERE {
  { VALUES_s ?fact conf:isAffiliationOf ?s ; conf:withOrganisation ?org .
    BIND("affiliation during the event" AS ?how) }
  UNION { VALUES_s ?fact conf:isHeldBy ?s ; kgo:onBehalfOf ?org .
          BIND("appeared on its behalf" AS ?how) }
  UNION { VALUES_s ?fact org:member ?s ; org:organization ?org . BIND("member" AS ?how) }
} ORDER BY ?org ?how ?fact""",
        (("org", "Organisation"), ("how", "How"), ("fact", "Fact"))),
    TableQuery("person-quotes", "Quotes and claims", _PERSON, """
SELECT ?s ?said ?kind ?text ?session ?certainty WHERE {
  ?said schema:creator ?s ; a ?kind ; schema:text ?text .
  FILTER(?kind IN (schema:Quotation, schema:Claim))
  OPTIONAL { ?said schema:recordedAt ?session }
  OPTIONAL { ?said kgo:certainty ?certainty }
} ORDER BY ?kind ?said""",
        (("text", "Words"), ("kind", "Kind"), ("session", "Session"),
         ("certainty", "Certainty"), ("said", "Record"))),
    TableQuery("organisation-people", "People", _ORGANISATION, """
SELECT DISTINCT ?s ?person ?how ?role ?session ?fact WHERE {
  { VALUES_s ?fact conf:withOrganisation ?s ; conf:isAffiliationOf ?person .
    BIND("affiliated during the event" AS ?how) }
  UNION { VALUES_s ?fact kgo:onBehalfOf ?s ; conf:isHeldBy ?person ; conf:during ?session ;
               conf:withRole ?role . BIND("appeared on its behalf" AS ?how) }
  UNION { VALUES_s ?fact org:organization ?s ; org:member ?person ; org:role ?role .
          ?person a schema:Person . BIND("member" AS ?how) }
} ORDER BY ?person ?how ?session""",
        (("person", "Person"), ("how", "How"), ("role", "Role"), ("session", "Session"),
         ("fact", "Fact"))),
    TableQuery("organisation-sessions", "Sessions and events", _ORGANISATION, """
SELECT DISTINCT ?s ?session ?how WHERE {
  { VALUES_s ?fact kgo:onBehalfOf ?s ; conf:during ?session . BIND("represented" AS ?how) }
  UNION { VALUES_s ?session schema:organizer ?s . BIND("organiser" AS ?how) }
} ORDER BY ?session ?how""",
        (("session", "Session or event"), ("how", "How"))),
    TableQuery("organisation-partnerships", "Partnerships and structure", _ORGANISATION, """
SELECT DISTINCT ?s ?member ?partnership ?role ?certainty ?fact WHERE {
  { VALUES_s ?fact org:member ?s } UNION { VALUES_s ?fact org:organization ?s }
  ?fact org:member ?member ; org:organization ?partnership ; org:role ?role .
  OPTIONAL { ?fact kgo:certainty ?certainty }
} ORDER BY ?partnership ?member""",
        (("member", "Member"), ("role", "Role"), ("partnership", "Of"),
         ("certainty", "Certainty"), ("fact", "Fact"))),
    TableQuery("organisation-units", "Units", _ORGANISATION, """
SELECT DISTINCT ?s ?unit ?parent WHERE {
  { VALUES_s ?s org:unitOf ?parent . BIND(?s AS ?unit) }
  UNION { VALUES_s ?unit org:unitOf ?s . BIND(?s AS ?parent) }
} ORDER BY ?parent ?unit""",
        (("unit", "Unit"), ("parent", "Unit of"))),
    TableQuery("organisation-funding", "Funding", _ORGANISATION, """
SELECT DISTINCT ?s ?funder ?funded ?fact WHERE {
  { VALUES_s ?funded schema:funder ?s . BIND(?s AS ?funder) }
  UNION { VALUES_s ?s schema:funder ?funder . BIND(?s AS ?funded) }
  OPTIONAL { ?fact rdf:subject ?funded ; rdf:predicate schema:funder ; rdf:object ?funder }
} ORDER BY ?funded ?funder""",
        (("funder", "Funder"), ("funded", "Funds"), ("fact", "Fact"))),
    TableQuery("session-people", "Who took part", _SESSION, """
SELECT ?s ?person ?role ?org ?fact WHERE {
  ?fact conf:during ?s ; conf:isHeldBy ?person ; conf:withRole ?role .
  OPTIONAL { ?fact kgo:onBehalfOf ?org }
} ORDER BY ?role ?person""",
        (("person", "Person"), ("role", "Role"), ("org", "On behalf of"), ("fact", "Fact"))),
    TableQuery("session-said", "What was said", _SESSION, """
SELECT ?s ?person ?text ?said WHERE {
  ?said schema:recordedAt ?s ; schema:creator ?person ; schema:text ?text .
} ORDER BY ?person ?said""",
        (("person", "Who"), ("text", "Words"), ("said", "Record"))),
    TableQuery("fact-provenance", "Provenance", _FACT, """
SELECT ?s ?source ?title ?certainty ?note WHERE {
  ?s prov:wasDerivedFrom ?source .
  OPTIONAL { ?source dcterms:title ?title }
  OPTIONAL { ?s kgo:certainty ?certainty }
  OPTIONAL { ?s skos:editorialNote ?note }
}""",
        (("source", "Source"), ("certainty", "Certainty"), ("note", "Curator's note"))),
    TableQuery("fact-evidence", "Evidence", _FACT, """
SELECT ?s ?exact ?selector WHERE {
  ?s kgo:evidence ?selector . ?selector oa:exact ?exact .
} ORDER BY ?exact""",
        (("exact", "Excerpt of the source"), ("selector", "Selector"))),
)

_KIND_TYPES = {
    "person": {SCHEMA.Person.value},
    "organisation": {SCHEMA.Organization.value, ORG.Organization.value,
                     SCHEMA.ResearchProject.value},
    "session": {KGO.Session.value},
}
_EXTRA_HOPS = (KGO.evidence,)  # their objects' statements belong in the document too


def kinds_of(outgoing: Sequence[Statement]) -> set[str]:
    """Which tables apply: person, organisation, session, fact (anything with provenance)."""
    types = {s.object.value for s in outgoing
             if s.predicate == RDF.type and isinstance(s.object, ox.NamedNode)}
    kinds = {kind for kind, classes in _KIND_TYPES.items() if types & classes}
    if any(s.predicate in (PROV.wasDerivedFrom, KGO.evidence) for s in outgoing):
        kinds.add("fact")
    return kinds


def describe_resource(
    backend: Backend,
    iri: str,
    *,
    labels: Labels | None = None,
    incoming_limit: int = INCOMING_LIMIT,
) -> Description | None:
    """The description of ``iri``, or None when the graph says nothing about it.

    ``iri`` must be a valid IRI (``ox.NamedNode(iri)`` raises ValueError otherwise).
    """
    node = ox.NamedNode(iri)
    labels = labels or Labels(backend)
    outgoing = _order(filter(None, map(_statement, _select(backend, _OUTGOING, s=node))))
    incoming_rows = _select(backend, _INCOMING.replace("{limit}", str(int(incoming_limit) + 1)),
                            o=node)
    incoming = _order(filter(None, map(_statement, incoming_rows)))
    if not outgoing and not incoming:
        return None
    total = len(incoming)
    if total > incoming_limit:
        counted = _select(backend, _INCOMING_COUNT, o=node)
        n = counted[0].get("n") if counted else None
        total = int(n.value) if isinstance(n, ox.Literal) else total
        incoming = incoming[:incoming_limit]
    description = Description(iri=iri, outgoing=outgoing, incoming=incoming,
                              incoming_total=total)
    if len(incoming) > 20:  # a hub: one query for its neighbours' labels, not one each
        labels.prefetch((s.subject.value for s in incoming
                         if isinstance(s.subject, ox.NamedNode)), incoming_limit + 1)
    kinds = kinds_of(outgoing)
    for query in TABLE_QUERIES:
        if query.kinds & kinds:
            rows = tuple(_select(backend, query.sparql, s=node))
            if rows:
                description.tables.append(Table(query.key, query.title, query.columns, rows))
    for statement in outgoing:
        if statement.predicate in _EXTRA_HOPS and isinstance(statement.object, ox.NamedNode):
            for row in _select(backend, _OUTGOING, s=statement.object):
                found = _statement(row)
                if found is not None:
                    description.extra_quads.append(found.quad)
    linked = {iri}
    for statement in (*outgoing, *incoming):
        linked.add(statement.predicate.value)
        for term in (statement.subject, statement.object, statement.graph):
            if isinstance(term, ox.NamedNode):
                linked.add(term.value)
    for table in description.tables:
        for table_row in table.rows:
            linked.update(v.value for v in table_row.values() if isinstance(v, ox.NamedNode))
    for linked_iri in sorted(linked):
        label, quads = labels.lookup(linked_iri)
        if label is not None:
            description.labels[linked_iri] = label
        if linked_iri != iri:
            description.label_quads.extend(quads)
    description.extra_quads.sort(key=str)
    return description


__all__ = [
    "Description", "INCOMING_LIMIT", "Labels", "Statement", "Table", "TABLE_QUERIES",
    "describe_resource", "kinds_of",
]


# ---------------------------------------------------------------------------------------
# The ontology's documentation (for /def), from the ontology and vocabulary graphs.


@dataclass(frozen=True)
class TermDoc:
    """One term of the ontology: what it is, what it means, how it aligns."""

    iri: str
    anchor: str
    label: str
    kinds: tuple[str, ...]  # Class, ObjectProperty, …
    definition: str | None
    comment: str | None
    links: tuple[tuple[str, str], ...]  # (property IRI, target IRI): alignments and hints
    defined_by: str | None


@dataclass(frozen=True)
class ConceptDoc:
    """A controlled value of a SKOS scheme."""

    iri: str
    label: str
    notation: str | None
    definition: str | None
    matches: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SchemeDoc:
    """A SKOS concept scheme and its values."""

    iri: str
    label: str
    definition: str | None
    concepts: tuple[ConceptDoc, ...]


@dataclass(frozen=True)
class OntologyDoc:
    """The documentation of the ontology graph and the vocabulary graph."""

    iri: str
    metadata: tuple[tuple[str, Term], ...]  # (property IRI, value)
    local_classes: tuple[TermDoc, ...]
    local_properties: tuple[TermDoc, ...]
    reused_classes: tuple[TermDoc, ...]
    reused_properties: tuple[TermDoc, ...]
    schemes: tuple[SchemeDoc, ...]
    triples: int


_TERM_LINKS = (
    RDFS.subClassOf, RDFS.subPropertyOf, OWL.equivalentClass, OWL.equivalentProperty,
    SKOS.exactMatch, SKOS.closeMatch, SKOS.broadMatch, SKOS.narrowMatch, SKOS.relatedMatch,
    SCHEMA.domainIncludes, SCHEMA.rangeIncludes, RDFS.domain, RDFS.range, RDFS.seeAlso,
)
_CLASS_KINDS = {OWL.Class.value: "Class", RDFS.Class.value: "Class"}
_PROPERTY_KINDS = {OWL.ObjectProperty.value: "ObjectProperty",
                   OWL.DatatypeProperty.value: "DatatypeProperty",
                   OWL.AnnotationProperty.value: "AnnotationProperty",
                   RDF.Property.value: "Property"}


def _by_subject(quads: Iterable[ox.Quad]) -> dict[str, dict[str, list[Term]]]:
    subjects: dict[str, dict[str, list[Term]]] = {}
    for quad in quads:
        if isinstance(quad.subject, ox.NamedNode) and not isinstance(quad.object, ox.Triple):
            subjects.setdefault(quad.subject.value, {}).setdefault(
                quad.predicate.value, []).append(quad.object)
    return subjects


def _text(values: dict[str, list[Term]], *predicates: ox.NamedNode) -> str | None:
    for predicate in predicates:
        found = sorted((v for v in values.get(predicate.value, []) if isinstance(v, ox.Literal)),
                       key=lambda v: (v.language not in ("en", None), v.value))
        if found:
            return found[0].value
    return None


def _iris(values: dict[str, list[Term]], predicate: ox.NamedNode) -> list[str]:
    return sorted(v.value for v in values.get(predicate.value, []) if isinstance(v, ox.NamedNode))


def describe_ontology(backend: Backend, ontology_graph: str, vocab_graph: str) -> OntologyDoc:
    """The documentation model of ``/def``: local and reused classes and properties with
    their definitions and alignments, and the SKOS schemes with their values."""
    subjects = _by_subject(backend.quads(ontology_graph))
    ontology_iri = next((s for s, v in sorted(subjects.items())
                         if OWL.Ontology.value in {t.value for t in v.get(RDF.type.value, [])
                                                   if isinstance(t, ox.NamedNode)}), "")
    local = ontology_iri + "#"

    def term(iri: str, values: dict[str, list[Term]], kinds: tuple[str, ...]) -> TermDoc:
        links = tuple((p.value, target) for p in _TERM_LINKS for target in _iris(values, p))
        defined = _iris(values, RDFS.isDefinedBy)
        anchor = iri[len(local):] if iri.startswith(local) else iri
        return TermDoc(iri=iri, anchor=anchor,
                       label=_text(values, RDFS.label, SKOS.prefLabel) or anchor,
                       kinds=kinds, definition=_text(values, SKOS.definition),
                       comment=_text(values, RDFS.comment), links=links,
                       defined_by=defined[0] if defined else None)

    groups: dict[tuple[bool, str], list[TermDoc]] = {}
    for iri, values in sorted(subjects.items()):
        types = set(_iris(values, RDF.type))
        for table, kind in ((_CLASS_KINDS, "class"), (_PROPERTY_KINDS, "property")):
            kinds = tuple(sorted({table[t] for t in types if t in table}))
            if kinds:
                groups.setdefault((iri.startswith(local), kind), []).append(
                    term(iri, values, kinds))
    metadata = tuple((p, v) for p, values in sorted(subjects.get(ontology_iri, {}).items())
                     if p != RDF.type.value for v in sorted(values, key=str))
    vocab = _by_subject(backend.quads(vocab_graph))
    schemes = []
    for iri, values in sorted(vocab.items()):
        if SKOS.ConceptScheme.value not in _iris(values, RDF.type):
            continue
        concepts = []
        for concept in _iris(values, SKOS.hasTopConcept):
            c = vocab.get(concept, {})
            concepts.append(ConceptDoc(
                iri=concept, label=_text(c, SKOS.prefLabel, RDFS.label) or concept,
                notation=_text(c, SKOS.notation), definition=_text(c, SKOS.definition),
                matches=tuple((p.value, t) for p in (SKOS.exactMatch, SKOS.closeMatch,
                                                     SKOS.broadMatch, SKOS.relatedMatch)
                              for t in _iris(c, p))))
        schemes.append(SchemeDoc(iri=iri, label=_text(values, SKOS.prefLabel, RDFS.label) or iri,
                                 definition=_text(values, SKOS.definition),
                                 concepts=tuple(concepts)))
    return OntologyDoc(
        iri=ontology_iri, metadata=metadata,
        local_classes=tuple(groups.get((True, "class"), [])),
        local_properties=tuple(groups.get((True, "property"), [])),
        reused_classes=tuple(groups.get((False, "class"), [])),
        reused_properties=tuple(groups.get((False, "property"), [])),
        schemes=tuple(schemes),
        triples=sum(len(v) for values in subjects.values() for v in values.values()),
    )
