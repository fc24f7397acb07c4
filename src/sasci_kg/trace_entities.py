"""Finding an entity from what a person types: a name, part of one, an acronym or an IRI.

:class:`LabelIndex` is built by one SPARQL query (names, alternate names, labels, SKOS
labels of people, organisations, projects, events, sessions and ideas) and answers
:meth:`LabelIndex.resolve` forgivingly — case, accents, honorifics, "King's"/"Kings",
"&"/"and", "The", partial names — or raises with ranked suggestions.
"""

from __future__ import annotations

import bisect
import difflib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import pyoxigraph as ox

from .errors import AmbiguousEntityError, QueryError, UnknownEntityError
from .store import Backend
from .trace_links import SPARQL_PREFIXES
from .vocab import (
    ENTITY_NAMESPACES,
    FOAF,
    FRAPO,
    ID,
    KGO,
    ORG,
    PREFIXES,
    RDFS,
    SCHEMA,
    SKOS,
    VOCAB,
)

# Node kinds, checked in this order against a node's types (a project is also an
# org:OrganizationalCollaboration; a funder also an organisation).
KIND_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("funder", (FRAPO.FundingAgency.value,)),
    ("project", (SCHEMA.ResearchProject.value, FOAF.Project.value)),
    ("session", (KGO.Session.value,)),
    ("event", (SCHEMA.Event.value,)),
    ("person", (SCHEMA.Person.value, FOAF.Person.value)),
    ("organisation", (SCHEMA.Organization.value, ORG.Organization.value,
                      ORG.FormalOrganization.value, ORG.OrganizationalUnit.value)),
    ("idea", (SKOS.Concept.value,)),
)
KINDS: tuple[str, ...] = (*(k for k, _ in KIND_TYPES), "other")
_AGENTS = frozenset({"person", "organisation", "funder"})
LABEL_PROPERTIES = (RDFS.label, SKOS.prefLabel, SCHEMA.name, SCHEMA.alternateName,
                    SKOS.altLabel)

HONORIFICS = frozenset({
    "dr", "doctor", "prof", "professor", "sir", "dame", "lord", "lady", "mr", "mrs", "ms",
    "miss", "mx", "rev", "cbe", "obe", "mbe", "kbe", "dbe", "frs", "phd",
})
_DROPPED = HONORIFICS | {"the"}
_STOP = frozenset({"of", "and", "for", "by", "on", "in", "a", "an", "at", "to"})
_APOSTROPHES = re.compile(r"['’‘`´]")
_WORD = re.compile(r"[^\W_]+")


def _select(backend: Backend, sparql: str) -> ox.QuerySolutions:
    result = backend.query(sparql)
    if not isinstance(result, ox.QuerySolutions):
        raise QueryError("the label query did not give solutions")
    return result


def kind_of(types: Iterable[str]) -> str:
    """The node kind (see :data:`KINDS`) of a node with these ``rdf:type`` IRIs."""
    have = set(types)
    for kind, classes in KIND_TYPES:
        if have.intersection(classes):
            return kind
    return "other"


def tokens(text: str) -> tuple[str, ...]:
    """Words to match on: no accents, case, apostrophes, honorifics or "the"; & is and."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c))
    text = _APOSTROPHES.sub("", text.casefold()).replace("&", " and ")
    return tuple(t for t in _WORD.findall(text) if t not in _DROPPED)


_REF = re.compile(r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)+$")


def as_iri(text: str) -> str | None:
    """The IRI ``text`` spells, if it spells one: ``<…>``, ``http(s)://…``, a prefixed name
    (``person:emma-back``) or a ref under ``…/id/`` (``person/emma-back``); else None."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        return text[1:-1]
    if re.match(r"^https?://\S+$", text):
        return text
    if _REF.match(text):
        head, _, rest = text.partition("/")
        namespace = ENTITY_NAMESPACES.get(head)
        return str(namespace) + rest if namespace else str(ID) + text
    head, sep, rest = text.partition(":")
    if sep and head in PREFIXES and rest and " " not in text:
        return PREFIXES[head] + rest
    return None


