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
from .store import LoadInput
from .vocab import ONTOLOGY_GRAPH, SH, VOCAB_GRAPH
from .void import describe_dataset

ONTOLOGY_FILES = (("sasci.ttl", ONTOLOGY_GRAPH), ("vocab.ttl", VOCAB_GRAPH))
SHAPES_FILE = "shapes.ttl"


@dataclass(frozen=True)
class ShaclResult:
    """One SHACL result: severity, focus node, path, message."""

    severity: str
    focus: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"{self.severity}: <{self.focus}>{where}: {self.message}"


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
    shacl: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    """Facts + ontology → quads; raise FactsError or ShaclError on bad input.

    ``progress`` is called with each fact file's name once read (for a progress bar).
    """
    ontology = Path(ontology_dir)
    facts = load_facts(data_dir, ontology, sources_dir=sources_dir, progress=progress)
    with paused_gc():  # a million quads, no cycles: collections only cost time
        quads = list(_one_graph_each([*read_ontology(ontology), *facts_to_quads(facts)]))
    result = BuildResult(quads=quads, facts=facts)
    if shacl:
        result.warnings = check_shapes(quads, ontology / SHAPES_FILE)
    result.meta = describe_dataset(result, data_dir=data_dir, ontology_dir=ontology, shapes=shacl)
    return result


def check_shapes(quads: list[ox.Quad], shapes_path: Path) -> list[ShaclResult]:
    """Validate the union of all graphs with pySHACL; violations raise, warnings return."""
    import pyshacl
    from rdflib import Graph, URIRef
    from rdflib.namespace import RDF as RDFLIB_RDF

    if not shapes_path.exists():
        raise ShaclError(f"{shapes_path}: the SHACL shapes are missing; restore them or build "
                         "with --no-shacl")
    data = Graph()
    triples = sorted({q.triple for q in quads}, key=str)
    data.parse(data=ox.serialize(triples, format=ox.RdfFormat.N_TRIPLES), format="nt")
    shapes = Graph().parse(shapes_path, format="turtle")
    _conforms, report, _text = pyshacl.validate(
        data, shacl_graph=shapes, inference="none", allow_warnings=True, advanced=True
    )
    results: list[ShaclResult] = []
    sh = str(SH)
    for node in report.subjects(RDFLIB_RDF.type, URIRef(sh + "ValidationResult")):
        severity = str(report.value(node, URIRef(sh + "resultSeverity"))).removeprefix(sh)
        message = report.value(node, URIRef(sh + "resultMessage"))
        path = report.value(node, URIRef(sh + "resultPath"))
        results.append(ShaclResult(
            severity=severity,
            focus=str(report.value(node, URIRef(sh + "focusNode"))),
            path=f"<{path}>" if isinstance(path, URIRef) else "",
            message=str(message) if message is not None else "shape not satisfied",
        ))
    results.sort(key=lambda r: (r.severity, r.focus, r.path, r.message))
    violations = [r for r in results if r.severity == "Violation"]
    if violations:
        lines = "\n".join(f"  {r}" for r in violations)
        raise ShaclError(f"the built graph breaks {len(violations)} SHACL constraint"
                         f"{'s' if len(violations) != 1 else ''} ({shapes_path}):\n{lines}\n"
                         "fix the fact records named above (or the shapes, if they are wrong)")
    return [r for r in results if r.severity != "Violation"]


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
