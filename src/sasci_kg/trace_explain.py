"""Connections in plain words: the records of a traced path and the sentences that say it.

A :class:`Path` is nodes joined by :class:`Step` s; a step holds every :class:`Link`
(fact) that joins its two nodes, each with its certainty and evidence excerpts.
:func:`explain_path` turns a path into sentences, reading a person → session → person
pair of steps as one ("X spoke in S alongside Y").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .trace_entities import short_ref


@dataclass(frozen=True)
class Node:
    """An entity in a connection: its IRI, display label and kind (person, session, …)."""

    iri: str
    label: str
    kind: str

    @property
    def ref(self) -> str:
        return short_ref(self.iri)

    def to_dict(self) -> dict[str, str]:
        return {"iri": self.iri, "ref": self.ref, "label": self.label, "kind": self.kind}


@dataclass(frozen=True)
class Evidence:
    """A fact node behind a link: its IRI, certainty and the source's exact words."""

    fact: str
    certainty: str
    excerpts: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"fact": self.fact, "ref": short_ref(self.fact), "certainty": self.certainty,
                "excerpts": list(self.excerpts)}


@dataclass(frozen=True)
class Link:
    """One fact joining two nodes: ``subject`` → ``object`` as the graph states it.

    ``role`` is a role or partner-role code (``speaker``, ``partner``), ``via`` the person
    behind a ``represented`` link or the organisation a ``role`` was held for, ``text``
    what a quote or claim says, ``quotation`` whether it is a direct quotation.
    """

    kind: str
    subject: Node
    object: Node
    evidence: tuple[Evidence, ...]
    variant: str = ""
    role: str | None = None
    role_label: str | None = None
    via: Node | None = None
    text: str | None = None
    quotation: bool = False

    @property
    def certainty(self) -> str:
        values = [e.certainty for e in self.evidence] or ["unrecorded"]
        for level in ("unrecorded", "implied"):
            if level in values:
                return level
        return "stated"

    @property
    def fact(self) -> str | None:
        return self.evidence[0].fact if self.evidence else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "subject": self.subject.ref, "object": self.object.ref,
            "certainty": self.certainty, "role": self.role, "via": self.via.ref if self.via
            else None, "text": self.text, "sentence": link_sentence(self, self.subject),
            "evidence": [e.to_dict() for e in self.evidence],
        }


@dataclass(frozen=True)
class Step:
    """A hop of a path: from ``source`` to ``target``, by every link joining them."""

    source: Node
    target: Node
    links: tuple[Link, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(link.kind for link in self.links))

    @property
    def certainty(self) -> str:
        return "stated" if any(link.certainty == "stated" for link in self.links) else "implied"

    @property
    def sentence(self) -> str:
        return _sentence(step_phrase(self)) + "."

    @property
    def primary_links(self) -> tuple[Link, ...]:
        """The links the step's sentence rests on (the others add to it: a quote made in
        the session a person spoke in, say)."""
        main = _main_link(self).kind
        kinds = ("role", "represented") if main in ("role", "represented") else (main,)
        return tuple(link for link in self.links if link.kind in kinds)

    def excerpts(self, links: tuple[Link, ...] | None = None) -> list[tuple[str, list[Link]]]:
        """Each distinct excerpt of ``links`` (default: all) once, with the links it
        supports, in link order."""
        seen: dict[str, list[Link]] = {}
        for link in self.links if links is None else links:
            for evidence in link.evidence:
                for excerpt in evidence.excerpts:
                    seen.setdefault(excerpt, [])
                    if link not in seen[excerpt]:
                        seen[excerpt].append(link)
        return list(seen.items())

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.source.to_dict(), "to": self.target.to_dict(),
                "kinds": list(self.kinds), "certainty": self.certainty,
                "sentence": self.sentence, "links": [link.to_dict() for link in self.links]}


@dataclass(frozen=True)
class Path:
    """A connection: nodes from FROM to TO and the steps between them."""

    nodes: tuple[Node, ...]
    steps: tuple[Step, ...]

    @property
    def length(self) -> int:
        return len(self.steps)

    @property
    def certainty(self) -> str:
        return "stated" if all(s.certainty == "stated" for s in self.steps) else "implied"

    @property
    def sentences(self) -> list[str]:
        return explain_path(self)

    @property
    def sentence(self) -> str:
        return " ".join(self.sentences)

    def to_dict(self) -> dict[str, Any]:
        return {"length": self.length, "certainty": self.certainty,
                "explanation": self.sentence, "nodes": [n.to_dict() for n in self.nodes],
                "steps": [s.to_dict() for s in self.steps]}


# -- words -------------------------------------------------------------------------------

_KIND_ORDER = ("funding", "partnership", "unit", "hosting", "affiliation", "represented",
               "role", "session", "quote", "idea")

# role code → (phrase with the session, phrase without it); {for} is " for ORG" when the
# person appeared for an organisation, placed where it reads unambiguously.
_VERBS = {
    "speaker": ("spoke{for} in {s}", "spoke{for}"),
    "chair": ("chaired {s}{for}", "chaired it{for}"),
    "panellist": ("was a panellist{for} on {s}", "was a panellist{for}"),
    "presenter": ("presented{for} in {s}", "presented{for}"),
    "session-lead": ("led {s}{for}", "led it{for}"),
    "organiser": ("organised {s}{for}", "organised it{for}"),
    "participant": ("took part{for} in {s}", "took part{for}"),
}


