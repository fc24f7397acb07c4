"""Linked data: every IRI under the base resolves on this server, as a page or as data.

``https://w3id.org/sasci-kg/{path}`` is served at ``{root}/{path}``, where the root is the
app's mount point (``/`` by default; a SCRIPT_NAME or a trusted ``X-Forwarded-Prefix`` moves
it). Routes: ``/id/…``, ``/vocab/…`` (resources), ``/graph/…`` (a named graph: its contents
as data, a page about it for people), ``/def`` (the ontology), ``/.well-known/void`` (VoID and
DCAT), ``/download/…`` (the whole dataset, made on first request per store generation and
sent from a file, its sha256 as the ETag: :mod:`sasci_kg.downloads`) and
``/context.jsonld``. Content negotiation follows the Cool URIs note: HTML for browsers, RDF by
``Accept`` or extension, ``Vary: Accept``, ``Link rel=alternate``. RDF keeps canonical IRIs;
only HTML links point here. Lookups bind the IRI as a constant (:mod:`sasci_kg.describe`).
Everything is read through the :class:`~sasci_kg.store.Backend` interface, so the pages work
the same in front of a remote SPARQL engine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyoxigraph as ox
from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request
from werkzeug.exceptions import NotFound
from werkzeug.http import parse_range_header
from werkzeug.wrappers.response import Response as BaseResponse

from ..backends import open_remote
from ..describe import (
    Description,
    Labels,
    OntologyDoc,
    Term,
    describe_ontology,
    describe_resource,
)
from ..downloads import (
    CachedDownload,
    DownloadCache,
    GenerationChangedError,
    Maker,
    store_maker,
    store_token,
    write_download,
)
from ..errors import NotFoundError
from ..executor import StoreUnavailableError
from ..export import JSONLD_CONTEXT, compact_jsonld, get_format, merged, serialize_quads
from ..remote import RemoteBackend
from ..store import Backend, open_store, store_generation
from ..vocab import BASE, ONTOLOGY_GRAPH, OWL, PREFIXES, SCHEME, VOCAB_GRAPH
from ..void import DATASET, DOWNLOADS, META_GRAPH, Download, find_download
from . import FILE_BODY
from .negotiation import (
    JSONLD,
    NQUADS,
    NTRIPLES,
    RDFXML,
    TRIG,
    TURTLE,
    Format,
    choose_format,
    negotiate,
    wants_html,
)
from .problems import problem

bp = Blueprint("resources", __name__, template_folder="templates")

# What a resource, a graph, the ontology and the VoID are offered as (Turtle first: the
# answer to a client that states no preference). HTML goes to browsers.
OFFERED: tuple[Format, ...] = (TURTLE, JSONLD, NTRIPLES, RDFXML, TRIG, NQUADS)
EXTENSIONS: dict[str, Format] = {f.extension: f for f in OFFERED}
HTML_EXTENSION = "html"
_EXTENSION = re.compile(r"^(?P<stem>.+)\.(?P<ext>ttl|jsonld|nt|rdf|trig|nq|html)$")
_PRINTABLE = re.compile(r"^[^\x00-\x20\x7f]+$")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)
ONTOLOGY_IRI = BASE + "def"


# ---------------------------------------------------------------------------------------
# The store, and what is cached per store generation.


@dataclass
class _Generation:
    """One generation of the store (a load swaps in the next) and what was computed on it."""

    key: Hashable
    backend: Backend
    labels: Labels
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache: dict[Any, Any] = field(default_factory=dict)

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.cache:
                return self.cache[key]
        value = make()
        with self.lock:
            if len(self.cache) > 256:  # graphs × formats; never unbounded
                self.cache.clear()
            self.cache[key] = value
        return value


class _Site:
    """The read-only store the pages read, reopened when a load swaps in a new one.

    Lookups here are fixed, bounded queries starting from one bound IRI, so they run in
    this process (milliseconds), not in the killable workers that user queries need.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._current: _Generation | None = None

    def current(self) -> _Generation:
        key = store_generation(self.path)
        if key is None:
            raise StoreUnavailableError(f"{self.path}: no store here (is a load replacing it?)")
        with self._lock:
            current = self._current
            if current is not None and current.key == key:
                return current
            for _ in range(3):
                backend = open_store(self.path)
                if store_generation(self.path) == key:
                    break
                key = store_generation(self.path) or key
            self._current = _Generation(key, backend, Labels(backend))
            return self._current


