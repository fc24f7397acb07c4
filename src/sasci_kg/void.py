"""The dataset describes itself: VoID and DCAT statistics, downloads and build provenance.

:func:`describe_dataset` takes a built dataset (``build.BuildResult``) and gives the quads of
the ``…/graph/meta`` graph: figures counted over the data graphs (never over itself), one
subset per named graph with the source it came from, a distribution per download (its URL,
media type and format), licence and rights, and the build as a PROV activity (when, from
which files, with which software). The build time is ``SOURCE_DATE_EPOCH``, else the last
commit of the data folder, so the same inputs give the same bytes.

The downloads are not made at build time: serialising the whole dataset in six formats took
most of a build (77 of 92 s at 10^6 triples) and more than doubled its memory, and their sizes and
checksums could not be promised true anyway (``sasci-kg load FILE…`` adds graphs to the
store, a remote engine may rewrite literals). The server makes each one from the store on
first request (:mod:`sasci_kg.downloads`) and sends its sha256 as the ETag.
:func:`download_bytes` gives a download's bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import pyoxigraph as ox

from . import __version__
from .errors import FactsError, Problem
from .export import FORMATS, get_format, gzip_bytes, serialize_quads
from .facts import paused_gc
from .vocab import (
    BASE,
    DCAT,
    DCTERMS,
    FOAF,
    GRAPH,
    ID,
    ONTOLOGY_GRAPH,
    PREFIXES,
    PROV,
    RDF,
    RDFS,
    SCHEMA,
    SOURCE_GRAPH,
    VOCAB_GRAPH,
    VOID,
    XSD,
    Namespace,
)

if TYPE_CHECKING:
    from .build import BuildResult

MEDIA_TYPES = Namespace("http://www.iana.org/assignments/media-types/")
W3C_FORMATS = Namespace("http://www.w3.org/ns/formats/")

META_GRAPH = GRAPH.meta
DATASET = ID.term("dataset/sasci-kg")
LICENCE = ox.NamedNode("https://creativecommons.org/licenses/by/4.0/")
CREATOR = "sasci-kg contributors"
DOWNLOAD_STEM = "sasci-kg"
RIGHTS = (
    "The curated facts, the ontology and the controlled vocabularies are licensed under "
    "Creative Commons Attribution 4.0 International (CC BY 4.0). The source documents they "
    "cite are third-party texts that are not ours to license: only short excerpts of them "
    "are quoted, as evidence for the facts, under fair dealing for criticism, review and "
    "quotation; the full texts are not redistributed."
)
# The W3C format identifiers (void:feature) of the download formats.
_FEATURES = {"ttl": "Turtle", "nt": "N-Triples", "nq": "N-Quads", "trig": "TriG",
             "jsonld": "JSON-LD", "rdfxml": "RDF_XML"}
_TITLES = {"ttl": "Turtle", "nt": "N-Triples", "nq": "N-Quads", "trig": "TriG",
           "jsonld": "JSON-LD", "rdfxml": "RDF/XML"}


@dataclass(frozen=True)
class Download:
    """One downloadable file of the whole dataset: ``sasci-kg.ttl``, ``sasci-kg.nq.gz``, …"""

    format: str  # a key of export.FORMATS
    gzip: bool

    @property
    def filename(self) -> str:
        name = f"{DOWNLOAD_STEM}.{get_format(self.format).extension}"
        return name + ".gz" if self.gzip else name

    @property
    def media_type(self) -> str:
        """The media type of the data (of the content inside, for a gzip file)."""
        return get_format(self.format).media_type

    @property
    def url(self) -> ox.NamedNode:
        return ox.NamedNode(f"{BASE}download/{self.filename}")

    @property
    def node(self) -> ox.NamedNode:
        return ID.term("distribution/" + self.filename.replace(".", "-"))


DOWNLOADS: tuple[Download, ...] = tuple(
    Download(name, compressed) for name in FORMATS for compressed in (False, True)
)


def find_download(filename: str) -> Download | None:
    """The download called ``filename``, or None."""
    return next((d for d in DOWNLOADS if d.filename == filename), None)


def data_quads(quads: Iterable[ox.Quad]) -> Iterator[ox.Quad]:
    """The quads the dataset counts and publishes: every graph but the description."""
    return (q for q in quads if q.graph_name != META_GRAPH)


def download_bytes(quads: Iterable[ox.Quad], download: Download) -> bytes:
    """The bytes of a download: the data quads, exported deterministically (and gzipped)."""
    data = serialize_quads(data_quads(quads), download.format)
    return gzip_bytes(data) if download.gzip else data


def normalise(quads: Iterable[ox.Quad]) -> list[ox.Quad]:
    """The quads as a store gives them back (Oxigraph keeps some literals in canonical form,
    e.g. ``"01"^^xsd:integer`` becomes ``"1"``): what the downloads are made of, given the
    quads of a build. (:func:`count` does the same for the few typed literals only.)"""
    store = ox.Store()
    store.extend(quads)
    return list(store)


# ---------------------------------------------------------------------------------------
# Build provenance: when, from which files, with which software.


def build_time(data_dir: Path, files: Iterable[Path] = ()) -> int:
    """Seconds since the epoch: ``SOURCE_DATE_EPOCH``, else the last commit of ``data_dir``,
    else the newest modification time of ``files``."""
    env = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if env:
        if not env.isdigit():
            raise FactsError([Problem("SOURCE_DATE_EPOCH", 1, f"{env!r} is not a number of "
                                      "seconds since 1970-01-01; unset it or fix it")])
        return int(env)
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%ct", "--", "."], cwd=data_dir, capture_output=True,
            text=True, timeout=20, check=False,
        )
        if done.returncode == 0 and done.stdout.strip().isdigit():
            return int(done.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return max((int(p.stat().st_mtime) for p in files), default=0)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_files(data_dir: Path, ontology_dir: Path, *, shapes: bool) -> list[tuple[str, Path]]:
    """(name, path) of every file the build read, sorted; names are relative to the folders'
    parent (``data/…``, ``ontology/…``)."""
    from .build import ONTOLOGY_FILES, SHAPES_FILE

    found: list[tuple[str, Path]] = []
    for folder in sorted(p for p in data_dir.iterdir() if (p / "source.yaml").is_file()):
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            found.append((f"{data_dir.name}/{folder.name}/{path.name}", path))
    names = [name for name, _ in ONTOLOGY_FILES] + ([SHAPES_FILE] if shapes else [])
    for name in names:
        path = ontology_dir / name
        if path.is_file():
            found.append((f"{ontology_dir.name}/{name}", path))
    return sorted(found)


def software() -> list[tuple[str, str]]:
    """(name, version) of the software that builds the dataset."""
    found = [("sasci-kg", __version__)]
    for name in ("pyoxigraph", "pyshacl", "rdflib", "PyYAML"):
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return found


# ---------------------------------------------------------------------------------------
# The description.


class _Writer:
    def __init__(self, said: frozenset[str]):
        self.quads: list[ox.Quad] = []
        self.said = said  # what the data graphs say about META_SUBJECTS, as N-Triples

    def add(self, s: ox.NamedNode, p: ox.NamedNode, o: ox.NamedNode | ox.Literal) -> None:
        if not s.value.startswith(META_SUBJECTS):
            raise RuntimeError(f"{s} is outside META_SUBJECTS: add its prefix there, or the "
                               "description may repeat a triple of the data")
        # Each triple lives in one graph: what a data graph already says is not repeated.
        if f"{s} {p} {o}" not in self.said:
            self.quads.append(ox.Quad(s, p, o, META_GRAPH))

    def count(self, s: ox.NamedNode, p: ox.NamedNode, n: int) -> None:
        self.add(s, p, ox.Literal(str(n), datatype=XSD.integer))

    def text(self, s: ox.NamedNode, p: ox.NamedNode, value: str, lang: str | None = "en") -> None:
        self.add(s, p, ox.Literal(value, language=lang) if lang else ox.Literal(value))


def _local_name(iri: str) -> str:
    """A readable, IRI-safe name for a class or property: ``schema-Person``."""
    for name, namespace in sorted(PREFIXES.items(), key=lambda i: -len(i[1])):
        local = iri[len(namespace):]
        if iri.startswith(namespace) and local and all(c.isalnum() or c in "-_" for c in local):
            return f"{name}-{local}"
    return "iri-" + hashlib.sha256(iri.encode()).hexdigest()[:12]


def _namespace(iri: str) -> str:
    cut = max(iri.rfind("#"), iri.rfind("/"))
    return iri[: cut + 1]


# The subjects the description says things about: data triples about them are looked up
# (each triple lives in one graph, so the description repeats none of them).
META_SUBJECTS: tuple[str, ...] = (
    str(GRAPH), *(ID.term(kind).value for kind in ("dataset/", "distribution/", "build/",
                                                  "file/", "software/")),
)
_CHUNK = 100_000  # quads serialised and counted at a time: the memory stays small at 10^7
_RDF_TYPE = f"<{RDF.type.value}>"


@dataclass(frozen=True)
class Figures:
    """VoID figures of a set of quads, as a store holds them (each quad counted once)."""

    triples: int
    entities: int
    distinct_subjects: int
    distinct_objects: int
    classes: dict[str, int]  # class IRI → instances
    properties: dict[str, int]  # property IRI → triples
    graphs: dict[str, int]  # graph IRI → triples ("" for the default graph)
    examples: dict[str, str] = field(default_factory=dict)  # class IRI → its first instance
    # N-Triples ``s p o`` of the triples whose subject is under one of the ``keep`` prefixes.
    statements: frozenset[str] = frozenset()


class _Tally:
    """Counts N-Quads lines. Terms are compared as their N-Triples text, which is one to one
    with the terms; reading them as strings is several times faster than as pyoxigraph
    objects (each attribute access builds a new Python object)."""

    def __init__(self, keep: tuple[str, ...]):
        self.quads = 0
        self.subjects: set[str] = set()
        self.objects: set[str] = set()
        self.instances: dict[str, set[str]] = {}
        self.properties: dict[str, int] = {}
        self.graphs: dict[str, int] = {}
        self.keep = tuple("<" + prefix for prefix in keep)
        self.statements: set[str] = set()
        self.typed: list[str] = []  # lines with a typed literal, counted once normalised
        self.skip = f"<{META_GRAPH.value}>"

    def add(self, text: str, *, defer_typed: bool) -> None:
        subjects, objects, properties, graphs = (self.subjects, self.objects, self.properties,
                                                 self.graphs)
        keep, skip = self.keep, self.skip
        for line in text.split("\n"):
            if not line:
                continue
            s, p, rest = line.split(" ", 2)
            body = rest[:-2]  # without " ."
            # The graph is the last term when it is an IRI with no '"' in it: an IRI holds
            # neither spaces nor quotes, and the last space-separated piece of a literal
            # always holds its closing quote.
            cut = body.rfind(" ")
            tail = body[cut + 1:] if cut >= 0 else ""
            if tail[:1] == "<" and tail[-1:] == ">" and '"' not in tail:
                o, g = body[:cut], tail
            else:
                o, g = body, ""
            if g == skip:
                continue
            if defer_typed and o[0] == '"' and o[-1] == ">":
                self.typed.append(line)
                continue
            self.quads += 1
            subjects.add(s)
            objects.add(o)
            properties[p] = properties.get(p, 0) + 1
            graphs[g] = graphs.get(g, 0) + 1
            if p == _RDF_TYPE and o[0] == "<":
                self.instances.setdefault(o, set()).add(s)
            if s.startswith(keep):
                self.statements.add(f"{s} {p} {o}")

    def add_typed(self) -> None:
        """Count the lines with typed literals as a store keeps them: Oxigraph writes some
        in canonical form (``"01"^^xsd:integer`` is ``"1"``), which can merge two quads."""
        if self.typed:
            store = ox.Store()
            store.load("\n".join(self.typed).encode("utf-8"), format=ox.RdfFormat.N_QUADS)
            self.typed = []
            text = (ox.serialize(store, format=ox.RdfFormat.N_QUADS) or b"").decode("utf-8")
            self.add(text, defer_typed=False)


def _iri(term: str) -> str:
    return term[1:-1] if term.startswith("<") else term


def count(quads: Iterable[ox.Quad], *, keep: tuple[str, ...] = ()) -> Figures:
    """Count what VoID reports over ``quads`` but the description's own graph, as a store
    would hold them. Entities are the distinct IRIs under ``…/id/`` used as subjects (the
    dataset's ``void:uriSpace``). The input is taken to hold no quad twice (a build never
    does: each triple lives in one graph)."""
    tally = _Tally(keep)
    items = iter(quads)
    with paused_gc():  # millions of strings, no cycles
        while chunk := list(islice(items, _CHUNK)):
            text = (ox.serialize(chunk, format=ox.RdfFormat.N_QUADS) or b"").decode("utf-8")
            tally.add(text, defer_typed=True)
        tally.add_typed()
    space = f"<{ID}"
    examples: dict[str, str] = {}
    for c, subjects in tally.instances.items():  # only IRIs are examples
        iris = [s for s in subjects if s.startswith("<")]
        if iris:
            examples[_iri(c)] = _iri(min(iris, key=_iri))
    return Figures(
        triples=tally.quads,
        entities=sum(1 for s in tally.subjects if s.startswith(space)),
        distinct_subjects=len(tally.subjects),
        distinct_objects=len(tally.objects),
        classes=dict(sorted((_iri(c), len(s)) for c, s in tally.instances.items())),
        properties=dict(sorted((_iri(p), n) for p, n in tally.properties.items())),
        graphs=dict(sorted((_iri(g), n) for g, n in tally.graphs.items())),
        examples=dict(sorted(examples.items())),
        statements=frozenset(tally.statements),
    )


def describe_dataset(
    result: BuildResult,
    *,
    data_dir: Path | str,
    ontology_dir: Path | str,
    shapes: bool = True,
) -> list[ox.Quad]:
    """The quads of ``…/graph/meta``: VoID, DCAT and PROV about the built dataset."""
    data_dir, ontology_dir = Path(data_dir), Path(ontology_dir)
    figures = count(result.quads, keep=META_SUBJECTS)
    files = input_files(data_dir, ontology_dir, shapes=shapes)
    when = build_time(data_dir, [path for _, path in files])
    file_hashes = [(name, _sha256(path), path.stat().st_size) for name, path in files]
    tools = software()
    build_id = hashlib.sha256(
        repr((file_hashes, tools, sorted(figures.graphs.items()))).encode()
    ).hexdigest()[:16]
    stamp = dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = _Writer(figures.statements)
    d = DATASET
    add = out.add

    # The dataset.
    for cls in (VOID.Dataset, DCAT.Dataset):
        add(d, RDF.type, cls)
    out.text(d, DCTERMS.title, "SASCI knowledge graph")
    out.text(d, RDFS.label, "SASCI knowledge graph")
    out.text(d, DCTERMS.description,
             "Who took part in the final event of the Supporting Adult Social Care Innovation "
             "(SASCI) project (2 October 2024), in which sessions and roles, for which "
             "organisations, what they said, which ideas were discussed, and how the project, "
             "its partners and its funder connect; every fact with its source, certainty and "
             "the excerpt of the source that evidences it.")
    out.text(d, DCTERMS.creator, CREATOR, None)
    add(d, DCTERMS.license, LICENCE)
    out.text(d, DCTERMS.rights, RIGHTS)
    add(d, DCTERMS.modified, ox.Literal(stamp, datatype=XSD.dateTime))
    out.text(d, DCAT.version, f"{stamp[:10]}+{build_id[:8]}", None)
    add(d, DCAT.landingPage, ox.NamedNode(BASE))
    add(d, VOID.sparqlEndpoint, ox.NamedNode(BASE + "sparql"))
    add(d, VOID.uriSpace, ox.Literal(str(ID)))
    add(d, VOID.vocabulary, ox.NamedNode(BASE + "def"))
    for ns in sorted({_namespace(c) for c in [*figures.classes, *figures.properties]}):
        if ns and ns != BASE + "def#":
            add(d, VOID.vocabulary, ox.NamedNode(ns))
    add(d, PROV.wasGeneratedBy, ID.term(f"build/{build_id}"))
    out.count(d, VOID.triples, figures.triples)
    out.count(d, VOID.entities, figures.entities)
    out.count(d, VOID.distinctSubjects, figures.distinct_subjects)
    out.count(d, VOID.distinctObjects, figures.distinct_objects)
    out.count(d, VOID.properties, len(figures.properties))
    out.count(d, VOID.classes, len(figures.classes))
    for class_iri, n in figures.classes.items():
        node = ID.term(f"dataset/sasci-kg.class.{_local_name(class_iri)}")
        add(d, VOID.classPartition, node)
        add(node, VOID["class"], ox.NamedNode(class_iri))
        out.count(node, VOID.entities, n)
    for prop, n in figures.properties.items():
        node = ID.term(f"dataset/sasci-kg.property.{_local_name(prop)}")
        add(d, VOID.propertyPartition, node)
        add(node, VOID.property, ox.NamedNode(prop))
        out.count(node, VOID.triples, n)
    project = figures.examples.get(SCHEMA.ResearchProject.value)
    if project is not None:
        add(d, VOID.exampleResource, ox.NamedNode(project))

    # One subset per named graph, and where it came from.
    origins = {ONTOLOGY_GRAPH.value: f"{ontology_dir.name}/sasci.ttl",
               VOCAB_GRAPH.value: f"{ontology_dir.name}/vocab.ttl"}
    for graph, n in figures.graphs.items():
        if not graph:
            continue
        node = ox.NamedNode(graph)
        add(d, VOID.subset, node)
        add(node, RDF.type, VOID.Dataset)
        out.count(node, VOID.triples, n)
        add(node, DCTERMS.license, LICENCE)
        if graph.startswith(str(SOURCE_GRAPH)):
            add(node, DCTERMS.source, ID.term("source/" + graph[len(str(SOURCE_GRAPH)):]))
        elif graph in origins:
            add(node, DCTERMS.source, ID.term("file/" + origins[graph]))

    # The downloads: where, in which format. Not their size or checksum: the server makes
    # them from the store on first request (sasci_kg.downloads) and gives the sha256 as
    # the ETag; serialising everything here cost most of a build, and a store loaded with
    # more files (or a remote engine) would serve other bytes than the build saw.
    for download in DOWNLOADS:
        node = download.node
        fmt = get_format(download.format)
        add(d, DCAT.distribution, node)
        add(d, VOID.dataDump, download.url)
        add(node, RDF.type, DCAT.Distribution)
        title = _TITLES[download.format] + (", gzipped" if download.gzip else "")
        out.text(node, DCTERMS.title, f"The whole dataset as {title}")
        add(node, DCAT.downloadURL, download.url)
        add(node, DCAT.accessURL, download.url)
        add(node, DCAT.mediaType, MEDIA_TYPES.term(fmt.media_type))
        add(node, DCTERMS.format, W3C_FORMATS.term(_FEATURES[download.format]))
        if download.gzip:
            add(node, DCAT.compressFormat, MEDIA_TYPES.term("application/gzip"))
        add(node, DCTERMS.license, LICENCE)
    for key in FORMATS:
        add(d, VOID.feature, W3C_FORMATS.term(_FEATURES[key]))

    # The build: when, from what, with what.
    build = ID.term(f"build/{build_id}")
    add(build, RDF.type, PROV.Activity)
    out.text(build, RDFS.label, f"build {build_id}")
    out.text(build, DCTERMS.identifier, build_id, None)
    add(build, PROV.endedAtTime, ox.Literal(stamp, datatype=XSD.dateTime))
    for name, digest, size in file_hashes:
        node = ID.term("file/" + name)
        add(build, PROV.used, node)
        add(node, RDF.type, PROV.Entity)
        out.text(node, RDFS.label, name, None)
        add(node, SCHEMA.sha256, ox.Literal(digest))
        add(node, DCAT.byteSize, ox.Literal(str(size), datatype=XSD.nonNegativeInteger))
    if result.facts is not None:
        for source in result.facts.sources:
            add(build, PROV.used, ID.term(source.id))
    for name, version in tools:
        node = ID.term("software/" + name.lower())
        add(build, PROV.wasAssociatedWith, node)
        add(node, RDF.type, PROV.SoftwareAgent)
        add(node, RDF.type, SCHEMA.SoftwareApplication)
        out.text(node, SCHEMA.name, name, None)
        out.text(node, RDFS.label, f"{name} {version}", None)
        out.text(node, SCHEMA.softwareVersion, version, None)

    # The description itself: not part of what it counts.
    add(META_GRAPH, RDF.type, VOID.DatasetDescription)
    out.text(META_GRAPH, DCTERMS.title, "Description of the SASCI knowledge graph")
    out.text(META_GRAPH, RDFS.comment,
             "VoID, DCAT and PROV statements about the dataset, computed when it was built. "
             "This graph is not counted in the figures it gives. The downloads are made "
             "from the store when first asked for; each carries its sha256 as its ETag.")
    add(META_GRAPH, FOAF.primaryTopic, d)
    add(META_GRAPH, DCTERMS.license, LICENCE)
    return sorted(dict.fromkeys(out.quads), key=str)
