"""Fuzzing the fact reader and validator (``facts.load_facts``) and ``sasci-kg validate``.

Random YAML documents, mutations of the real fact files (bytes deleted, inserted, lines
duplicated or swapped, YAML tokens and odd Unicode dropped in), wrong types in real records,
and a fixed set of hostile inputs (huge values, deep nesting, alias bombs, bad tags). Whatever
the input, the reader either accepts it or raises one ``FactsError`` whose every problem names
a file, a line inside it and a message — never another exception, never a hang. The CLI turns
the same inputs into ``Error: …`` and exit status 1, never a traceback.

CI runs fixed, derandomised case counts; ``SASCI_KG_LONG=1`` runs many more, randomised.
``tests/reliability_atheris.py`` drives the same property with atheris (coverage-guided).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from project import DATA, ONTOLOGY, SOURCES
from reliability_support import assert_no_traceback

from sasci_kg.errors import FactsError
from sasci_kg.facts import SECTIONS, SOURCE_FIELDS, load_facts

pytestmark = pytest.mark.reliability

SOURCE_DIR = DATA / "sasci-final-event"
REAL_FILES: dict[str, bytes] = {p.name: p.read_bytes() for p in sorted(SOURCE_DIR.glob("*.yaml"))}
FIELD_NAMES = sorted(
    ({name for s in SECTIONS.values() for name in s.fields} | set(SOURCE_FIELDS)) - {"id"})
# Every input must be judged quickly: a reader that takes longer is hanging on something.
TIME_LIMIT = 10.0

COUNTS: dict[str, int] = {}


def _count(target: str) -> None:
    COUNTS[target] = COUNTS.get(target, 0) + 1


# ---------------------------------------------------------------------------------------
# Running the reader on a data folder: the real one with some files replaced.


@contextmanager
def data_folder(replaced: dict[str, bytes]) -> Iterator[Path]:
    """A copy of the real data folder with ``replaced`` files written over (or added)."""
    with tempfile.TemporaryDirectory(prefix="sasci-fuzz-") as tmp:
        folder = Path(tmp) / "data" / SOURCE_DIR.name
        folder.mkdir(parents=True)
        for name, body in {**REAL_FILES, **replaced}.items():
            (folder / name).write_bytes(body)
        yield Path(tmp) / "data"


def check_reader(data: Path) -> FactsError | None:
    """Run the reader; it must accept the data or raise a FactsError that names real places."""
    started = time.monotonic()
    try:
        load_facts(data, ONTOLOGY, sources_dir=SOURCES)
    except FactsError as exc:
        error: FactsError | None = exc
    else:
        error = None
    elapsed = time.monotonic() - started
    assert elapsed < TIME_LIMIT, f"the reader took {elapsed:.1f} s"
    if error is None:
        return None
    assert error.problems, "a FactsError must list at least one problem"
    for problem in error.problems:
        assert problem.message.strip(), problem
        assert_no_traceback(problem.message)
        assert problem.line >= 1, problem
        path = Path(problem.path)
        if path.is_file():
            lines = path.read_bytes().count(b"\n") + 1
            assert problem.line <= lines + 1, (problem, lines)
        else:
            assert path == data or path.parent == data or data in path.parents, problem
    return error


# ---------------------------------------------------------------------------------------
# Hostile inputs, each named: the reader must refuse (or accept) them quickly and clearly.


def _billion_laughs(levels: int) -> bytes:
    text = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    previous = "a"
    for level in range(levels):
        text += f"b{level}: &b{level} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
        previous = f"b{level}"
    return text.encode()


def _person(**fields: str) -> bytes:
    body = "people:\n  - id: person/fuzz-person\n"
    body += "".join(f"    {name}: {value}\n" for name, value in fields.items())
    return body.encode("utf-8")


HOSTILE: dict[str, tuple[bytes, str | None]] = {
    # name: (the fuzz.yaml body, a words the message must hold — None: accepted is fine)
    "5 MB name": (_person(name="x" * 5_000_000, evidence="Juliette Malley"), None),
    "200,000-item list": (_person(name="[" + ",".join(["a"] * 200_000) + "]",
                                  evidence="y"), "expected a non-empty text"),
    # YAML limits an implicit key to 1024 characters: a syntax error.
    "100,000-character key": (("nmae" + "e" * 100_000 + ": 1\n").encode(), "syntax"),
    "a million short lines": (b"# x\n" * 1_000_000 + b"people: []\n", None),
    "10^400 as a name": (_person(name="1" + "0" * 400, evidence="Juliette Malley"), None),
    "flow nesting 999 deep": (b"people: " + b"[" * 999 + b"]" * 999 + b"\n", "nested"),
    "block nesting 900 deep": (
        b"people:\n" + b"".join(b"  " * i + b"- \n" for i in range(1, 900)), "nest"),
    "recursive alias": (b"people: &a [*a]\n", "alias"),
    "alias bomb (9^7 items)": (_billion_laughs(6), "alias"),
    "month 13": (b"events:\n  - id: event/x\n    name: X\n    date: 2024-13-01\n", "date"),
    "30 February": (b"events:\n  - id: event/x\n    name: X\n    date: 2024-02-30\n", "date"),
    "!!int on a word": (b"people:\n  - id: person/x\n    name: !!int abc\n", "!!int"),
    "!!float on a word": (b"people:\n  - id: person/x\n    name: !!float abc\n", "!!float"),
    "!!bool on a word": (b"people:\n  - id: person/x\n    name: !!bool maybe\n", "!!bool"),
    "!!timestamp on a word": (b"people:\n  - id: person/x\n    name: !!timestamp x\n",
                              "!!timestamp"),
    "!!binary not base64": (b"people:\n  - id: person/x\n    name: !!binary '@@@'\n",
                            "non-empty text"),
    # Tags on lists and mappings are ignored: this is a plain list, never a call.
    "python object tag": (b"x: !!python/object/apply:os.system ['true']\n",
                          "unknown section"),
    "not UTF-8": (b"people:\n  - id: person/x\n    name: \xff\xfe\n", "UTF-8"),
    "UTF-16 with BOM": ("people: []\n".encode("utf-16"), "UTF-8"),
    "NUL byte": (b"people:\n  - id: person/x\n    name: a\x00b\n", "U+0000"),
    "only a BOM": (b"\xef\xbb\xbf", "empty"),
    "many documents": (b"people: []\n---\npeople: []\n", "document"),
    "a tab indent": (b"people:\n\t- id: person/x\n", "syntax"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_fact_files_are_refused_quickly_and_clearly(case: str) -> None:
    _count("facts: named hostile files")
    body, words = HOSTILE[case]
    with data_folder({"fuzz.yaml": body}) as data:
        error = check_reader(data)
    if words is not None:
        assert error is not None, f"{case}: accepted"
        messages = [p.message for p in error.problems if p.path.endswith("fuzz.yaml")]
        assert messages, error
        assert any(words.lower() in m.lower() for m in messages), messages