class _RemoteSite:
    """The remote engine the pages read, with what was computed on it.

    A remote engine has no store directory to watch, so a generation is a fingerprint of our
    graphs (names and sizes, and the dataset description in ``graph/meta``), checked at most
    every ``check_interval`` seconds: a `sasci-kg load --backend remote` shows without a
    restart, and the caches (labels, graphs, downloads) live as long as the data does.
    """

    def __init__(self, backend: RemoteBackend, *, check_interval: float = 5.0):
        self.backend = backend
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._current: _Generation | None = None
        self._checked = 0.0

    def current(self) -> _Generation:
        with self._lock:
            current = self._current
            if current is not None and time.monotonic() - self._checked < self.check_interval:
                return current
        key = self._fingerprint()  # outside the lock: a network round trip or three
        with self._lock:
            self._checked = time.monotonic()
            if self._current is None or self._current.key != key:
                self._current = _Generation(key, self.backend, Labels(self.backend))
            return self._current

    def _fingerprint(self) -> Hashable:
        sizes = self.backend.graph_sizes(self.backend.graphs_uncached())
        meta = ""
        if META_GRAPH.value in sizes:
            lines = sorted(str(q) for q in self.backend.graph_quads(META_GRAPH.value,
                                                                    sizes[META_GRAPH.value]))
            meta = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        return (tuple(sorted(sizes.items())), meta)


def _site() -> _Site | _RemoteSite:
    site: _Site | _RemoteSite | None = current_app.extensions.get("sasci_kg_resources")
    if site is None:
        config = current_app.config["SASCI_KG"]
        if config.is_remote:
            backend = open_remote(config.backend_settings)
            # Page lookups run in the request thread: bound them by the query time limit.
            backend.timeout = min(backend.timeout, config.timeout)
            site = _RemoteSite(backend)
        else:
            site = _Site(Path(config.store))
        current_app.extensions["sasci_kg_resources"] = site
    return site


def current_generation() -> _Generation:
    """The graph the app serves now (embedded store or remote engine), with its key: other
    blueprints build their own per-generation caches on it instead of opening the store."""
    return _site().current()


def register(app: Flask) -> None:
    """Add the linked-data routes to ``app``."""
    app.register_blueprint(bp)


# ---------------------------------------------------------------------------------------
# IRIs and local URLs.


def _root() -> str:
    """Where the base IRI is served: the app's mount point, without a trailing slash."""
    return request.script_root.rstrip("/")


def local_url(iri: str) -> str:
    """The URL on this server of one of our IRIs (others are returned as they are)."""
    if iri.startswith(BASE):
        return _root() + "/" + iri[len(BASE):]
    return iri


def curie(iri: str) -> str:
    """``prefix:local`` with the longest matching prefix, or the IRI."""
    for name, namespace in sorted(PREFIXES.items(), key=lambda i: -len(i[1])):
        local = iri[len(namespace):]
        if iri.startswith(namespace) and local and "/" not in local and "#" not in local:
            return f"{name}:{local}"
    return iri


def _valid_iri(iri: str) -> bool:
    if not _PRINTABLE.match(iri):
        return False
    try:
        ox.NamedNode(iri)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Choosing the representation.


def _choose(extension: str | None) -> Format | None:
    """The RDF format to answer with, or None for HTML. An extension decides; then a
    ``format=`` parameter; then ``Accept`` (browsers get HTML; no preference: Turtle)."""
    if extension is not None:
        return None if extension == HTML_EXTENSION else EXTENSIONS[extension]
    overrides = [v for v in request.args.getlist("format") if v.strip()]
    if overrides:
        if any(v.strip().lower() in ("html", "text/html") for v in overrides):
            return None
        return choose_format(request.headers.get("Accept"), overrides, OFFERED)
    accept = request.headers.get("Accept")
    if wants_html(accept, OFFERED):
        return None
    return negotiate(accept, OFFERED)


def _alternates(path: str) -> list[str]:
    links = [f'<{path}.{HTML_EXTENSION}>; rel="alternate"; type="text/html"']
    links += [f'<{path}.{f.extension}>; rel="alternate"; type="{f.media_type}"' for f in OFFERED]
    return links


