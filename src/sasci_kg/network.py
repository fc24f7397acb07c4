"""The network of who is connected to whom, and writers for it.

Takes a :class:`Network` (nodes and typed edges, from :mod:`sasci_kg.trace`) and writes
it as SVG (drawn here, see :mod:`sasci_kg.network_svg`), PNG (when a renderer is
installed), GraphML, GEXF, CSV (edges, or nodes), DOT or JSON. Every writer is
deterministic: the same network gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ExportError

#: Colour of each node kind (colour-blind-safe, after Okabe & Ito), used by SVG/DOT/GEXF.
KIND_COLOURS: dict[str, str] = {
    "funder": "#E69F00",
    "project": "#D55E00",
    "event": "#CC79A7",
    "session": "#56B4E9",
    "organisation": "#009E73",
    "person": "#F0E442",
    "idea": "#BBBBBB",
    "other": "#999999",
}
KIND_NAMES: dict[str, str] = {
    "funder": "funder", "project": "project", "event": "event", "session": "session",
    "organisation": "organisation", "person": "person", "idea": "idea", "other": "other",
}


@dataclass(frozen=True)
class NetNode:
    """A node: a short id (``person/emma-back``), its IRI, label and kind."""

    id: str
    iri: str
    label: str
    kind: str
    highlighted: bool = False


@dataclass(frozen=True)
class NetEdge:
    """A typed edge between two node ids, with the facts behind it."""

    source: str
    target: str
    kind: str
    label: str
    certainty: str
    facts: tuple[str, ...] = ()
    highlighted: bool = False


@dataclass(frozen=True)
class Network:
    """Nodes and edges, sorted; ``title`` heads the picture."""

    nodes: tuple[NetNode, ...]
    edges: tuple[NetEdge, ...]
    title: str = ""
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "nodes": [{"id": n.id, "iri": n.iri, "label": n.label, "kind": n.kind,
                       "highlighted": n.highlighted} for n in self.nodes],
            "edges": [{"source": e.source, "target": e.target, "kind": e.kind,
                       "label": e.label, "certainty": e.certainty, "facts": list(e.facts),
                       "highlighted": e.highlighted} for e in self.edges],
            "notes": list(self.notes),
        }


def write_json(network: Network) -> bytes:
    return (json.dumps(network.to_dict(), indent=2, ensure_ascii=False) + "\n").encode()


def write_edges_csv(network: Network) -> bytes:
    """One row per edge: ids, labels, kind, label, certainty, facts (space-separated)."""
    labels = {n.id: n.label for n in network.nodes}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["source", "target", "source_label", "target_label", "kind", "label",
                     "certainty", "facts"])
    for e in network.edges:
        writer.writerow([e.source, e.target, labels.get(e.source, ""),
                         labels.get(e.target, ""), e.kind, e.label, e.certainty,
                         " ".join(e.facts)])
    return out.getvalue().encode()


def write_nodes_csv(network: Network) -> bytes:
    """One row per node: id, IRI, label, kind."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "iri", "label", "kind"])
    for n in network.nodes:
        writer.writerow([n.id, n.iri, n.label, n.kind])
    return out.getvalue().encode()


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def write_graphml(network: Network) -> bytes:
    """GraphML with label, kind and IRI on nodes; kind, label, certainty, facts on edges."""
    ns = "http://graphml.graphdrawing.org/xmlns"
    root = ET.Element("graphml", {"xmlns": ns})
    keys = [("node", "label"), ("node", "kind"), ("node", "iri"), ("edge", "kind"),
            ("edge", "label"), ("edge", "certainty"), ("edge", "facts")]
    for domain, name in keys:
        ET.SubElement(root, "key", {"id": f"{domain[0]}_{name}", "for": domain,
                                    "attr.name": name, "attr.type": "string"})
    graph = ET.SubElement(root, "graph", {"id": "sasci-kg", "edgedefault": "directed"})
    for n in network.nodes:
        node = ET.SubElement(graph, "node", {"id": n.id})
        for key, value in (("n_label", n.label), ("n_kind", n.kind), ("n_iri", n.iri)):
            ET.SubElement(node, "data", {"key": key}).text = value
    for i, e in enumerate(network.edges):
        edge = ET.SubElement(graph, "edge", {"id": f"e{i}", "source": e.source,
                                             "target": e.target})
        for key, value in (("e_kind", e.kind), ("e_label", e.label),
                           ("e_certainty", e.certainty), ("e_facts", " ".join(e.facts))):
            ET.SubElement(edge, "data", {"key": key}).text = value
    return _xml(root)


def _rgb(colour: str) -> dict[str, str]:
    return {"r": str(int(colour[1:3], 16)), "g": str(int(colour[3:5], 16)),
            "b": str(int(colour[5:7], 16))}


