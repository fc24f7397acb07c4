"""Serialise quads to every RDF format, deterministically and with only the prefixes used.

``serialize_quads`` takes quads (from a build or a store) and a format name and gives bytes:
the same quads always give the same bytes, in an order of our own (sorted N-Quads lines),
never the store's internal order. Turtle and TriG are pretty (prefixed, grouped, a blank
line between subjects); JSON-LD is compacted with :data:`JSONLD_CONTEXT` inline; N-Quads can
be canonical (RDFC-1.0); :func:`gzip_bytes` compresses reproducibly.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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


def sort_quads(quads: Iterable[ox.Quad], first: str | None = None) -> list[ox.Quad]:
    """Quads in our canonical order: by graph, subject, predicate, object (as N-Quads); in
    each graph, the statements about ``first`` (an IRI) before the others."""
    if first is None:  # (the exports: millions of quads, no extra work per key)
        return sorted(quads, key=lambda q: (str(q.graph_name), str(q.subject),
                                            str(q.predicate), str(q.object)))
    lead = f"<{first}>"
    return sorted(quads, key=lambda q: (str(q.graph_name), str(q.subject) != lead,
                                        str(q.subject), str(q.predicate), str(q.object)))


def serialize_quads(
    quads: Iterable[ox.Quad], format_name: str, *, canonical: bool = False,
    first: str | None = None, as_graph: bool = False,
) -> bytes:
    """Serialise quads deterministically; triple formats merge all graphs into one.

    ``canonical`` (N-Quads only) gives the RDFC-1.0 canonical form: blank nodes relabelled by
    ``Dataset.canonicalize`` and the lines in code point order. ``first``: an IRI whose own
    statements come first (in each graph), as a document about it reads best. ``as_graph``:
    the document is one RDF graph (a resource's description, a named graph's contents), so
    JSON-LD too merges the graphs into its default graph, as Turtle does: clients load such a
    document as a graph (rdflib's ``Graph``, Jena's ``Model``), where named graph objects
    left it empty. Dataset exports keep a graph object per named graph, as TriG does.
    """
    fmt = get_format(format_name)
    if canonical:
        if fmt.name != "nq":
            raise ExportError(f"canonical output is N-Quads only, not '{format_name}'; "
                              "use --format nq with --canonical")
        return canonical_nquads(quads)
    ordered = sort_quads(quads, first)
    if fmt.name == "jsonld":
        return compact_jsonld(merged(ordered) if as_graph else ordered)
    if fmt.quads:
        items: list[ox.Quad] | list[ox.Triple] = ordered
    else:
        items = sort_triples((q.triple for q in ordered), first)
    prefixes = used_prefixes(ordered) if fmt.name in ("ttl", "trig", "rdfxml") else None
    data = ox.serialize(items, format=fmt.rdf_format, prefixes=prefixes) or b""
    if fmt.name in ("ttl", "trig"):
        data = _space_blocks(_sort_prefix_lines(data))
    elif fmt.name == "rdfxml":
        data = xml_carriage_returns(data)
    return data


def merged(quads: Iterable[ox.Quad]) -> list[ox.Quad]:
    """The quads' statements in the default graph, each once."""
    return [ox.Quad(t.subject, t.predicate, t.object)
            for t in dict.fromkeys(q.triple for q in quads)]


def xml_carriage_returns(data: bytes) -> bytes:
    """XML text (RDF/XML, SPARQL XML results) with each carriage return written ``&#13;``.
    pyoxigraph writes it raw, and XML parsers turn a raw CR into LF (XML 1.0 §2.11): a
    literal's "\r" came back as "\n". (The serialisers put no CR in markup.)"""
    return data.replace(b"\r", b"&#13;") if b"\r" in data else data


def sort_triples(triples: Iterable[ox.Triple], first: str | None = None) -> list[ox.Triple]:
    """Distinct triples in our canonical order: by subject, predicate, object (the statements
    about ``first``, an IRI, before the others)."""
    if first is None:
        return sorted(set(triples),
                      key=lambda t: (str(t.subject), str(t.predicate), str(t.object)))
    lead = f"<{first}>"
    return sorted(set(triples), key=lambda t: (str(t.subject) != lead, str(t.subject),
                                               str(t.predicate), str(t.object)))


def _sort_prefix_lines(data: bytes) -> bytes:
    """Put the serializer's leading ``@prefix`` lines in alphabetical order."""
    lines = data.split(b"\n")
    head = 0
    while head < len(lines) and lines[head].startswith(b"@prefix "):
        head += 1
    return b"\n".join(sorted(lines[:head]) + lines[head:])


def _space_blocks(data: bytes) -> bytes:
    """A blank line after the prefixes, between subjects and between graphs.

    Safe line by line: pyoxigraph escapes every line break inside a literal, so a line that
    ends with `` .`` or is ``}`` always ends a statement or a graph.
    """
    lines = data.split(b"\n")
    out: list[bytes] = []
    for index, line in enumerate(lines):
        out.append(line)
        following = lines[index + 1] if index + 1 < len(lines) else b""
        if not following or following.strip() == b"}":
            continue
        if line.startswith(b"@prefix "):
            if not following.startswith(b"@prefix "):
                out.append(b"")
        elif line.endswith(b" .") or line == b"}":
            out.append(b"")
    return b"\n".join(out)


