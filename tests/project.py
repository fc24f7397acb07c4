"""Paths of the project under test, and a once-per-session build of the real graph."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
ONTOLOGY = ROOT / "ontology"
QUERIES = ROOT / "queries"
_shared = ROOT.parent / "shared" / "sources"
SOURCES: Path | None = (
    Path(os.environ["SASCI_KG_SOURCES"]) if os.environ.get("SASCI_KG_SOURCES")
    else (_shared if _shared.is_dir() else None)
)


@cache
def built_dataset():  # type: ignore[no-untyped-def]
    """The real dataset, built (with SHACL and, when the texts are here, evidence) once."""
    from sasci_kg.build import build_dataset

    return build_dataset(DATA, ONTOLOGY, sources_dir=SOURCES)


def load_real_store(path: Path) -> Path:
    """Load the real dataset into a store at ``path``."""
    from sasci_kg.build import load_inputs
    from sasci_kg.store import load_store

    load_store(path, load_inputs(built_dataset()))
    return path
