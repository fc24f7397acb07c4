"""The ontology, the SKOS vocabularies and the SHACL shapes under ``ontology/``.

The files must parse with both RDF stacks the project uses (rdflib for pySHACL, pyoxigraph
for the store), carry the metadata a published ontology needs, declare exactly the local
terms docs/model.md uses, and hold no blank nodes. The shapes must accept the hand-written
sample in ``tests/fixtures/sample-valid.trig`` (which follows model.md) and reject planted
violations, each at the node where it was planted.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pyoxigraph
import pyshacl
import pytest
from rdflib import BNode, Dataset, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCTERMS, OWL, RDF, RDFS, SKOS
from rdflib.term import Node

from sasci_kg import vocab

ROOT = Path(__file__).resolve().parents[1]
ONTOLOGY_FILE = ROOT / "ontology" / "sasci.ttl"
VOCAB_FILE = ROOT / "ontology" / "vocab.ttl"
SHAPES_FILE = ROOT / "ontology" / "shapes.ttl"
SAMPLE_FILE = ROOT / "tests" / "fixtures" / "sample-valid.trig"
MODEL_FILE = ROOT / "docs" / "model.md"
SOURCE_TEXT = ROOT.parent / "shared" / "sources" / "sasci-final-event.txt"

# rdflib namespaces built from the one table of IRIs (src/sasci_kg/vocab.py).
KGO = Namespace(str(vocab.KGO))
SCHEMA = Namespace(str(vocab.SCHEMA))
ORG = Namespace(str(vocab.ORG))
CONF = Namespace(str(vocab.CONF))
PROV = Namespace(str(vocab.PROV))
OA = Namespace(str(vocab.OA))
FOAF = Namespace(str(vocab.FOAF))
FRAPO = Namespace(str(vocab.FRAPO))
SH = Namespace(str(vocab.SH))
ID = Namespace(str(vocab.ID))
SCHEME = Namespace(str(vocab.SCHEME))
VOCAB = Namespace(str(vocab.VOCAB))
VANN = Namespace("http://purl.org/vocab/vann/")
ONTOLOGY = URIRef(vocab.ONTOLOGY_IRI.value)
SOURCE_GRAPH = URIRef(str(vocab.SOURCE_GRAPH) + "sasci-final-event")
VOCAB_GRAPH = URIRef(vocab.VOCAB_GRAPH.value)

RDF_FILES = [ONTOLOGY_FILE, VOCAB_FILE, SHAPES_FILE]
PUBLISHED_FILES = [ONTOLOGY_FILE, VOCAB_FILE]

# The controlled schemes and their codes, exactly (the brief of the vocabularies).
SCHEMES: dict[str, list[str]] = {
    "role": [
        "chair", "panellist", "speaker", "presenter", "session-lead", "organiser", "participant",
    ],
    "session-type": ["plenary", "panel", "breakout", "closing"],
    "certainty": ["stated", "implied"],
    "org-type": [
        "university", "research-centre", "funder", "local-authority", "charity", "cooperative",
        "care-provider", "network", "research-organisation", "think-tank", "social-enterprise",
        "other",
    ],
    "partner-role": ["lead-partner", "partner", "project-lead"],
    "audience": [
        "social-care-researchers", "sector-innovators", "local-authorities",
        "people-with-lived-experience", "policymakers",
    ],
}

# The ScholarlyData role individuals that exist (conference-ontology.owl, 2016), among
# those our roles could match. There is no ScholarlyData "speaker" or plain "organiser".
SCHOLARLYDATA_ROLES = {
    URIRef("https://w3id.org/scholarlydata/role/" + name)
    for name in ("chair", "session-chair", "presenter", "participant")
}

# The prefixes of docs/model.md whose terms the ontology declares as the application
# profile (rdf: and rdfs: are built in and not redeclared).
REUSED_PREFIXES = {
    "schema": SCHEMA, "org": ORG, "conf": CONF, "foaf": FOAF, "frapo": FRAPO, "prov": PROV,
    "oa": OA, "skos": Namespace(str(SKOS)), "dcterms": Namespace(str(DCTERMS)),
}

ALIGNMENTS = (
    RDFS.subClassOf, RDFS.subPropertyOf, OWL.equivalentClass, OWL.equivalentProperty,
    SKOS.exactMatch, SKOS.closeMatch, SKOS.broadMatch, SKOS.narrowMatch, SKOS.relatedMatch,
)


# --- loading -------------------------------------------------------------------------


def parse(path: Path) -> Graph:
    """Parse from text: rdflib leaves a parsed file open (a ResourceWarning)."""
    graph = Graph()
    graph.parse(data=path.read_text(encoding="utf-8"), format="turtle")
    return graph


@pytest.fixture(scope="module")
def ontology() -> Graph:
    return parse(ONTOLOGY_FILE)


@pytest.fixture(scope="module")
def vocabularies() -> Graph:
    return parse(VOCAB_FILE)


@pytest.fixture(scope="module")
def shapes() -> Graph:
    return parse(SHAPES_FILE)


@pytest.fixture(scope="module")
def ontology_and_vocab(ontology: Graph, vocabularies: Graph) -> Graph:
    return ontology + vocabularies


def model_terms(prefix: str) -> set[str]:
    """Local names written as ``prefix:name`` in docs/model.md."""
    text = MODEL_FILE.read_text(encoding="utf-8")
    return set(re.findall(rf"(?<![\w/]){re.escape(prefix)}:([A-Za-z][A-Za-z0-9_]*)", text))


def sample_dataset() -> Dataset:
    """The sample in its source graph, plus the vocabularies in theirs, as the build has it."""
    dataset = Dataset()
    dataset.parse(data=SAMPLE_FILE.read_text(encoding="utf-8"), format="trig")
    dataset.graph(VOCAB_GRAPH).parse(data=VOCAB_FILE.read_text(encoding="utf-8"), format="turtle")
    return dataset


def sample_graph() -> Graph:
    """The sample's source graph on its own."""
    dataset = Dataset()
    dataset.parse(data=SAMPLE_FILE.read_text(encoding="utf-8"), format="trig")
    return dataset.graph(SOURCE_GRAPH)


