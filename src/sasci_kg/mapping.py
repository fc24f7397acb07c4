"""Map checked fact records to RDF quads (pure functions, no I/O).

``facts_to_quads`` takes a :class:`~sasci_kg.facts.FactSet` and gives the quads of every
source's named graph, following ``docs/model.md``: each record a node with its own IRI,
provenance on every node, plain binary shortcuts beside every n-ary fact. No blank nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pyoxigraph import Literal, NamedNode, Quad

from .evidence import excerpt_key
from .facts import FactSet, Record, SourceDoc
from .vocab import (
    CERTAINTY,
    CONCEPT,
    CONF,
    CONTROLLED_SCHEMES,
    DCTERMS,
    ENTITY_NAMESPACES,
    EVIDENCE,
    FOAF,
    FRAPO,
    ID,
    KGO,
    OA,
    ORG,
    OWL,
    PROV,
    RDF,
    RDFS,
    SCHEMA,
    SCHEME,
    SKOS,
    SOURCE_GRAPH,
    XSD,
)

IDEAS_SCHEME = SCHEME.ideas
EN = "en"

ORG_TYPE_CLASSES: dict[str, tuple[NamedNode, ...]] = {
    "university": (SCHEMA.CollegeOrUniversity, ORG.FormalOrganization),
    "research-centre": (ORG.OrganizationalUnit,),
    "local-authority": (SCHEMA.GovernmentOrganization, ORG.FormalOrganization),
    "funder": (FRAPO.FundingAgency, SCHEMA.GovernmentOrganization, ORG.FormalOrganization),
}

# Role code → the shortcut property from the session to the person.
ROLE_SHORTCUTS: dict[str, NamedNode] = {
    "chair": KGO.chair,
    "panellist": SCHEMA.performer,
    "speaker": SCHEMA.performer,
    "presenter": SCHEMA.performer,
    "session-lead": KGO.sessionLead,
    "organiser": SCHEMA.organizer,
    "participant": SCHEMA.attendee,
}

# Statement predicate key → the asserted properties (the first is the one reified).
STATEMENT_PROPERTIES: dict[str, tuple[NamedNode, ...]] = {
    "funder": (SCHEMA.funder, FRAPO.isFundedBy),
    "unit_of": (ORG.unitOf, ORG.subOrganizationOf),
    "organizer": (SCHEMA.organizer,),
    "about": (SCHEMA.about,),
    "recorded_at": (SCHEMA.recordedAt,),
}


def iri(ref: str) -> NamedNode:
    """The IRI of a typed reference such as ``person/lisa-smith``."""
    kind, _, slug = ref.partition("/")
    if kind not in ENTITY_NAMESPACES:
        raise ValueError(f"unknown reference type in {ref!r}")
    return ID.term(ref)


def code(scheme: str, value: str) -> NamedNode:
    """The IRI of a controlled value, e.g. ``code('role', 'chair')``."""
    return CONTROLLED_SCHEMES[scheme].term(value)


def source_graph(source: SourceDoc) -> NamedNode:
    return SOURCE_GRAPH.term(source.slug)


def evidence_iri(source: SourceDoc, excerpt: str) -> NamedNode:
    return EVIDENCE.term(f"{source.slug}.{excerpt_key(excerpt)}")


def _text(value: str, language: str | None = None) -> Literal:
    return Literal(value, language=language) if language else Literal(value)


class _Emitter:
    """Collects the triples of one source graph."""

    def __init__(self, source: SourceDoc):
        self.source = source
        self.source_iri = iri(source.id)
        self.graph = source_graph(source)
        self.quads: list[Quad] = []

    def add(self, s: NamedNode, p: NamedNode, o: NamedNode | Literal) -> None:
        self.quads.append(Quad(s, p, o, self.graph))

    def types(self, s: NamedNode, *classes: NamedNode) -> None:
        for cls in classes:
            self.add(s, RDF.type, cls)

    def optional(self, s: NamedNode, p: NamedNode, value: str | None,
                 language: str | None = None) -> None:
        if value:
            self.add(s, p, _text(value, language))

    def provenance(self, node: NamedNode, record: Record) -> None:
        """Source, evidence selectors and (for facts) certainty of a record's node."""
        self.add(node, PROV.wasDerivedFrom, self.source_iri)
        for excerpt in record.evidence():
            selector = evidence_iri(self.source, excerpt)
            self.add(node, KGO.evidence, selector)
            self.add(selector, RDF.type, OA.TextQuoteSelector)
            self.add(selector, OA.exact, Literal(excerpt))
            self.add(selector, PROV.wasQuotedFrom, self.source_iri)
        certainty = record.get("certainty")
        if certainty:
            self.add(node, RDF.type, KGO.Fact)
            self.add(node, KGO.certainty, CERTAINTY.term(certainty))
        note = record.get("note")
        if note:
            self.add(node, SKOS.editorialNote, Literal(note, language=EN))


