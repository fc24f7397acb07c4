"""The CLI through Click's runner: every command works on the real data, errors exit 1."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from project import DATA, ONTOLOGY, QUERIES, ROOT, SOURCES, load_real_store

from sasci_kg.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_real_store(tmp_path_factory.mktemp("cli") / "store")


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(main, list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def paths() -> list[str]:
    return ["--data", str(DATA), "--ontology", str(ONTOLOGY)]


def test_validate_ok() -> None:
    extra = ["--sources", str(SOURCES)] if SOURCES else []
    code, out, err = run("validate", *paths(), *extra)
    assert code == 0, err
    assert out.startswith("OK: ") and "from 1 source(s)" in out
    if SOURCES:
        assert "evidence not checked" not in err


def test_validate_without_sources_says_so(tmp_path: Path) -> None:
    code, out, err = run("validate", *paths(), "--sources", str(tmp_path))
    assert code == 0, err
    assert f"evidence not checked: source text {tmp_path}/sasci-final-event.txt is not " \
        "available" in err
    # A folder that does not exist is a mistake, not a pass without evidence checked.
    code, out, err = run("validate", *paths(), "--sources", str(tmp_path / "nonexistent"))
    assert code == 2 and "does not exist" in err and not out


def test_output_to_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """`sasci-kg stats | head -2` printed "Error: Broken pipe" and exited 1."""
    store = tmp_path / "store"
    assert run("load", *paths(), "--store", str(store), "--no-shacl")[0] == 0
    piped = subprocess.run(
        f"{shlex.quote(sys.executable)} -c 'from sasci_kg.cli import main; main()' stats "
        f"--store {shlex.quote(str(store))} | head -c 1; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr


def test_validate_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    people = data / "sasci-final-event" / "people.yaml"
    people.write_text(people.read_text(encoding="utf-8")
                      .replace("id: person/adam-lent", "id: person/Adam Lent", 1)
                      .replace("honorific_prefix: Dr", "honorific_prefix: [Dr]", 1),
                      encoding="utf-8")
    code, out, err = run("validate", "--data", str(data), "--ontology", str(ONTOLOGY))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert any("people.yaml:" in line and "id 'person/Adam Lent' is not of the form" in line
               for line in lines)
    assert any("unknown reference 'person/adam-lent'" in line for line in lines)
    assert any("field 'honorific_prefix': expected a non-empty text" in line for line in lines)
    assert lines[-1].startswith("Error: ") and lines[-1].endswith("problems found")


def test_build_writes_deterministic_files(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        code, out, err = run("build", *paths(), "--out", str(tmp_path / name))
        assert code == 0, err
        outputs.append([Path(p).read_bytes() for p in out.split()])
        assert "Built " in err
    assert outputs[0] == outputs[1]


def strict_ontology(tmp_path: Path, extra_shape: str) -> Path:
    """A copy of ontology/ whose shapes.ttl has one more shape."""
    ontology = tmp_path / "ontology"
    shutil.copytree(ONTOLOGY, ontology)
    shapes = ontology / "shapes.ttl"
    shapes.write_text(shapes.read_text(encoding="utf-8") + extra_shape, encoding="utf-8")
    return ontology


EMAIL_SHAPE = """
kgsh:PersonEmailShape a sh:NodeShape ; sh:targetClass schema:Person ;
    sh:property [ sh:path schema:email ; sh:minCount 1 ;
                  sh:message "A person needs a schema:email."@en ] .
