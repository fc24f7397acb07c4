"""Build the dataset: fact files + ontology → quads, SHACL-checked, written deterministically.

``build_dataset`` takes the data, ontology and (optional) source-text folders and gives a
:class:`BuildResult` with every quad in its graph; ``write_dataset`` writes it as sorted
N-Quads and prefixed TriG; ``load_inputs`` hands it to ``store.load_store``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyoxigraph as ox

from .errors import FactsError, Problem, ShaclError
from .export import serialize_quads
from .facts import FactSet, load_facts, paused_gc
from .mapping import facts_to_quads
from .shacl_sparql import ShaclResult as ShaclResult  # re-exported: callers import it here
from .shacl_sparql import ShapesGraph, UntranslatableShape, validate_quads
from .store import LoadInput
from .vocab import ONTOLOGY_GRAPH, SH, VOCAB_GRAPH
from .void import describe_dataset

ONTOLOGY_FILES = (("sasci.ttl", ONTOLOGY_GRAPH), ("vocab.ttl", VOCAB_GRAPH))
SHAPES_FILE = "shapes.ttl"

# How the build validates (``--shacl``): "sparql" translates the shapes into SPARQL queries
# run by Oxigraph (shacl_sparql.py); "pyshacl" runs pySHACL over an rdflib copy of the graph
# (the reference, but 42 s at 3·10⁴ triples and over 20 min at 10⁶); "auto" is "sparql", or
# pySHACL with a note when the shapes use a construct the translator lacks and the graph is
# small enough for pySHACL; "off" does not validate.
SHACL_MODES = ("auto", "sparql", "pyshacl", "off")
PYSHACL_FALLBACK_LIMIT = 100_000  # quads: pySHACL takes minutes beyond (benchmarks/README.md)


@dataclass
class BuildResult:
    """The built dataset: quads in their graphs, the facts they came from, SHACL findings."""

    quads: list[ox.Quad]
    facts: FactSet | None
    warnings: list[ShaclResult] = field(default_factory=list)
    meta: list[ox.Quad] = field(default_factory=list)  # …/graph/meta: VoID, DCAT (void.py)

    def graph_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for quad in self.quads:
            name = quad.graph_name.value if isinstance(quad.graph_name, ox.NamedNode) else ""
            sizes[name] = sizes.get(name, 0) + 1
        return dict(sorted(sizes.items()))


def read_ontology(ontology_dir: Path) -> Iterator[ox.Quad]:
    """The ontology and vocabulary files, each into its own named graph."""
    for name, graph in ONTOLOGY_FILES:
        path = ontology_dir / name
        if not path.exists():
            raise FactsError([Problem(str(path), 1, f"{name} is missing; restore it or pass "
                                      "--ontology DIR")])
        try:
            triples = list(ox.parse(path=str(path), format=ox.RdfFormat.TURTLE))
        except SyntaxError as exc:
            raise FactsError([Problem(str(path), 1, f"not valid Turtle: {exc}")]) from exc
        for triple in triples:
            if any(isinstance(t, ox.BlankNode) for t in (triple.subject, triple.object)):
                raise FactsError([Problem(str(path), 1, f"blank node in {triple}; published "
                                          "data has no blank nodes: give the node an IRI")])
            yield ox.Quad(triple.subject, triple.predicate, triple.object, graph)


def _one_graph_each(quads: Iterable[ox.Quad]) -> Iterator[ox.Quad]:
    """Keep each triple in the first graph that states it: the union default graph would
    count a triple twice if it lived in two graphs."""
    seen: set[ox.Triple] = set()
    for quad in quads:
        triple = quad.triple
        if triple not in seen:
            seen.add(triple)
            yield quad


def build_dataset(
    data_dir: Path | str,
    ontology_dir: Path | str,
    *,
    sources_dir: Path | str | None = None,
    shacl: bool | str = True,
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    """Facts + ontology → quads; raise FactsError or ShaclError on bad input.

    ``shacl`` is one of SHACL_MODES (True means "auto", False "off"). ``progress`` is called
    with each fact file's name once read (for a progress bar).
    """
    mode = shacl_mode(shacl)
    ontology = Path(ontology_dir)
    facts = load_facts(data_dir, ontology, sources_dir=sources_dir, progress=progress)
    with paused_gc():  # a million quads, no cycles: collections only cost time
        quads = list(_one_graph_each([*read_ontology(ontology), *facts_to_quads(facts)]))
    result = BuildResult(quads=quads, facts=facts)
    if mode != "off":
        result.warnings = check_shapes(quads, ontology / SHAPES_FILE, engine=mode)
    result.meta = describe_dataset(result, data_dir=data_dir, ontology_dir=ontology,
                                   shapes=mode != "off")
    return result


def shacl_mode(shacl: bool | str) -> str:
    """``True``/``False`` (the old flag) or a name of SHACL_MODES → the mode's name."""
    if shacl is True:
        return "auto"
    if shacl is False:
        return "off"
    if shacl not in SHACL_MODES:
        raise ShaclError(f"unknown SHACL mode {shacl!r}; use one of {', '.join(SHACL_MODES)}")
    return shacl