def canonical_nquads(quads: Iterable[ox.Quad]) -> bytes:
    """RDFC-1.0 canonical N-Quads: canonical blank node labels, lines in code point order."""
    dataset = ox.Dataset(quads)
    dataset.canonicalize(ox.CanonicalizationAlgorithm.RDFC_1_0)
    text = (ox.serialize(dataset, format=ox.RdfFormat.N_QUADS) or b"").decode("utf-8")
    lines = sorted(set(text.splitlines()))
    return "".join(line + "\n" for line in lines).encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """Gzip ``data`` reproducibly: mtime 0 and no file name in the header, so the same input
    gives the same bytes (with the same zlib)."""
    return gzip.compress(data, compresslevel=6, mtime=0)


# ---------------------------------------------------------------------------------------
# JSON-LD, compacted with one stable context.

# The context of every JSON-LD document we write, and of /context.jsonld: the prefix table.
# It is the same whatever the data, so the compacted keys of two exports always agree and an
# offline parser needs nothing but the document.
JSONLD_CONTEXT: dict[str, Any] = {"@context": dict(sorted(PREFIXES.items()))}

_RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
_XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
_RDF_LANG_STRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"


class _Compactor:
    """Compact IRIs with the longest namespace of the context that starts them."""

    def __init__(self, prefixes: dict[str, str]):
        self.namespaces = sorted(prefixes.items(), key=lambda item: (-len(item[1]), item[0]))
        self.names = set(prefixes)
        self.cache: dict[str, str] = {}

    def iri(self, value: str) -> str:
        found = self.cache.get(value)
        if found is None:
            found = value
            for name, namespace in self.namespaces:
                local = value[len(namespace):]
                # JSON-LD 1.1 §4.1.3: a suffix starting with // is never a compact IRI.
                if value.startswith(namespace) and local and not local.startswith("//"):
                    found = f"{name}:{local}"
                    break
            if found == value and value.split(":", 1)[0] in self.names:
                # An absolute IRI whose scheme is one of our prefix names would be read as
                # a compact IRI; JSON-LD has no escape for that.
                raise ExportError(f"<{value}> cannot be written in JSON-LD with this context: "
                                  "its scheme is one of the context's prefix names")
            self.cache[value] = found
        return found

    def value(self, term: object) -> Any:
        if isinstance(term, ox.NamedNode):
            return {"@id": self.iri(term.value)}
        if isinstance(term, ox.BlankNode):
            return {"@id": f"_:{term.value}"}
        if isinstance(term, ox.Literal):
            if term.language:
                return {"@value": term.value, "@language": term.language}
            datatype = term.datatype.value
            if datatype == _XSD_STRING:
                return term.value
            return {"@value": term.value, "@type": self.iri(datatype)}
        raise ExportError(f"{term} cannot be written as JSON-LD 1.1 (RDF 1.1 terms only)")

    def node_id(self, term: object) -> str:
        if isinstance(term, ox.NamedNode):
            return self.iri(term.value)
        if isinstance(term, ox.BlankNode):
            return f"_:{term.value}"
        raise ExportError(f"{term} cannot be a JSON-LD node")


def _nodes(triples: list[ox.Triple], compactor: _Compactor) -> list[dict[str, Any]]:
    """Node objects for ``triples`` (sorted by subject, predicate, object)."""
    nodes: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    subject: object = None
    for triple in triples:
        if current is None or triple.subject != subject:
            subject = triple.subject
            current = {"@id": compactor.node_id(subject)}
            nodes.append(current)
        predicate = triple.predicate.value
        if predicate == _RDF_TYPE and isinstance(triple.object, ox.NamedNode):
            key, value = "@type", compactor.iri(triple.object.value)
        else:
            key, value = compactor.iri(predicate), compactor.value(triple.object)
        current.setdefault(key, []).append(value)
    out = []
    for node in nodes:
        keys = sorted(k for k in node if k not in ("@id", "@type"))
        compacted: dict[str, Any] = {"@id": node["@id"]}
        for key in (["@type"] if "@type" in node else []) + keys:
            values = node[key]
            compacted[key] = values[0] if len(values) == 1 else values
        out.append(compacted)
    return out


def compact_jsonld(quads: Iterable[ox.Quad]) -> bytes:
    """Compacted JSON-LD with :data:`JSONLD_CONTEXT` inline: one node object per subject,
    prefixed names for IRIs, each named graph as a graph object; sorted, pretty, stable."""
    compactor = _Compactor(JSONLD_CONTEXT["@context"])
    by_graph: dict[str, list[ox.Triple]] = {}
    graph_terms: dict[str, object] = {}
    for quad in quads:
        name = "" if isinstance(quad.graph_name, ox.DefaultGraph) else str(quad.graph_name)
        by_graph.setdefault(name, []).append(quad.triple)
        graph_terms[name] = quad.graph_name
    top: list[dict[str, Any]] = []
    for name in sorted(by_graph):
        nodes = _nodes(sort_triples(by_graph[name]), compactor)
        if name == "":
            top.extend(nodes)
        else:
            top.append({"@id": compactor.node_id(graph_terms[name]), "@graph": nodes})
    document = {**JSONLD_CONTEXT, "@graph": top}
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
