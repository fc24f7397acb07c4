"""Labels, kinds and evidence for the few nodes and facts a traced answer shows.

After the search (which fetches only IRIs), :func:`describe` asks for everything the
answer needs to be read — node labels and types, each fact's certainty, evidence
excerpts, quote text, and the statement that places a quote in a session — in one query
per batch of IRIs (two when quotes are placed by a separate statement).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyoxigraph as ox

from .errors import QueryError
from .store import Backend
from .trace_entities import LABEL_PROPERTIES, kind_of, short_ref
from .trace_explain import Evidence, Link, Node
from .trace_links import BATCH_SIZE, SPARQL_PREFIXES, RawLink
from .vocab import SCHEMA

_LABELS = ", ".join(str(p) for p in LABEL_PROPERTIES[:3])

# One VALUES per branch, the properties in a FILTER: with a second VALUES (?p), once the
# two lists' product passed ~16 Oxigraph switched to a hash join over every triple of
# the graph (5 s at 10^7 triples, against a millisecond).
_NODE_BRANCH = """{ VALUES ?x { %s } ?x ?p ?v . FILTER(?p IN (%s, rdf:type))
    BIND("node" AS ?what) }"""
_FACT_BRANCHES = """{ VALUES ?x { %(facts)s } ?x kgo:evidence ?selector . ?selector oa:exact ?v .
    BIND("exact" AS ?what) }
  UNION { VALUES ?x { %(facts)s } ?x ?p ?v .
    FILTER(?p IN (kgo:certainty, schema:text, rdf:type)) BIND("fact" AS ?what) }
  UNION { VALUES ?x { %(facts)s } ?v rdf:subject ?x ; rdf:predicate schema:recordedAt .
    BIND("aux" AS ?what) }"""


@dataclass
class Description:
    """What :func:`describe` found, by IRI."""

    labels: dict[str, dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set)))
    types: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    excerpts: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    certainty: dict[str, str] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)
    aux: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def node(self, iri: str) -> Node:
        by_prop = self.labels.get(iri, {})
        label = next((min(by_prop[p.value]) for p in LABEL_PROPERTIES if by_prop.get(p.value)),
                     short_ref(iri))
        return Node(iri, label, kind_of(self.types.get(iri, ())))

    def evidence(self, fact: str, *, default: str = "stated") -> Evidence:
        return Evidence(fact, self.certainty.get(fact, default),
                        tuple(sorted(self.excerpts.get(fact, ()))))


def _value(term: object) -> str:
    return term.value if isinstance(term, (ox.NamedNode, ox.Literal)) else ""


def _run(backend: Backend, nodes: list[str], facts: list[str], into: Description) -> None:
    # A branch is left out rather than given an empty VALUES: Oxigraph evaluates the
    # rest of such a branch over the whole graph before joining it with nothing.
    branches = []
    if nodes:
        branches.append(_NODE_BRANCH % (" ".join(f"<{n}>" for n in nodes), _LABELS))
    if facts:
        branches.append(_FACT_BRANCHES % {"facts": " ".join(f"<{f}>" for f in facts)})
    if not branches:
        return
    query = (SPARQL_PREFIXES + "SELECT ?x ?what ?p ?v WHERE {\n  "
             + "\n  UNION ".join(branches) + "\n}")
    result = backend.query(query)
    if not isinstance(result, ox.QuerySolutions):
        raise QueryError("the describe query did not give solutions")
    for row in result:
        x, what, p, v = (_value(row[k]) for k in ("x", "what", "p", "v"))
        if what == "node":
            if p.endswith("#type"):
                into.types[x].add(v)
            else:
                into.labels[x][p].add(v)
        elif what == "exact":
            into.excerpts[x].add(v)
        elif what == "aux":
            into.aux[x].add(v)
        elif p.endswith("#certainty"):
            into.certainty[x] = v.rsplit("/", 1)[-1]
        elif p.endswith("#type"):
            into.types[x].add(v)
        else:
            into.text[x] = v


def describe(backend: Backend, nodes: Iterable[str], facts: Iterable[str]) -> Description:
    """Labels and kinds of ``nodes``; certainty, excerpts, text and placing statements of
    ``facts`` (and the excerpts and certainty of those statements)."""
    description = Description()
    node_list, fact_list = sorted(set(nodes)), sorted(set(facts))
    for start in range(0, max(len(node_list), len(fact_list)), BATCH_SIZE):
        _run(backend, node_list[start:start + BATCH_SIZE],
             fact_list[start:start + BATCH_SIZE], description)
    aux = sorted({a for values in description.aux.values() for a in values} - set(fact_list))
    for start in range(0, len(aux), BATCH_SIZE):
        _run(backend, [], aux[start:start + BATCH_SIZE], description)
    return description


def wanted(links: Iterable[RawLink]) -> tuple[set[str], set[str]]:
    """The node IRIs (ends, people behind links, roles) and facts a set of links shows."""
    nodes: set[str] = set()
    facts: set[str] = set()
    for link in links:
        nodes.update(x for x in (link.subject, link.object, link.via, link.role) if x)
        if link.fact:
            facts.add(link.fact)
    return nodes, facts


def make_link(raw: RawLink, description: Description) -> Link:
    """A fetched link, described: nodes with labels, evidence with excerpts."""
    evidence: list[Evidence] = []
    if raw.fact:
        # A session carries evidence but is no fact: what it records is stated.
        evidence.append(description.evidence(raw.fact, default=raw.certainty or "stated"))
        if raw.kind == "quote":
            evidence += [description.evidence(a) for a in sorted(description.aux[raw.fact])]
    role_label = None
    if raw.role:
        labels = description.labels.get(raw.role, {})
        role_label = next((min(v) for v in labels.values() if v), None)
    fact_types = description.types.get(raw.fact or "", set())
    return Link(
        kind=raw.kind, subject=description.node(raw.subject),
        object=description.node(raw.object), evidence=tuple(evidence), variant=raw.variant,
        role=raw.role.rsplit("/", 1)[-1] if raw.role else None, role_label=role_label,
        via=description.node(raw.via) if raw.via else None,
        text=description.text.get(raw.fact or ""),
        quotation=SCHEMA.Quotation.value in fact_types,
    )
