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

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import strategies as st
from project import DATA, ONTOLOGY, ROOT, SOURCES
from reliability_support import assert_no_traceback, fuzz_settings, record, size

from sasci_kg.cli import main
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
            # YAML counts \r, NEL, LS and PS as line breaks too (YAML 1.1 §5.4).
            text = path.read_bytes().decode("utf-8", "replace")
            lines = len(re.split("\r\n|[\n\r\x85\u2028\u2029]", text))
            assert problem.line <= lines + 1, (problem, lines)
        else:
            assert path == data or path.parent == data or data in path.parents, problem
    return error


# ---------------------------------------------------------------------------------------
# Strategies.

ODD_CHARACTERS = [
    "\x00", "\x07", "\x1b", "\x7f", "\x85", "\xa0", "\u00ad", "\u0301", "\u200b", "\u200d",
    "\u2028", "\u2029", "\u202e", "\u2066", "\ufeff", "\ufffd", "\uffff", "\U0001f600",
    "\U0010ffff", "\u00e9", "e\u0301", "\u0130", "\u1e9e", "\u2018", "\u201d", "\u2013",
    "\t", "\r", "\r\n", "\\", "'", '"', "#", ":", "- ", "{", "}", "[", "]", ",", "&", "*",
    "!", "|", ">", "%", "@", "`", "?",
]
odd_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(ODD_CHARACTERS), st.text(max_size=6)), max_size=8)
    .map("".join),
    # (Huge values have their own named cases below: a huge example is slow to shrink.)
)
# YAML cannot carry lone surrogates in a UTF-8 file; everything else goes.
yaml_text = odd_text.map(lambda s: s.encode("utf-8", "replace").decode("utf-8"))
scalars = st.one_of(
    yaml_text,
    st.integers(),
    st.integers(min_value=10**20, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.dates(),
    st.datetimes(),
    st.binary(max_size=20),
)
ids = st.one_of(
    st.builds(lambda t, s: f"{t}/{s}",
              st.sampled_from(["person", "org", "project", "event", "session", "concept",
                               "quote", "fact", "source", "Person", "x", ""]),
              st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}", fullmatch=True) | yaml_text),
    scalars,
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | yaml_text, inner, max_size=4),
    max_leaves=12,
)
records = st.fixed_dictionaries(
    {"id": ids},
    optional={name: values for name in FIELD_NAMES} | {"extra": values},
)
documents = st.dictionaries(
    st.sampled_from(sorted(SECTIONS)) | yaml_text | st.integers(),
    st.one_of(st.lists(records | values, max_size=4), values),
    max_size=4,
)

