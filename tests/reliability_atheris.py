"""Coverage-guided fuzzing of the fact reader with atheris (libFuzzer for Python).

Each input is a fact file's bytes, read beside the real data folder; anything but success or
a ``FactsError`` is a crash that atheris reports with the input that caused it. Run by
``tests/test_fuzz_facts.py`` (when atheris is installed) and by ``scripts/reliability.sh``::

    .venv/bin/python tests/reliability_atheris.py -runs=20000 -max_total_time=300
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import yaml  # noqa: F401  (instrumented: its parser is where inputs go first)

    from sasci_kg import facts

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = ROOT / "data" / "sasci-final-event"
ONTOLOGY = ROOT / "ontology"
WORK = Path(tempfile.mkdtemp(prefix="sasci-atheris-", dir=os.environ.get("SASCI_KG_FUZZ_DIR")))
DATA = WORK / "data"
shutil.copytree(SOURCE_DIR, DATA / SOURCE_DIR.name)
TARGET = DATA / SOURCE_DIR.name / "fuzz.yaml"


def test_one_input(data: bytes) -> None:
    TARGET.write_bytes(data)
    try:
        facts.load_facts(DATA, ONTOLOGY, check_evidence=False)
    except facts.FactsError as exc:
        for problem in exc.problems:
            if problem.line < 1 or not problem.message:
                raise AssertionError(f"a problem without a place: {problem!r}") from None


def main() -> None:
    seeds = WORK / "seeds"
    seeds.mkdir()
    for path in SOURCE_DIR.glob("*.yaml"):
        shutil.copy(path, seeds / path.name)
    argv = [*sys.argv, str(seeds)] if not any(a.startswith("/") for a in sys.argv[1:]) \
        else sys.argv
    atheris.Setup(argv, test_one_input)
    try:
        atheris.Fuzz()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