def _finish(response: Response, *, path: str, extension: str | None, chosen: Format | None,
            html: bool = False) -> BaseResponse:
    """Negotiation headers, a strong ETag from the body (304 on If-None-Match), CSP."""
    links = _alternates(path)
    if extension is None:
        response.headers["Vary"] = "Accept"
        ext = HTML_EXTENSION if chosen is None else chosen.extension
        response.headers["Content-Location"] = f"{path}.{ext}"
    response.headers["Link"] = ", ".join(links)
    if html:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
    response.set_etag(hashlib.sha256(response.get_data()).hexdigest()[:32])
    response.headers["Cache-Control"] = "no-cache"
    return response.make_conditional(request)


def _rdf(quads: Iterable[ox.Quad], fmt: Format, *, about: str | None = None) -> Response:
    body = serialize_quads(quads, fmt.key, first=about, as_graph=True)
    return Response(body, content_type=fmt.content_type)


# ---------------------------------------------------------------------------------------
# The view model of a page: terms as links with labels.


@dataclass(frozen=True)
class TermView:
    """One RDF term as a page shows it."""

    kind: str  # iri, literal, bnode
    text: str
    href: str | None = None
    title: str | None = None
    meta: str | None = None


class _Viewer:
    def __init__(self, labels: Labels, known: dict[str, str]):
        self.labels = labels
        self.known = known

    def label(self, iri: str) -> str | None:
        return self.known.get(iri) or self.labels.label(iri)

    def iri(self, iri: str) -> TermView:
        return TermView("iri", self.label(iri) or curie(iri), href=local_url(iri), title=iri)

    def __call__(self, term: Term | str | None) -> TermView | None:
        if term is None:
            return None
        if isinstance(term, str):
            term = ox.NamedNode(term)
        if isinstance(term, ox.NamedNode):
            iri = term.value
            return TermView("iri", self.label(iri) or curie(iri), href=local_url(iri), title=iri)
        if isinstance(term, ox.Literal):
            meta = None
            if term.language:
                meta = "@" + term.language
            elif term.datatype.value != "http://www.w3.org/2001/XMLSchema#string":
                meta = curie(term.datatype.value)
            return TermView("literal", term.value, meta=meta)
        return TermView("bnode", f"_:{term.value}")


def _type_view(view: _Viewer, iri: str) -> TermView:
    """A class as a type badge: its prefixed name (two vocabularies' "Person" differ)."""
    label = view.label(iri)
    return TermView("iri", curie(iri), href=local_url(iri),
                    title=f"{label} ({iri})" if label else iri)


def _jsonld_script(quads: Sequence[ox.Quad]) -> str:
    """Compacted JSON-LD for a ``<script type="application/ld+json">`` block."""
    text = compact_jsonld(merged(quads)).decode("utf-8").strip()
    # "</script>" or "<!--" inside a literal must not end the block.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page_context(view: _Viewer) -> dict[str, Any]:
    root = _root()
    from .ui import asset_version

    return {
        "root": root,
        "home": root + "/",
        "view": view,
        "local_url": local_url,
        "curie": curie,
        "stylesheet": f"{root}/ui/static/linked-data.css?v={asset_version('linked-data.css')}",
        "base": BASE,
    }


def _grouped(description: Description, view: _Viewer) -> dict[str, Any]:
    outgoing: dict[str, list[Any]] = {}
    for s in description.outgoing:
        outgoing.setdefault(s.predicate.value, []).append((view(s.object), view(s.graph)))
    incoming: dict[str, list[Any]] = {}
    for s in description.incoming:
        incoming.setdefault(s.predicate.value, []).append((view(s.subject), view(s.graph)))

    def ordered(groups: dict[str, list[Any]]) -> list[tuple[TermView, list[Any]]]:
        items = [(view.iri(p), values) for p, values in groups.items()]
        return sorted(items, key=lambda item: (item[0].text.lower(), item[0].title or ""))

    tables = []
    for table in description.tables:
        rows = [[view(row.get(var)) for var, _ in table.columns] for row in table.rows]
        used = [i for i, _ in enumerate(table.columns) if any(r[i] for r in rows)]
        tables.append({
            "key": table.key, "title": table.title,
            "headings": [table.columns[i][1] for i in used],
            "rows": [[r[i] for i in used] for r in rows],
        })
    return {"outgoing": ordered(outgoing), "incoming": ordered(incoming), "tables": tables}


