"""The kinds of link that connection tracing follows, and the SPARQL that fetches them.

Takes a set of node IRIs (a search frontier) and gives every link touching them as
:class:`RawLink` records, in ONE query per batch of nodes (``VALUES`` over the batch), so
a hop costs one round trip on a remote engine. Each link names the fact node that carries
its provenance (certainty, evidence), as ``docs/model.md`` lays the facts out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pyoxigraph as ox

from .errors import QueryError
from .store import Backend, QueryResult
from .vocab import CONF, KGO, OA, ORG, RDF, RDFS, SCHEMA, SKOS

#: Link kinds, in the order they are documented; each is one or more SPARQL patterns.
LINK_KINDS: tuple[str, ...] = (
    "funding", "partnership", "hosting", "unit", "affiliation", "role", "represented",
    "session", "quote", "idea",
)
LINK_KIND_HELP: dict[str, str] = {
    "funding": "a project and its funder (schema:funder)",
    "partnership": "a partner or lead of a project (org:Membership)",
    "hosting": "an organiser of the event or a session (schema:organizer)",
    "unit": "a unit and its parent organisation (org:unitOf)",
    "affiliation": "a person and their organisation at the event (conf:AffiliationDuringEvent)",
    "role": "a person's role in a session (conf:RoleDuringEvent)",
    "represented": "an organisation someone appeared for in a session (kgo:onBehalfOf)",
    "session": "a session of the event (schema:subEvent)",
    "quote": "a quote or claim made in a session (schema:creator, schema:recordedAt)",
    "idea": "an idea a person spoke of, or a session, event or project was about "
            "(schema:about)",
}

_CERT = "OPTIONAL { ?fact kgo:certainty ?cert }"


def _statement(s: str, predicate: str, o: str) -> str:
    """A binary fact: the reified statement node (``rdf:Statement``) with its certainty.

    The fact node is the pattern, not the plain triple beside it: a multi-pattern
    OPTIONAL is joined by hash over the whole graph on some engines (Oxigraph), which is
    seconds at 10^7 triples; anchored on the frontier, the reified pattern is an index
    lookup.
    """
    return f"?fact rdf:subject {s} ; rdf:predicate {predicate} ; rdf:object {o} . {_CERT}"


# Each pattern: (kind, variant, body with {S} and {O} for the link's two ends). A quote's
# second fact (the statement that it was recorded in a session, when only implied) is
# looked up when a path is described, not here, for the same reason.
_PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("funding", "", _statement("{S}", "schema:funder", "{O}")),
    ("partnership", "", "?fact org:member {S} ; org:organization {O} . "
                        "OPTIONAL { ?fact org:role ?role } " + _CERT),
    ("hosting", "", _statement("{S}", "schema:organizer", "{O}")),
    ("unit", "", _statement("{S}", "org:unitOf", "{O}")),
    ("affiliation", "", "?fact conf:isAffiliationOf {S} ; conf:withOrganisation {O} . " + _CERT),
    ("role", "", "?fact conf:isHeldBy {S} ; conf:during {O} ; conf:withRole ?role . "
                 "OPTIONAL { ?fact kgo:onBehalfOf ?via } " + _CERT),
    ("represented", "", "?fact kgo:onBehalfOf {S} ; conf:during {O} ; conf:isHeldBy ?via ; "
                        "conf:withRole ?role . " + _CERT),
    # A session is not a fact; the session node itself carries the evidence.
    ("session", "", "{S} schema:subEvent {O} . BIND({O} AS ?fact)"),
    ("quote", "", "?fact schema:creator {S} ; schema:recordedAt {O} . " + _CERT),
    ("idea", "said", "?fact schema:creator {S} ; schema:about {O} . " + _CERT),
    ("idea", "topic", _statement("{S}", "schema:about", "{O}")),
)

_USED = {"rdf": RDF, "rdfs": RDFS, "schema": SCHEMA, "org": ORG, "conf": CONF, "kgo": KGO,
         "skos": SKOS, "oa": OA}
#: Explicit PREFIX lines, so the queries are plain SPARQL 1.1 on any engine.
SPARQL_PREFIXES = "".join(f"PREFIX {name}: <{_USED[name]}>\n" for name in sorted(_USED))

# Frontier nodes per query: big enough that a hop is one query on real data, small enough
# that the query text stays a few hundred kilobytes on a huge frontier.
BATCH_SIZE = 200


@dataclass(frozen=True, order=True)
class RawLink:
    """One link as fetched: its kind, its two ends (subject → object) and its fact node.

    ``via`` is the person behind a ``represented`` link, or the organisation a ``role``
    was held for; ``role`` the IRI of the role (or partner role) held.
    """

    kind: str
    subject: str
    object: str
    variant: str = ""
    fact: str | None = None
    certainty: str | None = None
    role: str | None = None
    via: str | None = None

    def other(self, node: str) -> str:
        """The end of the link that is not ``node``."""
        return self.object if node == self.subject else self.subject

    @property
    def implied(self) -> bool:
        return self.certainty == "implied"


def check_kinds(kinds: Iterable[str] | None) -> tuple[str, ...]:
    """Validate link kind names; ``None`` means all of them."""
    if kinds is None:
        return LINK_KINDS
    chosen = tuple(dict.fromkeys(k.strip() for k in kinds if k.strip()))
    unknown = [k for k in chosen if k not in LINK_KINDS]
    if unknown or not chosen:
        raise QueryError(f"unknown link kind(s) {', '.join(map(repr, unknown)) or '(none)'}; "
                         f"choose from: {', '.join(LINK_KINDS)}")
    return chosen


def _branches(kinds: Sequence[str], values: str | None) -> list[str]:
    """The UNION branches for ``kinds``.

    Anchored (``values`` given): each pattern twice, with the frontier ?n as subject and
    as object, and the ``VALUES`` block inside every branch: at the top of the query,
    Oxigraph evaluated the whole union unanchored (over a minute at 10^7 triples, against
    milliseconds inside). Free (``values`` None): each pattern once, over the whole graph.
    """
    branches = []
    for kind, variant, body in _PATTERNS:
        if kind not in kinds:
            continue
        ends = [("?n", "?m", "out"), ("?m", "?n", "in")] if values else [("?s", "?o", "")]
        for s, o, direction in ends:
            text = body.replace("{S}", s).replace("{O}", o)
            binds = f'BIND("{kind}" AS ?kind) BIND("{variant}" AS ?variant)'
            if values:
                text = f"VALUES ?n {{ {values} }} {text}"
                binds += f' BIND("{direction}" AS ?dir)'
            branches.append(f"{{ {text} {binds} }}")
    return branches


_SELECT = "?kind ?variant ?fact ?cert ?role ?via"


def frontier_query(nodes: Sequence[str], kinds: Sequence[str], *, limit: int | None = None
                   ) -> str:
    """One SPARQL query for every link of ``kinds`` that touches one of ``nodes``."""
    values = " ".join(f"<{n}>" for n in nodes)
    union = "\n  UNION ".join(_branches(kinds, values))
    tail = f"\nLIMIT {limit}" if limit else ""
    return (f"{SPARQL_PREFIXES}SELECT DISTINCT ?n ?m ?dir {_SELECT}\nWHERE {{\n"
            f"  {union}\n  FILTER(isIRI(?m))\n}}{tail}")


def graph_query(kinds: Sequence[str], *, limit: int | None = None) -> str:
    """One SPARQL query for every link of ``kinds`` in the whole graph."""
    union = "\n  UNION ".join(_branches(kinds, None))
    tail = f"\nLIMIT {limit}" if limit else ""
    return (f"{SPARQL_PREFIXES}SELECT DISTINCT ?s ?o {_SELECT}\nWHERE {{\n  {union}\n"
            f"  FILTER(isIRI(?s) && isIRI(?o))\n}}{tail}")


def _iri(term: object) -> str | None:
    return term.value if isinstance(term, ox.NamedNode) else None


def _code(term: object) -> str | None:
    """The code of a controlled value: the last path segment of its IRI."""
    iri = _iri(term)
    return iri.rsplit("/", 1)[-1] if iri else None


@runtime_checkable
class StopsAtDeadline(Protocol):
    """A backend that can stop a query at a deadline (the web's killable query workers)."""

    def query_until(self, sparql: str, deadline: float) -> QueryResult:
        """Run ``sparql``; past ``deadline`` (``time.monotonic()``) stop it and raise
        :class:`OutOfTime`."""
        ...


def _solutions(backend: Backend, sparql: str, deadline: float | None = None
               ) -> ox.QuerySolutions:
    if deadline is not None and isinstance(backend, StopsAtDeadline):
        result = backend.query_until(sparql, deadline)
    else:
        result = backend.query(sparql)
    if not isinstance(result, ox.QuerySolutions):
        raise QueryError("the link query did not give solutions; is the backend a SPARQL "
                         "1.1 query engine?")
    return result


def _link(row: ox.QuerySolution, subject: str, obj: str) -> RawLink:
    return RawLink(
        kind=row["kind"].value,
        variant=row["variant"].value,
        subject=subject, object=obj,
        fact=_iri(row["fact"]),
        certainty=_code(row["cert"]), role=_iri(row["role"]), via=_iri(row["via"]),
    )


class OutOfTime(Exception):
    """Raised by :func:`fetch_links` when its deadline passes between two batches, or by a
    :class:`StopsAtDeadline` backend that stopped a query at the deadline."""


def fetch_links(backend: Backend, nodes: Iterable[str], kinds: Sequence[str], *,
                limit: int | None = None, deadline: float | None = None) -> list[RawLink]:
    """Every link of ``kinds`` touching ``nodes``: one query per :data:`BATCH_SIZE` nodes.

    ``limit`` caps the rows of each query (a guard against hubs on a huge graph);
    past ``deadline`` (``time.monotonic()``), :class:`OutOfTime` is raised before the next
    batch. A query already sent is stopped at the deadline only by a backend that can stop
    one (:class:`StopsAtDeadline`: the web's query workers); the embedded store runs it to
    its end.
    """
    ordered = sorted(set(nodes))
    links: set[RawLink] = set()
    for start in range(0, len(ordered), BATCH_SIZE):
        if deadline is not None and start and time.monotonic() > deadline:
            raise OutOfTime
        batch = ordered[start:start + BATCH_SIZE]
        for row in _solutions(backend, frontier_query(batch, kinds, limit=limit), deadline):
            n, m = row["n"].value, row["m"].value
            out = row["dir"].value == "out"
            links.add(_link(row, n if out else m, m if out else n))
    return sorted(links, key=_sort_key)


def fetch_all_links(backend: Backend, kinds: Sequence[str], *, limit: int | None = None
                    ) -> list[RawLink]:
    """Every link of ``kinds`` in the graph (for drawing the network)."""
    links = {
        _link(row, row["s"].value, row["o"].value)
        for row in _solutions(backend, graph_query(kinds, limit=limit))
    }
    return sorted(links, key=_sort_key)


def _sort_key(link: RawLink) -> tuple[str, ...]:
    return (link.subject, link.object, link.kind, link.variant, link.fact or "",
            link.role or "", link.via or "", link.certainty or "")

