"""The answers of connection tracing, and how they read: text, JSON-ready dicts, CSV.

:class:`TraceResult` holds the connections found between two entities (or says plainly
that there is none within the bound); :class:`Connections` what lies near one entity,
grouped by kind. Both render as text for people and as dicts for JSON.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from .trace_explain import Link, Node, Path

#: Groups of :meth:`Connections.grouped`: title → node kinds.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("organisations", ("organisation", "funder")),
    ("people", ("person",)),
    ("sessions", ("session",)),
    ("events", ("event",)),
    ("projects", ("project",)),
    ("ideas", ("idea",)),
    ("other", ("other",)),
)
_SINGULAR = {"organisations": "organisation", "people": "person", "sessions": "session",
             "events": "event", "projects": "project", "ideas": "idea", "other": "other"}


def _links_word(n: int) -> str:
    return f"{n} link{'s' if n != 1 else ''}"


def _quote(excerpt: str) -> str:
    return f"“{excerpt}”"


@dataclass(frozen=True)
class TraceResult:
    """Connections from ``source`` to ``target``, shortest first.

    ``searched``: every connection of at most this many links has been considered;
    ``complete``: the answer is exact within ``max_length`` (no budget ran out first);
    ``timed_out`` / ``truncated``: the time or link budget stopped the search.
    """

    source: Node
    target: Node
    paths: tuple[Path, ...]
    max_length: int
    searched: int
    complete: bool
    timed_out: bool
    truncated: bool
    kinds: tuple[str, ...]
    seconds: float
    queries: int

    @property
    def headline(self) -> str:
        a, b = self.source.label, self.target.label
        if self.paths:
            shortest = self.paths[0].length
            count = len(self.paths)
            return (f"{a} → {b}: {count} connection{'s' if count != 1 else ''}, the shortest "
                    f"{_links_word(shortest)}")
        if self.timed_out:
            return (f"No connection found between {a} and {b} in the time allowed "
                    f"(searched up to {_links_word(self.searched)})")
        if self.truncated:
            return (f"No connection found between {a} and {b} before the link budget ran "
                    f"out (searched up to {_links_word(self.searched)})")
        return f"No connection between {a} and {b} within {_links_word(self.max_length)}"

    @property
    def notes(self) -> list[str]:
        """Why the answer may be partial, and what to change to see more."""
        notes = []
        if self.timed_out:
            notes.append(f"the search stopped at the time limit after "
                         f"{_links_word(self.searched)}; allow more time or fewer link kinds")
        if self.truncated:
            notes.append("the search stopped at its link budget; try fewer link kinds")
        if not self.paths and not self.timed_out and not self.truncated \
                and self.max_length < 8:
            notes.append("a longer connection may exist: raise the maximum length")
        return notes

    def to_text(self) -> str:
        """The answer for people: headline, then each connection in sentences with the
        evidence (exact words of the source) under each step."""
        lines = [self.headline + "."]
        for number, path in enumerate(self.paths, start=1):
            lines += ["", f"{number}. {path.sentence}",
                      f"   ({_links_word(path.length)}, {path.certainty}: "
                      + " → ".join(n.label for n in path.nodes) + ")"]
            for step in path.steps:
                lines.append(f"   - {step.source.label} → {step.target.label} "
                             f"[{', '.join(step.kinds)}; {step.certainty}]")
                for excerpt, links in step.excerpts(step.primary_links):
                    refs = ", ".join(sorted({link.fact.rsplit('/id/', 1)[-1]
                                             for link in links if link.fact}))
                    lines.append(f"       {_quote(excerpt)} — {refs}")
                others = [link for link in step.links if link not in step.primary_links]
                if others:
                    kinds = ", ".join(sorted({link.kind for link in others}))
                    lines.append(f"       (and {len(others)} more fact"
                                 f"{'s' if len(others) != 1 else ''} on this step: {kinds})")
        lines += [f"Note: {note}." for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.source.to_dict(), "to": self.target.to_dict(),
            "headline": self.headline, "max_length": self.max_length,
            "searched": self.searched, "complete": self.complete,
            "timed_out": self.timed_out, "truncated": self.truncated,
            "links": list(self.kinds), "notes": self.notes,
            "paths": [p.to_dict() for p in self.paths],
        }

    def to_csv(self) -> str:
        """One row per link of every step: path, step, ends, kind, certainty, fact,
        evidence (excerpts joined by " | ") and the step's sentence."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["path", "step", "from", "to", "from_label", "to_label", "kind",
                         "certainty", "fact", "evidence", "sentence"])
        for number, path in enumerate(self.paths, start=1):
            for index, step in enumerate(path.steps, start=1):
                for link in step.links:
                    writer.writerow([
                        number, index, step.source.ref, step.target.ref, step.source.label,
                        step.target.label, link.kind, link.certainty, link.fact or "",
                        " | ".join(x for e in link.evidence for x in e.excerpts),
                        step.sentence])
        return out.getvalue()


