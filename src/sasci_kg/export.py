"""Serialise quads to every RDF format, deterministically and with only the prefixes used.

``serialize_quads`` takes quads (from a build or a store) and a format name and gives bytes:
the same quads always give the same bytes, in an order of our own (sorted N-Quads lines),
never the store's internal order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pyoxigraph as ox

from .errors import ExportError
from .vocab import PREFIXES


@dataclass(frozen=True)
class Format:
    """An RDF serialisation we can write."""

    name: str
    media_type: str
    extension: str
    rdf_format: ox.RdfFormat
    quads: bool  # keeps named graphs


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("ttl", "text/turtle", "ttl", ox.RdfFormat.TURTLE, False),
        Format("nt", "application/n-triples", "nt", ox.RdfFormat.N_TRIPLES, False),
        Format("nq", "application/n-quads", "nq", ox.RdfFormat.N_QUADS, True),
        Format("trig", "application/trig", "trig", ox.RdfFormat.TRIG, True),
        Format("jsonld", "application/ld+json", "jsonld", ox.RdfFormat.JSON_LD, True),
        Format("rdfxml", "application/rdf+xml", "rdf", ox.RdfFormat.RDF_XML, False),
    )
}

# A Turtle PN_LOCAL without escapes: what a prefixed name can carry.
_LOCAL = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_\-])?)?$")


def get_format(name: str) -> Format:
    """The format for a name (``ttl``, ``nq`` …); :class:`ExportError` when unknown."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ExportError(
            f"unknown format '{name}'; use one of: {', '.join(FORMATS)}"
        ) from None


def _iris(term: object) -> Iterable[str]:
    if isinstance(term, ox.NamedNode):
        yield term.value
    elif isinstance(term, ox.Literal):
        yield term.datatype.value


def used_prefixes(quads: Iterable[ox.Quad], prefixes: dict[str, str] = PREFIXES) -> dict[str, str]:
    """The subset of ``prefixes`` that would shorten at least one IRI in ``quads``."""
    namespaces = sorted(prefixes.items(), key=lambda item: -len(item[1]))
    used: dict[str, str] = {}
    seen: set[str] = set()
    for quad in quads:
        for term in (quad.subject, quad.predicate, quad.object, quad.graph_name):
            for value in _iris(term):
                if value in seen:
                    continue
                seen.add(value)
                for name, namespace in namespaces:
                    if value.startswith(namespace) and _LOCAL.match(value[len(namespace):]):
                        used[name] = namespace
                        break
    return dict(sorted(used.items()))


def sort_quads(quads: Iterable[ox.Quad]) -> list[ox.Quad]:
    """Quads in our canonical order: by graph, subject, predicate, object (as N-Quads)."""
    return sorted(
        quads,
        key=lambda q: (str(q.graph_name), str(q.subject), str(q.predicate), str(q.object)),
    )


def serialize_quads(quads: Iterable[ox.Quad], format_name: str) -> bytes:
    """Serialise quads deterministically; triple formats merge all graphs into one."""
    fmt = get_format(format_name)
    ordered = sort_quads(quads)
    if fmt.quads:
        items: list[ox.Quad] | list[ox.Triple] = ordered
    else:
        triples = sorted({q.triple for q in ordered},
                         key=lambda t: (str(t.subject), str(t.predicate), str(t.object)))
        items = triples
    prefixes = used_prefixes(ordered) if fmt.name in ("ttl", "trig", "rdfxml") else None
    data = ox.serialize(items, format=fmt.rdf_format, prefixes=prefixes)
    if fmt.name in ("ttl", "trig"):
        data = _sort_prefix_lines(data)
    return data


def _sort_prefix_lines(data: bytes) -> bytes:
    """Put the serializer's leading ``@prefix`` lines in alphabetical order."""
    lines = data.split(b"\n")
    head = 0
    while head < len(lines) and lines[head].startswith(b"@prefix "):
        head += 1
    return b"\n".join(sorted(lines[:head]) + lines[head:])