def write_gexf(network: Network) -> bytes:
    """GEXF 1.3 (Gephi): labels, kind/IRI attributes, colours per kind."""
    root = ET.Element("gexf", {"xmlns": "http://gexf.net/1.3", "version": "1.3",
                               "xmlns:viz": "http://gexf.net/1.3/viz"})
    meta = ET.SubElement(root, "meta")
    ET.SubElement(meta, "creator").text = "sasci-kg"
    ET.SubElement(meta, "description").text = network.title or "SASCI knowledge graph network"
    graph = ET.SubElement(root, "graph", {"defaultedgetype": "directed", "mode": "static"})
    for cls, names in (("node", ("kind", "iri")), ("edge", ("kind", "certainty", "facts"))):
        attributes = ET.SubElement(graph, "attributes", {"class": cls})
        for i, name in enumerate(names):
            ET.SubElement(attributes, "attribute", {"id": str(i), "title": name,
                                                    "type": "string"})
    nodes = ET.SubElement(graph, "nodes")
    for n in network.nodes:
        node = ET.SubElement(nodes, "node", {"id": n.id, "label": n.label})
        values = ET.SubElement(node, "attvalues")
        for i, value in enumerate((n.kind, n.iri)):
            ET.SubElement(values, "attvalue", {"for": str(i), "value": value})
        ET.SubElement(node, "viz:color", _rgb(KIND_COLOURS.get(n.kind, "#999999")))
    edges = ET.SubElement(graph, "edges")
    for i, e in enumerate(network.edges):
        edge = ET.SubElement(edges, "edge", {"id": f"e{i}", "source": e.source,
                                             "target": e.target, "label": e.label})
        values = ET.SubElement(edge, "attvalues")
        for j, value in enumerate((e.kind, e.certainty, " ".join(e.facts))):
            ET.SubElement(values, "attvalue", {"for": str(j), "value": value})
    return _xml(root)


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DOT_SHAPES = {"person": "ellipse", "session": "box", "event": "box", "idea": "note",
               "project": "hexagon", "funder": "octagon", "organisation": "box"}


def write_dot(network: Network) -> bytes:
    """Graphviz DOT: a digraph, nodes filled by kind, implied edges dashed."""
    lines = [f"digraph {_dot_string(network.title or 'sasci-kg')} {{",
             "  graph [overlap=false, splines=true, fontname=\"Helvetica\"];",
             "  node [style=\"filled,rounded\", fontname=\"Helvetica\", fontsize=10];",
             "  edge [fontname=\"Helvetica\", fontsize=8];"]
    for n in network.nodes:
        attrs = [f"label={_dot_string(n.label)}",
                 f"fillcolor={_dot_string(KIND_COLOURS.get(n.kind, '#999999'))}",
                 f"shape={_DOT_SHAPES.get(n.kind, 'ellipse')}",
                 f"tooltip={_dot_string(n.iri)}"]
        if n.highlighted:
            attrs.append("penwidth=3")
        lines.append(f"  {_dot_string(n.id)} [{', '.join(attrs)}];")
    for e in network.edges:
        attrs = [f"label={_dot_string(e.label)}"]
        if e.certainty != "stated":
            attrs.append("style=dashed")
        if e.highlighted:
            attrs += ["penwidth=3", 'color="#C0392B"']
        lines.append(f"  {_dot_string(e.source)} -> {_dot_string(e.target)} "
                     f"[{', '.join(attrs)}];")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode()


def _svg(network: Network) -> bytes:
    from .network_svg import write_svg

    return write_svg(network)


def _png(network: Network) -> bytes:
    from .network_svg import write_png

    return write_png(network)


WRITERS: dict[str, Callable[[Network], bytes]] = {
    "svg": _svg,
    "png": _png,
    "graphml": write_graphml,
    "gexf": write_gexf,
    "csv": write_edges_csv,
    "nodes-csv": write_nodes_csv,
    "dot": write_dot,
    "json": write_json,
}
MEDIA_TYPES: dict[str, str] = {
    "svg": "image/svg+xml", "png": "image/png", "graphml": "application/graphml+xml",
    "gexf": "application/gexf+xml", "csv": "text/csv", "nodes-csv": "text/csv",
    "dot": "text/vnd.graphviz", "json": "application/json",
}


def write_network(network: Network, format_name: str) -> bytes:
    """The network in one of :data:`WRITERS`' formats."""
    writer = WRITERS.get(format_name)
    if writer is None:
        raise ExportError(f"unknown network format '{format_name}'; use one of: "
                          f"{', '.join(WRITERS)}")
    return writer(network)
