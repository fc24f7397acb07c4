"""Evidence excerpts: Unicode normalisation and lookup in source texts.

An excerpt matches when it occurs in the source after both are normalised the same way:
NFKC, curly quotes and dashes folded to ASCII, whitespace collapsed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u00b4": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u00a0": " ",
        "\u2026": "...",
    }
)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Fold a text for excerpt matching: NFKC, ASCII quotes and dashes, single spaces."""
    folded = unicodedata.normalize("NFKC", text).translate(_FOLD)
    return _SPACE.sub(" ", folded).strip()


def excerpt_key(text: str) -> str:
    """A short stable hash of a normalised excerpt, used in evidence IRIs."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class SourceText:
    """A source document's text, normalised once for repeated excerpt lookups."""

    def __init__(self, path: Path):
        self.path = path
        raw = path.read_bytes()
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.normalised = normalise(raw.decode("utf-8"))

    def contains(self, excerpt: str) -> bool:
        needle = normalise(excerpt)
        return bool(needle) and needle in self.normalised
