"""Pictures of the network: a deterministic force-directed layout drawn as SVG, and PNG.

Takes a :class:`~sasci_kg.network.Network`; gives SVG bytes drawn here in pure Python
(no Graphviz or browser needed): nodes coloured by kind, labels with a halo, edges
dashed when only implied, a legend, and the highlighted path in red with the rest faded.
PNG is the same SVG rasterised by ``rsvg-convert`` or CairoSVG, whichever is installed.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from xml.sax.saxutils import escape, quoteattr

from .errors import ExportError
from .network import KIND_COLOURS, Network

MAX_SVG_NODES = 400
_RADIUS = {"funder": 13, "project": 13, "event": 13, "session": 10, "organisation": 8,
           "person": 6, "idea": 5, "other": 5}
_EDGE_COLOURS = {
    "funding": "#E69F00", "partnership": "#D55E00", "hosting": "#CC79A7",
    "unit": "#009E73", "affiliation": "#7F7F7F", "role": "#0072B2",
    "represented": "#56B4E9", "session": "#9E9AC8", "quote": "#999999", "idea": "#BBBBBB",
}
_HIGHLIGHT = "#C0392B"
_LEGEND_WIDTH = 210
_MARGIN = 40
_FONT = "Helvetica, Arial, sans-serif"


def layout(network: Network, *, iterations: int | None = None
           ) -> dict[str, tuple[float, float]]:
    """Node positions in [0, 1]², the same for the same network (Fruchterman–Reingold
    from a sunflower-spiral start, a fixed number of steps, no randomness)."""
    ids = [n.id for n in network.nodes]
    count = len(ids)
    if count == 0:
        return {}
    if count == 1:
        return {ids[0]: (0.5, 0.5)}
    index = {node: i for i, node in enumerate(ids)}
    golden = math.pi * (3 - math.sqrt(5))
    xs = [math.sqrt(i + 0.5) * math.cos(i * golden) for i in range(count)]
    ys = [math.sqrt(i + 0.5) * math.sin(i * golden) for i in range(count)]
    pairs = sorted({(min(index[e.source], index[e.target]), max(index[e.source], index[e.target]))
                    for e in network.edges if e.source in index and e.target in index
                    and e.source != e.target})
    k = 1.0  # the ideal edge length, in layout units
    steps = iterations or max(60, min(300, 6_000_000 // (count * count)))
    temperature = math.sqrt(count) / 2
    for step in range(steps):
        dx = [0.0] * count
        dy = [0.0] * count
        for i in range(count):
            xi, yi = xs[i], ys[i]
            for j in range(i + 1, count):
                ddx, ddy = xi - xs[j], yi - ys[j]
                dist2 = ddx * ddx + ddy * ddy or 1e-9
                force = k * k / dist2  # repulsion k²/d, along the unit vector (d/d²)
                dx[i] += ddx * force
                dy[i] += ddy * force
                dx[j] -= ddx * force
                dy[j] -= ddy * force
        for i, j in pairs:
            ddx, ddy = xs[i] - xs[j], ys[i] - ys[j]
            dist = math.sqrt(ddx * ddx + ddy * ddy) or 1e-9
            force = dist / k  # attraction d²/k, along the unit vector
            dx[i] -= ddx * force
            dy[i] -= ddy * force
            dx[j] += ddx * force
            dy[j] += ddy * force
        for i in range(count):  # a little gravity keeps separate parts in view
            dx[i] -= xs[i] * 0.05
            dy[i] -= ys[i] * 0.05
        cool = temperature * (1 - step / steps) + 0.01
        for i in range(count):
            length = math.sqrt(dx[i] * dx[i] + dy[i] * dy[i])
            if length > 0:
                move = min(length, cool) / length
                xs[i] += dx[i] * move
                ys[i] += dy[i] * move
    low_x, high_x, low_y, high_y = min(xs), max(xs), min(ys), max(ys)
    span_x, span_y = (high_x - low_x) or 1.0, (high_y - low_y) or 1.0
    return {node: ((xs[i] - low_x) / span_x, (ys[i] - low_y) / span_y)
            for node, i in index.items()}


def _num(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _xml_id(ref: str) -> str:
    return "n-" + re.sub(r"[^A-Za-z0-9_.-]", "-", ref)


def write_svg(network: Network) -> bytes:
    """The network as a standalone SVG document (see module docstring)."""
    if len(network.nodes) > MAX_SVG_NODES:
        raise ExportError(f"{len(network.nodes)} nodes are too many to draw readably (at most "
                          f"{MAX_SVG_NODES}); draw part of the network (--around ENTITY --hops "
                          "N, fewer --links) or write graphml/gexf for Gephi")
    count = max(len(network.nodes), 1)
    side = max(500.0, min(2600.0, 145.0 * math.sqrt(count)))
    width, height = side * 1.3, side
    # Room on the right for the longest label (about 6 px a character at 11 px).
    label_room = min(260.0, 6.2 * max((len(n.label) for n in network.nodes), default=0))
    positions = layout(network)
    place = {node: (_MARGIN + x * (width - 2 * _MARGIN - label_room),
                    _MARGIN + 30 + y * (height - 2 * _MARGIN - 30))
             for node, (x, y) in positions.items()}
    labels = {n.id: n.label for n in network.nodes}
    highlighting = any(n.highlighted for n in network.nodes)
    total_width = width + _LEGEND_WIDTH
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(total_width)}" '
           f'height="{_num(height)}" viewBox="0 0 {_num(total_width)} {_num(height)}" '
           f'font-family={quoteattr(_FONT)} role="img" aria-labelledby="title">',
           f'<title id="title">{escape(network.title or "Network")}</title>',
           "<style>text{font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:3px;"
           "stroke-linejoin:round}.faded{opacity:0.3}</style>",
           f'<rect width="{_num(total_width)}" height="{_num(height)}" fill="#ffffff"/>',
           f'<text x="{_MARGIN}" y="{_MARGIN - 10}" style="font-size:15px;font-weight:bold">'
           f"{escape(network.title)}</text>",
           '<g class="edges">']
    for e in network.edges:
        if e.source not in place or e.target not in place:
            continue
        (x1, y1), (x2, y2) = place[e.source], place[e.target]
        colour = _HIGHLIGHT if e.highlighted else _EDGE_COLOURS.get(e.kind, "#999999")
        attrs = [f'x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}"',
                 f'stroke="{colour}"',
                 f'stroke-width="{"3.5" if e.highlighted else "1.2"}"']
        if e.certainty != "stated":
            attrs.append('stroke-dasharray="5 3"')
        faded = ' faded' if highlighting and not e.highlighted else ''
        tip = f"{labels.get(e.source, e.source)} — {e.label} — {labels.get(e.target, e.target)}"
        out.append(f'<line class="edge{faded}" data-kind="{e.kind}" {" ".join(attrs)}>'
                   f"<title>{escape(tip)} ({e.certainty})</title></line>")
    out.append("</g>")
    out.append('<g class="nodes">')
    for n in network.nodes:
        x, y = place[n.id]
        radius = _RADIUS.get(n.kind, 5)
        faded = ' faded' if highlighting and not n.highlighted else ''
        stroke = (f'stroke="{_HIGHLIGHT}" stroke-width="3"' if n.highlighted
                  else 'stroke="#333333" stroke-width="0.8"')
        weight = ';font-weight:bold' if n.highlighted or n.kind in ("funder", "project",
                                                                     "event") else ''
        out.append(
            f'<g class="node{faded}" id="{_xml_id(n.id)}" data-kind="{n.kind}" '
            f'data-iri={quoteattr(n.iri)}><title>{escape(n.label)} ({n.kind})</title>'
            f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{radius}" '
            f'fill="{KIND_COLOURS.get(n.kind, "#999999")}" {stroke}/>'
            f'<text x="{_num(x + radius + 3)}" y="{_num(y + 4)}" style="fill:#222{weight}">'
            f"{escape(n.label)}</text></g>")
    out.append("</g>")
    out += _legend(network, width)
    out.append("</svg>")
    return ("\n".join(out) + "\n").encode("utf-8")


def _legend(network: Network, left: float) -> list[str]:
    node_kinds = [k for k in KIND_COLOURS if any(n.kind == k for n in network.nodes)]
    edge_kinds = [k for k in _EDGE_COLOURS if any(e.kind == k for e in network.edges)]
    x, y = left + 10, _MARGIN + 30
    out = ['<g class="legend">',
           f'<text x="{_num(x)}" y="{_num(y)}" style="font-weight:bold">Nodes</text>']
    for kind in node_kinds:
        y += 20
        out.append(f'<circle cx="{_num(x + 7)}" cy="{_num(y - 4)}" r="6" '
                   f'fill="{KIND_COLOURS[kind]}" stroke="#333333" stroke-width="0.8"/>'
                   f'<text x="{_num(x + 20)}" y="{_num(y)}">{kind}</text>')
    y += 30
    out.append(f'<text x="{_num(x)}" y="{_num(y)}" style="font-weight:bold">Links</text>')
    for kind in edge_kinds:
        y += 20
        out.append(f'<line x1="{_num(x)}" y1="{_num(y - 4)}" x2="{_num(x + 16)}" '
                   f'y2="{_num(y - 4)}" stroke="{_EDGE_COLOURS[kind]}" stroke-width="2"/>'
                   f'<text x="{_num(x + 20)}" y="{_num(y)}">{kind}</text>')
    y += 20
    out.append(f'<line x1="{_num(x)}" y1="{_num(y - 4)}" x2="{_num(x + 16)}" y2="{_num(y - 4)}" '
               'stroke="#555555" stroke-width="1.5" stroke-dasharray="5 3"/>'
               f'<text x="{_num(x + 20)}" y="{_num(y)}">implied by the source</text>')
    if any(e.highlighted for e in network.edges):
        y += 20
        out.append(f'<line x1="{_num(x)}" y1="{_num(y - 4)}" x2="{_num(x + 16)}" '
                   f'y2="{_num(y - 4)}" stroke="{_HIGHLIGHT}" stroke-width="3.5"/>'
                   f'<text x="{_num(x + 20)}" y="{_num(y)}">the connection traced</text>')
    out.append("</g>")
    return out


def png_renderer() -> str | None:
    """The PNG renderer available: "rsvg-convert", "cairosvg", or None."""
    if shutil.which("rsvg-convert"):
        return "rsvg-convert"
    try:
        import cairosvg  # noqa: F401
    except ImportError:
        return None
    return "cairosvg"


def write_png(network: Network) -> bytes:
    """The SVG picture rasterised; ExportError says what to install when nothing can."""
    renderer = png_renderer()
    svg = write_svg(network)
    if renderer == "rsvg-convert":
        done = subprocess.run(["rsvg-convert", "--format=png"], input=svg,
                              capture_output=True, check=False, timeout=120)
        if done.returncode != 0:
            raise ExportError("rsvg-convert could not draw the PNG: "
                              + done.stderr.decode("utf-8", "replace").strip())
        return done.stdout
    if renderer == "cairosvg":
        import cairosvg

        return bytes(cairosvg.svg2png(bytestring=svg))
    raise ExportError("PNG needs an SVG renderer and none is installed: install "
                      "rsvg-convert (Debian/Ubuntu: apt-get install librsvg2-bin) or "
                      "CairoSVG (pip install cairosvg); or write --format svg")