class Result(NamedTuple):
    focus: Node
    path: Node | None
    value: Node | None
    component: Node
    message: str


def validate(data: Graph, shapes: Graph, ont: Graph | None) -> tuple[bool, list[Result]]:
    conforms, report, _ = pyshacl.validate(
        data, shacl_graph=shapes, ont_graph=ont, inference="none"
    )
    results = []
    for report_node in report.subjects(RDF.type, SH.ValidationReport):
        # Top-level results only: nested sh:detail results describe the same problem.
        for node in report.objects(report_node, SH.result):
            results.append(
                Result(
                    focus=report.value(node, SH.focusNode),
                    path=report.value(node, SH.resultPath),
                    value=report.value(node, SH.value),
                    component=report.value(node, SH.sourceConstraintComponent),
                    message=str(report.value(node, SH.resultMessage)),
                )
            )
    return bool(conforms), results


def describe(results: list[Result]) -> str:
    return "\n".join(f"{r.focus} {r.path} {r.component}: {r.message}" for r in results)


def normalise(text: str) -> str:
    """docs/model.md's normalisation: NFKC, quotes and dashes folded, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub("[\u2018\u2019\u201a\u201b\u2032]", "'", text)
    text = re.sub("[\u201c\u201d\u201e\u201f\u2033]", '"', text)
    text = re.sub("[\u2010\u2011\u2012\u2013\u2014\u2015\u2212]", "-", text)
    return re.sub(r"\s+", " ", text).strip()


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", RDF_FILES, ids=lambda p: p.name)
def test_parses_with_rdflib(path: Path) -> None:
    assert len(parse(path)) > 0


@pytest.mark.parametrize("path", RDF_FILES, ids=lambda p: p.name)
def test_parses_with_pyoxigraph(path: Path) -> None:
    triples = list(pyoxigraph.parse(path.read_bytes(), format=pyoxigraph.RdfFormat.TURTLE))
    assert triples
    assert len(triples) == len(parse(path))


def test_sample_parses_with_both_stacks() -> None:
    quads = list(pyoxigraph.parse(SAMPLE_FILE.read_bytes(), format=pyoxigraph.RdfFormat.TRIG))
    dataset = Dataset()
    dataset.parse(data=SAMPLE_FILE.read_text(encoding="utf-8"), format="trig")
    assert len(quads) == len(dataset) > 0
    assert {str(q.graph_name.value) for q in quads} == {str(SOURCE_GRAPH)}


@pytest.mark.parametrize("path", [*PUBLISHED_FILES, SAMPLE_FILE], ids=lambda p: p.name)
def test_no_blank_nodes(path: Path) -> None:
    fmt = pyoxigraph.RdfFormat.TRIG if path.suffix == ".trig" else pyoxigraph.RdfFormat.TURTLE
    blank = [
        q for q in pyoxigraph.parse(path.read_bytes(), format=fmt)
        if isinstance(q.subject, pyoxigraph.BlankNode) or isinstance(q.object, pyoxigraph.BlankNode)
    ]
    assert blank == []


# --- the ontology ----------------------------------------------------------------------


def test_ontology_metadata(ontology: Graph) -> None:
    assert set(ontology.subjects(RDF.type, OWL.Ontology)) == {ONTOLOGY}

    def one(predicate: URIRef) -> Node:
        values = list(ontology.objects(ONTOLOGY, predicate))
        assert len(values) == 1, f"{predicate}: {values}"
        return values[0]

    for predicate in (DCTERMS.title, DCTERMS.description):
        value = one(predicate)
        assert isinstance(value, Literal) and value.language == "en" and str(value).strip()
    assert one(DCTERMS.license) == URIRef("https://creativecommons.org/licenses/by/4.0/")
    assert one(DCTERMS.creator) == Literal("sasci-kg contributors")
    assert one(OWL.versionIRI) == URIRef("https://w3id.org/sasci-kg/def/0.1.0")
    assert one(OWL.versionInfo) == Literal("0.1.0")
    assert one(VANN.preferredNamespacePrefix) == Literal("kgo")
    assert str(one(VANN.preferredNamespaceUri)) == str(KGO)


def test_local_terms_are_exactly_those_of_the_model(ontology: Graph) -> None:
    declared = {
        str(s)[len(str(KGO)):] for s in set(ontology.subjects())
        if isinstance(s, URIRef) and str(s).startswith(str(KGO))
    }
    used = model_terms("kgo")
    assert used, "docs/model.md names no kgo: terms"
    assert declared == used


@pytest.mark.parametrize("name", sorted(model_terms("kgo")))
def test_local_term_is_documented_and_aligned(ontology: Graph, name: str) -> None:
    term = KGO[name]
    types = set(ontology.objects(term, RDF.type))
    is_class = name[0].isupper()
    assert types == ({OWL.Class} if is_class else {OWL.ObjectProperty})

    for predicate in (RDFS.label, SKOS.definition, RDFS.comment):
        values = list(ontology.objects(term, predicate))
        assert len(values) == 1, f"{name} needs one {predicate}"
        assert isinstance(values[0], Literal) and values[0].language == "en"
    assert set(ontology.objects(term, RDFS.isDefinedBy)) == {ONTOLOGY}

    alignments = [
        o for p in ALIGNMENTS for o in ontology.objects(term, p)
        if isinstance(o, URIRef) and not str(o).startswith(str(KGO))
    ]
    assert alignments, f"kgo:{name} is aligned to no reused term"

    if not is_class:
        assert list(ontology.objects(term, SCHEMA.domainIncludes))
        assert list(ontology.objects(term, SCHEMA.rangeIncludes))
        # rdfs:domain/range would let a reasoner retype the nodes these properties link.
        assert not list(ontology.objects(term, RDFS.domain))
        assert not list(ontology.objects(term, RDFS.range))


def test_local_term_alignments(ontology: Graph) -> None:
    expected = {
        (KGO.Session, RDFS.subClassOf, SCHEMA.Event),
        (KGO.Session, SKOS.closeMatch, CONF.Session),
        (KGO.Session, SKOS.closeMatch,
         URIRef("http://data.semanticweb.org/ns/swc/ontology#SessionEvent")),
        (KGO.Fact, RDFS.subClassOf, PROV.Entity),
        (KGO.sessionType, RDFS.subPropertyOf, DCTERMS.type),
        (KGO.organisationType, RDFS.subPropertyOf, DCTERMS.type),
        (KGO.chair, RDFS.subPropertyOf, SCHEMA.contributor),
        (KGO.sessionLead, RDFS.subPropertyOf, SCHEMA.contributor),
        (KGO.onBehalfOf, SKOS.closeMatch, CONF.withOrganisation),
        (KGO.onBehalfOf, SKOS.closeMatch, PROV.actedOnBehalfOf),
        (KGO.represents, RDFS.subPropertyOf, SKOS.related),
        (KGO.certainty, SCHEMA.rangeIncludes, SKOS.Concept),
        (KGO.evidence, SCHEMA.rangeIncludes, OA.TextQuoteSelector),
        (KGO.evidence, SKOS.closeMatch, PROV.wasQuotedFrom),
    }
    assert {t for t in expected if t not in ontology} == set()


def reused_terms() -> list[URIRef]:
    terms = {ns[name] for prefix, ns in REUSED_PREFIXES.items() for name in model_terms(prefix)}
    # Used by the vocabularies rather than named in model.md.
    terms |= {CONF.Role, SCHEMA.Audience, SKOS.ConceptScheme, SKOS.hasTopConcept}
    return sorted(terms)


@pytest.mark.parametrize("term", reused_terms(), ids=str)
def test_reused_term_is_declared(ontology: Graph, term: URIRef) -> None:
    kinds = {OWL.Class, OWL.ObjectProperty, OWL.DatatypeProperty, OWL.AnnotationProperty}
    assert set(ontology.objects(term, RDF.type)) & kinds, f"{term} is not declared"
    labels = list(ontology.objects(term, RDFS.label))
    assert len(labels) == 1 and labels[0].language == "en"
    (defined_by,) = ontology.objects(term, RDFS.isDefinedBy)
    assert not str(defined_by).startswith("https://w3id.org/sasci-kg/")


def test_reused_terms_are_not_redefined(ontology: Graph) -> None:
    """Reused terms get a declaration, a label and their owner; never new axioms."""
    allowed = {RDF.type, RDFS.label, RDFS.isDefinedBy}
    foreign = {
        (s, p) for s, p, _ in ontology
        if isinstance(s, URIRef) and not str(s).startswith("https://w3id.org/sasci-kg/")
        and p not in allowed
    }
    assert foreign == set()


# --- the vocabularies ------------------------------------------------------------------


def test_schemes_match_the_vocab_module() -> None:
    assert set(vocab.CONTROLLED_SCHEMES) == set(SCHEMES)
    for slug, namespace in vocab.CONTROLLED_SCHEMES.items():
        assert str(namespace) == f"{VOCAB}{slug}/"


def scheme_iris() -> list[str]:
    return [*SCHEMES, "ideas"]


@pytest.mark.parametrize("slug", scheme_iris())
def test_scheme_is_described(vocabularies: Graph, slug: str) -> None:
    scheme = SCHEME[slug]
    assert (scheme, RDF.type, SKOS.ConceptScheme) in vocabularies
    (label,) = vocabularies.objects(scheme, SKOS.prefLabel)
    (definition,) = vocabularies.objects(scheme, SKOS.definition)
    assert label.language == definition.language == "en"


def test_ideas_scheme_has_no_concepts_yet(vocabularies: Graph) -> None:
    ideas = SCHEME.ideas
    assert vocabularies.value(ideas, SKOS.prefLabel) == Literal(
        "Ideas and themes of the SASCI project", lang="en"
    )
    assert not list(vocabularies.subjects(SKOS.inScheme, ideas))
    assert not list(vocabularies.objects(ideas, SKOS.hasTopConcept))


def test_schemes_are_exactly_those_listed(vocabularies: Graph) -> None:
    declared = set(vocabularies.subjects(RDF.type, SKOS.ConceptScheme))
    assert declared == {SCHEME[slug] for slug in scheme_iris()}


@pytest.mark.parametrize("slug", sorted(SCHEMES))
def test_scheme_codes(vocabularies: Graph, slug: str) -> None:
    scheme = SCHEME[slug]
    expected = {VOCAB[f"{slug}/{code}"] for code in SCHEMES[slug]}
    assert set(vocabularies.subjects(SKOS.inScheme, scheme)) == expected
    assert set(vocabularies.objects(scheme, SKOS.hasTopConcept)) == expected
    assert set(vocabularies.subjects(SKOS.topConceptOf, scheme)) == expected

    for code in SCHEMES[slug]:
        value = VOCAB[f"{slug}/{code}"]
        assert (value, RDF.type, SKOS.Concept) in vocabularies
        (label,) = vocabularies.objects(value, SKOS.prefLabel)
        (definition,) = vocabularies.objects(value, SKOS.definition)
        assert label.language == definition.language == "en"
        assert str(label).strip() and str(definition).strip()
        assert list(vocabularies.objects(value, SKOS.notation)) == [Literal(code)]


def test_every_value_is_in_exactly_one_scheme(vocabularies: Graph) -> None:
    for value in set(vocabularies.subjects(RDF.type, SKOS.Concept)):
        schemes = list(vocabularies.objects(value, SKOS.inScheme))
        assert len(schemes) == 1, value
        assert list(vocabularies.objects(value, SKOS.topConceptOf)) == schemes
        # The scheme's slug is the folder of the value's IRI.
        slug = str(value)[len(str(VOCAB)):].split("/")[0]
        assert schemes[0] == SCHEME[slug]


def test_labels_are_unique_within_a_scheme(vocabularies: Graph) -> None:
    for scheme in vocabularies.subjects(RDF.type, SKOS.ConceptScheme):
        labels = [
            str(vocabularies.value(value, SKOS.prefLabel)).casefold()
            for value in vocabularies.subjects(SKOS.inScheme, scheme)
        ]
        assert len(labels) == len(set(labels)), scheme


def test_role_and_audience_values_are_typed(vocabularies: Graph) -> None:
    for code in SCHEMES["role"]:
        assert (VOCAB[f"role/{code}"], RDF.type, CONF.Role) in vocabularies
    for code in SCHEMES["audience"]:
        assert (VOCAB[f"audience/{code}"], RDF.type, SCHEMA.Audience) in vocabularies


def test_role_close_matches_only_existing_scholarlydata_roles(vocabularies: Graph) -> None:
    matches = {
        (str(value)[len(str(VOCAB)):], match)
        for value, match in vocabularies.subject_objects(SKOS.closeMatch)
    }
    assert {m for _, m in matches} <= SCHOLARLYDATA_ROLES
    assert {code for code, _ in matches} == {
        "role/chair", "role/presenter", "role/participant",
    }


# --- the shapes ------------------------------------------------------------------------


def test_shapes_cover_every_kind_of_node(shapes: Graph) -> None:
    targets = set(shapes.objects(None, SH.targetClass))
    assert targets >= {
        SCHEMA.NewsArticle, SCHEMA.Person, SCHEMA.Organization, SCHEMA.ResearchProject,
        SCHEMA.Event, KGO.Session, SKOS.Concept, SKOS.ConceptScheme, KGO.Fact,
        CONF.RoleDuringEvent, CONF.AffiliationDuringEvent, ORG.Membership, RDF.Statement,
        SCHEMA.Quotation, SCHEMA.Claim, OA.TextQuoteSelector,
    }
    # The blank-node check reaches every typed node.
    assert list(shapes.subjects(SH.targetSubjectsOf, RDF.type))


def test_shapes_are_open(shapes: Graph) -> None:
    assert not list(shapes.subject_objects(SH.closed))


def test_every_link_must_be_an_iri(shapes: Graph, ontology: Graph) -> None:
    """A property shape on an object property requires IRIs (no blank nodes, no strings)."""
    object_properties = set(ontology.subjects(RDF.type, OWL.ObjectProperty))
    # A source's publisher may be a name, its url an xsd:anyURI literal (src/sasci_kg/mapping.py).
    exempt = {SCHEMA.publisher, SCHEMA.url}
    checked, loose = 0, []
    for shape, path in shapes.subject_objects(SH.path):
        if path not in object_properties or path in exempt:
            continue
        if shapes.value(shape, SH.hasValue) is not None:
            continue  # a fixed IRI, as in the kgsh:*Value shapes
        checked += 1
        if shapes.value(shape, SH.nodeKind) != SH.IRI:
            loose.append((shape, path))
    assert checked > 30
    assert loose == []


def test_every_constraint_of_a_targeted_shape_has_a_message(shapes: Graph) -> None:
    node_level = (SH.nodeKind, SH.pattern, SH["or"], SH.xone, SH["class"])
    targets = (SH.targetClass, SH.targetNode, SH.targetSubjectsOf, SH.targetObjectsOf)
    missing = []
    for shape in {s for t in targets for s in shapes.subjects(t, None)}:
        if any(shapes.value(shape, p) is not None for p in node_level):
            if shapes.value(shape, SH.message) is None:
                missing.append(shape)
        for part in (*shapes.objects(shape, SH.property), *shapes.objects(shape, SH.sparql)):
            message = shapes.value(part, SH.message)
            if message is None or message.language != "en":
                missing.append((shape, shapes.value(part, SH.path)))
    assert missing == []


# --- the sample ------------------------------------------------------------------------


def test_sample_excerpts_occur_in_the_source() -> None:
    if not SOURCE_TEXT.exists():
        pytest.skip(f"source text not available: {SOURCE_TEXT}")
    source = normalise(SOURCE_TEXT.read_text(encoding="utf-8"))
    dataset = sample_graph()
    article = ID["source/sasci-final-event"]
    sha = hashlib.sha256(SOURCE_TEXT.read_bytes()).hexdigest()
    assert (article, SCHEMA.sha256, Literal(sha)) in dataset
    selectors = list(dataset.subjects(RDF.type, OA.TextQuoteSelector))
    assert selectors
    for selector in selectors:
        exact = str(dataset.value(selector, OA.exact))
        assert normalise(exact) in source, exact
        digest = hashlib.sha256(normalise(exact).encode("utf-8")).hexdigest()[:16]
        assert selector == ID[f"evidence/sasci-final-event.{digest}"]


def test_sample_has_every_kind_of_node() -> None:
    dataset = sample_graph()
    kinds = [
        SCHEMA.NewsArticle, SCHEMA.Person, SCHEMA.Organization, SCHEMA.ResearchProject,
        SCHEMA.Event, KGO.Session, SKOS.Concept, CONF.RoleDuringEvent,
        CONF.AffiliationDuringEvent, ORG.Membership, RDF.Statement, SCHEMA.Quotation,
        SCHEMA.Claim, OA.TextQuoteSelector,
    ]
    counts = {kind: len(set(dataset.subjects(RDF.type, kind))) for kind in kinds}
    assert all(counts.values()), counts


@pytest.mark.parametrize("with_ontology", [True, False], ids=["ontology", "no-ontology"])
def test_sample_conforms(
    shapes: Graph, ontology_and_vocab: Graph, with_ontology: bool
) -> None:
    conforms, results = validate(
        sample_dataset(), shapes, ontology_and_vocab if with_ontology else None
    )
    assert conforms, describe(results)


# --- planted violations, one at a time -------------------------------------------------

ROLE = ID["fact/opening-panel.chair.lisa-smith"]
MEMBERSHIP = ID["fact/membership.sasci.kings-college-london"]
AFFILIATION = ID["fact/affiliation.adam-lent.kings-fund"]
OPENING_PANEL = ID["session/sasci-final-2024.opening-panel"]
PLENARY = ID["session/sasci-final-2024.plenary"]
EVENT = ID["event/sasci-final-2024"]
LISA_SMITH = ID["person/lisa-smith"]
BASE = URIRef(vocab.BASE)
UNBOUND = re.compile(r"\{[?$]\w+\}")  # a message variable that the result did not bind


def no_is_held_by(g: Graph) -> None:
    g.remove((ROLE, CONF.isHeldBy, None))


def no_evidence(g: Graph) -> None:
    g.remove((MEMBERSHIP, KGO.evidence, None))


def two_session_types(g: Graph) -> None:
    g.add((OPENING_PANEL, KGO.sessionType, VOCAB["session-type/breakout"]))


def wrong_certainty(g: Graph) -> None:
    g.set((AFFILIATION, KGO.certainty, VOCAB["role/chair"]))


def blank_node(g: Graph) -> None:
    selector = BNode()
    g.remove((LISA_SMITH, KGO.evidence, None))
    g.add((LISA_SMITH, KGO.evidence, selector))
    g.add((selector, RDF.type, OA.TextQuoteSelector))
    g.add((selector, OA.exact, Literal("chaired by Lisa Smith (Research in Practice)")))
    g.add((selector, PROV.wasQuotedFrom, ID["source/sasci-final-event"]))


def string_date(g: Graph) -> None:
    g.set((EVENT, SCHEMA.startDate, Literal("2024-10-02")))


class Planted(NamedTuple):
    mutate: Callable[[Graph], None]
    expected: set[tuple[Node, Node | None]]  # (focus node, result path) that must fail
    allowed: set[Node]  # every result's focus node is one of these (or a blank node)


PLANTED = {
    "role-without-isHeldBy": Planted(no_is_held_by, {(ROLE, CONF.isHeldBy)}, {ROLE}),
    "fact-without-evidence": Planted(no_evidence, {(MEMBERSHIP, KGO.evidence)}, {MEMBERSHIP}),
    "session-with-two-types": Planted(
        two_session_types, {(OPENING_PANEL, KGO.sessionType)}, {OPENING_PANEL}
    ),
    "wrong-certainty": Planted(
        wrong_certainty, {(AFFILIATION, KGO.certainty)}, {AFFILIATION}
    ),
    "blank-node": Planted(blank_node, {(LISA_SMITH, KGO.evidence)}, {LISA_SMITH, BASE}),
    "string-date": Planted(string_date, {(EVENT, SCHEMA.startDate)}, {EVENT}),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_violation_fails_at_its_node(
    shapes: Graph, ontology_and_vocab: Graph, name: str
) -> None:
    planted = PLANTED[name]
    dataset = sample_dataset()
    planted.mutate(dataset.graph(SOURCE_GRAPH))
    conforms, results = validate(dataset, shapes, ontology_and_vocab)
    assert not conforms
    found = {(r.focus, r.path) for r in results}
    assert planted.expected <= found, describe(results)
    stray = [
        r for r in results if r.focus not in planted.allowed and not isinstance(r.focus, BNode)
    ]
    assert stray == [], describe(stray)
    assert all(r.message and not UNBOUND.search(r.message) for r in results), describe(results)
    if name == "blank-node":
        assert any(isinstance(r.focus, BNode) for r in results)
        assert any(r.focus == BASE and isinstance(r.value, BNode) for r in results)


# --- more planted violations, in one graph ---------------------------------------------

SPARQL = SH.SPARQLConstraintComponent


class Check(NamedTuple):
    focus: Node
    component: Node
    path: Node | None = None
    value: Node | None = None


def plant_many(g: Graph) -> None:
    # A role whose shortcut triple is missing.
    g.remove((OPENING_PANEL, KGO.chair, LISA_SMITH))
    # A funder that is not typed frapo:FundingAgency.
    g.remove((ID["org/esrc"], RDF.type, FRAPO.FundingAgency))
    # An honorific inside a name.
    g.set((ID["person/ewan-ferlie"], SCHEMA.name, Literal("Professor Ewan Ferlie")))
    # A session its event does not list.
    g.remove((EVENT, SCHEMA.subEvent, PLENARY))
    # A quote whose text has no language tag.
    quote = ID["quote/juliette-malley.savings"]
    g.set((quote, SCHEMA.text, Literal("Being led by delivering savings can be self-defeating")))
    # A fact with no source.
    g.remove((ID["fact/membership.sasci.lse-cpec"], PROV.wasDerivedFrom, None))
    # A role whose value is from another scheme.
    g.set((ID["fact/plenary.presenter.juliette-malley"], CONF.withRole,
           VOCAB["session-type/panel"]))
    # A statement whose triple is missing.
    g.remove((EVENT, SCHEMA.organizer, ID["org/research-in-practice"]))
    # A funder statement whose subject is not a project, with its triples.
    bad = ID["fact/statement.bad-funder"]
    for triple in [
        (bad, RDF.type, KGO.Fact), (bad, RDF.type, RDF.Statement),
        (bad, RDF.subject, EVENT), (bad, RDF.predicate, SCHEMA.funder),
        (bad, RDF.object, ID["org/esrc"]), (EVENT, SCHEMA.funder, ID["org/esrc"]),
        (EVENT, FRAPO.isFundedBy, ID["org/esrc"]),
    ]:
        g.add(triple)
    for p, o in g.predicate_objects(ID["fact/statement.sasci.funder.esrc"]):
        if p in (PROV.wasDerivedFrom, KGO.certainty, KGO.evidence):
            g.add((bad, p, o))
    # An affiliation whose shortcut is missing.
    g.remove((ID["person/adam-lent"], SCHEMA.affiliation, ID["org/kings-fund"]))
    # An idea without evidence.
    g.remove((ID["concept/barriers"], KGO.evidence, None))
    # A person whose IRI breaks the slug rules.
    odd = URIRef(str(ID) + "person/Lisa_Smith")
    for p, o in list(g.predicate_objects(LISA_SMITH)):
        g.add((odd, p, o))
    # A fact typed as two kinds of fact.
    g.add((ROLE, RDF.type, SCHEMA.Claim))
    # A project duration that is a plain string.
    g.set((ID["project/sasci"], SCHEMA.duration, Literal("P5Y")))
    # Two ideas with one label, and a cycle of broader concepts.
    g.set((ID["concept/frugal-innovation"], SKOS.prefLabel, Literal("barriers", lang="en")))
    g.add((ID["concept/innovation-as-a-river"], SKOS.broader, ID["concept/rocks"]))
    # An event without a name.
    g.remove((EVENT, SCHEMA.name, None))


MANY = {
    "missing-role-shortcut": Check(ROLE, SPARQL),
    "funder-type": Check(ID["org/esrc"], SPARQL),
    "honorific-in-name": Check(
        ID["person/ewan-ferlie"], SH.NotConstraintComponent, SCHEMA.name
    ),
    "session-not-in-subEvent": Check(PLENARY, SH.EqualsConstraintComponent),
    "quote-text-not-english": Check(
        ID["quote/juliette-malley.savings"], SH.DatatypeConstraintComponent, SCHEMA.text
    ),
    "fact-without-source": Check(
        ID["fact/membership.sasci.lse-cpec"], SH.MinCountConstraintComponent,
        PROV.wasDerivedFrom,
    ),
    "role-from-another-scheme": Check(
        ID["fact/plenary.presenter.juliette-malley"], SH.NodeConstraintComponent, CONF.withRole
    ),
    "statement-triple-missing": Check(
        ID["fact/statement.sasci-final-2024.organizer.research-in-practice"], SPARQL
    ),
    "statement-subject-misfit": Check(ID["fact/statement.bad-funder"], SH.OrConstraintComponent),
    "missing-affiliation-shortcut": Check(AFFILIATION, SPARQL),
    "idea-without-evidence": Check(SCHEME.ideas, SPARQL, value=ID["concept/barriers"]),
    "iri-breaks-slug-rules": Check(
        URIRef(str(ID) + "person/Lisa_Smith"), SH.PatternConstraintComponent
    ),
    "fact-of-two-kinds": Check(ROLE, SH.QualifiedMaxCountConstraintComponent, RDF.type),
    "duration-as-string": Check(
        ID["project/sasci"], SH.DatatypeConstraintComponent, SCHEMA.duration
    ),
    "duplicate-label": Check(SCHEME.ideas, SPARQL, value=ID["concept/frugal-innovation"]),
    "broader-cycle": Check(SCHEME.ideas, SPARQL, value=ID["concept/rocks"]),
    "event-without-name": Check(EVENT, SPARQL, SCHEMA.name),
}


@pytest.fixture(scope="module")
def many_results(shapes: Graph, ontology_and_vocab: Graph) -> Iterator[list[Result]]:
    dataset = sample_dataset()
    plant_many(dataset.graph(SOURCE_GRAPH))
    conforms, results = validate(dataset, shapes, ontology_and_vocab)
    assert not conforms
    yield results


@pytest.mark.parametrize("name", sorted(MANY))
def test_more_planted_violations(many_results: list[Result], name: str) -> None:
    check = MANY[name]
    matching = [
        r for r in many_results
        if r.focus == check.focus and r.component == check.component
        and (check.path is None or r.path == check.path)
        and (check.value is None or r.value == check.value)
    ]
    assert matching, describe([r for r in many_results if r.focus == check.focus])
    assert all(not UNBOUND.search(r.message) for r in matching), describe(matching)
