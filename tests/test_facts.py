"""The fact reader and validator: every bad input gives its exact message with file and line."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from sasci_kg.errors import FactsError
from sasci_kg.evidence import normalise
from sasci_kg.facts import load_facts

ROOT = Path(__file__).resolve().parents[1]
ONTOLOGY = ROOT / "ontology"

SOURCE_TEXT = (
    "On 2 October, 2024, the project, led by Dr Ann Example of the Centre, co-hosted an event "
    "with Research in Practice. Ann said: \u201cBeing bold matters \u2013 always.\u201d\n"
)


def write_source(tmp_path: Path, files: dict[str, str], text: str = SOURCE_TEXT) -> Path:
    """A data folder with one source (whose text is in tmp_path/sources) and fact files."""
    sources = tmp_path / "sources"
    sources.mkdir(exist_ok=True)
    (sources / "doc.txt").write_text(text, encoding="utf-8")
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    folder = tmp_path / "data" / "doc"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "source.yaml").write_text(textwrap.dedent(f"""\
        source:
          id: source/doc
          title: A test article
          file: doc.txt
          sha256: {sha}
          language: en
        """), encoding="utf-8")
    for name, body in files.items():
        (folder / name).write_text(textwrap.dedent(body), encoding="utf-8")
    return tmp_path / "data"


GOOD = {
    "people.yaml": """\
        people:
          - id: person/ann-example
            name: Ann Example
            honorific_prefix: Dr
            evidence: led by Dr Ann Example
        """,
    "orgs.yaml": """\
        organisations:
          - id: org/research-in-practice
            name: Research in Practice
            evidence: with Research in Practice
        """,
    "event.yaml": """\
        events:
          - id: event/the-event
            name: The event
            date: 2024-10-02
            evidence: On 2 October, 2024
        sessions:
          - id: session/the-event.plenary
            event: event/the-event
            type: plenary
            label: Plenary
            evidence: co-hosted an event
        roles:
          - id: fact/plenary.presenter.ann-example
            person: person/ann-example
            role: presenter
            session: session/the-event.plenary
            evidence: led by Dr Ann Example
        quotes:
          - id: quote/ann-example.bold
            speaker: person/ann-example
            text: "Being bold matters - always."
        """,
}


def problems_of(data: Path, tmp_path: Path) -> list[str]:
    with pytest.raises(FactsError) as info:
        load_facts(data, ONTOLOGY, sources_dir=tmp_path / "sources")
    return [str(p) for p in info.value.problems]


def test_good_facts_load_with_lines(tmp_path: Path) -> None:
    facts = load_facts(write_source(tmp_path, GOOD), ONTOLOGY, sources_dir=tmp_path / "sources")
    records = {r.id: r for r in facts.records()}
    assert set(records) == {
        "person/ann-example", "org/research-in-practice", "event/the-event",
        "session/the-event.plenary", "fact/plenary.presenter.ann-example", "quote/ann-example.bold",
    }
    assert records["session/the-event.plenary"].line == 7
    assert records["event/the-event"].values["date"] == "2024-10-02"
    assert records["fact/plenary.presenter.ann-example"].values["certainty"] == "stated"
    assert facts.notices == []


def test_broken_yaml_names_file_and_line(tmp_path: Path) -> None:
    data = write_source(tmp_path, {**GOOD, "people.yaml": "people:\n  - id: [unclosed\n"})
    problems = problems_of(data, tmp_path)
    syntax = [p for p in problems if "people.yaml:" in p]
    assert len(syntax) == 1
    assert syntax[0].split("people.yaml:")[1] == (
        "3: YAML syntax error: did not find expected ',' or ']' (while parsing a flow "
        "sequence at line 2); fix the YAML syntax")
    problems = syntax
    assert "YAML syntax error" in problems[0]


def test_unknown_reference_with_suggestion(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["event.yaml"] = GOOD["event.yaml"].replace(
        "person: person/ann-example", "person: person/ann-exampel")
    problems = problems_of(write_source(tmp_path, files), tmp_path)
    assert len(problems) == 1
    assert problems[0].endswith(
        "event.yaml:14: fact/plenary.presenter.ann-example field 'person': unknown reference "
        "'person/ann-exampel' (did you mean 'person/ann-example'?); define it or fix the id")


def test_duplicate_id_points_at_first(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["more.yaml"] = """\
        people:
          - id: person/ann-example
            name: Ann Again
            evidence: led by Dr Ann Example
        """
    problems = problems_of(write_source(tmp_path, files), tmp_path)
    assert len(problems) == 1
    # files are read in name order: more.yaml comes first, people.yaml is the duplicate
    assert "people.yaml:2: duplicate id 'person/ann-example' (first defined at " in problems[0]
    assert "more.yaml:2); give one of them a new slug" in problems[0]


def test_unknown_role_lists_codes(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["event.yaml"] = GOOD["event.yaml"].replace("role: presenter", "role: presentor")
    problems = problems_of(write_source(tmp_path, files), tmp_path)
    assert len(problems) == 1
    assert "event.yaml:15: fact/plenary.presenter.ann-example field 'role': unknown role " \
        "'presentor' (did you mean 'presenter'?); use one of: chair," in problems[0]


def test_evidence_not_in_source(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["people.yaml"] = GOOD["people.yaml"].replace(
        "evidence: led by Dr Ann Example", "evidence: led by Professor Ann Example")
    problems = problems_of(write_source(tmp_path, files), tmp_path)
    assert problems == [
        "data/doc/people.yaml:5: person/ann-example: evidence not found in doc.txt: "
        "'led by Professor Ann Example'; copy the words exactly from the source"
    ] or problems[0].endswith(
        "people.yaml:5: person/ann-example: evidence not found in doc.txt: "
        "'led by Professor Ann Example'; copy the words exactly from the source")


def test_every_problem_in_one_run(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["people.yaml"] = """\
        people:
          - id: person/Bad_Slug
            name: X
            evidence: led by
          - id: person/no-name
            evidence: led by
          - id: person/extra
            name: Y
            nickname: Z
            evidence: led by
        """
    files["event.yaml"] = GOOD["event.yaml"].replace("type: plenary", "type: keynote")
    problems = problems_of(write_source(tmp_path, files), tmp_path)
    text = "\n".join(problems)
    assert "people.yaml:2: people: id 'person/Bad_Slug' is not of the form" in text
    assert "people.yaml:5: person/no-name: missing required field 'name'" in text
    assert "people.yaml:9: person/extra: unknown field 'nickname'" in text
    assert "event.yaml:9: session/the-event.plenary field 'type': unknown session-type " \
        "'keynote'" in text
    # the role still refers to ann-example, who is gone: also reported
    assert "unknown reference 'person/ann-example'" in text


def test_wrong_types_and_values(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["event.yaml"] = GOOD["event.yaml"].replace("date: 2024-10-02", "date: 2 October")
    files["orgs.yaml"] = GOOD["orgs.yaml"].replace("name: Research in Practice", "name: [a, b]")
    problems = problems_of(write_source(tmp_path, files), tmp_path)
    text = "\n".join(problems)
    assert "event.yaml:4: event/the-event field 'date': '2 October' is not a date; write " \
        "YYYY-MM-DD" in text
    assert "orgs.yaml:3: org/research-in-practice field 'name': expected a non-empty text, " \
        "got a list" in text


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["orgs.yaml"] = GOOD["orgs.yaml"] + "    name: Again\n"
    problems = problems_of(write_source(tmp_path, files), tmp_path)
    assert any("orgs.yaml:5: duplicate key 'name' (first at line 3); keep one" in p
               for p in problems)


def test_changed_source_text_is_reported(tmp_path: Path) -> None:
    data = write_source(tmp_path, GOOD)
    (tmp_path / "sources" / "doc.txt").write_text(SOURCE_TEXT + "More.\n", encoding="utf-8")
    problems = problems_of(data, tmp_path)
    assert len(problems) == 1 and "the text changed" in problems[0]


def test_missing_source_text_is_a_notice_not_an_error(tmp_path: Path) -> None:
    data = write_source(tmp_path, GOOD)
    facts = load_facts(data, ONTOLOGY, sources_dir=tmp_path / "elsewhere")
    assert len(facts.notices) == 1
    assert "evidence not checked" in facts.notices[0]
    facts = load_facts(data, ONTOLOGY, sources_dir=None)
    assert "evidence not checked: no sources folder given" in facts.notices[0]


def test_statement_predicate_checks(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["st.yaml"] = """\
        statements:
          - id: fact/odd
            subject: event/the-event
            predicate: funder
            object: org/research-in-practice
            evidence: co-hosted an event
          - id: fact/unknown-predicate
            subject: event/the-event
            predicate: hosted
            object: org/research-in-practice
            evidence: co-hosted an event
        """
    problems = problems_of(write_source(tmp_path, files), tmp_path)
    text = "\n".join(problems)
    assert "st.yaml:3: fact/odd: a 'funder' statement's subject must be a project" in text
    assert "st.yaml:9: fact/unknown-predicate field 'predicate': unknown predicate 'hosted'" in text


def test_normalise_folds_quotes_dashes_space() -> None:
    assert normalise("\u201cKing\u2019s  Fund\u201d \u2013\nnow") == '"King\'s Fund" - now'


def test_recorded_at_only_for_quotes_without_a_session(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["event.yaml"] = GOOD["event.yaml"].rstrip(" ") + """\
            session: session/the-event.plenary
        statements:
          - id: fact/bold.recorded-at
            subject: quote/ann-example.bold
            predicate: recorded_at
            object: session/the-event.plenary
            certainty: implied
            evidence: co-hosted an event
        """
    problems = problems_of(write_source(tmp_path, files), tmp_path)
    assert len(problems) == 1
    assert problems[0].endswith(
        "event.yaml:25: fact/bold.recorded-at: quote/ann-example.bold already has a session "
        "(session/the-event.plenary); use a recorded_at statement only for a quote or claim "
        "without one")