def _render(template: str, **context: Any) -> Response:
    html = render_template(template, **context)
    return Response(html, content_type="text/html; charset=utf-8")


# ---------------------------------------------------------------------------------------
# Resources: /id/…, /vocab/…


def _describe(gen: _Generation, iri: str) -> Description | None:
    if not _valid_iri(iri):
        return None
    return describe_resource(gen.backend, iri, labels=gen.labels)


def _lookup(namespace: str, rest: str) -> tuple[Description | None, str, str | None]:
    """The description for ``namespace + rest``, trying it with and without a trailing
    extension: (description, IRI, extension)."""
    gen = _site().current()
    iri = namespace + rest
    description = _describe(gen, iri)
    if description is None and (m := _EXTENSION.match(rest)):
        stem = namespace + m["stem"]
        found = _describe(gen, stem)
        if found is not None:
            return found, stem, m["ext"]
    return description, iri, None


def _not_found(iri: str, what: str = "resource") -> BaseResponse:
    if _choose_html_only():
        gen = _site().current()
        page = _render("resource.html", page="missing", iri=iri, what=what,
                       title="Not found", **_page_context(_Viewer(gen.labels, {})))
        page.status_code = 404
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page
    return problem(404, "not-found", "Not found",
                   f"nothing is known about <{iri}> in this dataset; check the IRI, or search "
                   "with SPARQL at /sparql", iri=iri)


def _choose_html_only() -> bool:
    return wants_html(request.headers.get("Accept"), OFFERED)


def _resource_response(namespace: str, rest: str) -> BaseResponse:
    description, iri, extension = _lookup(namespace, rest)
    if description is None:
        return _not_found(iri)
    path = local_url(iri)
    if description.retired:
        return _retired(description, extension)
    chosen = _choose(extension)
    gen = _site().current()
    if chosen is not None:
        return _finish(_rdf(description.quads(), chosen, about=iri), path=path,
                       extension=extension, chosen=chosen)
    view = _Viewer(gen.labels, description.labels)
    page = _render(
        "resource.html", page="resource", iri=iri, path=path, d=description,
        title=description.label or curie(iri),
        types=[_type_view(view, t) for t in description.types],
        groups=_grouped(description, view), jsonld=_jsonld_script(description.quads()),
        formats=OFFERED, **_page_context(view),
    )
    return _finish(page, path=path, extension=extension, chosen=None, html=True)


def _retired(description: Description, extension: str | None) -> BaseResponse:
    """301 to the replacement; 410 Gone for a retraction (RFC 9110 §15.4.2, §15.5.11)."""
    if description.replaced_by:
        target = local_url(description.replaced_by)
        if extension:
            target += "." + extension
        response = redirect(target, code=301)
        response.headers["Link"] = f'<{description.replaced_by}>; rel="canonical"'
        return response
    reason = description.retired_reason or "this IRI has been withdrawn"
    if _choose_html_only() or extension == HTML_EXTENSION:
        gen = _site().current()
        page = _render("resource.html", page="gone", iri=description.iri, reason=reason,
                       title="Gone", **_page_context(_Viewer(gen.labels, description.labels)))
        page.status_code = 410
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page
    return problem(410, "gone", "Gone", f"<{description.iri}> was retired: {reason}",
                   iri=description.iri, reason=reason)


@bp.route("/id/<path:rest>", methods=["GET", "HEAD"])
def entity(rest: str) -> BaseResponse:
    """An instance: person, organisation, session, fact, concept, scheme, …"""
    return _resource_response(BASE + "id/", rest)


@bp.route("/vocab/<path:rest>", methods=["GET", "HEAD"])
def vocabulary(rest: str) -> BaseResponse:
    """A controlled value; ``/vocab/{scheme}`` itself goes to its concept scheme."""
    name = rest.strip("/")
    if "/" not in name and "." not in name and re.fullmatch(r"[a-z0-9-]+", name):
        scheme = SCHEME.term(name).value
        if _describe(_site().current(), scheme) is not None:
            response = redirect(local_url(scheme), code=303)
            response.headers["Vary"] = "Accept"
            return response
    return _resource_response(BASE + "vocab/", rest)


# ---------------------------------------------------------------------------------------
# Named graphs: /graph/… (Graph Store Protocol §4.1 direct identification for data).


