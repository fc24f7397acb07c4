"""sasci-kg: a knowledge graph of the SASCI project's final event, from curated facts to a
SPARQL endpoint. The library API lives in the stage modules (facts, mapping, build, store,
export, queries, trace); the CLI and the web app are thin layers over it."""

from __future__ import annotations

__version__ = "0.1.0"
