"""Pages for funders: the overview at ``/funders`` and the network picture at ``/network``
(interactive: pan, zoom, click a node for its page, highlight a traced connection), with
``/network.{svg,graphml,gexf,csv,json}`` downloads from the library's writers.

Also the state the funders' pages share (:func:`current_graph`): per store generation, the
read-only backend, its :class:`~sasci_kg.trace.Tracer` and its search index, rebuilt when a
load or an update swaps in a new store, so that no page ever answers from an old one. The
tracer and the overview send their queries to the endpoint's killable query workers
(:mod:`.pool_backend`); only the search index is read in this process.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyoxigraph as ox
from flask import Blueprint, Response, current_app, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound

from ..errors import NetworkTooLargeError, NotFoundError
from ..executor import Outcome, QueryJob
from ..network import MEDIA_TYPES, Network, write_network
from ..search import SearchIndex, build_search_index
from ..store import Backend
from ..trace import DEFAULT_HOPS, MAX_HOPS, NETWORK_KINDS, Tracer
from ..trace_entities import short_ref
from ..trace_links import LINK_KINDS, SPARQL_PREFIXES
from ..vocab import BASE
from .pool_backend import PoolBackend, PoolTracer
from .problems import BadRequestError
from .resources import current_generation
from .sparql import get_runtime

log = logging.getLogger(__name__)

bp = Blueprint("funders", __name__, template_folder="templates")

#: Downloads of the network: extension → writer format.
NETWORK_DOWNLOADS: dict[str, str] = {"svg": "svg", "graphml": "graphml", "gexf": "gexf",
                                     "csv": "csv", "json": "json"}
NETWORK_DOWNLOAD_LABELS = (("svg", "SVG picture"), ("graphml", "GraphML (yEd, Cytoscape)"),
                           ("gexf", "GEXF (Gephi)"), ("csv", "CSV of links"),
                           ("json", "JSON"))
# The caps of the tracer's own queries, which it bounds itself (a LIMIT on each hop and on
# the network) or which grow with the graph (the label index: ~80,000 rows at 10^6
# triples): higher than a user's query may have, they guard against a runaway only.
INTERNAL_MAX_ROWS = 10_000_000
INTERNAL_MAX_BYTES = 1024 * 1024 * 1024
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'{styles}; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'")


# ---------------------------------------------------------------------------------------
# The store generation the pages read, and what is built on it.


@dataclass
class Graph:
    """One store generation: its backend (read in this process, by the search index), its
    tracer (whose queries run in the query workers), search index and cached answers."""

    key: Hashable
    backend: Backend
    tracer: Tracer
    index_path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    index_lock: threading.Lock = field(default_factory=threading.Lock)
    cache: dict[Any, Any] = field(default_factory=dict)
    _index: SearchIndex | None = None

    def search_index(self) -> SearchIndex:
        """The search index of this generation, built on first use (one build at a time)."""
        with self.index_lock:
            if self._index is None:
                self._index = build_search_index(self.backend, self.index_path)
            return self._index

    @property
    def queries(self) -> Backend:
        """The backend whose queries run in the killable query workers."""
        return self.tracer.backend

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.cache:
                return self.cache[key]
        value = make()
        with self.lock:
            if len(self.cache) > 128:  # pictures × highlights: never unbounded
                self.cache.clear()
            self.cache[key] = value
        return value


class GraphSite:
    """A tracer and a search index per generation of the graph the app serves (the
    embedded store, or a remote engine: ``resources.current_generation`` tells which
    generation is current). Search indexes live in a private temporary folder of this
    process, one file per generation, removed when the next generation replaces it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Graph | None = None
        self._folder = Path(tempfile.mkdtemp(prefix="sasci-kg-search-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._folder, True)
        self._owner = os.getpid()

    def current(self) -> Graph:
        generation = current_generation()
        with self._lock:
            current = self._current
            if current is not None and current.key == generation.key:
                return current
            digest = hashlib.sha256(repr(generation.key).encode()).hexdigest()[:16]
            index_path = self._folder / f"search-{digest}.sqlite"
            self._current = Graph(generation.key, generation.backend, pool_tracer(),
                                  index_path)
            if current is not None and current.index_path != index_path:
                current.index_path.unlink(missing_ok=True)  # open readers keep their file
            return self._current

    def close(self) -> None:
        """Remove the folder (in the process that made it: a forked copy leaves it be)."""
        if os.getpid() == self._owner:
            self._finalizer()


def pool_tracer() -> PoolTracer:
    """A tracer whose queries run in this app's query workers: each within the request's
    time limit (the endpoint's by default), the label index within the longest."""
    runtime = get_runtime()
    config = runtime.config

    def run(job: QueryJob, limit: float) -> Outcome:
        # Its own query processes: a search that runs out of time ends its hop, not the
        # server process (as it would under the prefork server).
        return runtime.isolated_pool().run(job, timeout=limit)

    backend = PoolBackend(run, timeout=config.timeout,
                          max_rows=max(config.max_rows, INTERNAL_MAX_ROWS),
                          max_bytes=max(config.max_result_bytes, INTERNAL_MAX_BYTES))
    return PoolTracer(backend, index_timeout=config.max_timeout)


def current_graph() -> Graph:
    """The current generation for this app (the site is made on first use)."""
    site: GraphSite | None = current_app.extensions.get("sasci_kg_graph")
    if site is None:
        site = GraphSite()
        current_app.extensions["sasci_kg_graph"] = site
    return site.current()


# ---------------------------------------------------------------------------------------
# Pages: shared context, links and the content security policy.


def root() -> str:
    return request.script_root.rstrip("/")


def local_url(iri: str) -> str:
    """Our IRIs open on this server; others are left as they are."""
    return root() + "/" + iri[len(BASE):] if iri.startswith(BASE) else iri


def asset(name: str) -> str:
    from .ui import asset_version

    return f"{root()}/ui/static/{name}?v={asset_version(name)}"


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_STYLE_ELEMENT = re.compile(r"<style>(.*?)</style>", re.S)
_STYLE_ATTRIBUTE = re.compile(r'\sstyle="([^"]*)"')


def svg_style_sources(svg: str) -> list[str]:
    """CSP sources that let the package's own SVG style itself when it is inlined in a page,
    and nothing else: the hash of its ``<style>`` and of each ``style`` attribute value
    (CSP 3 'unsafe-hashes' admits exactly those values, never arbitrary inline style)."""
    blocks = sorted({_hash(m) for m in _STYLE_ELEMENT.findall(svg)})
    attributes = sorted({_hash(html.unescape(m)) for m in _STYLE_ATTRIBUTE.findall(svg)})
    return blocks + (["'unsafe-hashes'", *attributes] if attributes else [])


def inline_svg(svg_bytes: bytes) -> str:
    """The SVG document as an element to place in an HTML page (no XML declaration)."""
    text = svg_bytes.decode("utf-8")
    if text.startswith("<?xml"):
        text = text.split("?>", 1)[1].lstrip()
    return text


def render_page(template: str, *, status: int = 200, svgs: Iterable[str] = (),
                **context: Any) -> Response:
    """A funders' page with the shared context and its content security policy."""
    styles = sorted({s for svg in svgs for s in svg_style_sources(svg)})
    body = render_template(
        template, root=root(), asset=asset, local_url=local_url, ref=short_ref,
        base=BASE, link_kinds=LINK_KINDS, **context)
    response = Response(body, status=status, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = _CSP.format(
        styles="".join(" " + s for s in styles))
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A whole-number parameter within bounds; 400 naming it otherwise."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadRequestError(f"{name} must be between {low} and {high}, not {value}")
    return value


def links_arg(default: Iterable[str] | None = None) -> list[str] | None:
    """``links=KIND,…`` (or repeated); None for the default."""
    kinds = [k.strip() for value in request.args.getlist("links") for k in value.split(",")
             if k.strip()]
    if not kinds:
        return list(default) if default is not None else None
    unknown = [k for k in kinds if k not in LINK_KINDS]
    if unknown:
        raise BadRequestError(f"links: unknown link kind(s) {', '.join(unknown)}; choose from "
                              f"{', '.join(LINK_KINDS)}")
    return kinds


# ---------------------------------------------------------------------------------------
# The network.


@dataclass(frozen=True)
class NetworkRequest:
    """What picture is asked for: all of it or around one entity, maybe a path marked."""

    around: str | None
    hops: int
    source: str | None
    target: str | None
    links: tuple[str, ...]

    @property
    def highlight(self) -> tuple[str, str] | None:
        return (self.source, self.target) if self.source and self.target else None

    def query(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.around:
            out.update(around=self.around, hops=str(self.hops))
        if self.source and self.target:
            out.update({"from": self.source, "to": self.target})
        if self.links != NETWORK_KINDS:
            out["links"] = ",".join(self.links)
        return out


def network_request() -> NetworkRequest:
    source = request.args.get("from", "").strip() or None
    target = request.args.get("to", "").strip() or None
    if bool(source) != bool(target):
        raise BadRequestError("give both from and to to mark a connection, or neither")
    return NetworkRequest(request.args.get("around", "").strip() or None,
                          int_arg("hops", DEFAULT_HOPS, 1, MAX_HOPS), source, target,
                          tuple(links_arg(NETWORK_KINDS) or NETWORK_KINDS))


def draw_network(graph: Graph, wanted: NetworkRequest) -> tuple[Network, bytes]:
    """The network asked for and its SVG, cached per generation."""
    def make() -> tuple[Network, bytes]:
        drawn = graph.tracer.network(links=wanted.links, around=wanted.around,
                                     hops=wanted.hops, highlight=wanted.highlight)
        return drawn, write_network(drawn, "svg")

    result: tuple[Network, bytes] = graph.cached(("network", wanted), make)
    return result


@bp.get("/network")
def network_page() -> ResponseReturnValue:
    """The picture of the network, interactive, with a form to mark a connection."""
    from .tracing import entity_problem_page

    wanted = network_request()
    graph = current_graph()
    try:
        drawn, svg = draw_network(graph, wanted)
    except NotFoundError as exc:
        return entity_problem_page(exc, "network.html", wanted=wanted, drawn=None, svg=None,
                                   downloads=NETWORK_DOWNLOAD_LABELS, max_hops=MAX_HOPS)
    except NetworkTooLargeError as exc:
        # A big portfolio: the page still helps, by offering to draw part of the network.
        return render_page("network.html", wanted=wanted, drawn=None, svg=None,
                           highlighted=[], error=None, too_large=exc.max_links,
                           downloads=NETWORK_DOWNLOAD_LABELS, max_hops=MAX_HOPS)
    picture = inline_svg(svg)
    highlighted = [n.id for n in drawn.nodes if n.highlighted]
    return render_page("network.html", svgs=[picture], wanted=wanted, drawn=drawn,
                       svg=picture, highlighted=highlighted, error=None,
                       downloads=NETWORK_DOWNLOAD_LABELS, network_kinds=NETWORK_KINDS,
                       max_hops=MAX_HOPS)


@bp.get("/network.<ext>")
def network_download(ext: str) -> ResponseReturnValue:
    """The same network for tools: SVG, GraphML, GEXF, CSV (links) or JSON."""
    if ext not in NETWORK_DOWNLOADS:
        raise NotFound()
    drawn, svg = draw_network(current_graph(), network_request())
    fmt = NETWORK_DOWNLOADS[ext]
    body = svg if fmt == "svg" else write_network(drawn, fmt)
    media = MEDIA_TYPES[fmt]
    response = Response(body, content_type=media + ("; charset=utf-8" if media.startswith(
        "text/") or fmt == "svg" else ""))
    if ext != "svg" or request.args.get("download"):
        response.headers["Content-Disposition"] = f'attachment; filename="sasci-kg-network.{ext}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    # An SVG opened on its own styles itself (and nothing else may run in it).
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response


# ---------------------------------------------------------------------------------------
# The funders' overview.


_FUNDING = SPARQL_PREFIXES + """\
SELECT ?project ?projectName ?funder ?funderName ?certainty ?excerpt WHERE {
  ?fact rdf:subject ?project ; rdf:predicate schema:funder ; rdf:object ?funder .
  ?project schema:name ?projectName . ?funder schema:name ?funderName .
  OPTIONAL { ?fact kgo:certainty ?certainty }
  OPTIONAL { ?fact kgo:evidence/oa:exact ?excerpt }
}"""
_MEMBERS = SPARQL_PREFIXES + """\
SELECT ?project ?member ?memberName ?roleLabel ?certainty ?excerpt WHERE {
  ?membership a org:Membership ; org:organization ?project ; org:member ?member ;
              org:role/skos:prefLabel ?roleLabel .
  ?member schema:name ?memberName .
  OPTIONAL { ?membership kgo:certainty ?certainty }
  OPTIONAL { ?membership kgo:evidence/oa:exact ?excerpt }
}"""
_COHOSTS = SPARQL_PREFIXES + """\
SELECT ?event ?eventName ?organisation ?name WHERE {
  ?event a schema:Event ; schema:organizer ?organisation .
  FILTER NOT EXISTS { ?event a kgo:Session }
  ?organisation a schema:Organization ; schema:name ?name .
  OPTIONAL { ?event schema:name ?eventName }
}"""
_PRESENT = SPARQL_PREFIXES + """\
SELECT ?organisation ?name ?session ?sessionLabel ?person ?personName ?roleLabel WHERE {
  ?role kgo:onBehalfOf ?organisation ; conf:during ?session ; conf:isHeldBy ?person .
  OPTIONAL { ?role conf:withRole/skos:prefLabel ?roleLabel }
  ?organisation schema:name ?name .
  ?session rdfs:label ?sessionLabel .
  ?person schema:name ?personName .
}"""


@dataclass(frozen=True)
class Entity:
    """An IRI with its name, for links."""

    iri: str
    label: str

    @property
    def ref(self) -> str:
        return short_ref(self.iri)


@dataclass(frozen=True)
class Member:
    entity: Entity
    role: str
    certainty: str
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class Presence:
    """An organisation at the event: its sessions, each with who appeared for it, how."""

    organisation: Entity
    sessions: tuple[tuple[Entity, tuple[tuple[Entity, str], ...]], ...]


@dataclass(frozen=True)
class Overview:
    projects: tuple[Entity, ...]
    funding: tuple[tuple[Entity, Entity, str, tuple[str, ...]], ...]
    members: tuple[Member, ...]
    cohosts: tuple[tuple[Entity, Entity], ...]
    present: tuple[Presence, ...]

    @property
    def organisations(self) -> list[Entity]:
        """Every organisation on the page, by name, for the tracing form."""
        found = {f[1].iri: f[1] for f in self.funding}
        found.update({m.entity.iri: m.entity for m in self.members
                      if "/id/org/" in m.entity.iri})
        found.update({c[1].iri: c[1] for c in self.cohosts})
        found.update({p.organisation.iri: p.organisation for p in self.present})
        return sorted(found.values(), key=lambda e: (e.label.casefold(), e.iri))


def _rows(backend: Backend, sparql: str) -> list[dict[str, str]]:
    result = backend.query(sparql)
    assert isinstance(result, ox.QuerySolutions)
    names = [v.value for v in result.variables]
    return [{n: term.value for n in names if (term := s[n]) is not None} for s in result]


def _certainty(iri: str | None) -> str:
    return iri.rsplit("/", 1)[-1] if iri else "unrecorded"


def build_overview(backend: Backend) -> Overview:
    """The funders' overview from four fixed queries (each anchored, small)."""
    funding: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _rows(backend, _FUNDING):
        key = (row["project"], row["funder"])
        entry = funding.setdefault(key, {
            "project": Entity(row["project"], row["projectName"]),
            "funder": Entity(row["funder"], row["funderName"]),
            "certainty": _certainty(row.get("certainty")), "evidence": set()})
        if row.get("excerpt"):
            entry["evidence"].add(row["excerpt"])
    members: dict[tuple[str, str], dict[str, Any]] = {}
    projects = {e["project"].iri: e["project"] for e in funding.values()}
    for row in _rows(backend, _MEMBERS):
        key = (row["member"], row["roleLabel"])
        entry = members.setdefault(key, {
            "entity": Entity(row["member"], row["memberName"]), "role": row["roleLabel"],
            "certainty": _certainty(row.get("certainty")), "evidence": set()})
        if row.get("excerpt"):
            entry["evidence"].add(row["excerpt"])
    cohosts = {(row["event"], row["organisation"]): (
        Entity(row["event"], row.get("eventName", short_ref(row["event"]))),
        Entity(row["organisation"], row["name"])) for row in _rows(backend, _COHOSTS)}
    present: dict[str, dict[str, Any]] = {}
    for row in _rows(backend, _PRESENT):
        org = present.setdefault(row["organisation"], {
            "entity": Entity(row["organisation"], row["name"]), "sessions": {}})
        session = org["sessions"].setdefault(row["session"], {
            "entity": Entity(row["session"], row["sessionLabel"]), "people": set()})
        session["people"].add((Entity(row["person"], row["personName"]),
                               row.get("roleLabel", "")))

    def by_label(items: Iterable[Any], key: Callable[[Any], Entity]) -> list[Any]:
        return sorted(items, key=lambda item: (key(item).label.casefold(), key(item).iri))

    return Overview(
        projects=tuple(by_label(projects.values(), lambda e: e)),
        funding=tuple((e["project"], e["funder"], e["certainty"], tuple(sorted(e["evidence"])))
                      for e in by_label(funding.values(), lambda e: e["funder"])),
        members=tuple(Member(e["entity"], e["role"], e["certainty"], tuple(sorted(e["evidence"])))
                      for e in sorted(members.values(), key=lambda e: (
                          e["role"], e["entity"].label.casefold()))),
        cohosts=tuple(by_label(cohosts.values(), lambda c: c[1])),
        present=tuple(Presence(o["entity"], tuple(
            (s["entity"], tuple(sorted(s["people"], key=lambda p: p[0].label.casefold())))
            for s in by_label(o["sessions"].values(), lambda s: s["entity"])))
            for o in by_label(present.values(), lambda o: o["entity"])),
    )


# The organisations table lists this many (by name); a portfolio of many events would make
# it megabytes (at 10⁶ triples: 2,480 organisations, a 7.8 MB page).
MAX_PRESENT_ORGANISATIONS = 200


@bp.get("/funders")
def funders_page() -> ResponseReturnValue:
    """The project, its funder and partners, the co-hosts, the organisations present and
    in which sessions (a table and the picture), with a form to trace any two."""
    graph = current_graph()
    overview: Overview = graph.cached("overview", lambda: build_overview(graph.queries))
    wanted = NetworkRequest(None, DEFAULT_HOPS, None, None, NETWORK_KINDS)
    page: dict[str, Any] = {"overview": overview, "downloads": NETWORK_DOWNLOAD_LABELS,
                            "network_kinds": NETWORK_KINDS,
                            "max_present": MAX_PRESENT_ORGANISATIONS}
    try:
        _drawn, svg = draw_network(graph, wanted)
    except NetworkTooLargeError as exc:
        # A big portfolio: the tables and the trace form still answer; the picture is
        # drawn around an organisation the reader picks.
        return render_page("funders.html", svg=None, too_large=exc.max_links,
                           max_hops=MAX_HOPS, wanted=wanted, **page)
    picture = inline_svg(svg)
    return render_page("funders.html", svgs=[picture], svg=picture, **page)

