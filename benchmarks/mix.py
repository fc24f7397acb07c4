"""The query mix: the questions users ask, as SPARQL with a parameter per round.

Each :class:`MixQuery` gives the query text for round ``r`` (a different person,
organisation or word each round, so a result cache never answers a "first run"), with
full ``PREFIX`` declarations so every endpoint reads it the same. ``light`` marks the
part of the mix used for the throughput figure: bounded work around one resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PREFIXES = """\
PREFIX rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX schema: <https://schema.org/>
PREFIX org: <http://www.w3.org/ns/org#>
PREFIX conf: <https://w3id.org/scholarlydata/ontology/conference-ontology.owl#>
PREFIX kgo: <https://w3id.org/sasci-kg/def#>
PREFIX skos: <http://www.w3.org/2004/02/skos/core#>
"""

# One hop between organisations: people appeared for both in one session, both are members
# of one project, or one is a unit of the other.
HOP = ("(^kgo:onBehalfOf/conf:during/^conf:during/kgo:onBehalfOf"
       "|org:memberOf/^org:memberOf|org:unitOf|^org:unitOf)")


@dataclass(frozen=True)
class MixQuery:
    name: str
    kind: str  # select | ask | construct | describe
    light: bool
    text: Callable[[dict[str, Any], int], str]

    def sparql(self, manifest: dict[str, Any], round_: int) -> str:
        return PREFIXES + self.text(manifest, round_)


def _pick(items: list[Any], round_: int, salt: int = 0) -> Any:
    return items[(round_ * 7 + salt) % len(items)]


def _person(m: dict[str, Any], r: int) -> dict[str, str]:
    return _pick(m["people"], r)  # type: ignore[no-any-return]


def _org(m: dict[str, Any], r: int) -> str:
    return _pick(m["organisations"], r, 3)["id"]  # type: ignore[no-any-return]


def _iri(ref: str) -> str:
    return f"<https://w3id.org/sasci-kg/id/{ref}>"


MIX: tuple[MixQuery, ...] = (
    MixQuery("lookup-by-name", "select", True, lambda m, r: f"""
SELECT ?thing ?type WHERE {{ ?thing schema:name "{_person(m, r)['name']}" ; a ?type }}"""),
    # Co-speakers as a plain join with the filter at group level: the same question with
    # the co-speakers in an OPTIONAL holding a FILTER ran ~500x slower (0.8 ms vs 400 ms at
    # 10^6): Oxigraph evaluates such an OPTIONAL on its own, over every role, then joins.
    MixQuery("person-sessions-cospeakers", "select", True, lambda m, r: f"""
SELECT ?session ?label ?role ?other ?otherName WHERE {{
  ?fact conf:isHeldBy {_iri(_person(m, r)['id'])} ; conf:during ?session ; conf:withRole ?role .
  ?session rdfs:label ?label .
  ?other_ conf:during ?session ; conf:isHeldBy ?other . ?other schema:name ?otherName
  FILTER(?other != {_iri(_person(m, r)['id'])})
}} ORDER BY ?label ?otherName"""),
    # Hops as DISTINCT sub-selects: a path sequence HOP/HOP keeps every duplicate of the
    # first hop (bag semantics) and ran 4-20x slower.
    MixQuery("orgs-2-hops", "select", False, lambda m, r: f"""
SELECT DISTINCT ?org ?name WHERE {{
  {{ SELECT DISTINCT ?b WHERE {{ {_iri(_org(m, r))} {HOP} ?b }} }}
  ?b {HOP} ?org . ?org schema:name ?name
}} ORDER BY ?name"""),
    MixQuery("orgs-3-hops", "select", False, lambda m, r: f"""
SELECT (COUNT(DISTINCT ?org) AS ?n) WHERE {{
  {{ SELECT DISTINCT ?c WHERE {{
      {{ SELECT DISTINCT ?b WHERE {{ {_iri(_org(m, r))} {HOP} ?b }} }}
      ?b {HOP} ?c }} }}
  ?c {HOP} ?org
}}"""),
    MixQuery("subunit-paths", "select", True, lambda m, r: f"""
SELECT ?ancestor ?name WHERE {{
  {_iri(_pick(m['units'], r))} org:unitOf+ ?ancestor . ?ancestor schema:name ?name
}}"""),
    MixQuery("counts-per-organisation", "select", False, lambda m, r: f"""
SELECT ?org ?name (COUNT(DISTINCT ?person) AS ?people) WHERE {{
  ?person schema:affiliation ?org . ?org schema:name ?name
}} GROUP BY ?org ?name ORDER BY DESC(?people) ?name LIMIT {20 + r}"""),
    MixQuery("quote-text-search", "select", False, lambda m, r: f"""
SELECT ?quote ?text WHERE {{
  ?quote a schema:Quotation ; schema:text ?text .
  FILTER(REGEX(?text, "{_pick(m['words'], r)}", "i"))
}} ORDER BY ?quote"""),
    MixQuery("construct-person", "construct", True, lambda m, r: f"""
CONSTRUCT {{ ?x ?p ?o . ?s ?q ?x }} WHERE {{
  BIND({_iri(_person(m, r + 1)['id'])} AS ?x)
  {{ ?x ?p ?o }} UNION {{ ?s ?q ?x }}
}}"""),
    MixQuery("describe-organisation", "describe", True, lambda m, r: f"""
DESCRIBE {_iri(_org(m, r + 1))}"""),
    MixQuery("ask-affiliation", "ask", True, lambda m, r: f"""
ASK {{ {_iri(_person(m, r + 2)['id'])} schema:affiliation ?org . ?org schema:name ?name }}"""),
    MixQuery("trace-two-organisations", "select", False, lambda m, r: f"""
SELECT ?via1 ?via2 WHERE {{
  BIND({_iri(_pick(m['org_pairs'], r)[0])} AS ?a) BIND({_iri(_pick(m['org_pairs'], r)[1])} AS ?b)
  {{ ?a {HOP} ?b }}
  UNION {{ ?a {HOP} ?via1 . ?via1 {HOP} ?b }}
  UNION {{ ?a {HOP} ?via1 . ?via1 {HOP} ?via2 . ?via2 {HOP} ?b }}
}} LIMIT 10"""),
)


ACCEPT = {
    "select": "application/sparql-results+json",
    "ask": "application/sparql-results+json",
    "construct": "application/n-triples",
    "describe": "application/n-triples",
}