def _map_source(out: _Emitter) -> None:
    source, node = out.source, out.source_iri
    values = source.values
    out.types(node, SCHEMA.NewsArticle, PROV.Entity)
    out.add(node, DCTERMS.title, _text(values["title"], EN))
    out.add(node, SCHEMA.headline, _text(values["title"], EN))
    out.add(node, RDFS.label, _text(values["title"], EN))
    out.optional(node, SCHEMA.alternativeHeadline, values.get("subtitle"), EN)
    out.optional(node, SCHEMA.publisher, values.get("publisher"))
    if values.get("date_published"):
        out.add(node, SCHEMA.datePublished, Literal(values["date_published"], datatype=XSD.date))
    if values.get("language"):
        out.add(node, SCHEMA.inLanguage, Literal(values["language"]))
        out.add(node, DCTERMS.language, Literal(values["language"]))
    if values.get("about"):
        out.add(node, SCHEMA.about, iri(values["about"]))
    out.add(node, SCHEMA.sha256, Literal(values["sha256"]))
    if values.get("url"):
        out.add(node, SCHEMA.url, NamedNode(values["url"]))
    out.add(out.graph, PROV.wasDerivedFrom, node)


def _map_person(out: _Emitter, r: Record, node: NamedNode) -> None:
    out.types(node, SCHEMA.Person, FOAF.Person)
    out.add(node, SCHEMA.name, Literal(r.get("name")))
    out.add(node, RDFS.label, Literal(r.get("name")))
    out.optional(node, SCHEMA.honorificPrefix, r.get("honorific_prefix"))
    out.optional(node, SCHEMA.honorificSuffix, r.get("honorific_suffix"))


def _map_organisation(out: _Emitter, r: Record, node: NamedNode) -> None:
    kind = r.get("type")
    out.types(node, SCHEMA.Organization, ORG.Organization,
              *ORG_TYPE_CLASSES.get(kind, (ORG.FormalOrganization,)))
    out.add(node, SCHEMA.name, Literal(r.get("name")))
    out.add(node, RDFS.label, Literal(r.get("name")))
    for alias in [r.get("acronym"), *r.get("alternate_names", [])]:
        out.optional(node, SCHEMA.alternateName, alias)
    if kind:
        out.add(node, KGO.organisationType, code("org-type", kind))


def _map_project(out: _Emitter, r: Record, node: NamedNode) -> None:
    out.types(node, SCHEMA.ResearchProject, FOAF.Project, ORG.OrganizationalCollaboration)
    out.add(node, SCHEMA.name, _text(r.get("name"), EN))
    out.add(node, RDFS.label, _text(r.get("name"), EN))
    out.optional(node, SCHEMA.alternateName, r.get("acronym"))
    if r.get("duration"):
        out.add(node, SCHEMA.duration, Literal(r.get("duration"), datatype=XSD.duration))
    out.optional(node, SCHEMA.description, r.get("description"), EN)


def _map_event(out: _Emitter, r: Record, node: NamedNode) -> None:
    out.types(node, SCHEMA.Event)
    out.add(node, SCHEMA.name, _text(r.get("name"), EN))
    out.add(node, RDFS.label, _text(r.get("name"), EN))
    out.add(node, SCHEMA.startDate, Literal(r.get("date"), datatype=XSD.date))
    out.add(node, SCHEMA.endDate, Literal(r.get("end_date") or r.get("date"), datatype=XSD.date))
    out.optional(node, SCHEMA.description, r.get("description"), EN)
    for audience in r.get("audience", []):
        out.add(node, SCHEMA.audience, code("audience", audience))


def _map_session(out: _Emitter, r: Record, node: NamedNode) -> None:
    event = iri(r.get("event"))
    out.types(node, KGO.Session)
    out.optional(node, SCHEMA.name, r.get("title"), EN)
    out.add(node, RDFS.label, _text(r.get("label"), EN))
    out.add(node, KGO.sessionType, code("session-type", r.get("type")))
    out.add(node, SCHEMA.superEvent, event)
    out.add(event, SCHEMA.subEvent, node)
    out.optional(node, SCHEMA.description, r.get("description"), EN)


def _map_concept(out: _Emitter, r: Record, node: NamedNode) -> None:
    out.types(node, SKOS.Concept)
    out.add(node, SKOS.prefLabel, _text(r.get("label"), EN))
    out.add(node, RDFS.label, _text(r.get("label"), EN))
    for alt in r.get("alt_labels", []):
        out.add(node, SKOS.altLabel, _text(alt, EN))
    out.optional(node, SKOS.definition, r.get("definition"), EN)
    out.add(node, SKOS.inScheme, IDEAS_SCHEME)
    broader = r.get("broader", [])
    for other in broader:
        out.add(node, SKOS.broader, iri(other))
        out.add(iri(other), SKOS.narrower, node)
    if not broader:
        out.add(node, SKOS.topConceptOf, IDEAS_SCHEME)
    for other in r.get("related", []):
        out.add(node, SKOS.related, iri(other))
    for other in r.get("represents", []):
        out.add(node, KGO.represents, iri(other))