def _graph_quads(gen: _Generation, graph: str) -> list[ox.Quad]:
    quads: list[ox.Quad] = gen.cached(("graph", graph), lambda: list(gen.backend.quads(graph)))
    return quads


def _graph_body(gen: _Generation, graph: str, fmt: Format) -> bytes:
    body: bytes = gen.cached(("graph-body", graph, fmt.key),
                             lambda: serialize_quads(_graph_quads(gen, graph), fmt.key,
                                                     as_graph=True))
    return body


@bp.route("/graph/<path:rest>", methods=["GET", "HEAD"])
def named_graph(rest: str) -> BaseResponse:
    """A named graph: its contents for programs, a page about it (and links) for people."""
    gen = _site().current()
    graphs = gen.cached("graphs", gen.backend.graphs)
    iri, extension = BASE + "graph/" + rest, None
    if iri not in graphs and (m := _EXTENSION.match(rest)):
        if BASE + "graph/" + m["stem"] in graphs:
            iri, extension = BASE + "graph/" + m["stem"], m["ext"]
    if iri not in graphs:
        return _resource_response(BASE + "graph/", rest)
    return _graph_response(gen, iri, extension, local_url(iri))


def _graph_response(gen: _Generation, iri: str, extension: str | None, path: str,
                    *, page: str = "graph", subject: str | None = None) -> BaseResponse:
    chosen = _choose(extension)
    if chosen is not None:
        body = _graph_body(gen, iri, chosen)
        response = Response(body, content_type=chosen.content_type)
        return _finish(response, path=path, extension=extension, chosen=chosen)
    subject = subject or iri
    description = describe_resource(gen.backend, subject, labels=gen.labels)
    view = _Viewer(gen.labels, description.labels if description else {})
    quads = _graph_quads(gen, iri)
    context: dict[str, Any] = {}
    if description is not None:
        context = {"d": description, "groups": _grouped(description, view),
                   "jsonld": _jsonld_script(description.quads()),
                   "types": [_type_view(view, t) for t in description.types]}
    if page == "void":
        context["downloads"] = _download_rows(gen)
    html = _render(
        "resource.html", page=page, iri=subject, graph=iri, path=path,
        title=(description.label if description and description.label else curie(iri)),
        graph_size=len(quads), formats=OFFERED, **context, **_page_context(view),
    )
    return _finish(html, path=path, extension=extension, chosen=None, html=True)


# ---------------------------------------------------------------------------------------
# The dataset's description: /.well-known/void


@bp.route("/.well-known/void", methods=["GET", "HEAD"])
@bp.route("/.well-known/void.<ext>", methods=["GET", "HEAD"])
def void(ext: str | None = None) -> BaseResponse:
    """VoID and DCAT (the ``…/graph/meta`` graph): data, or a page about the dataset."""
    if ext is not None and ext not in EXTENSIONS and ext != HTML_EXTENSION:
        raise NotFound()
    gen = _site().current()
    if META_GRAPH.value not in gen.cached("graphs", gen.backend.graphs):
        raise NotFoundError("this store holds no dataset description (graph/meta): it was "
                            "loaded by an older version or from files; rebuild it with "
                            "`sasci-kg load`")
    return _graph_response(gen, META_GRAPH.value, ext, _root() + "/.well-known/void",
                           page="void", subject=DATASET.value)


def _download_rows(gen: _Generation) -> list[dict[str, Any]]:
    """Each download with its size and sha256 once it has been made (the VoID states
    neither: they are known only when the server has made the file)."""
    cache, generation, _make = _download_source(gen)
    rows = []
    for download in DOWNLOADS:
        made = cache.find(generation, download) if generation else None
        rows.append({
            "filename": download.filename,
            "href": local_url(download.url.value),
            "media_type": "application/gzip" if download.gzip else download.media_type,
            "inner": download.media_type,
            "bytes": made.size if made else None,
            "sha256": made.sha256 if made else None,
        })
    return rows


# ---------------------------------------------------------------------------------------
# Downloads: /download/sasci-kg.ttl, … (each optionally .gz)


def share_downloads(app: Flask, private_prefix: str) -> None:
    """Make the app's download cache now: a server that forks its processes after this
    (the prefork server) gives them one folder and one lock. Made in each process instead,
    the cache of a store whose folder cannot be written is a private folder per process,
    each with its own lock, so that every process could be making the same download at
    once (each sorts the whole dataset in memory: ~10 GiB at 10^7 triples). A private
    folder's name starts with ``private_prefix``."""
    config = app.config["SASCI_KG"]
    if not config.is_remote and "sasci_kg_downloads" not in app.extensions:
        app.extensions["sasci_kg_downloads"] = DownloadCache.beside(
            Path(config.store), make=False, private_prefix=private_prefix)