def _lower_first(text: str) -> str:
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def name(node: Node) -> str:
    """How a node is named inside a sentence."""
    if node.kind == "session":
        return "the " + _lower_first(node.label)
    if node.kind == "event" and not node.label.lower().startswith("the "):
        return "the " + node.label
    if node.kind == "idea":
        return _lower_first(node.label)
    return node.label


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _join(items: list[str]) -> str:
    items = list(dict.fromkeys(items))
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _verb(link: Link, session: str | None, org: str | None) -> str:
    if link.kind == "quote":
        forms = ("was quoted in {s}", "was quoted") if link.quotation else \
            ("made a point in {s}", "made a point")
    else:
        label = link.role_label or link.role or "a role"
        forms = _VERBS.get(link.role or "", (f"had a role ({label}) in {{s}}{{for}}",
                                             f"had a role ({label}){{for}}"))
    form = forms[0] if session is not None else forms[1]
    return form.format(s=session or "", **{"for": f" for {org}" if org else ""})


def _agent(link: Link, step: Step) -> str:
    """The person acting in a role/represented/quote link, with their organisation."""
    if link.kind == "represented":
        return name(link.via) if link.via else "someone"
    person = link.subject
    if link.kind == "role" and link.via is not None:
        return f"{name(person)} ({link.via.label})"
    return name(person)


def _groups(step: Step, session_first: bool) -> list[tuple[list[str], str, str]]:
    """Who acted in the session of a session step, grouped by what they did:
    [(people, "spoke in S for A", "spoke for A")]."""
    acting = [link for link in step.links if link.kind in ("role", "represented")] or \
        [link for link in step.links if link.kind == "quote"]
    session = step.source if session_first else step.target
    other = step.target if session_first else step.source
    groups: dict[tuple[str, str], list[str]] = {}
    for link in acting:
        org = name(other) if link.kind == "represented" else None
        key = (_verb(link, name(session), org), _verb(link, None, org))
        groups.setdefault(key, []).append(_agent(link, step))
    return [(people, full, bare) for (full, bare), people in groups.items()]


def _people_clause(step: Step, session_first: bool, with_session: bool) -> str | None:
    """"A and B spoke in S" for a step between a session and a person or organisation."""
    groups = _groups(step, session_first)
    if not groups:
        return None
    return " and ".join(f"{_join(people)} {full if with_session else bare}"
                        for people, full, bare in groups)


def _main_link(step: Step) -> Link:
    return min(step.links,
               key=lambda link: (_KIND_ORDER.index(link.kind), link.certainty != "stated"))


def link_sentence(link: Link, start: Node) -> str:
    """One link in words, read from ``start`` (subject-first when ``start`` is its subject)."""
    s, o = name(link.subject), name(link.object)
    forward = start.iri == link.subject.iri
    kind = link.kind
    if kind == "funding":
        return f"{s} is funded by {o}" if forward else f"{o} funds {s}"
    if kind == "partnership":
        role = link.role or "partner"
        if role == "project-lead":
            return f"{s} leads {o}" if forward else f"{o} is led by {s}"
        if role == "lead-partner":
            return f"{s} is the lead partner of {o}" if forward else \
                f"{o} has {s} as its lead partner"
        if role == "partner":
            return f"{s} is a partner in {o}" if forward else f"{o} has {s} as a partner"
        return f"{s} is a member of {o} ({link.role_label or role})"
    if kind == "hosting":
        return f"{s} was organised by {o}" if forward else f"{o} organised {s}"
    if kind == "unit":
        return f"{s} is part of {o}" if forward else f"{o} includes {s}"
    if kind == "affiliation":
        return f"{s} is affiliated with {o}"
    if kind == "session":
        return f"{s} included {o}" if forward else f"{o} was part of {s}"
    if kind == "idea":
        if link.variant == "said":
            return f"{s} spoke of {o}" if forward else f"{o} was raised by {s}"
        return f"{s} was about {o}" if forward else f"{o} was a theme of {s}"
    if kind == "represented":
        org = name(link.subject)
        return f"{_agent(link, _step_of(link))} {_verb(link, o, org)}"
    if kind in ("role", "quote"):
        return f"{_agent(link, _step_of(link))} {_verb(link, o, None)}"
    return f"{s} is linked to {o} ({kind})"


def _step_of(link: Link) -> Step:
    return Step(link.subject, link.object, (link,))


def step_phrase(step: Step) -> str:
    """The step as a clause (no full stop), from its source to its target."""
    main = _main_link(step)
    if main.kind in ("role", "represented", "quote"):
        session_first = step.source.kind == "session" and step.target.kind != "session"
        clause = _people_clause(step, session_first, with_session=True)
        if clause:
            return clause
    return link_sentence(main, step.source)


def _is_meeting(step: Step) -> bool:
    return _main_link(step).kind in ("role", "represented", "quote")


def explain_path(path: Path) -> list[str]:
    """The path as sentences, one per step, except that two steps meeting in a session
    make one: "X (A) spoke in S alongside Y (B)", "X chaired S, where Y spoke"."""
    sentences: list[str] = []
    steps = list(path.steps)
    i = 0
    while i < len(steps):
        step = steps[i]
        after = steps[i + 1] if i + 1 < len(steps) else None
        if (after is not None and step.target.kind == "session" and _is_meeting(step)
                and _is_meeting(after)):
            first, second = _groups(step, False), _groups(after, True)
            if (len(first) == len(second) == 1 and first[0][2] == second[0][2]
                    and "represented" not in step.kinds + after.kinds):
                people, full, _ = first[0]
                sentence = f"{_join(people)} {full} alongside {_join(second[0][0])}"
            else:
                sentence = (f"{_people_clause(step, False, True)}, where "
                            f"{_people_clause(after, True, False)}")
            sentences.append(_sentence(sentence) + ".")
            i += 2
            continue
        sentences.append(step.sentence)
        i += 1
    return sentences