@dataclass(frozen=True)
class Connection:
    """An entity near the centre: how many links away, through which sessions and
    people (and every node on its shortest paths), and the links of its last step."""

    node: Node
    distance: int
    sessions: tuple[Node, ...]
    people: tuple[Node, ...]
    via: tuple[Node, ...]
    links: tuple[Link, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.node.to_dict(), "distance": self.distance,
                "sessions": [n.to_dict() for n in self.sessions],
                "people": [n.to_dict() for n in self.people],
                "via": [n.to_dict() for n in self.via],
                "links": [link.to_dict() for link in self.links]}


@dataclass(frozen=True)
class Connections:
    """Everything within ``hops`` links of ``entity``."""

    entity: Node
    hops: int
    connections: tuple[Connection, ...]
    kinds: tuple[str, ...]
    timed_out: bool
    truncated: bool
    seconds: float
    total: int = 0

    @property
    def notes(self) -> list[str]:
        """Why the list may be short."""
        notes = []
        if self.total > len(self.connections):
            notes.append(f"showing the nearest {len(self.connections)} of {self.total}; "
                         "ask for fewer hops or fewer link kinds")
        if self.timed_out:
            notes.append("the search stopped at the time limit; the list may be short")
        if self.truncated:
            notes.append("the search stopped at its link budget; the list may be short")
        return notes

    def grouped(self) -> dict[str, list[Connection]]:
        """Connections by group (organisations, people, sessions, …), nearest first;
        empty groups left out."""
        out: dict[str, list[Connection]] = {}
        for title, kinds in GROUPS:
            members = [c for c in self.connections if c.node.kind in kinds]
            if members:
                out[title] = members
        return out

    @property
    def headline(self) -> str:
        counts = ", ".join(f"{len(v)} {k if len(v) != 1 else _SINGULAR[k]}"
                           for k, v in self.grouped().items())
        return (f"{self.entity.label} ({self.entity.ref}): within "
                f"{_links_word(self.hops)}, {counts or 'nothing'}")

    def to_text(self) -> str:
        lines = [self.headline + "."]
        for title, members in self.grouped().items():
            lines += ["", f"{title.capitalize()} ({len(members)})"]
            for c in members:
                parts = [_links_word(c.distance)]
                kinds = sorted({link.kind for link in c.links})
                if kinds:
                    parts.append(", ".join(kinds))
                if c.sessions:
                    parts.append("in " + "; ".join(s.label for s in c.sessions))
                if c.people:
                    parts.append("through " + ", ".join(p.label for p in c.people))
                lines.append(f"  {c.node.label} — {'; '.join(parts)}")
        lines += [f"Note: {note}." for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity.to_dict(), "hops": self.hops, "links": list(self.kinds),
                "headline": self.headline, "timed_out": self.timed_out,
                "truncated": self.truncated, "total": self.total, "notes": self.notes,
                "groups": {k: [c.to_dict() for c in v] for k, v in self.grouped().items()}}
