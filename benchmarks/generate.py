"""Generate synthetic fact files in the project's YAML format, sized by a target triple count.

``generate(out, triples=1e6)`` writes a funder's portfolio — funders and shared ideas,
projects with partners and sub-units, events with sessions, people, roles, affiliations,
quotes and claims — as ``out/data/<source>/*.yaml``, one source folder per document, plus a
synthetic source text per folder (``out/sources/<source>.txt``, its sha256 in source.yaml)
that contains every evidence excerpt, so ``sasci-kg validate --sources out/sources`` checks
the evidence too. ``out/manifest.json`` lists entities the query mix picks parameters from.
The same arguments always give byte-identical files.

    python -m benchmarks.generate --triples 1e6 --out benchmarks/out/1e6
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# Calibrated: triples the pipeline emits per event (with its share of projects, funders,
# organisations and ideas), measured with ``benchmarks.run --phase build``.
TRIPLES_PER_EVENT = 1755
EVENTS_PER_PROJECT = 3
SEED = 20241002

FIRST = ("Ada Amara Ben Bea Cai Cara Dev Dina Eli Ema Finn Fay Gus Gia Hal Hana Ian Ines Jo Jana "
         "Kai Kit Lea Leo Mae Max Nia Noa Oli Ona Pia Pip Quin Rae Rui Sam Sia Tom Tia Uma Val "
         "Vic Wen Wil Xan Yas Yui Zac Zoe Ayo Bram Cleo Dara Emre Femi Greta Hugo Ilse Jun Kofi "
         "Lina Mira Nico Omar Priya Rosa Sven Tara Umar Vera Wanda Yusuf Zara").split()
LAST = ("Abbott Adeyemi Ahmed Ali Allen Bailey Baker Banda Barker Bell Bennett Bose Brown Byrne "
        "Campbell Carter Chen Clarke Cole Cook Cooper Costa Cox Das Davies Dixon Doyle Edwards "
        "Ellis Evans Farah Fisher Fox Garcia Gill Gordon Grant Gray Green Hall Harris Hayes Hill "
        "Holmes Hughes Hunt Iqbal Jackson James Jones Kaur Kelly Khan King Knight Lee Lewis Lopez "
        "Marsh Mason Mensah Miller Mills Moore Morgan Murphy Nair Nash Okafor Owen Palmer Patel "
        "Perry Price Quinn Rahman Reid Reyes Rice Roberts Ross Shah Silva Singh Smith Stone "
        "Taylor Turner Walker Ward Watson White Wood Wright Young Zhou").split()
INITIALS = "ABCDEFGHJKLMNPRSTVW"
PLACES = ("Ashford Barnet Bexley Bolton Bury Camden Derby Dudley Ealing Exeter Fylde Gosport "
          "Halton Harrow Hull Kirklees Lambeth Leeds Luton Medway Merton Newham Oldham Poole "
          "Reading Rochdale Salford Sefton Slough Solihull Stockport Sutton Swindon Thurrock "
          "Torbay Trafford Walsall Wigan Wirral Woking York").split()
ORG_KINDS = (  # (org-type code or None, name pattern)
    ("university", "University of {place}"),
    ("local-authority", "{place} Council"),
    ("charity", "{place} Care Trust"),
    ("care-provider", "{place} Home Care"),
    ("social-enterprise", "{place} Community Interest Company"),
    ("think-tank", "{place} Policy Institute"),
    ("cooperative", "{place} Care Co’op"),
    ("network", "{place} Carers’ Network"),
    ("research-organisation", "{place} Social Research"),
)
UNIT_NAMES = ("School of Social Policy", "Centre for Care Research", "Ageing Research Unit",
              "Innovation Lab", "Evaluation Group", "Workforce Observatory")
WORDS = ("care people support families carers council local home community services "
         "innovation change system funding evidence practice research policy workforce "
         "strength trust value partnership digital lived experience wellbeing outcomes "
         "learning risk scale spread sustain journey barrier budget voice choice control "
         "independence housing health technology data together listen design test improve "
         "commission relationship neighbourhood prevention early help quality rights time "
         "money staff training pay recognition coproduction story place network").split()
IDEA_WORDS = ("Co-production Prevention Strength-based practice Digital care records "
              "Shared lives Micro-enterprises Community hubs Direct payments Assistive "
              "technology Workforce wellbeing Frugal innovation Place-based commissioning "
              "Peer support Unpaid carers Reablement Social prescribing").split()
SESSION_TYPES = ("plenary", "panel", "breakout", "breakout", "panel", "breakout", "closing")
AUDIENCES = ("social-care-researchers", "sector-innovators", "local-authorities",
             "people-with-lived-experience", "policymakers")


def parse_size(text: str) -> int:
    """``1e6``, ``100000`` or ``1_000_000`` → an int."""
    return int(float(text.replace("_", "")))


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


class _Doc:
    """One source document: its text (sentences) and its fact files (YAML lines)."""

    def __init__(self, slug: str, title: str):
        self.slug = slug
        self.title = title
        self.sentences: list[str] = [title + "."]
        self.sections: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}

    def say(self, sentence: str) -> str:
        """Add a sentence to the source text; returns it (to use as an evidence excerpt)."""
        self.sentences.append(sentence)
        return sentence

    def record(self, section: str, fields: list[tuple[str, object]]) -> None:
        self.counts[section] = self.counts.get(section, 0) + 1
        lines = self.sections.setdefault(section, [])
        first = True
        for key, value in fields:
            if value is None or value == []:
                continue
            lead = "  - " if first else "    "
            first = False
            if isinstance(value, list):
                lines.append(f"{lead}{key}:")
                lines.extend(f"      - {_q(str(v))}" for v in value)
            else:
                lines.append(f"{lead}{key}: {_q(str(value))}")
        lines.append("")

    def write(self, data_dir: Path, sources_dir: Path, files: dict[str, tuple[str, ...]],
              about: str | None) -> None:
        text = "\n\n".join(" ".join(self.sentences[i:i + 6])
                           for i in range(0, len(self.sentences), 6)) + "\n"
        raw = text.encode("utf-8")
        (sources_dir / f"{self.slug}.txt").write_bytes(raw)
        folder = data_dir / self.slug
        folder.mkdir(parents=True)
        head = [
            "# Synthetic benchmark source (benchmarks/generate.py); not real data.",
            "source:",
            f"  id: source/{self.slug}",
            f"  title: {_q(self.title)}",
            f"  file: {self.slug}.txt",
            f"  sha256: {hashlib.sha256(raw).hexdigest()}",
            "  language: en",
        ]
        if about:
            head.append(f"  about: {about}")
        (folder / "source.yaml").write_text("\n".join(head) + "\n", encoding="utf-8")
        for name, sections in files.items():
            body = []
            for section in sections:
                if self.sections.get(section):
                    body.append(f"{section}:")
                    body.extend(self.sections[section])
            if body:
                (folder / f"{name}.yaml").write_text("\n".join(body), encoding="utf-8")


@dataclass
class Person:
    id: str
    name: str
    prefix: str | None
    org: str  # organisation id
    org_name: str


@dataclass
class Manifest:
    triples_target: int
    seed: int
    counts: dict[str, int] = field(default_factory=dict)
    people: list[dict[str, str]] = field(default_factory=list)
    organisations: list[dict[str, str]] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    org_pairs: list[list[str]] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)


class _Portfolio:
    def __init__(self, triples: int, seed: int):
        self.rng = random.Random(seed)
        self.events = max(1, round(triples / TRIPLES_PER_EVENT))
        self.projects = max(1, -(-self.events // EVENTS_PER_PROJECT))
        self.funders = max(2, min(40, self.projects // 20 + 2))
        self.ideas = max(len(IDEA_WORDS), min(2000, self.events // 4))
        self.people: list[Person] = []
        self.orgs: list[tuple[str, str]] = []  # (id, name)
        self.org_weight: list[int] = []  # preferential attachment: busy orgs get busier
        self.counts: dict[str, int] = {}
        self.units: list[str] = []
        self.quotes: list[str] = []
        self.on_stage: set[str] = set()  # people who held a role somewhere
        self.name_counter = 0

    def count(self, doc: _Doc) -> None:
        for section, n in doc.counts.items():
            self.counts[section] = self.counts.get(section, 0) + n

    def person_name(self) -> str:
        """A unique, readable name: first × initial × last, with a number past 2.8 M."""
        i = self.name_counter
        self.name_counter += 1
        first = FIRST[i % len(FIRST)]
        last = LAST[(i // len(FIRST)) % len(LAST)]
        initial = INITIALS[(i // (len(FIRST) * len(LAST))) % len(INITIALS)]
        extra = i // (len(FIRST) * len(LAST) * len(INITIALS))
        return f"{first} {initial}. {last}" + (f" {extra + 1}" if extra else "")

    def sentence(self, n: int) -> str:
        words = [self.rng.choice(WORDS) for _ in range(n)]
        return " ".join(words).capitalize()

    def new_org(self, doc: _Doc, index: int, kind: int | None = None,
                code: str | None = None) -> tuple[str, str]:
        kind_code, pattern = ORG_KINDS[kind if kind is not None
                                       else self.rng.randrange(len(ORG_KINDS))]
        code = code or kind_code
        place = PLACES[index % len(PLACES)]
        name = pattern.format(place=place) + (f" {index // len(PLACES) + 1}"
                                              if index >= len(PLACES) else "")
        org_id = f"org/o{index:06d}"
        excerpt = doc.say(f"{name} is among the organisations in this report.")
        doc.record("organisations", [("id", org_id), ("name", name), ("type", code),
                                     ("evidence", excerpt)])
        self.orgs.append((org_id, name))
        self.org_weight.append(1)
        return org_id, name

    def pick_org(self) -> tuple[str, str]:
        i = self.rng.choices(range(len(self.orgs)), weights=self.org_weight)[0] \
            if len(self.orgs) < 5000 else self._pick_org_fast()
        self.org_weight[i] += 1
        return self.orgs[i]

    def _pick_org_fast(self) -> int:
        # Half uniform, half among the most recent: keeps locality without O(n) weights.
        if self.rng.random() < 0.5:
            return self.rng.randrange(len(self.orgs))
        return len(self.orgs) - 1 - self.rng.randrange(min(500, len(self.orgs)))

    def new_person(self, doc: _Doc, org: tuple[str, str]) -> Person:
        index = len(self.people)
        prefix = ("Dr", "Professor", None, None, None)[index % 5]
        name = self.person_name()
        person = Person(f"person/p{index:07d}", name, prefix, org[0], org[1])
        shown = f"{prefix} {name}" if prefix else name
        excerpt = doc.say(f"{shown} ({org[1]}) took part.")
        doc.record("people", [("id", person.id), ("name", name), ("honorific_prefix", prefix),
                              ("evidence", excerpt)])
        self.people.append(person)
        return person


def _portfolio_doc(p: _Portfolio) -> tuple[_Doc, list[str], list[tuple[str, str]]]:
    doc = _Doc("portfolio", "Adult social care innovation portfolio")
    funders = []
    for i in range(p.funders):
        funders.append(p.new_org(doc, i, kind=5, code="funder"))
    ideas = []
    for i in range(p.ideas):
        base = IDEA_WORDS[i % len(IDEA_WORDS)]
        label = base if i < len(IDEA_WORDS) else f"{base} {i // len(IDEA_WORDS) + 1}"
        concept = f"concept/idea-{i:05d}"
        excerpt = doc.say(f"The idea of {label.lower()} runs through the portfolio.")
        broader = [ideas[(i - 1) // 3]] if i and i % 4 else []
        related = [ideas[p.rng.randrange(i)]] if i > 2 and i % 3 == 0 else []
        if related and broader and related == broader:
            related = []
        doc.record("concepts", [("id", concept), ("label", label), ("broader", broader),
                                ("related", related), ("evidence", excerpt)])
        ideas.append(concept)
    return doc, ideas, funders


def _project_doc(p: _Portfolio, n: int, funders: list[tuple[str, str]],
                 ideas: list[str]) -> tuple[_Doc, str, list[tuple[str, str]]]:
    slug = f"project-{n:05d}"
    project = f"project/p{n:05d}"
    acronym = "".join(chr(65 + (n // 26 ** k) % 26) for k in range(4))
    name = f"Care innovation project {acronym}"
    doc = _Doc(slug, f"Project report: {name}")
    years = 2 + n % 4
    description = doc.say(f"The project aimed to {p.sentence(8).lower()}.")
    evidence = doc.say(f"The {name} ({acronym}) project ran for {years} years.")
    doc.record("projects", [("id", project), ("name", name), ("acronym", acronym),
                            ("duration", f"P{years}Y"), ("description", description[:-1]),
                            ("evidence", [evidence, description])])
    funder = funders[n % len(funders)]
    doc.record("statements", [("id", f"fact/{slug}.funder"), ("subject", project),
                              ("predicate", "funder"), ("object", funder[0]),
                              ("evidence", doc.say(f"{acronym} was funded by {funder[1]}."))])
    doc.record("statements", [("id", f"fact/{slug}.about"), ("subject", project),
                              ("predicate", "about"), ("object", ideas[n % len(ideas)]),
                              ("evidence", doc.say(f"{acronym} studied one idea in depth."))])
    partners: list[tuple[str, str]] = []
    for k in range(3 + n % 3):
        org = p.new_org(doc, len(p.orgs), kind=0 if k == 0 else None) if k < 2 \
            else p.pick_org()
        while org in partners:
            org = p.pick_org()
        partners.append(org)
        role = "lead-partner" if k == 0 else "partner"
        doc.record("memberships", [
            ("id", f"fact/{slug}.{role}.{org[0].split('/')[1]}"), ("member", org[0]),
            ("organisation", project), ("role", role),
            ("certainty", "implied" if k == 0 else None),
            ("evidence", doc.say(f"{org[1]} was a partner in {acronym}."))])
    # Sub-units of the lead university, nested up to three deep: centre within school …
    parent = partners[0]
    for depth in range(1 + n % 3):
        unit_name = f"{UNIT_NAMES[(n + depth) % len(UNIT_NAMES)]}, {parent[1]}"
        org_id = f"org/o{len(p.orgs):06d}"
        excerpt = doc.say(f"The {unit_name} is part of {parent[1]}.")
        doc.record("organisations", [("id", org_id), ("name", unit_name),
                                     ("type", "research-centre"), ("evidence", excerpt)])
        p.orgs.append((org_id, unit_name))
        p.org_weight.append(1)
        doc.record("statements", [("id", f"fact/{slug}.unit.{depth}"), ("subject", org_id),
                                  ("predicate", "unit_of"), ("object", parent[0]),
                                  ("evidence", excerpt)])
        p.units.append(org_id)
        parent = (org_id, unit_name)
    lead = p.new_person(doc, parent)
    doc.record("memberships", [
        ("id", f"fact/{slug}.project-lead"), ("member", lead.id), ("organisation", project),
        ("role", "project-lead"),
        ("evidence", doc.say(f"{lead.name} led {acronym} from the {parent[1]}."))])
    return doc, project, partners


def _event_doc(p: _Portfolio, n: int, project: str, partners: list[tuple[str, str]],
               ideas: list[str]) -> _Doc:
    rng = p.rng
    slug = f"event-{n:05d}"
    event = f"event/e{n:05d}"
    day = 1 + n % 28
    month = 1 + (n // 28) % 12
    year = 2015 + (n // 336) % 10
    date = f"{year}-{month:02d}-{day:02d}"
    name = f"Care innovation event {n}"
    doc = _Doc(slug, f"Report of the {name}")
    description = doc.say(f"This event was an opportunity to {p.sentence(7).lower()}.")
    doc.record("events", [("id", event), ("name", name), ("date", date),
                          ("description", description[:-1]),
                          ("audience", sorted(rng.sample(AUDIENCES, 2 + n % 3))),
                          ("evidence", [doc.say(f"The {name} took place on {date}."),
                                        description])])
    doc.record("statements", [("id", f"fact/{slug}.organizer.project"), ("subject", event),
                              ("predicate", "organizer"), ("object", project),
                              ("evidence", doc.say(f"The {name} was organised by the project."))])
    host = partners[n % len(partners)]
    doc.record("statements", [("id", f"fact/{slug}.organizer.host"), ("subject", event),
                              ("predicate", "organizer"), ("object", host[0]),
                              ("evidence", doc.say(f"{host[1]} co-hosted the {name}."))])
    # New organisations and people at this event, and some who came before.
    local_orgs = [p.new_org(doc, len(p.orgs)) for _ in range(3)]
    attendees: list[Person] = []
    for i in range(22):
        org = local_orgs[i % 3] if i % 4 == 0 else (partners[i % len(partners)] if i % 4 == 1
                                                    else p.pick_org())
        attendees.append(p.new_person(doc, org))
    if len(p.people) > 100:
        for _ in range(6):
            returning = p.people[rng.randrange(len(p.people) - len(attendees))]
            if returning not in attendees:
                attendees.append(returning)
                doc.say(f"{returning.name} ({returning.org_name}) returned.")
    for person in attendees:
        doc.record("affiliations", [
            ("id", f"fact/{slug}.affiliation.{person.id.split('/')[1]}"), ("person", person.id),
            ("organisation", person.org), ("event", event),
            ("evidence", f"{person.name} ({person.org_name})")])
    # Sessions, each with a chair, speakers and participants.
    session_ids = []
    for s in range(5 + n % 3):
        kind = SESSION_TYPES[s]
        session = f"session/e{n:05d}.s{s}"
        label = f"{kind.capitalize()} {s + 1} of event {n}"
        title = p.sentence(4) if kind in ("panel", "breakout") else None
        excerpt = doc.say(f"The {kind} session{f' {title!r}' if title else ''} "
                          f"was session {s + 1} of the day.")
        doc.record("sessions", [("id", session), ("event", event), ("type", kind),
                                ("title", title), ("label", label), ("evidence", excerpt)])
        session_ids.append(session)
        doc.record("statements", [("id", f"fact/{slug}.s{s}.about"), ("subject", session),
                                  ("predicate", "about"),
                                  ("object", ideas[rng.randrange(len(ideas))]),
                                  ("evidence", doc.say(f"Session {s + 1} discussed a theme."))])
        cast = rng.sample(attendees, min(len(attendees), 6))
        for k, person in enumerate(cast):
            role = ("chair", "speaker", "panellist", "presenter", "participant", "session-lead")[
                k if kind != "plenary" else min(k, 3)] if k < 6 else "participant"
            role_id = f"fact/{slug}.s{s}.{role}.{person.id.split('/')[1]}"
            verb = {"chair": "chaired", "speaker": "spoke in", "panellist": "sat on",
                    "presenter": "presented in", "participant": "joined",
                    "session-lead": "led"}[role]
            excerpt = doc.say(f"{person.name} ({person.org_name}) {verb} session {s + 1}.")
            doc.record("roles", [("id", role_id), ("person", person.id), ("role", role),
                                 ("session", session),
                                 ("on_behalf_of", person.org if k % 5 != 4 else None),
                                 ("certainty", "implied" if k == 5 else None),
                                 ("evidence", excerpt)])
            p.on_stage.add(person.id)
        # Quotes and claims by people on the session's cast.
        for k in range(3):
            speaker = cast[1 + k % (len(cast) - 1)]
            text = p.sentence(9 + k) + ("; like a river" if rng.random() < 0.05 else "") + "."
            quote = f"quote/e{n:05d}.s{s}.q{k}"
            intro = doc.say(f"{speaker.name} said:")
            doc.say(f"“{text}”")
            implied = k == 2
            doc.record("quotes", [("id", quote), ("speaker", speaker.id), ("text", text),
                                  ("session", None if implied else session),
                                  ("about", sorted({ideas[rng.randrange(len(ideas))]})),
                                  ("evidence", [intro, text])])
            if len(p.quotes) < 50:
                p.quotes.append(quote)
            if implied:
                doc.record("statements", [
                    ("id", f"fact/{slug}.recorded-at.s{s}.q{k}"), ("subject", quote),
                    ("predicate", "recorded_at"), ("object", session), ("certainty", "implied"),
                    ("note", "The report places the quotation after the session's summary."),
                    ("evidence", intro)])
        for k in range(2):
            speaker = cast[1 + (k + 1) % (len(cast) - 1)]
            text = doc.say(f"{speaker.name} argued that {p.sentence(10).lower()}.")
            doc.record("claims", [("id", f"fact/{slug}.s{s}.claim{k}"), ("speaker", speaker.id),
                                  ("text", text), ("session", session),
                                  ("about", [ideas[rng.randrange(len(ideas))]]),
                                  ("evidence", text)])
    return doc


FILES = {
    "portfolio": ("organisations", "concepts"),
    "project": ("projects", "organisations", "people", "memberships", "statements"),
    "event": ("events", "sessions", "statements"),
    "people": ("organisations", "people", "affiliations"),
    "roles": ("roles",),
    "quotes": ("quotes", "claims"),
}


def generate(out: Path | str, triples: int = 100_000, *, seed: int = SEED) -> Manifest:
    """Write a synthetic data set of about ``triples`` triples under ``out``; see module doc."""
    root = Path(out)
    data_dir, sources_dir = root / "data", root / "sources"
    for folder in (data_dir, sources_dir):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    p = _Portfolio(triples, seed)
    portfolio, ideas, funders = _portfolio_doc(p)
    portfolio.write(data_dir, sources_dir, {"portfolio": FILES["portfolio"]}, None)
    p.count(portfolio)
    org_pairs: list[list[str]] = []
    n_event = 0
    for n in range(p.projects):
        doc, project, partners = _project_doc(p, n, funders, ideas)
        doc.write(data_dir, sources_dir, {"project": FILES["project"]}, None)
        p.count(doc)
        for _ in range(EVENTS_PER_PROJECT):
            if n_event >= p.events:
                break
            edoc = _event_doc(p, n_event, project, partners, ideas)
            edoc.write(data_dir, sources_dir,
                       {k: FILES[k] for k in ("event", "people", "roles", "quotes")},
                       f"event/e{n_event:05d}")
            p.count(edoc)
            n_event += 1
        if len(org_pairs) < 50 and n > 0:
            org_pairs.append([partners[-1][0], p.orgs[p.rng.randrange(len(p.orgs))][0]])
    rng = random.Random(seed + 1)
    speakers = [x for x in p.people if x.id in p.on_stage]
    sample_people = rng.sample(speakers, min(2000, len(speakers)))
    sample_orgs = rng.sample(p.orgs, min(2000, len(p.orgs)))
    manifest = Manifest(
        triples_target=triples, seed=seed, counts=dict(sorted(p.counts.items())),
        people=[{"id": x.id, "name": x.name} for x in sample_people],
        organisations=[{"id": o[0], "name": o[1]} for o in sample_orgs],
        units=rng.sample(p.units, min(100, len(p.units))),
        org_pairs=org_pairs or [[p.orgs[0][0], p.orgs[-1][0]]],
        quotes=p.quotes,
        words=["river", "budget", "neighbourhood", "recognition", "coproduction"],
    )
    (root / "manifest.json").write_text(json.dumps(manifest.__dict__, indent=1) + "\n",
                                        encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triples", default="1e5", help="target triple count (1e5, 1e6, 1e7)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder [default: benchmarks/out/<triples>]")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    triples = parse_size(args.triples)
    out = args.out or Path(__file__).parent / "out" / f"{triples:.0e}".replace("+0", "")
    manifest = generate(out, triples, seed=args.seed)
    print(f"{out}: {sum(manifest.counts.values())} records "
          f"({', '.join(f'{k} {v}' for k, v in manifest.counts.items())})")


if __name__ == "__main__":
    main()