def _download_source(gen: _Generation | None = None) -> tuple[DownloadCache, str | None, Maker]:
    """Where the downloads of the served data are kept, the name of its generation (None:
    no store) and how to make one: the embedded store in a child process that opens it, a
    remote engine here, from the quads it sends."""
    config = current_app.config["SASCI_KG"]
    cache: DownloadCache | None = current_app.extensions.get("sasci_kg_downloads")
    if not config.is_remote:
        store = Path(config.store)
        if cache is None:
            cache = current_app.extensions["sasci_kg_downloads"] = DownloadCache.beside(store)
        token = store_token(store)
        return cache, token, store_maker(store, token or "")
    if cache is None:
        cache = current_app.extensions["sasci_kg_downloads"] = DownloadCache.private()
    gen = gen or _site().current()
    backend = gen.backend

    def make(download: Download, out: Path) -> None:
        write_download(backend.quads(), download, out)

    return cache, hashlib.sha256(repr(gen.key).encode()).hexdigest()[:32], make


class _FileBody:
    """A response body read from a file opened now (a later load may remove the file: the
    open descriptor still reads it). Closed once read to the end, when the server closes
    the response, or when dropped unread (a 304, a HEAD, a test client)."""

    def __init__(self, path: Path):
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def __iter__(self) -> _FileBody:
        return self

    def __next__(self) -> bytes:
        block = os.read(self._fd, 1 << 20) if self._fd is not None else b""
        if not block:
            self.close()
            raise StopIteration
        return block

    # What werkzeug needs to serve a range (206) without reading up to it.
    def seekable(self) -> bool:
        return self._fd is not None

    def seek(self, offset: int) -> None:
        if self._fd is not None:
            os.lseek(self._fd, offset, os.SEEK_SET)

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("the file is closed")
        return self._fd

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR) if self._fd is not None else 0

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


def _open_download(download: Download) -> tuple[CachedDownload, _FileBody]:
    """The download made (now, if it was not yet) and its file opened, retried when a load
    replaces the store meanwhile."""
    for _attempt in range(3):
        cache, generation, make = _download_source()
        if generation is None:
            break
        try:
            # A process with one thread (the prefork server's) does not wait for another
            # request's making: it would stand idle behind the lock.
            wait = bool(request.environ.get("wsgi.multithread", True))
            made = cache.get(generation, download, make, wait=wait)
            return made, _FileBody(made.path)
        except (GenerationChangedError, FileNotFoundError):
            continue  # a load swapped the store in; its files replaced ours
    raise StoreUnavailableError("the store is being replaced; ask again in a moment")


@bp.route("/download/", methods=["GET", "HEAD"])
def downloads_index() -> BaseResponse:
    """The list of downloads lives on the dataset's page."""
    return redirect(_root() + "/.well-known/void.html#downloads", code=303)


@bp.route("/download/<filename>", methods=["GET", "HEAD"])
def download(filename: str) -> BaseResponse:
    """One export of the whole dataset: the bytes ``sasci-kg export`` writes, made on the
    first request of a store generation and then sent from a file, with its sha256 as a
    strong ETag (If-None-Match → 304) and in ``Repr-Digest``; ranges are served (206)."""
    found = find_download(filename)
    if found is None:
        names = ", ".join(d.filename for d in DOWNLOADS)
        raise NotFoundError(f"there is no download called {filename!r}; there are: {names}")
    made, body = _open_download(found)
    request.environ[FILE_BODY] = body  # the prefork server sends it straight from the file
    content_type = "application/gzip" if found.gzip else get_format(found.format).media_type
    if content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    response = Response(body, content_type=content_type, direct_passthrough=True)
    response.content_length = made.size
    response.set_etag(made.sha256)
    digest = base64.b64encode(bytes.fromhex(made.sha256)).decode("ascii")
    response.headers["Repr-Digest"] = f"sha-256=:{digest}:"  # RFC 9530
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "public, no-cache"
    response.headers["Link"] = f'<{_root()}/.well-known/void>; rel="describedby"'
    environ = request.environ
    if "HTTP_RANGE" in environ:
        ranges = parse_range_header(environ["HTTP_RANGE"])
        if ranges is None or ranges.units != "bytes" or len(ranges.ranges) > 1:
            # Werkzeug serves one range of bytes only, and answered several, another unit or
            # a list it does not parse with 416 (unsatisfiable), though they need not be:
            # RFC 9110 §14.2 lets a server ignore Range (200, the whole).
            environ = {k: v for k, v in environ.items() if k != "HTTP_RANGE"}
    return response.make_conditional(environ, accept_ranges=True, complete_length=made.size)


