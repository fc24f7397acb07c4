"""Full-text search over the graph's names, labels, definitions and quotes.

:func:`build_search_index` reads a :class:`~sasci_kg.store.Backend` with three SPARQL
queries (typed entities, their labels, quotations and claims) and writes an SQLite FTS5
index to a file; :class:`SearchIndex` answers ranked, prefix-matching searches from it
(names before definitions and quote text, whole-name matches first). Words are folded as
:func:`~sasci_kg.trace_entities.tokens` folds them for entity look-up: case, accents,
apostrophes ("King's" = "Kings"), "&" = "and", honorifics and "the" dropped.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyoxigraph as ox

from .errors import QueryError
from .store import Backend
from .trace_entities import KIND_TYPES, LABEL_PROPERTIES, kind_of, short_ref, tokens
from .trace_links import SPARQL_PREFIXES
from .vocab import SCHEMA, VOCAB

#: Kinds of search hit: the entity kinds of connection tracing, then quotes and claims.
HIT_KINDS: tuple[str, ...] = ("organisation", "funder", "project", "person", "event",
                              "session", "idea", "quote", "claim")
# Ties in relevance go to the things people look for most: agents, then the rest.
_KIND_ORDER = {kind: i for i, kind in enumerate(
    ("organisation", "funder", "project", "person", "event", "session", "idea", "claim",
     "quote"))}
MAX_QUERY_CHARS = 200
MAX_LIMIT = 100
SCHEMA_VERSION = 1

_TYPE_VALUES = " ".join(f"<{c}>" for _, classes in KIND_TYPES for c in classes)
_LABEL_VALUES = " ".join(f"<{p.value}>" for p in LABEL_PROPERTIES)
_TYPES_QUERY = (f"SELECT ?s ?type WHERE {{ VALUES ?type {{ {_TYPE_VALUES} }} ?s a ?type . }}")
_LABELS_QUERY = (f"SELECT ?s ?p ?label WHERE {{ VALUES ?p {{ {_LABEL_VALUES} }} "
                 "?s ?p ?label . }")
_TEXTS_QUERY = (
    f"{SPARQL_PREFIXES}SELECT ?s ?type ?text ?creator WHERE {{ "
    f"VALUES ?type {{ <{SCHEMA.Quotation.value}> <{SCHEMA.Claim.value}> }} "
    "?s a ?type ; schema:text ?text . OPTIONAL { ?s schema:creator ?creator } }")
_DEFINITIONS_QUERY = (f"{SPARQL_PREFIXES}SELECT ?s ?text WHERE {{ "
                      "VALUES ?p { skos:definition schema:description } ?s ?p ?text . }")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


@dataclass(frozen=True)
class SearchHit:
    """One answer: the entity (or quote, or claim), why it matched, how well.

    ``about`` is who said a quote or claim (IRI, label); ``snippet`` the matching words of
    its text (or definition) in context, as (text, matched) parts.
    """

    iri: str
    label: str
    kind: str
    score: float
    matched: str
    about: tuple[str, str] | None = None
    snippet: tuple[tuple[str, bool], ...] = ()

    @property
    def ref(self) -> str:
        return short_ref(self.iri)

    @property
    def snippet_text(self) -> str:
        return "".join(part for part, _ in self.snippet)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"iri": self.iri, "ref": self.ref, "label": self.label,
                               "kind": self.kind, "score": round(self.score, 3),
                               "matched": self.matched}
        if self.about:
            out["about"] = {"iri": self.about[0], "ref": short_ref(self.about[0]),
                            "label": self.about[1]}
        if self.snippet:
            out["snippet"] = self.snippet_text
        return out


@dataclass(frozen=True)
class _Doc:
    iri: str
    kind: str
    label: str
    names: tuple[str, ...]
    text: str
    about: str | None


def _fold(text: str) -> str:
    return " ".join(tokens(text))


_STOP = frozenset({"of", "and", "for", "by", "on", "in", "a", "an", "at", "to"})


def _initials(name: str) -> str:
    """"KCL" for "King's College London": organisations are often typed so."""
    return "".join(w[0] for w in tokens(name) if w not in _STOP).upper()


def _select(backend: Backend, sparql: str) -> ox.QuerySolutions:
    result = backend.query(sparql)
    if not isinstance(result, ox.QuerySolutions):
        raise QueryError("the search index query did not give solutions")
    return result


def _value(term: object) -> str | None:
    return term.value if isinstance(term, (ox.NamedNode, ox.Literal)) else None


def collect_documents(backend: Backend) -> list[_Doc]:
    """What the index holds, read from the store: every typed entity with its names (and
    definition), every quotation and claim with its text and who made it."""
    vocab = str(VOCAB)  # controlled values (roles, certainty…) are not things to find
    types: dict[str, set[str]] = defaultdict(set)
    for row in _select(backend, _TYPES_QUERY):
        iri = _value(row["s"])
        if iri and isinstance(row["s"], ox.NamedNode) and not iri.startswith(vocab):
            types[iri].add(row["type"].value)
    by_prop: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in _select(backend, _LABELS_QUERY):
        iri, label = _value(row["s"]), row["label"]
        if iri in types and isinstance(label, ox.Literal):
            by_prop[iri][row["p"].value].add(label.value)
    display = {iri: next((min(found[p.value]) for p in LABEL_PROPERTIES if found.get(p.value)),
                         short_ref(iri)) for iri, found in by_prop.items()}
    definitions: dict[str, list[str]] = defaultdict(list)
    for row in _select(backend, _DEFINITIONS_QUERY):
        iri, text = _value(row["s"]), row["text"]
        if iri in types and isinstance(text, ox.Literal):
            definitions[iri].append(text.value)
    docs: list[_Doc] = []
    for iri in sorted(by_prop):
        names = {n for found in by_prop[iri].values() for n in found}
        kind = kind_of(types[iri])
        if kind in ("organisation", "funder", "project"):
            names |= {_initials(n) for n in names if len(_initials(n)) >= 3}
        docs.append(_Doc(iri, kind, display[iri], tuple(sorted(names)),
                         " ".join(sorted(definitions.get(iri, ()))), None))
    texts: dict[str, dict[str, Any]] = {}
    for row in _select(backend, _TEXTS_QUERY):
        iri, text = _value(row["s"]), row["text"]
        if not iri or not isinstance(text, ox.Literal):
            continue
        entry = texts.setdefault(iri, {"kinds": set(), "texts": set(), "creator": None})
        entry["kinds"].add("quote" if row["type"].value == SCHEMA.Quotation.value else "claim")
        entry["texts"].add(text.value)
        creator = _value(row["creator"]) if row["creator"] is not None else None
        if creator and (entry["creator"] is None or creator < entry["creator"]):
            entry["creator"] = creator
    for iri in sorted(texts):
        entry = texts[iri]
        kind = "quote" if "quote" in entry["kinds"] else "claim"
        text = " ".join(sorted(entry["texts"]))
        creator = entry["creator"]
        who = display.get(creator, "") if creator else ""
        short = text if len(text) <= 80 else text[:77].rstrip() + "…"
        label = f"{who}: “{short}”" if who else f"“{short}”"
        docs.append(_Doc(iri, kind, label, (), text, creator))
    return docs



def build_search_index(backend: Backend, path: Path | str, *,
                       documents: Iterable[_Doc] | None = None) -> SearchIndex:
    """Write the index of ``backend`` to ``path`` (atomically: a file beside it, renamed
    over it) and open it."""
    target = Path(path)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    docs = list(collect_documents(backend) if documents is None else documents)
    connection = sqlite3.connect(staging)
    try:
        with connection:
            connection.executescript(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
                "CREATE TABLE docs (id INTEGER PRIMARY KEY, iri TEXT, kind TEXT, label TEXT,"
                " text TEXT, about TEXT, about_label TEXT, folded_label TEXT, folded_names TEXT);"
                "CREATE VIRTUAL TABLE docs_fts USING fts5(label, names, body, content='',"
                " tokenize='unicode61 remove_diacritics 2');")
            labels = {d.iri: d.label for d in docs}
            for number, doc in enumerate(docs, start=1):
                about = labels.get(doc.about or "", "")
                # A quote or claim is named by who made it; its words are its text.
                name = about if doc.kind in ("quote", "claim") else doc.label
                connection.execute(
                    "INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (number, doc.iri, doc.kind, doc.label, doc.text, doc.about, about,
                     _fold(name), "\t".join(_fold(n) for n in doc.names)))
                connection.execute(
                    "INSERT INTO docs_fts(rowid, label, names, body) VALUES (?, ?, ?, ?)",
                    (number, _fold(name), _fold(" ".join(doc.names)), _fold(doc.text)))
            connection.execute("INSERT INTO meta VALUES ('schema', ?), ('documents', ?)",
                               (str(SCHEMA_VERSION), str(len(docs))))
            connection.execute("INSERT INTO docs_fts(docs_fts) VALUES ('optimize')")
    finally:
        connection.close()
    os.replace(staging, target)
    return SearchIndex(target)


class SearchIndex:
    """A built index file, searched read-only (one connection per search, so any
    number of threads may search at once)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        with closing(self._connect()) as connection:
            row = connection.execute("SELECT value FROM meta WHERE key = 'documents'").fetchone()
        self.documents = int(row[0]) if row else 0

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)

    def __len__(self) -> int:
        return self.documents

    def search(self, text: str, *, kinds: Sequence[str] | None = None,
               limit: int = 20) -> list[SearchHit]:
        """The best ``limit`` hits for ``text`` (every word, or the start of it, must
        appear; if nothing has them all, any of them will do), of ``kinds`` when given."""
        if len(text) > MAX_QUERY_CHARS:
            raise QueryError(f"q: the search text is longer than {MAX_QUERY_CHARS} characters; "
                             "search for a few words")
        unknown = [k for k in kinds or () if k not in HIT_KINDS]
        if unknown:
            raise QueryError(f"kind: unknown kind(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(HIT_KINDS)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
        words = list(dict.fromkeys(tokens(text)))[:12]
        if not words:
            return []
        with closing(self._connect()) as connection:
            rows = self._match(connection, " AND ".join(f'"{w}"*' for w in words), kinds)
            if not rows and len(words) > 1:
                rows = self._match(connection, " OR ".join(f'"{w}"*' for w in words), kinds)
        folded = " ".join(words)
        hits = [self._hit(row, words, folded) for row in rows]
        hits.sort(key=lambda h: (-h.score, _KIND_ORDER.get(h.kind, 99), h.label.casefold(),
                                 h.iri))
        return hits[:limit]

    def _match(self, connection: sqlite3.Connection, expression: str,
               kinds: Sequence[str] | None) -> list[tuple[Any, ...]]:
        sql = ("SELECT d.iri, d.kind, d.label, d.text, d.about, d.about_label, d.folded_label, "
               "d.folded_names, "
               "bm25(docs_fts, 10.0, 5.0, 1.0) AS rank FROM docs_fts "
               "JOIN docs d ON d.id = docs_fts.rowid WHERE docs_fts MATCH ?")
        params: list[Any] = [expression]
        if kinds:
            sql += f" AND d.kind IN ({', '.join('?' for _ in kinds)})"
            params += list(kinds)
        sql += " ORDER BY rank LIMIT 300"
        return connection.execute(sql, params).fetchall()

    def _hit(self, row: tuple[Any, ...], words: list[str], folded: str) -> SearchHit:
        iri, kind, label, text, about, about_label, folded_label, folded_names, rank = row
        score = -float(rank)  # bm25: lower is better
        label_words = folded_label.split()
        said = kind in ("quote", "claim")
        if said and label_words and all(any(lw.startswith(w) for lw in label_words)
                                        for w in words):
            score += 10.0  # what someone said, found by their name: after the person
            matched = "speaker"
        elif said:
            matched = "text"
        elif folded_label == folded or folded in folded_names.split("\t"):
            score += 100.0  # the whole name (or another of its names), as typed
            matched = "name"
        elif label_words and all(any(lw.startswith(w) for lw in label_words) for w in words):
            score += 20.0 + 10.0 * len(words) / len(label_words)
            matched = "name"
        else:
            matched = "names"
        snippet: tuple[tuple[str, bool], ...] = ()
        if text and (said or matched != "name"):
            snippet = make_snippet(text, words)
            if matched == "names" and any(hit for _, hit in snippet):
                matched = "definition"
        return SearchHit(iri, label, kind, score, matched,
                         (about, about_label) if about else None, snippet)


def make_snippet(text: str, words: Sequence[str], *, width: int = 24
                 ) -> tuple[tuple[str, bool], ...]:
    """``text`` cut to about ``width`` words around the first match, as (part, matched)
    parts; the words matched are those that begin with one of ``words`` once folded."""
    spans = list(_WORD.finditer(text))
    marks = [any(t.startswith(w) for t in tokens(m.group()) for w in words) for m in spans]
    if not spans:
        return ((text, False),)
    first = next((i for i, hit in enumerate(marks) if hit), 0)
    start = max(0, first - width // 3)
    end = min(len(spans), start + width)
    begin = spans[start].start()
    finish = spans[end - 1].end() if end < len(spans) else len(text)
    parts: list[tuple[str, bool]] = []
    if begin > 0:
        parts.append(("…", False))
    cursor = begin
    for index in range(start, end):
        match = spans[index]
        if match.start() > cursor:
            parts.append((text[cursor:match.start()], False))
        parts.append((match.group(), marks[index]))
        cursor = match.end()
    if cursor < finish:
        parts.append((text[cursor:finish], False))
    if end < len(spans):
        parts.append(("…", False))
    merged: list[tuple[str, bool]] = []
    for part, hit in parts:
        if merged and merged[-1][1] == hit:
            merged[-1] = (merged[-1][0] + part, hit)
        else:
            merged.append((part, hit))
    return tuple(merged)


__all__ = ["HIT_KINDS", "SearchHit", "SearchIndex", "build_search_index", "collect_documents",
           "make_snippet"]