def kind_from_iri(iri: str) -> str:
    """A node kind guessed from an instance IRI (``…/id/person/…``), for when no index is
    at hand; "" when the IRI does not say."""
    return {"person": "person", "org": "organisation", "project": "project",
            "event": "event", "session": "session", "concept": "idea"}.get(
        short_ref(iri).split("/", 1)[0], "")


def short_ref(iri: str) -> str:
    """``person/lisa-smith`` for an instance IRI under ``…/id/``, else the IRI itself."""
    return iri[len(str(ID)):] if iri.startswith(str(ID)) else iri


@dataclass(frozen=True)
class Candidate:
    """An entity that matches (or nearly matches) what was typed, with why."""

    iri: str
    label: str
    kind: str
    score: float
    matched: str

    @property
    def ref(self) -> str:
        return short_ref(self.iri)

    def __str__(self) -> str:
        return f"{self.label} ({self.ref})"


@dataclass(frozen=True)
class _Entry:
    iri: str
    text: str
    words: tuple[str, ...]


# Two simple queries joined here, rather than one joining types with labels: at 10^7
# triples Oxigraph answered the join in 23 s and these two in under 3 s together.
_TYPE_VALUES = " ".join(f"<{c}>" for _, classes in KIND_TYPES for c in classes)
_LABEL_VALUES = " ".join(str(p) for p in LABEL_PROPERTIES)
_TYPES_QUERY = f"{SPARQL_PREFIXES}SELECT ?s ?type WHERE {{ VALUES ?type {{ {_TYPE_VALUES} }} " \
    "?s a ?type . }"
_LABELS_QUERY = f"{SPARQL_PREFIXES}SELECT ?s ?p ?label WHERE {{ VALUES ?p {{ {_LABEL_VALUES} }} " \
    "?s ?p ?label . }"


