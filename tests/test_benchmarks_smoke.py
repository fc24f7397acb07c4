"""The benchmark suite does not rot: its generator is deterministic and its output, at a tiny
size, validates (evidence checked against the synthetic source texts) and builds, and the
query mix runs on it.

The measurements themselves are not tests: run ``python -m benchmarks.run`` (benchmarks/).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyoxigraph as ox
from click.testing import CliRunner
from project import ONTOLOGY, ROOT

from sasci_kg.cli import main

TINY = "3000"


def _generate(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "benchmarks.generate", "--triples", TINY,
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generator_is_deterministic_and_its_facts_validate_build_and_answer(
        tmp_path: Path) -> None:
    _generate(tmp_path / "a")
    _generate(tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")

    runner = CliRunner()
    common = ["--data", str(tmp_path / "a" / "data"), "--ontology", str(ONTOLOGY),
              "--sources", str(tmp_path / "a" / "sources")]
    result = runner.invoke(main, ["validate", *common])
    assert result.exit_code == 0, result.output
    assert "evidence not checked" not in result.output  # the synthetic texts were used

    store = tmp_path / "store"
    result = runner.invoke(main, ["load", "--no-shacl", *common, "--store", str(store)])
    assert result.exit_code == 0, result.output

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.mix import MIX
    finally:
        sys.path.remove(str(ROOT))
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    opened = ox.Store.read_only(str(store))
    for query in MIX:
        opened.query(query.sparql(manifest, 0), use_default_graph_as_union=True)
    assert len(opened) > 2000
