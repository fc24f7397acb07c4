"""Read and check the curated fact files (YAML under ``data/<source>/``).

``load_facts`` takes the data folder and gives a :class:`FactSet` of :class:`Record`s that
keep their file and line; it checks structure, types, ids, references, controlled values
and evidence excerpts, and raises one :class:`FactsError` listing every problem found.
The format is described in ``docs/model.md`` and ``data/schema/facts.schema.json``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import gc
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import FactsError, Problem
from .evidence import SourceText

try:  # the C loader is several times faster on large fact sets
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader

SLUG = r"[a-z0-9]+(?:-[a-z0-9]+)*"
ID_PATTERN = re.compile(rf"^(?P<type>[a-z]+)/(?P<slug>{SLUG}(?:\.{SLUG})*)$")
ISO_DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$")
ABSOLUTE_IRI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s<>\"{}|\\^`]+$")
LANGUAGE_TAG = re.compile(r"^[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*$")


# ---------------------------------------------------------------------------------------
# The format: sections and their fields.


@dataclass(frozen=True)
class Field:
    """One field of a record: its kind, whether required, what it may refer to."""

    kind: str  # text | texts | ref | refs | code | codes | date | duration | evidence | lang
    required: bool = False
    refs: tuple[str, ...] = ()  # allowed id types for ref/refs
    scheme: str = ""  # controlled scheme for code/codes


@dataclass(frozen=True)
class Section:
    id_type: str
    fields: dict[str, Field]
    is_fact: bool = False


_EVIDENCE = Field("evidence", required=True)
_COMMON_FACT = {
    "certainty": Field("code", scheme="certainty"),
    "note": Field("text"),
}

STATEMENT_PREDICATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # predicate key: (allowed subject types, allowed object types)
    "funder": (("project",), ("org",)),
    "unit_of": (("org",), ("org",)),
    "organizer": (("event", "session"), ("org", "person", "project")),
    "about": (("event", "session", "project"), ("concept",)),
    "recorded_at": (("quote", "fact"), ("session",)),
}

ENTITY_TYPES = ("person", "org", "project", "event", "session", "concept", "quote", "fact")

SECTIONS: dict[str, Section] = {
    "people": Section(
        "person",
        {
            "name": Field("text", required=True),
            "honorific_prefix": Field("text"),
            "honorific_suffix": Field("text"),
            "evidence": _EVIDENCE,
            "note": Field("text"),
        },
    ),
    "organisations": Section(
        "org",
        {
            "name": Field("text", required=True),
            "acronym": Field("text"),
            "alternate_names": Field("texts"),
            "type": Field("code", scheme="org-type"),
            "evidence": _EVIDENCE,
            "note": Field("text"),
        },
    ),
    "projects": Section(
        "project",
        {
            "name": Field("text", required=True),
            "acronym": Field("text"),
            "duration": Field("duration"),
            "description": Field("text"),
            "evidence": _EVIDENCE,
            "note": Field("text"),
        },
    ),
    "events": Section(
        "event",
        {
            "name": Field("text", required=True),
            "date": Field("date", required=True),
            "end_date": Field("date"),
            "description": Field("text"),
            "audience": Field("codes", scheme="audience"),
            "evidence": _EVIDENCE,
            "note": Field("text"),
        },
    ),
    "sessions": Section(
        "session",
        {
            "event": Field("ref", required=True, refs=("event",)),
            "type": Field("code", required=True, scheme="session-type"),
            "title": Field("text"),
            "label": Field("text", required=True),
            "description": Field("text"),
            "evidence": _EVIDENCE,
            "note": Field("text"),
        },
    ),
    "concepts": Section(
        "concept",
        {
            "label": Field("text", required=True),
            "alt_labels": Field("texts"),
            "definition": Field("text"),
            "broader": Field("refs", refs=("concept",)),
            "related": Field("refs", refs=("concept",)),
            "represents": Field("refs", refs=("concept",)),
            "evidence": _EVIDENCE,
            "note": Field("text"),
        },
    ),
    "roles": Section(
        "fact",
        {
            "person": Field("ref", required=True, refs=("person",)),
            "role": Field("code", required=True, scheme="role"),
            "session": Field("ref", required=True, refs=("session",)),
            "on_behalf_of": Field("ref", refs=("org",)),
            "evidence": _EVIDENCE,
            **_COMMON_FACT,
        },
        is_fact=True,
    ),
    "affiliations": Section(
        "fact",
        {
            "person": Field("ref", required=True, refs=("person",)),
            "organisation": Field("ref", required=True, refs=("org",)),
            "event": Field("ref", required=True, refs=("event",)),
            "evidence": _EVIDENCE,
            **_COMMON_FACT,
        },
        is_fact=True,
    ),
    "memberships": Section(
        "fact",
        {
            "member": Field("ref", required=True, refs=("org", "person")),
            "organisation": Field("ref", required=True, refs=("project", "org")),
            "role": Field("code", required=True, scheme="partner-role"),
            "evidence": _EVIDENCE,
            **_COMMON_FACT,
        },
        is_fact=True,
    ),
    "statements": Section(
        "fact",
        {
            "subject": Field(
                "ref", required=True, refs=("project", "org", "event", "session", "quote", "fact")
            ),
            "predicate": Field("predicate", required=True),
            "object": Field(
                "ref", required=True, refs=("org", "person", "project", "concept", "session")
            ),
            "evidence": _EVIDENCE,
            **_COMMON_FACT,
        },
        is_fact=True,
    ),
    "quotes": Section(
        "quote",
        {
            "speaker": Field("ref", required=True, refs=("person",)),
            "text": Field("text", required=True),
            "session": Field("ref", refs=("session",)),
            "about": Field("refs", refs=("concept",)),
            "evidence": Field("evidence"),
            **_COMMON_FACT,
        },
        is_fact=True,
    ),
    "claims": Section(
        "fact",
        {
            "speaker": Field("ref", required=True, refs=("person",)),
            "text": Field("text", required=True),
            "session": Field("ref", refs=("session",)),
            "about": Field("refs", refs=("concept",)),
            "evidence": _EVIDENCE,
            **_COMMON_FACT,
        },
        is_fact=True,
    ),
    # Ids no longer in use: 301 to the replacement, or 410 without one (docs/model.md).
    "retired": Section(
        "",  # any entity type
        {
            "replaced_by": Field("ref", refs=ENTITY_TYPES),
            "reason": Field("text", required=True),
            "note": Field("text"),
        },
    ),
}

SOURCE_FIELDS: dict[str, Field] = {
    "id": Field("ref", required=True, refs=("source",)),
    "title": Field("text", required=True),
    "file": Field("text", required=True),
    "sha256": Field("text", required=True),
    "subtitle": Field("text"),
    "publisher": Field("text"),
    "date_published": Field("date"),
    "language": Field("lang"),
    "about": Field("ref", refs=("event",)),
    "url": Field("iri"),
    "note": Field("text"),
}


# ---------------------------------------------------------------------------------------
# Records.


@dataclass(frozen=True)
class Record:
    """One curated record: its section, id, values, and where it was written."""

    section: str
    id: str
    values: dict[str, Any]
    path: str
    line: int
    lines: dict[str, int]
    source: str  # the id of the source document it was drawn from

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def evidence(self) -> list[str]:
        """The record's evidence excerpts (a quote's own text when it gives none)."""
        value = self.values.get("evidence")
        if value is None and self.section == "quotes":
            value = self.values.get("text")
        if value is None:
            return []
        return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class SourceDoc:
    """A source document described by ``source.yaml``, and the records drawn from it."""

    id: str
    values: dict[str, Any]
    folder: Path
    path: str
    line: int
    records: tuple[Record, ...]

    @property
    def slug(self) -> str:
        return self.id.split("/", 1)[1]


@dataclass
class FactSet:
    """Every source and record under the data folder, checked."""

    sources: list[SourceDoc]
    notices: list[str] = field(default_factory=list)

    def records(self) -> Iterator[Record]:
        for source in self.sources:
            yield from source.records

    @property
    def files(self) -> list[str]:
        names = {r.path for r in self.records()} | {s.path for s in self.sources}
        return sorted(names)


# ---------------------------------------------------------------------------------------
# YAML with line numbers.


class _Mapping(dict[str, Any]):
    line: int = 0
    key_lines: dict[str, int]


class _Sequence(list[Any]):
    line: int = 0
    item_lines: list[int]


# Fact files need four levels (section, record, field, list); much deeper is a mistake, and
# past about a thousand levels the recursion below would fail.
MAX_NESTING = 32


class _Builder:
    """Turns composed YAML nodes into values that keep their line numbers.

    A list or mapping reached a second time is an alias (``*name``): refused, since a
    recursive alias never ends and a few nested ones multiply into millions of items.
    """

    def __init__(self, problems: list[Problem], path: str):
        self.problems = problems
        self.path = path
        self.seen: set[int] = set()

    def problem(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(self.path, node.start_mark.line + 1, message))

    def build(self, node: yaml.Node, depth: int = 0) -> Any:
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            if id(node) in self.seen:
                self.problem(node, "aliases of lists or mappings (*name) are not allowed in "
                             "fact files; write the values out")
                return None
            self.seen.add(id(node))
            if depth >= MAX_NESTING:
                self.problem(node, f"nested more than {MAX_NESTING} levels deep; a fact file "
                             "needs four (section, record, field, list)")
                return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, depth)
        if isinstance(node, yaml.SequenceNode):
            sequence = _Sequence()
            sequence.line = node.start_mark.line + 1
            sequence.item_lines = []
            for item in node.value:
                sequence.append(self.build(item, depth + 1))
                sequence.item_lines.append(item.start_mark.line + 1)
            return sequence
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, depth: int) -> _Mapping:
        mapping = _Mapping()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = self.build(key_node, depth + 1)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                self.problems.append(Problem(self.path, line, f"key {_show(key)} must be a text"))
                continue
            if key in mapping:
                self.problems.append(
                    Problem(self.path, line, f"duplicate key '{key}' (first at line "
                            f"{mapping.key_lines[key]}); keep one")
                )
                continue
            mapping[key] = self.build(value_node, depth + 1)
            mapping.key_lines[key] = line
        return mapping

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return _SCALARS.construct_object(node)
        except yaml.constructor.ConstructorError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            # PyYAML raises these for a value its tag cannot hold (2024-13-01, !!int abc).
            if _SCALARS.resolve(yaml.ScalarNode, node.value, (True, False)) == node.tag:
                return node.value  # it only looked like a date or number: the field judges it
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.problem(node, f"{_show(node.value)} cannot be read as {tag} ({exc}); fix the "
                         "value or remove the tag")
            return None
        finally:
            # The shared constructor remembers every node it built; forget them.
            _SCALARS.constructed_objects.clear()


_SCALARS = yaml.SafeLoader("")


def read_yaml(path: Path, display: str) -> tuple[Any, list[Problem]]:
    """Parse a YAML file keeping line numbers; syntax errors become problems."""
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(display, 1, f"not UTF-8 text ({exc.reason}); save it as UTF-8")]
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = exc.problem or str(exc)
        if exc.context and exc.context_mark:
            what += f" ({exc.context} at line {exc.context_mark.line + 1})"
        return None, [Problem(display, line, f"YAML syntax error: {what}; fix the YAML syntax")]
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (NUL, most control characters): name its line.
        # (libyaml counts the position in UTF-8 bytes, PyYAML's own reader in characters).
        if _Loader is yaml.SafeLoader:
            line = text.count("\n", 0, exc.position) + 1
        else:
            line = text.encode("utf-8").count(b"\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character or "?")
        return None, [Problem(display, line, f"YAML error: the character U+{code:04X} is not "
                              "allowed in YAML text; remove it")]
    except yaml.YAMLError as exc:
        return None, [Problem(display, 1, f"YAML error: {exc}")]
    if node is None:
        return None, [Problem(display, 1, "empty file; add a section or remove the file")]
    try:
        return _Builder(problems, display).build(node), problems
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        return None, [Problem(display, line, f"YAML value error: {exc.problem}")]


# ---------------------------------------------------------------------------------------
# Checking.


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Checker:
    """Collects problems while records are read, then checks cross-record rules."""

    def __init__(self, codes: dict[str, set[str]], root: Path):
        self.codes = codes
        self.root = root
        self.problems: list[Problem] = []

    def add(self, path: str, line: int, message: str) -> None:
        self.problems.append(Problem(path, line, message))

    def check_value(self, path: str, line: int, where: str, spec: Field, value: Any) -> Any:
        """Check one field value; returns the normalised value (or None when wrong)."""
        kind = spec.kind
        if kind in ("text", "lang", "predicate"):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                self.add(path, line, f"{where}: expected a non-empty text, got {_show(value)}")
                return None
            if kind == "lang" and not LANGUAGE_TAG.match(value):
                self.add(path, line, f"{where}: '{value}' is not a language tag (e.g. 'en')")
                return None
            if kind == "predicate" and value not in STATEMENT_PREDICATES:
                options = sorted(STATEMENT_PREDICATES)
                self.add(path, line, f"{where}: unknown predicate '{value}'"
                         f"{_suggest(value, options)}; use one of: {', '.join(options)}")
                return None
            return value
        if kind in ("texts", "refs", "codes"):
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not items:
                self.add(path, line, f"{where}: expected a list, got {_show(value)}")
                return None
            single = Field({"texts": "text", "refs": "ref", "codes": "code"}[kind],
                           refs=spec.refs, scheme=spec.scheme)
            checked = [self.check_value(path, line, where, single, item) for item in items]
            if any(c is None for c in checked):
                return None
            if len(set(checked)) != len(checked):
                self.add(path, line, f"{where}: the list repeats a value; list each once")
                return None
            return checked
        if kind == "evidence":
            items = [value] if isinstance(value, str) else value
            if (not isinstance(items, list) or not items
                    or not all(isinstance(i, str) and i.strip() for i in items)):
                self.add(path, line, f"{where}: expected an excerpt of the source text "
                         f"(a text or a list of texts), got {_show(value)}")
                return None
            return value
        if kind == "ref":
            if not isinstance(value, str) or not ID_PATTERN.match(value):
                self.add(path, line, f"{where}: {_show(value)} is not a reference; write "
                         f"'type/slug' with a lowercase slug, e.g. '{spec.refs[0]}/some-name'")
                return None
            ref_type = value.split("/", 1)[0]
            if ref_type not in spec.refs:
                self.add(path, line, f"{where}: '{value}' is a {ref_type}, but this field "
                         f"takes {' or '.join(spec.refs)}")
                return None
            return value
        if kind == "code":
            known = self.codes.get(spec.scheme, set())
            if not isinstance(value, str) or value not in known:
                options = sorted(known)
                shown = value if isinstance(value, str) else _show(value)
                self.add(path, line, f"{where}: unknown {spec.scheme} '{shown}'"
                         f"{_suggest(str(value), options)}; use one of: {', '.join(options)}"
                         " (the codes are defined in ontology/vocab.ttl)")
                return None
            return value
        if kind == "date":
            if isinstance(value, dt.datetime) or not isinstance(value, (dt.date, str)):
                self.add(path, line, f"{where}: expected a date YYYY-MM-DD, got {_show(value)}")
                return None
            if isinstance(value, str):
                try:
                    value = dt.date.fromisoformat(value)
                except ValueError:
                    self.add(path, line, f"{where}: '{value}' is not a date; write YYYY-MM-DD")
                    return None
            return value.isoformat()
        if kind == "iri":
            if not isinstance(value, str) or not ABSOLUTE_IRI.match(value):
                self.add(path, line, f"{where}: {_show(value)} is not an absolute IRI "
                         "(e.g. https://example.org/article)")
                return None
            return value
        if kind == "duration":
            if not isinstance(value, str) or not ISO_DURATION.match(value):
                self.add(path, line, f"{where}: {_show(value)} is not an ISO 8601 duration "
                         "(e.g. P5Y for five years)")
                return None
            return value
        raise AssertionError(kind)

    def check_fields(self, path: str, mapping: _Mapping, fields: dict[str, Field],
                     where: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in mapping.items():
            line = mapping.key_lines.get(name, mapping.line)
            if name == "id":
                continue
            spec = fields.get(name)
            if spec is None:
                self.add(path, line, f"{where}: unknown field '{name}'"
                         f"{_suggest(name, list(fields))}; allowed: {', '.join(fields)}")
                continue
            if value is None:
                if spec.required:
                    self.add(path, line, f"{where}: '{name}' is required but empty")
                continue
            checked = self.check_value(path, line, f"{where} field '{name}'", spec, value)
            if checked is not None:
                values[name] = checked
        for name, spec in fields.items():
            if spec.required and name not in mapping and name != "id":
                self.add(path, mapping.line, f"{where}: missing required field '{name}'")
        return values


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_controlled_codes(ontology_dir: Path) -> dict[str, set[str]]:
    """The controlled codes per scheme, read from ``ontology/vocab.ttl``."""
    import pyoxigraph as ox

    from .vocab import SKOS, VOCAB

    vocab_file = ontology_dir / "vocab.ttl"
    if not vocab_file.exists():
        raise FactsError([Problem(str(vocab_file), 1, "the controlled vocabularies are missing; "
                                  "restore ontology/vocab.ttl or pass --ontology DIR")])
    codes: dict[str, set[str]] = {}
    for triple in ox.parse(path=str(vocab_file), format=ox.RdfFormat.TURTLE):
        if triple.predicate != SKOS.inScheme or not isinstance(triple.subject, ox.NamedNode):
            continue
        iri = triple.subject.value
        if iri.startswith(str(VOCAB)):
            scheme, _, code = iri[len(str(VOCAB)):].partition("/")
            codes.setdefault(scheme, set()).add(code)
    return codes


def load_facts(
    data_dir: Path | str,
    ontology_dir: Path | str,
    *,
    sources_dir: Path | str | None = None,
    check_evidence: bool = True,
    progress: Callable[[str], None] | None = None,
) -> FactSet:
    """Read and check every fact file; raise :class:`FactsError` with all problems found.

    Evidence excerpts are checked against ``sources_dir/<file>`` when that text exists;
    when it does not, a notice says so (``FactSet.notices``) and the build goes on.
    ``progress`` is called with each file's name once it has been read.
    """
    with paused_gc():
        return _load_facts(data_dir, ontology_dir, sources_dir=sources_dir,
                           check_evidence=check_evidence, progress=progress)


def count_fact_files(data_dir: Path | str) -> int:
    """How many YAML files ``load_facts`` will read (for a progress bar)."""
    data = Path(data_dir)
    return sum(1 for _ in data.glob("*/*.yaml")) + sum(1 for _ in data.glob("*/*.yml"))


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large, acyclic structure is built.

    Reading facts allocates millions of long-lived objects; each generation-2 collection
    walks all of them, which at 10^6 triples doubled the time to read and check the facts.
    Nothing built here forms reference cycles, so no garbage is left for the collector.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load_facts(
    data_dir: Path | str,
    ontology_dir: Path | str,
    *,
    sources_dir: Path | str | None,
    check_evidence: bool,
    progress: Callable[[str], None] | None,
) -> FactSet:
    data = Path(data_dir)
    if not data.is_dir():
        raise FactsError([Problem(str(data), 1, "no data folder here; pass --data DIR "
                                  "(or set SASCI_KG_DATA) pointing at the fact files")])
    checker = _Checker(read_controlled_codes(Path(ontology_dir)), data)
    sources: list[SourceDoc] = []
    notices: list[str] = []
    folders = sorted(p for p in data.iterdir() if p.is_dir() and (p / "source.yaml").exists())
    if not folders:
        checker.add(str(data), 1, "no source folders (a folder with a source.yaml); "
                    "see docs/model.md for the layout")
    for folder in folders:
        source = _read_source(folder, checker, progress)
        if source is not None:
            sources.append(source)
    _check_ids_and_refs(sources, checker)
    if check_evidence:
        notices.extend(_check_evidence(sources, checker, sources_dir))
    if checker.problems:
        raise FactsError(sorted(checker.problems, key=lambda p: (p.path, p.line)))
    return FactSet(sources=sources, notices=notices)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _read_source(folder: Path, checker: _Checker,
                 progress: Callable[[str], None] | None) -> SourceDoc | None:
    source_path = folder / "source.yaml"
    display = _display(source_path)
    tree, problems = read_yaml(source_path, display)
    if progress:
        progress(display)
    checker.problems.extend(problems)
    if tree is None:
        return None
    if not isinstance(tree, _Mapping) or "source" not in tree:
        checker.add(display, 1, "source.yaml must hold a 'source:' mapping (id, title, file, "
                    "sha256)")
        return None
    head = tree["source"]
    if not isinstance(head, _Mapping):
        checker.add(display, tree.key_lines["source"], "'source' must be a mapping")
        return None
    values = checker.check_fields(display, head, SOURCE_FIELDS, "source")
    source_id = head.get("id")
    if not isinstance(source_id, str) or not ID_PATTERN.match(source_id) \
            or not source_id.startswith("source/"):
        checker.add(display, head.key_lines.get("id", head.line),
                    "source: 'id' must be 'source/<slug>'")
        return None
    records: list[Record] = []
    for extra in sorted(set(tree) - {"source"}):
        records.extend(_read_sections(display, tree, [extra], checker, source_id))
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        if path.name == "source.yaml":
            continue
        file_display = _display(path)
        file_tree, file_problems = read_yaml(path, file_display)
        if progress:
            progress(file_display)
        checker.problems.extend(file_problems)
        if file_tree is None:
            continue
        if not isinstance(file_tree, _Mapping):
            checker.add(file_display, 1, "a fact file must be a mapping of sections "
                        f"({', '.join(SECTIONS)})")
            continue
        records.extend(_read_sections(file_display, file_tree, list(file_tree), checker,
                                      source_id))
    return SourceDoc(id=source_id, values=values, folder=folder, path=display,
                     line=head.line, records=tuple(records))


def _read_sections(display: str, tree: _Mapping, names: list[str], checker: _Checker,
                   source_id: str) -> Iterator[Record]:
    for name in names:
        line = tree.key_lines.get(name, 1)
        section = SECTIONS.get(name)
        if section is None:
            hint = " ('source' belongs in source.yaml)" if name == "source" else ""
            checker.add(display, line, f"unknown section '{name}'{_suggest(name, list(SECTIONS))}"
                        f"{hint}; sections are: {', '.join(SECTIONS)}")
            continue
        items = tree[name]
        if items is None:
            continue
        if not isinstance(items, _Sequence):
            checker.add(display, line, f"section '{name}' must be a list of records (- id: …)")
            continue
        for item, item_line in zip(items, items.item_lines, strict=True):
            if not isinstance(item, _Mapping):
                checker.add(display, item_line, f"{name}: each record must be a mapping")
                continue
            record = _read_record(display, name, section, item, checker, source_id)
            if record is not None:
                yield record


def _read_record(display: str, name: str, section: Section, item: _Mapping,
                 checker: _Checker, source_id: str) -> Record | None:
    record_id = item.get("id")
    id_line = item.key_lines.get("id", item.line)
    id_type = section.id_type or "<type>"  # retired ids may be of any entity type
    if record_id is None:
        checker.add(display, item.line, f"{name}: record without an 'id'; add "
                    f"'id: {id_type}/<slug>'")
        return None
    match = ID_PATTERN.match(record_id) if isinstance(record_id, str) else None
    if match is None:
        checker.add(display, id_line, f"{name}: id {_show(record_id)} is not of the form "
                    f"'{id_type}/<slug>' (lowercase letters, digits, '-', and '.' "
                    "between parent and child slugs)")
        return None
    if match["type"] not in ((section.id_type,) if section.id_type else ENTITY_TYPES):
        checker.add(display, id_line, f"{name}: id '{record_id}' must start with "
                    f"'{id_type}/' in this section")
        return None
    values = checker.check_fields(display, item, section.fields, f"{record_id}")
    if section.is_fact and "certainty" not in values:
        values["certainty"] = "stated"
    return Record(section=name, id=record_id, values=values, path=display, line=item.line,
                  lines=dict(item.key_lines), source=source_id)


def _check_ids_and_refs(sources: list[SourceDoc], checker: _Checker) -> None:
    seen: dict[str, Record | SourceDoc] = {}
    for source in sources:
        if source.id in seen:
            checker.add(source.path, source.line, f"duplicate id '{source.id}'")
        seen[source.id] = source
    for source in sources:
        for record in source.records:
            first = seen.get(record.id)
            if first is not None:
                checker.add(record.path, record.line, f"duplicate id '{record.id}' (first "
                            f"defined at {first.path}:{first.line}); give one of them a new slug")
                continue
            seen[record.id] = record
    known = sorted(seen)
    candidates: dict[tuple[str, ...], list[str]] = {}

    def same_type(types: tuple[str, ...]) -> list[str]:
        """The known ids of these types, for a suggestion; built only when a ref is wrong
        (building it per field made the check quadratic: minutes at 10^5 triples)."""
        if types not in candidates:
            candidates[types] = [k for k in known if k.split("/", 1)[0] in types]
        return candidates[types]

    for source in sources:
        about = source.values.get("about")
        if about and about not in seen:
            checker.add(source.path, source.line, f"source: 'about' refers to unknown "
                        f"'{about}'{_suggest(about, known)}")
        for record in source.records:
            spec = SECTIONS[record.section]
            for name, value in record.values.items():
                field_spec = spec.fields.get(name)
                if field_spec is None or field_spec.kind not in ("ref", "refs"):
                    continue
                for ref in [value] if isinstance(value, str) else value:
                    target = seen.get(ref)
                    if isinstance(target, Record) and target.section == "retired":
                        replacement = target.get("replaced_by")
                        checker.add(record.path, record.lines.get(name, record.line),
                                    f"{record.id} field '{name}': '{ref}' is retired ("
                                    f"{target.path}:{target.line}); refer to "
                                    f"{repr(replacement) if replacement else 'a live id'} instead")
                    elif ref not in seen:
                        checker.add(record.path, record.lines.get(name, record.line),
                                    f"{record.id} field '{name}': unknown reference '{ref}'"
                                    f"{_suggest(ref, same_type(field_spec.refs))}; define "
                                    "it or fix the id")
            if record.section == "statements":
                _check_statement(record, seen, checker)
            if record.section == "concepts":
                for rel in ("broader", "related", "represents"):
                    if record.id in record.values.get(rel, []):
                        checker.add(record.path, record.lines.get(rel, record.line),
                                    f"{record.id} field '{rel}': a concept cannot refer to itself")


def _check_statement(record: Record, seen: dict[str, Any], checker: _Checker) -> None:
    predicate = record.values.get("predicate")
    if predicate not in STATEMENT_PREDICATES:
        return
    target = seen.get(record.values.get("subject", ""))
    if predicate == "recorded_at" and isinstance(target, Record) and target.get("session"):
        checker.add(record.path, record.lines.get("subject", record.line),
                    f"{record.id}: {target.id} already has a session ({target.get('session')}); "
                    "use a recorded_at statement only for a quote or claim without one")
    subjects, objects = STATEMENT_PREDICATES[predicate]
    for name, allowed in (("subject", subjects), ("object", objects)):
        ref = record.values.get(name)
        if ref is None:
            continue
        ref_type = ref.split("/", 1)[0]
        target = seen.get(ref)
        if ref_type == "fact" and isinstance(target, Record) and target.section != "claims":
            ref_type = "(non-claim) fact"
        if ref_type not in allowed:
            checker.add(record.path, record.lines.get(name, record.line),
                        f"{record.id}: a '{predicate}' statement's {name} must be a "
                        f"{' or '.join(allowed)}, not '{ref}'")


def _check_evidence(sources: list[SourceDoc], checker: _Checker,
                    sources_dir: Path | str | None) -> list[str]:
    notices: list[str] = []
    if sources_dir is None:
        return [f"{s.path}: evidence not checked: no sources folder given (pass --sources DIR "
                "or set SASCI_KG_SOURCES)" for s in sources]
    for source in sources:
        text_path = Path(sources_dir) / str(source.values.get("file", ""))
        if not text_path.is_file():
            notices.append(f"{source.path}: evidence not checked: source text {text_path} is "
                           "not available (pass --sources DIR or set SASCI_KG_SOURCES)")
            continue
        text = SourceText(text_path)
        expected = source.values.get("sha256")
        if expected and expected != text.sha256:
            checker.add(source.path, source.line, f"source text {text_path} has sha256 "
                        f"{text.sha256}, but source.yaml records {expected}; the text changed: "
                        "re-check the excerpts, then update sha256")
        for record in source.records:
            checks = [("evidence", e) for e in record.evidence() if "evidence" in record.values]
            # (A text that failed its own check is already reported, and is not there.)
            if record.section in ("quotes", "claims") and record.get("text") is not None:
                checks.append(("text", record.get("text")))
            for field_name, excerpt in checks:
                if not text.contains(excerpt):
                    checker.add(record.path, record.lines.get(field_name, record.line),
                                f"{record.id}: {field_name} not found in {text_path.name}: "
                                f"{_show(excerpt)}; copy the words exactly from the source")
    return notices
