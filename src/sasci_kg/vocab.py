"""Every IRI the package uses, in one place: namespaces, ontology terms, graph names.

Code elsewhere writes ``SCHEMA.name`` or ``KGO.Session``, never an IRI string, so a term
is typed once. ``PREFIXES`` is the one prefix table for Turtle output and SPARQL queries.
"""

from __future__ import annotations

from pyoxigraph import NamedNode

BASE = "https://w3id.org/sasci-kg/"


class Namespace:
    """An IRI prefix whose attributes and items are :class:`NamedNode` terms.

    Not a ``str`` subclass on purpose: ``DCTERMS.title`` must be a term, not ``str.title``.
    """

    __slots__ = ("_base",)

    def __init__(self, base: str):
        self._base = base

    def __str__(self) -> str:
        return self._base

    def __repr__(self) -> str:
        return f"Namespace({self._base!r})"

    def __getattr__(self, name: str) -> NamedNode:
        if name.startswith("__"):
            raise AttributeError(name)
        return NamedNode(self._base + name)

    def __getitem__(self, name: str) -> NamedNode:
        return NamedNode(self._base + name)

    def term(self, name: str) -> NamedNode:
        return NamedNode(self._base + name)


# Reused vocabularies.
RDF = Namespace("http://www.w3.org/1999/02/22-rdf-syntax-ns#")
RDFS = Namespace("http://www.w3.org/2000/01/rdf-schema#")
OWL = Namespace("http://www.w3.org/2002/07/owl#")
XSD = Namespace("http://www.w3.org/2001/XMLSchema#")
SCHEMA = Namespace("https://schema.org/")
ORG = Namespace("http://www.w3.org/ns/org#")
CONF = Namespace("https://w3id.org/scholarlydata/ontology/conference-ontology.owl#")
SKOS = Namespace("http://www.w3.org/2004/02/skos/core#")
PROV = Namespace("http://www.w3.org/ns/prov#")
OA = Namespace("http://www.w3.org/ns/oa#")
DCTERMS = Namespace("http://purl.org/dc/terms/")
FOAF = Namespace("http://xmlns.com/foaf/0.1/")
FRAPO = Namespace("http://purl.org/cerif/frapo/")
SH = Namespace("http://www.w3.org/ns/shacl#")
VOID = Namespace("http://rdfs.org/ns/void#")
DCAT = Namespace("http://www.w3.org/ns/dcat#")
SD = Namespace("http://www.w3.org/ns/sparql-service-description#")

# Our own namespaces (DESIGN.md, "Ontology and IRIs").
KGO = Namespace(BASE + "def#")
ID = Namespace(BASE + "id/")
PERSON = Namespace(BASE + "id/person/")
ORGANISATION = Namespace(BASE + "id/org/")
PROJECT = Namespace(BASE + "id/project/")
EVENT = Namespace(BASE + "id/event/")
SESSION = Namespace(BASE + "id/session/")
CONCEPT = Namespace(BASE + "id/concept/")
QUOTE = Namespace(BASE + "id/quote/")
FACT = Namespace(BASE + "id/fact/")
SOURCE = Namespace(BASE + "id/source/")
SCHEME = Namespace(BASE + "id/scheme/")
EVIDENCE = Namespace(BASE + "id/evidence/")
VOCAB = Namespace(BASE + "vocab/")
ROLE = Namespace(BASE + "vocab/role/")
SESSION_TYPE = Namespace(BASE + "vocab/session-type/")
CERTAINTY = Namespace(BASE + "vocab/certainty/")
ORG_TYPE = Namespace(BASE + "vocab/org-type/")
PARTNER_ROLE = Namespace(BASE + "vocab/partner-role/")
AUDIENCE = Namespace(BASE + "vocab/audience/")
GRAPH = Namespace(BASE + "graph/")
SOURCE_GRAPH = Namespace(BASE + "graph/source/")

ONTOLOGY_IRI = NamedNode(BASE + "def")
ONTOLOGY_GRAPH = GRAPH.ontology
VOCAB_GRAPH = GRAPH.vocab

# The typed prefix of an entity reference in the YAML ("person/lisa-smith") → namespace.
ENTITY_NAMESPACES: dict[str, Namespace] = {
    "person": PERSON,
    "org": ORGANISATION,
    "project": PROJECT,
    "event": EVENT,
    "session": SESSION,
    "concept": CONCEPT,
    "quote": QUOTE,
    "fact": FACT,
    "source": SOURCE,
    "scheme": SCHEME,
}

# Controlled-value schemes: the YAML field's scheme name → value namespace.
CONTROLLED_SCHEMES: dict[str, Namespace] = {
    "role": ROLE,
    "session-type": SESSION_TYPE,
    "certainty": CERTAINTY,
    "org-type": ORG_TYPE,
    "partner-role": PARTNER_ROLE,
    "audience": AUDIENCE,
}

# One prefix table for Turtle/TriG output, SPARQL default prefixes and the query page.
PREFIXES: dict[str, str] = {
    "rdf": str(RDF),
    "rdfs": str(RDFS),
    "owl": str(OWL),
    "xsd": str(XSD),
    "schema": str(SCHEMA),
    "org": str(ORG),
    "conf": str(CONF),
    "skos": str(SKOS),
    "prov": str(PROV),
    "oa": str(OA),
    "dcterms": str(DCTERMS),
    "foaf": str(FOAF),
    "frapo": str(FRAPO),
    "sh": str(SH),
    "void": str(VOID),
    "dcat": str(DCAT),
    "sd": str(SD),
    "kgo": str(KGO),
    "person": str(PERSON),
    "organisation": str(ORGANISATION),
    "project": str(PROJECT),
    "event": str(EVENT),
    "session": str(SESSION),
    "concept": str(CONCEPT),
    "quote": str(QUOTE),
    "fact": str(FACT),
    "source": str(SOURCE),
    "scheme": str(SCHEME),
    "evidence": str(EVIDENCE),
    "role": str(ROLE),
    "sessiontype": str(SESSION_TYPE),
    "certainty": str(CERTAINTY),
    "orgtype": str(ORG_TYPE),
    "partnerrole": str(PARTNER_ROLE),
    "audience": str(AUDIENCE),
    "graph": str(GRAPH),
    "sourcegraph": str(SOURCE_GRAPH),
}