def _map_role(out: _Emitter, r: Record, node: NamedNode) -> None:
    person, session, role = iri(r.get("person")), iri(r.get("session")), r.get("role")
    out.types(node, CONF.RoleDuringEvent)
    out.add(node, CONF.isHeldBy, person)
    out.add(node, CONF.withRole, code("role", role))
    out.add(node, CONF.during, session)
    if r.get("on_behalf_of"):
        out.add(node, KGO.onBehalfOf, iri(r.get("on_behalf_of")))
    out.add(session, ROLE_SHORTCUTS[role], person)


def _map_affiliation(out: _Emitter, r: Record, node: NamedNode) -> None:
    person, organisation = iri(r.get("person")), iri(r.get("organisation"))
    out.types(node, CONF.AffiliationDuringEvent)
    out.add(node, CONF.isAffiliationOf, person)
    out.add(node, CONF.withOrganisation, organisation)
    out.add(node, CONF.during, iri(r.get("event")))
    out.add(person, SCHEMA.affiliation, organisation)


def _map_membership(out: _Emitter, r: Record, node: NamedNode) -> None:
    member, organisation = iri(r.get("member")), iri(r.get("organisation"))
    out.types(node, ORG.Membership)
    out.add(node, ORG.member, member)
    out.add(node, ORG.organization, organisation)
    out.add(node, ORG.role, code("partner-role", r.get("role")))
    out.add(member, ORG.memberOf, organisation)


def _map_statement(out: _Emitter, r: Record, node: NamedNode) -> None:
    subject, obj = iri(r.get("subject")), iri(r.get("object"))
    properties = STATEMENT_PROPERTIES[r.get("predicate")]
    out.types(node, RDF.Statement)
    out.add(node, RDF.subject, subject)
    out.add(node, RDF.predicate, properties[0])
    out.add(node, RDF.object, obj)
    for prop in properties:
        out.add(subject, prop, obj)


def _map_utterance(out: _Emitter, r: Record, node: NamedNode) -> None:
    out.types(node, SCHEMA.Quotation if r.section == "quotes" else SCHEMA.Claim)
    out.add(node, SCHEMA.text, _text(r.get("text"), EN))
    out.add(node, SCHEMA.creator, iri(r.get("speaker")))
    if r.get("session"):
        out.add(node, SCHEMA.recordedAt, iri(r.get("session")))
    for concept in r.get("about", []):
        out.add(node, SCHEMA.about, iri(concept))


def _map_retired(out: _Emitter, r: Record, node: NamedNode) -> None:
    """A retired id: ``dcterms:isReplacedBy`` (served as 301) or a bare tombstone (410)."""
    out.add(node, OWL.deprecated, Literal("true", datatype=XSD.boolean))
    out.add(node, SKOS.changeNote, _text(r.get("reason"), EN))
    if r.get("replaced_by"):
        out.add(node, DCTERMS.isReplacedBy, iri(r.get("replaced_by")))


_MAPPERS = {
    "people": _map_person,
    "organisations": _map_organisation,
    "projects": _map_project,
    "events": _map_event,
    "sessions": _map_session,
    "concepts": _map_concept,
    "roles": _map_role,
    "affiliations": _map_affiliation,
    "memberships": _map_membership,
    "statements": _map_statement,
    "quotes": _map_utterance,
    "claims": _map_utterance,
    "retired": _map_retired,
}


def source_to_quads(source: SourceDoc) -> list[Quad]:
    """The quads of one source's named graph."""
    out = _Emitter(source)
    _map_source(out)
    for record in source.records:
        node = iri(record.id)
        _MAPPERS[record.section](out, record, node)
        if record.section != "retired":  # a tombstone is our own note, not from the source
            out.provenance(node, record)
    return out.quads


def facts_to_quads(facts: FactSet) -> Iterator[Quad]:
    """The quads of every source graph (duplicates within a graph removed, order kept)."""
    for source in facts.sources:
        yield from _unique(source_to_quads(source))


def _unique(quads: Iterable[Quad]) -> Iterator[Quad]:
    seen: set[Quad] = set()
    for quad in quads:
        if quad not in seen:
            seen.add(quad)
            yield quad


__all__ = ["facts_to_quads", "source_to_quads", "iri", "code", "CONCEPT", "IDEAS_SCHEME"]