@bp.route("/context.jsonld", methods=["GET", "HEAD"])
def context() -> BaseResponse:
    """The JSON-LD context every JSON-LD document of this dataset carries inline."""
    body = (json.dumps(JSONLD_CONTEXT, indent=2) + "\n").encode("utf-8")
    response = Response(body, content_type=JSONLD.media_type)
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response.make_conditional(request)


# ---------------------------------------------------------------------------------------
# Problem types: the ``type`` IRIs of problem+json bodies (RFC 9457 §3.1.1) resolve too.


def _problem_types() -> dict[str, tuple[int, str]]:
    from werkzeug.exceptions import default_exceptions
    from werkzeug.http import HTTP_STATUS_CODES

    from . import problems

    known = {HTTP_STATUS_CODES[code].lower().replace(" ", "-"): (code, HTTP_STATUS_CODES[code])
             for code in default_exceptions if code in HTTP_STATUS_CODES}
    for _cls, status, slug, title in getattr(problems, "_MAP", []):
        known.setdefault(slug, (status, title))
    known.setdefault("internal-error", (500, "Internal error"))
    known.setdefault("gone", (410, "Gone"))
    return known


@bp.route("/problem/<slug>", methods=["GET", "HEAD"])
def problem_type(slug: str) -> BaseResponse:
    """What a problem type means, for people who follow the ``type`` of an error body."""
    found = _problem_types().get(slug)
    if found is None:
        raise NotFoundError(f"there is no problem type {slug!r}")
    status, title = found
    gen = _site().current()
    html = _render("resource.html", page="problem", iri=BASE + "problem/" + slug, title=title,
                   status=status, **_page_context(_Viewer(gen.labels, {})))
    html.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return html


# ---------------------------------------------------------------------------------------
# The ontology: /def (hash IRIs: /def#Session is a place on this page).


@bp.route("/def", methods=["GET", "HEAD"])
@bp.route("/def.<ext>", methods=["GET", "HEAD"])
@bp.route("/def/<version>", methods=["GET", "HEAD"])
def ontology(ext: str | None = None, version: str | None = None) -> BaseResponse:
    """The ontology: documentation for people, the ``…/graph/ontology`` graph for programs.
    ``/def/{version}`` (the owl:versionIRI) answers while it is the current version."""
    if ext is not None and ext not in EXTENSIONS and ext != HTML_EXTENSION:
        raise NotFound()
    gen = _site().current()
    doc: OntologyDoc = gen.cached("ontology-doc", lambda: describe_ontology(
        gen.backend, ONTOLOGY_GRAPH.value, VOCAB_GRAPH.value))
    path = _root() + "/def"
    if version is not None:
        current = [v for p, v in doc.metadata if p == OWL.versionInfo.value]
        if not current or version != current[0].value:
            raise NotFoundError(f"there is no version {version!r} of the ontology here; the "
                                f"current one is {current[0].value if current else 'unversioned'}"
                                " at /def")
        path = f"{path}/{version}"
    chosen = _choose(ext)
    if chosen is not None:
        response = Response(_graph_body(gen, ONTOLOGY_GRAPH.value, chosen),
                            content_type=chosen.content_type)
        return _finish(response, path=path, extension=ext, chosen=chosen)
    view = _Viewer(gen.labels, {})
    html = _render("ontology.html", page="ontology", iri=ONTOLOGY_IRI, path=path, doc=doc,
                   title=next((v.value for p, v in doc.metadata
                               if p == "http://purl.org/dc/terms/title"), "Ontology"),
                   formats=OFFERED, **_page_context(view))
    return _finish(html, path=path, extension=ext, chosen=None, html=True)


__all__ = ["bp", "curie", "local_url", "register"]