class LabelIndex:
    """Every labelled entity of the store, for forgiving look-up by name."""

    def __init__(self, rows: Iterable[tuple[str, str, str, str]]):
        """``rows``: (entity IRI, one of its types, label property IRI, label)."""
        types: dict[str, set[str]] = defaultdict(set)
        labels: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for iri, type_, prop, label in rows:
            types[iri].add(type_)
            labels[iri][prop].add(label)
        self.kinds = {iri: kind_of(t) for iri, t in types.items()}
        self.labels: dict[str, str] = {}
        self._entries: list[_Entry] = []
        self._exact: dict[str, set[str]] = defaultdict(set)
        self._words: dict[str, set[int]] = defaultdict(set)
        for iri in sorted(labels):
            by_prop = labels[iri]
            self.labels[iri] = next(
                (min(by_prop[p.value]) for p in LABEL_PROPERTIES if by_prop.get(p.value)),
                short_ref(iri))
            texts = sorted({t for values in by_prop.values() for t in values})
            for text in texts + self._initials(iri, texts):
                words = tokens(text)
                if not words:
                    continue
                self._exact["".join(words)].add(iri)
                for word in words:
                    self._words[word].add(len(self._entries))
                self._entries.append(_Entry(iri, text, words))
        self._vocabulary = sorted(self._words)

    def _initials(self, iri: str, texts: list[str]) -> list[str]:
        """Initials of an organisation's or project's longer names ("KCL", "NDTI")."""
        if self.kinds[iri] not in {"organisation", "funder", "project"}:
            return []
        out = []
        for text in texts:
            words = [w for w in tokens(text) if w not in _STOP]
            if len(words) >= 3:
                out.append("".join(w[0] for w in words))
        return out

    @classmethod
    def from_backend(cls, backend: Backend) -> LabelIndex:
        """Build the index with two SPARQL queries (typed entities, then labels)."""
        types: dict[str, list[str]] = defaultdict(list)
        vocab = str(VOCAB)  # controlled values (roles, session types…) are not ideas
        for row in _select(backend, _TYPES_QUERY):
            subject = row["s"]
            if isinstance(subject, ox.NamedNode) and not subject.value.startswith(vocab):
                types[subject.value].append(row["type"].value)
        rows = []
        for row in _select(backend, _LABELS_QUERY):
            subject, label = row["s"], row["label"]
            if isinstance(label, ox.Literal) and isinstance(subject, ox.NamedNode):
                for type_ in types.get(subject.value, ()):
                    rows.append((subject.value, type_, row["p"].value,
                                 label.value))
        return cls(rows)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, iri: object) -> bool:
        return iri in self.labels

    def candidate(self, iri: str, score: float = 1.0, matched: str = "") -> Candidate:
        return Candidate(iri, self.labels.get(iri, short_ref(iri)),
                         self.kinds.get(iri, "other"), score, matched)

    # -- look-up -------------------------------------------------------------------

    def resolve(self, text: str, *, role: str = "entity") -> Candidate:
        """The one entity ``text`` names, or :class:`UnknownEntityError` /
        :class:`AmbiguousEntityError` with ranked suggestions. ``role`` names the
        parameter in messages (FROM, TO, ENTITY)."""
        text = text.strip()
        iri = as_iri(text)
        if iri is not None:
            if iri in self.labels:
                return self.candidate(iri, 1.0, "IRI")
            raise UnknownEntityError(text, role, self.suggest(short_ref(iri).split("/")[-1]))
        words = tokens(text)
        if not words:
            raise UnknownEntityError(text, role, [])
        exact = self._exact.get("".join(words), set())
        if exact:
            return self._one(text, role, [self.candidate(i, 1.0, "name") for i in exact])
        partial = self._partial(words)
        if partial:
            return self._one(text, role, partial)
        raise UnknownEntityError(text, role, self.suggest(text))

    def _words_like(self, word: str) -> set[int]:
        """Entries with this word, or (for three letters or more) a word it begins."""
        hits = set(self._words.get(word, ()))
        if len(word) >= 3:
            start = bisect.bisect_left(self._vocabulary, word)
            for other in self._vocabulary[start:]:
                if not other.startswith(word):
                    break
                hits |= self._words[other]
        return hits

    def _partial(self, words: tuple[str, ...]) -> list[Candidate]:
        """Entities one of whose labels holds every typed word (or a word it begins)."""
        wanted = [w for w in words if w not in _STOP] or list(words)
        hits: set[int] | None = None
        for word in wanted:
            found = self._words_like(word)
            hits = found if hits is None else hits & found
            if not hits:
                return []
        best: dict[str, Candidate] = {}
        for number in sorted(hits or ()):
            entry = self._entries[number]
            covered = sum(1 for w in entry.words if any(w.startswith(q) for q in wanted))
            score = 0.7 + 0.2 * covered / len(entry.words)
            if entry.iri not in best or score > best[entry.iri].score:
                best[entry.iri] = self.candidate(entry.iri, round(score, 3), entry.text)
        return self._prefer_agents(list(best.values()))

    def _prefer_agents(self, found: list[Candidate]) -> list[Candidate]:
        """Drop a session or idea whose label only names a matching person or
        organisation ("Plenary by Juliette Malley" when "Malley" was typed)."""
        agents = [c for c in found if c.kind in _AGENTS]
        names = ["".join(tokens(c.label)) for c in agents]
        return [c for c in found if c.kind in _AGENTS
                or not any(n and n in "".join(tokens(c.label)) for n in names)]

    def _one(self, text: str, role: str, found: list[Candidate]) -> Candidate:
        ranked = sorted(found, key=lambda c: (-c.score, c.label, c.iri))
        if len(ranked) == 1:
            return ranked[0]
        raise AmbiguousEntityError(text, role, ranked)

    def suggest(self, text: str, limit: int = 5) -> list[Candidate]:
        """Entities whose labels look like ``text`` (misspelt or half-remembered)."""
        words = tokens(text)
        query = " ".join(words)
        if not query:
            return []
        close: set[int] = set()
        for word in words:
            for near in difflib.get_close_matches(word, self._vocabulary, n=8, cutoff=0.7):
                close |= self._words[near]
        best: dict[str, Candidate] = {}
        for number in sorted(close):
            entry = self._entries[number]
            score = difflib.SequenceMatcher(None, query, " ".join(entry.words)).ratio()
            if score >= 0.4 and (entry.iri not in best or score > best[entry.iri].score):
                best[entry.iri] = self.candidate(entry.iri, round(score, 3), entry.text)
        return sorted(best.values(), key=lambda c: (-c.score, c.label, c.iri))[:limit]