"""


@pytest.mark.parametrize("mode", ["sparql", "pyshacl", "auto", ""])
def test_build_shacl_modes_report_a_violation(tmp_path: Path, mode: str) -> None:
    ontology = strict_ontology(tmp_path, EMAIL_SHAPE)
    option = f"--shacl={mode}" if mode else "--shacl"  # bare --shacl: auto, as before
    code, out, err = run("build", "--data", str(DATA), "--ontology", str(ontology), option,
                         "--out", str(tmp_path / "out"))
    assert code == 1 and out == ""
    assert "SHACL constraints" in err
    assert ("Violation: <https://w3id.org/sasci-kg/id/person/lisa-smith> "
            "<https://schema.org/email>: A person needs a schema:email.") in err


@pytest.mark.parametrize("option", ["--no-shacl", "--shacl=off"])
def test_build_without_shacl_ignores_the_shapes(tmp_path: Path, option: str) -> None:
    ontology = strict_ontology(tmp_path, EMAIL_SHAPE)
    code, _out, err = run("build", "--data", str(DATA), "--ontology", str(ontology), option,
                          "--out", str(tmp_path / "out"))
    assert code == 0, err


def test_build_shacl_option_errors(tmp_path: Path) -> None:
    code, _out, err = run("build", *paths(), "--shacl=fast", "--out", str(tmp_path))
    assert code == 2 and "'fast' is not one of" in err
    code, _out, err = run("build", *paths(), "--shacl=pyshacl", "--no-shacl",
                          "--out", str(tmp_path))
    assert code == 2 and "contradict" in err


def test_build_with_shapes_the_sparql_validator_cannot_translate(tmp_path: Path) -> None:
    ontology = strict_ontology(tmp_path, "kgsh:Closed a sh:NodeShape ; "
                                         "sh:targetClass schema:Person ; sh:closed false .\n")
    code, _out, err = run("build", "--data", str(DATA), "--ontology", str(ontology),
                          "--shacl=sparql", "--out", str(tmp_path / "a"))
    assert code == 1
    assert "Error: " in err and "sh:closed" in err and "--shacl=pyshacl" in err
    code, _out, err = run("build", "--data", str(DATA), "--ontology", str(ontology),
                          "--out", str(tmp_path / "b"))  # auto: pySHACL on a small graph
    assert code == 0, err
    assert "SHACL Info: " in err and "validated with pySHACL" in err and "sh:closed" in err


def test_load_query_stats_export(store: Path, tmp_path: Path) -> None:
    code, out, err = run("query", "--store", str(store),
                         "SELECT ?name WHERE { ?p a schema:Person ; schema:name ?name } "
                         "ORDER BY ?name LIMIT 3")
    assert code == 0, err
    assert out.splitlines()[0].strip() == "name"
    assert out.rstrip().endswith("(3 rows)")

    code, out, err = run("query", "--store", str(store), "--format", "json",
                         "ASK { project:sasci schema:funder organisation:esrc }")
    assert code == 0, err
    assert json.loads(out) == {"head": {}, "boolean": True}

    code, out, err = run("query", "--store", str(store), "--format", "csv", "-",
                         input="SELECT (COUNT(*) AS ?n) WHERE { ?s a schema:Quotation }")
    assert code == 0, err
    assert out.splitlines()[0] == "n" and int(out.splitlines()[1]) >= 4

    code, out, err = run("query", "--store", str(store), "--format", "ttl",
                         "CONSTRUCT { ?s schema:funder ?o } WHERE { ?s schema:funder ?o }")
    assert code == 0, err
    assert "@prefix schema: <https://schema.org/> ." in out
    assert "project:sasci schema:funder organisation:esrc ." in out

    code, out, err = run("stats", "--store", str(store))
    assert code == 0, err
    assert out.startswith("triples: ")
    assert "https://w3id.org/sasci-kg/graph/source/sasci-final-event" in out
    assert "schema:Person" in out

    target = tmp_path / "out.nt"
    code, out, err = run("export", "--store", str(store), "--format", "nt", "-o", str(target))
    assert code == 0, err
    assert target.read_text(encoding="utf-8").count(" .\n") > 500


def test_named_query_with_parameter(store: Path) -> None:
    code, out, err = run("query", "--store", str(store), "--queries", str(QUERIES),
                         "--name", "person-profile",
                         "--param", "person=https://w3id.org/sasci-kg/id/person/lisa-smith")
    assert code == 0, err
    assert "chair" in out and "Research in Practice" in out

    code, out, err = run("query", "--store", str(store), "--queries", str(QUERIES),
                         "--name", "no-such-query")
    assert code == 1
    assert "no named query 'no-such-query'; known queries: " in err

    code, out, err = run("query", "--queries", str(QUERIES), "--list")
    assert code == 0 and "funders\tWho funded the project?" in out


def test_query_errors(store: Path, tmp_path: Path) -> None:
    code, out, err = run("query", "--store", str(store), "SELECT * WHERE { ?s ?p }")
    assert code == 1 and "Error: SPARQL syntax error: error at 1:" in err
    code, out, err = run("query", "--store", str(tmp_path / "missing"), "ASK {}")
    assert code == 1 and "no Oxigraph store here; run `sasci-kg load`" in err
    code, out, err = run("query", "--store", str(store))
    assert code == 2 and "no query" in err


def test_load_extra_files_into_their_own_graph(tmp_path: Path) -> None:
    extra = tmp_path / "extra.ttl"
    extra.write_text('<https://example.org/x> <https://schema.org/name> "X" .\n')
    bad = tmp_path / "bad.ttl"
    bad.write_text("this is not turtle\n")
    store_path = tmp_path / "store"
    code, out, err = run("load", *paths(), "--store", str(store_path), "--no-shacl", str(extra))
    assert code == 0, err
    assert "in other graphs too" not in err
    code, out, err = run("query", "--store", str(store_path), "--format", "csv",
                         "SELECT ?g WHERE { GRAPH ?g { <https://example.org/x> ?p ?o } }")
    assert out.splitlines()[1] == "https://w3id.org/sasci-kg/graph/file/extra.ttl"
    # a bad file fails the load and leaves the previous store serving
    code, out, err = run("load", *paths(), "--store", str(store_path), "--no-shacl", str(bad))
    assert code == 1 and "bad.ttl: not valid Turtle" in err
    code, out, err = run("query", "--store", str(store_path), "--format", "csv",
                         "SELECT (COUNT(*) AS ?n) WHERE { <https://example.org/x> ?p ?o }")
    assert out.splitlines()[1] == "1"


def test_load_says_when_a_file_repeats_triples_of_other_graphs(tmp_path: Path) -> None:
    """Each graph keeps its own copy, so the default graph (their union, a bag in Oxigraph)
    counts such a triple twice: the load says so."""
    extra = tmp_path / "again.ttl"
    extra.write_text('<https://w3id.org/sasci-kg/id/person/adam-lent> '
                     '<https://schema.org/name> "Adam Lent" .\n'
                     '<https://example.org/x> <https://schema.org/name> "X" .\n')
    store_path = tmp_path / "store"
    code, out, err = run("load", *paths(), "--store", str(store_path), "--no-shacl", str(extra))
    assert code == 0, err
    assert f"Note: 1 triple(s) of {extra} are in other graphs too" in err


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, command in main.commands.items():
        assert command.help, name
        code, out, _ = run(name, "--help")
        assert code == 0 and "Usage:" in out
        assert f"sasci-kg {name}" in readme, f"README does not document `sasci-kg {name}`"
