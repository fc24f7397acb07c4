"""The network of the real graph and its writers: every format parses, output is
deterministic, the picture has one element per node, PNG needs (and names) a renderer."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from project import load_real_store

from sasci_kg import network_svg
from sasci_kg.cli import main
from sasci_kg.errors import ExportError, QueryError
from sasci_kg.network import (
    MEDIA_TYPES,
    WRITERS,
    NetEdge,
    NetNode,
    Network,
    write_network,
)
from sasci_kg.store import open_store
from sasci_kg.trace import NETWORK_KINDS, Tracer

SVG = "{http://www.w3.org/2000/svg}"
GRAPHML = "{http://graphml.graphdrawing.org/xmlns}"
GEXF = "{http://gexf.net/1.3}"
TEXT_FORMATS = [f for f in WRITERS if f != "png"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_real_store(tmp_path_factory.mktemp("network") / "store")


@pytest.fixture(scope="module")
def tracer(store_path: Path) -> Tracer:
    return Tracer(open_store(store_path))


@pytest.fixture(scope="module")
def whole(tracer: Tracer) -> Network:
    return tracer.network()


def test_the_network_holds_the_funder_project_event_sessions_people_orgs(
        whole: Network) -> None:
    kinds = {n.id: n.kind for n in whole.nodes}
    assert kinds["org/esrc"] == "funder"
    assert kinds["project/sasci"] == "project"
    assert kinds["event/sasci-final-2024"] == "event"
    assert kinds["session/sasci-final-2024.shape-or-be-shaped"] == "session"
    assert kinds["person/emma-back"] == "person"
    assert kinds["org/thurrock-council"] == "organisation"
    assert "idea" not in kinds.values()  # ideas only when asked for
    assert {e.kind for e in whole.edges} == set(NETWORK_KINDS)
    assert all(e.source in kinds and e.target in kinds for e in whole.edges)
    funding = [e for e in whole.edges if e.kind == "funding"]
    assert [(e.source, e.target) for e in funding] == [("project/sasci", "org/esrc")]
    assert funding[0].facts == ("https://w3id.org/sasci-kg/id/fact/sasci.funder.esrc",)


def test_link_kinds_and_a_neighbourhood_can_be_chosen(tracer: Tracer) -> None:
    ideas = tracer.network(links=["idea"])
    assert {n.kind for n in ideas.nodes} >= {"idea", "person", "session"}
    near = tracer.network(around="Thurrock Council", hops=1)
    assert {n.id for n in near.nodes} == {"org/thurrock-council", "person/les-billingham",
                                          "person/ceri-armstrong", "person/ian-wake"}
    assert near.title == "Within 1 link of Thurrock Council"
    with pytest.raises(QueryError, match="too many to draw"):
        tracer.network(max_links=10)


def test_a_highlighted_path_is_marked(tracer: Tracer) -> None:
    marked = tracer.network(highlight=("Equal Care Co-op", "Thurrock Council"))
    on_path = {n.id for n in marked.nodes if n.highlighted}
    assert {"org/equal-care-co-op", "org/thurrock-council",
            "session/sasci-final-2024.shape-or-be-shaped"} <= on_path
    assert len([e for e in marked.edges if e.highlighted]) == 4
    assert "Equal Care Co-op → Thurrock Council" in marked.title


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_every_format_is_deterministic(tracer: Tracer, whole: Network, fmt: str) -> None:
    assert write_network(whole, fmt) == write_network(tracer.network(), fmt)


def test_svg_has_one_element_per_node_and_a_legend(whole: Network) -> None:
    root = ET.fromstring(write_network(whole, "svg"))
    assert root.tag == SVG + "svg"
    nodes = [g for g in root.iter(SVG + "g") if g.get("class", "").split()[:1] == ["node"]]
    assert len(nodes) == len(whole.nodes)
    assert {g.get("data-iri") for g in nodes} == {n.iri for n in whole.nodes}
    assert len([x for x in root.iter(SVG + "line") if "edge" in x.get("class", "")]) == \
        len(whole.edges)
    legend = [g for g in root.iter(SVG + "g") if g.get("class") == "legend"]
    assert legend and "funder" in "".join(legend[0].itertext())
    labels = {t.text for t in root.iter(SVG + "text")}
    assert {"Equal Care Co-op", "Economic and Social Research Council"} <= labels


def test_svg_marks_the_path_and_fades_the_rest(tracer: Tracer) -> None:
    marked = tracer.network(highlight=("KCL", "WCS Care"))
    root = ET.fromstring(write_network(marked, "svg"))
    faded = [g for g in root.iter(SVG + "g") if "faded" in g.get("class", "")]
    assert 0 < len(faded) < len(marked.nodes)
    assert "the connection traced" in "".join(root.itertext())


def test_layout_is_inside_the_unit_square_and_stable(whole: Network) -> None:
    places = network_svg.layout(whole)
    assert set(places) == {n.id for n in whole.nodes}
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in places.values())
    assert places == network_svg.layout(whole)


def test_graphml_and_gexf_parse(whole: Network) -> None:
    graphml = ET.fromstring(write_network(whole, "graphml"))
    assert len(list(graphml.iter(GRAPHML + "node"))) == len(whole.nodes)
    assert len(list(graphml.iter(GRAPHML + "edge"))) == len(whole.edges)
    gexf = ET.fromstring(write_network(whole, "gexf"))
    assert gexf.get("version") == "1.3"
    assert len(list(gexf.iter(GEXF + "node"))) == len(whole.nodes)
    assert len(list(gexf.iter(GEXF + "edge"))) == len(whole.edges)


def test_csv_dot_and_json(whole: Network) -> None:
    edges = list(csv.DictReader(io.StringIO(write_network(whole, "csv").decode())))
    assert len(edges) == len(whole.edges)
    assert set(edges[0]) == {"source", "target", "source_label", "target_label", "kind",
                             "label", "certainty", "facts"}
    nodes = list(csv.DictReader(io.StringIO(write_network(whole, "nodes-csv").decode())))
    assert [row["id"] for row in nodes] == [n.id for n in whole.nodes]
    dot = write_network(whole, "dot").decode()
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    assert dot.count(" -> ") == len(whole.edges)
    assert json.loads(write_network(whole, "json"))["nodes"][0]["id"] == whole.nodes[0].id
    assert set(MEDIA_TYPES) == set(WRITERS)


def awkward() -> Network:
    """Labels that break careless writers: markup, quotes, backslashes, non-ASCII."""
    nodes = (NetNode("org/a", "https://example.org/a", 'A <&> "B" \\ C’s', "organisation"),
             NetNode("person/b", "https://example.org/b", "Zoë\nNewline", "person"))
    edges = (NetEdge("person/b", "org/a", "affiliation", 'say "hi" & <bye>', "implied",
                     ("https://example.org/f?a=1&b=2",)),)
    return Network(nodes, edges, title="<Title> & 'quotes'")


@pytest.mark.parametrize("fmt", ["svg", "graphml", "gexf"])
def test_xml_writers_escape_everything(fmt: str) -> None:
    root = ET.fromstring(write_network(awkward(), fmt))
    label = 'A <&> "B" \\ C’s'
    if fmt == "gexf":
        assert [n.get("label") for n in root.iter(GEXF + "node")][0] == label
    else:
        assert label in "".join(root.itertext())


def test_dot_and_csv_quote_everything() -> None:
    dot = write_network(awkward(), "dot").decode()
    assert 'label="A <&> \\"B\\" \\\\ C’s"' in dot and "Zoë\\nNewline" in dot
    rows = list(csv.reader(io.StringIO(write_network(awkward(), "csv").decode())))
    assert rows[1][5] == 'say "hi" & <bye>'


def test_an_empty_network_still_draws() -> None:
    root = ET.fromstring(write_network(Network((), (), title="Nothing"), "svg"))
    assert root.tag == SVG + "svg"


def test_too_big_a_picture_is_refused_with_advice() -> None:
    nodes = tuple(NetNode(f"person/p{i}", f"https://example.org/p{i}", f"P{i}", "person")
                  for i in range(network_svg.MAX_SVG_NODES + 1))
    with pytest.raises(ExportError, match="--around ENTITY"):
        write_network(Network(nodes, ()), "svg")


def test_unknown_format() -> None:
    with pytest.raises(ExportError, match="unknown network format 'pdf'"):
        write_network(awkward(), "pdf")


def test_png_without_a_renderer_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network_svg, "png_renderer", lambda: None)
    with pytest.raises(ExportError) as caught:
        write_network(awkward(), "png")
    assert "apt-get install librsvg2-bin" in str(caught.value)
    assert "pip install cairosvg" in str(caught.value)


@pytest.mark.skipif(network_svg.png_renderer() is None,
                    reason="no PNG renderer (rsvg-convert or cairosvg) installed")
def test_png_with_a_renderer(whole: Network) -> None:
    assert write_network(whole, "png").startswith(b"\x89PNG\r\n\x1a\n")


# -- the CLI -------------------------------------------------------------------------------

def cli(store_path: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["network", "--store", str(store_path), *args],
                              catch_exceptions=False)


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_cli_network_formats(store_path: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"network.{fmt}"
    result = cli(store_path, "--format", fmt, "-o", str(out))
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    if fmt in ("svg", "graphml", "gexf"):
        ET.fromstring(data)
    elif fmt == "json":
        json.loads(data)
    elif fmt in ("csv", "nodes-csv"):
        assert next(csv.reader(io.StringIO(data.decode())))[0] in ("source", "id")
    else:
        assert data.startswith(b"digraph ")
    again = cli(store_path, "--format", fmt)
    assert again.exit_code == 0, again.output
    assert again.stdout_bytes == data


def test_cli_network_highlight_and_around(store_path: Path) -> None:
    result = cli(store_path, "--format", "json", "--highlight", "Emma Back",
                 "--highlight", "Ian Wake")
    assert result.exit_code == 0, result.output
    drawn = json.loads(result.stdout)
    assert {n["id"] for n in drawn["nodes"] if n["highlighted"]} == {
        "person/emma-back", "session/sasci-final-2024.shape-or-be-shaped", "person/ian-wake"}
    near = cli(store_path, "--format", "csv", "--around", "WCS Care", "--hops", "1")
    assert near.exit_code == 0, near.output
    assert len(near.stdout.splitlines()) == 2


def test_cli_network_usage_errors(store_path: Path) -> None:
    once = cli(store_path, "--highlight", "ESRC")
    assert once.exit_code == 2 and "give --highlight twice" in once.output
    unknown = cli(store_path, "--around", "Nobody At All")
    assert unknown.exit_code == 1 and "nothing in the graph is called" in unknown.output


def test_cli_png_names_the_renderer_to_install(store_path: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network_svg, "png_renderer", lambda: None)
    result = cli(store_path, "--format", "png", "-o", str(tmp_path / "n.png"))
    assert result.exit_code == 1
    assert "librsvg2-bin" in result.output and not (tmp_path / "n.png").exists()