YAML_TOKENS = [
    b"- ", b": ", b"? ", b"{", b"}", b"[", b"]", b",", b"&a ", b"*a", b"!!int ", b"!!float ",
    b"!!timestamp ", b"!!bool ", b"!!binary ", b"!!python/object:os.system ", b"!!set ",
    b"!!omap ", b"!<tag:yaml.org,2002:str> ", b"|\n", b">-\n", b"'", b'"', b"#", b"\t",
    b"%YAML 1.1\n", b"---\n", b"...\n", b"\n\n", b"    ", b"<<: *a\n", b"\xef\xbb\xbf",
    b"\x00", b"\xff", b"\xc0\xae", b"\xed\xa0\x80", b"2024-13-01", b"2024-02-30", b"0x1F",
    b"1e999", b".nan", b"~", b"null", b"yes", b"no", b"on", b"2001:db8::1", b"12:30:45",
    b"person/", b"fact/x.y", b"id: ", b"evidence: ", b"\\u0000", b"\xe2\x80\xa8",
]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real fact file after a few random edits (bytes, lines, YAML tokens)."""
    name = draw(st.sampled_from(sorted(REAL_FILES)))
    body = bytearray(REAL_FILES[name])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "token", "dup", "swap", "indent"]))
        position = draw(st.integers(0, max(0, len(body) - 1)))
        if op == "delete":
            del body[position:position + draw(st.integers(1, 200))]
        elif op == "insert":
            body[position:position] = draw(st.binary(min_size=1, max_size=20))
        elif op == "token":
            body[position:position] = draw(st.sampled_from(YAML_TOKENS))
        else:
            lines = bytes(body).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "dup":
                lines.insert(i, lines[i])
            elif op == "swap":
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = draw(st.sampled_from([b"", b" ", b"  ", b"\t", b"      "])) + lines[i]
            body = bytearray(b"\n".join(lines))
    return name, bytes(body)


def _dump(document: Any) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode("utf-8")


# ---------------------------------------------------------------------------------------
# The properties.


@fuzz_settings(ci=50, long=3000)
@given(document=documents, as_source=st.booleans())
def test_random_documents_are_accepted_or_refused_with_places(
    document: dict[Any, Any], as_source: bool
) -> None:
    _count("facts: random YAML documents")
    name = "source.yaml" if as_source else "fuzz.yaml"
    with data_folder({name: _dump(document)}) as data:
        check_reader(data)


@fuzz_settings(ci=80, long=5000)
@given(edit=mutated())
@example(edit=("event.yaml", REAL_FILES["event.yaml"].replace(b"2024-10-02", b"2024-13-02")))
@example(edit=("people.yaml", REAL_FILES["people.yaml"] + b"\nx: &a [*a]\n"))
def test_mutated_real_files_are_accepted_or_refused_with_places(edit: tuple[str, bytes]) -> None:
    _count("facts: mutated real files")
    name, body = edit
    with data_folder({name: body}) as data:
        check_reader(data)


@st.composite
def wrong_typed(draw: st.DrawFn) -> tuple[str, bytes]:
    """A real file with one field of one record (or of the source) set to a random value."""
    name = draw(st.sampled_from(sorted(REAL_FILES)))
    tree = yaml.safe_load(REAL_FILES[name])
    section = draw(st.sampled_from(sorted(tree)))
    target = tree[section]
    if isinstance(target, list) and target:
        target = target[draw(st.integers(0, len(target) - 1))]
    if isinstance(target, dict):
        field = draw(st.sampled_from(sorted(target)) | st.sampled_from(FIELD_NAMES))
        target[field] = draw(values)
    else:
        tree[section] = draw(values)
    return name, _dump(tree)


@fuzz_settings(ci=50, long=3000)
@given(edit=wrong_typed())
def test_wrong_types_in_real_records_are_refused_with_places(edit: tuple[str, bytes]) -> None:
    _count("facts: wrong types in real records")
    name, body = edit
    with data_folder({name: body}) as data:
        check_reader(data)


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
    # A claim whose text is refused must not then be looked up in the source (TypeError).
    "a claim whose text is a list": (
        b"claims:\n  - id: fact/fuzz-claim\n    speaker: person/juliette-malley\n"
        b"    text: [not, a, text]\n    evidence: Juliette Malley\n", "non-empty text"),
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


# ---------------------------------------------------------------------------------------
# The CLI: the same inputs give ``Error: …`` and exit 1, never a traceback.


@fuzz_settings(ci=25, long=500)
@given(edit=mutated() | wrong_typed())
@example(edit=("event.yaml", REAL_FILES["event.yaml"].replace(b"2024-10-02", b"2024-13-02")))
def test_validate_command_never_shows_a_traceback(edit: tuple[str, bytes]) -> None:
    _count("facts: sasci-kg validate")
    name, body = edit
    with data_folder({name: body}) as data:
        args = ["validate", "--data", str(data), "--ontology", str(ONTOLOGY)]
        if SOURCES:
            args += ["--sources", str(SOURCES)]
        result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception), result.output)
    assert result.exit_code in (0, 1), result.output
    assert_no_traceback(result.output)
    if result.exit_code == 1:
        assert "Error: " in result.output, result.output


# ---------------------------------------------------------------------------------------
# Coverage-guided: atheris, when it is installed (scripts/reliability.sh installs it).


def test_atheris_fuzzes_the_reader(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    runs = size(200, 50_000)
    seconds = size(6, 300)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "reliability_atheris.py"),
         f"-runs={runs}", f"-max_total_time={seconds}", "-rss_limit_mb=4096",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=seconds + 120, cwd=tmp_path,
        env={**os.environ, "SASCI_KG_FUZZ_DIR": str(tmp_path)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    executed = [line for line in output.splitlines() if "Done " in line and " runs " in line]
    count = int(executed[-1].split("Done ", 1)[1].split()[0]) if executed else runs
    COUNTS["facts: atheris (coverage-guided bytes)"] = count
    record("atheris-facts", cases=count, seconds=round(time.monotonic() - started, 1))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    started = time.monotonic()
    yield
    record("fuzz-facts", cases=dict(sorted(COUNTS.items())), total=sum(COUNTS.values()),
           seconds=round(time.monotonic() - started, 1))