def check_shapes(quads: list[ox.Quad], shapes_path: Path, *,
                 engine: str = "auto") -> list[ShaclResult]:
    """Validate the union of all graphs; violations raise, warnings return.

    ``engine``: "sparql", "pyshacl" or "auto" (see SHACL_MODES).
    """
    if engine not in ("auto", "sparql", "pyshacl"):
        raise ShaclError(f"unknown SHACL engine {engine!r}; use auto, sparql or pyshacl")
    notes: list[ShaclResult] = []
    if engine == "pyshacl":
        results = _pyshacl_results(quads, shapes_path)
    else:
        shapes = ShapesGraph.from_file(shapes_path)
        try:
            results = validate_quads(quads, shapes)
        except UntranslatableShape as exc:
            if engine != "auto" or len(quads) > PYSHACL_FALLBACK_LIMIT:
                raise
            results = _pyshacl_results(quads, shapes_path)
            notes.append(ShaclResult("Info", shapes_path.as_posix(), "",
                                     f"validated with pySHACL: {exc}"))
    violations = [r for r in results if r.severity == "Violation"]
    if violations:
        lines = "\n".join(f"  {r}" for r in violations)
        raise ShaclError(f"the built graph breaks {len(violations)} SHACL constraint"
                         f"{'s' if len(violations) != 1 else ''} ({shapes_path}):\n{lines}\n"
                         "fix the fact records named above (or the shapes, if they are wrong)")
    return notes + [r for r in results if r.severity != "Violation"]


def _pyshacl_results(quads: list[ox.Quad], shapes_path: Path) -> list[ShaclResult]:
    """Every top-level result of pySHACL over the union of all graphs (rdflib copy)."""
    import pyshacl
    from rdflib import BNode, Graph, Literal, URIRef

    if not shapes_path.exists():
        raise ShaclError(f"{shapes_path}: the SHACL shapes are missing; restore them or build "
                         "with --shacl=off")
    data = Graph()
    triples = sorted({q.triple for q in quads}, key=str)
    data.parse(data=ox.serialize(triples, format=ox.RdfFormat.N_TRIPLES), format="nt")
    shapes = Graph().parse(shapes_path, format="turtle")
    _conforms, report, _text = pyshacl.validate(
        data, shacl_graph=shapes, inference="none", allow_warnings=True, advanced=True
    )
    sh = str(SH)

    def term(node: object) -> ox.NamedNode | ox.BlankNode | ox.Literal:
        if isinstance(node, URIRef):
            return ox.NamedNode(str(node))
        if isinstance(node, BNode):
            return ox.BlankNode(str(node))
        assert isinstance(node, Literal)
        if node.language:
            return ox.Literal(str(node), language=node.language)
        return ox.Literal(str(node), datatype=ox.NamedNode(str(node.datatype))
                          if node.datatype else None)

    def path_text(path: object) -> str:
        """An IRI as <…>; a complex path (sh:inversePath …) in SPARQL syntax."""
        if isinstance(path, URIRef):
            return f"<{path}>"
        if not isinstance(path, BNode):
            return ""
        triples, todo, seen = [], [path], set()
        while todo:  # the path's own triples, as the report copied them from the shapes
            node = todo.pop()
            seen.add(node)
            for p, o in report.predicate_objects(node):
                triples.append(ox.Triple(ox.BlankNode(str(node)), ox.NamedNode(str(p)), term(o)))
                if isinstance(o, BNode) and o not in seen:
                    todo.append(o)
        return ShapesGraph(triples).path(term(path))

    results: list[ShaclResult] = []
    # Top-level results only: results nested under sh:detail describe the same problem.
    for node in report.objects(None, URIRef(sh + "result")):
        severity = str(report.value(node, URIRef(sh + "resultSeverity"))).removeprefix(sh)
        # A SPARQL constraint's message is more precise than its shape's: prefer it.
        shape_messages = {str(m) for m in shapes.objects(
            report.value(node, URIRef(sh + "sourceShape")), URIRef(sh + "message"))}
        messages = sorted(str(m) for m in report.objects(node, URIRef(sh + "resultMessage")))
        precise = [m for m in messages if m not in shape_messages] or messages
        value = report.value(node, URIRef(sh + "value"))
        results.append(ShaclResult(
            severity=severity,
            focus=str(report.value(node, URIRef(sh + "focusNode"))),
            path=path_text(report.value(node, URIRef(sh + "resultPath"))),
            message=precise[0] if precise else "shape not satisfied",
            value="" if value is None else str(value),
        ))
    results.sort(key=lambda r: (r.severity, r.focus, r.path, r.message, r.value))
    return results


def write_dataset(result: BuildResult, out_dir: Path | str) -> list[Path]:
    """Write ``dataset.nq`` (sorted N-Quads) and ``dataset.trig`` (prefixed) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fmt in (("dataset.nq", "nq"), ("dataset.trig", "trig")):
        path = out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            tmp.write_bytes(serialize_quads(result.quads, fmt))
            tmp.replace(path)
        except OSError as exc:  # a full disk: leave no half-written file behind
            tmp.unlink(missing_ok=True)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        written.append(path)
    return written


def load_inputs(result: BuildResult) -> list[LoadInput]:
    """The built dataset and its description as one bulk-load input (N-Quads keep every
    graph)."""
    quads = [*result.quads, *result.meta]
    return [LoadInput(format=ox.RdfFormat.N_QUADS, data=serialize_quads(quads, "nq"),
                      label="curated graph")]
