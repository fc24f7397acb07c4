"""The HTML query page at ``/``: a SPARQL editor, the named queries as one-click examples,
results rendered in the browser, download and share links.

Takes the named queries from ``SASCI_KG_QUERIES_DIR`` and the prefix table from
:mod:`sasci_kg.vocab`; serves the page and its own CSS/JS (fingerprinted, cached), so it
works with no network access. Queries run against the ``/sparql`` endpoint from the browser.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    render_template,
    request,
    send_from_directory,
)
from flask.typing import ResponseReturnValue
from werkzeug.security import safe_join

from ..errors import SasciKgError
from ..queries import NamedQuery, list_queries
from ..vocab import BASE, PREFIXES

log = logging.getLogger(__name__)

# The templates folder is named here too, so the blueprint works in any app, not only
# in one whose root is this package.
bp = Blueprint("ui", __name__, template_folder="templates")

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_QUERIES_DIR = Path("queries")
ONE_YEAR = 365 * 24 * 3600
# Rows the page renders into the table; the download links carry every row.
RENDER_LIMIT = 1000

DEFAULT_QUERY = """\
# The default prefixes (listed below) need no PREFIX lines.
SELECT ?type (COUNT(?thing) AS ?things)
WHERE { ?thing a ?type }
GROUP BY ?type
ORDER BY DESC(?things)
LIMIT 20
"""

# The page's content security policy: everything comes from this server, nothing from
# anywhere else, so the page cannot depend on the network by accident.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)


@dataclass(frozen=True)
class ResultFormat:
    """One ``format=`` value of the endpoint, as the page offers it."""

    key: str
    label: str
    media_type: str
    kind: str  # "results" (SELECT/ASK) or "graph" (CONSTRUCT/DESCRIBE)


FORMATS: tuple[ResultFormat, ...] = (
    ResultFormat("json", "SPARQL JSON", "application/sparql-results+json", "results"),
    ResultFormat("xml", "SPARQL XML", "application/sparql-results+xml", "results"),
    ResultFormat("csv", "CSV", "text/csv", "results"),
    ResultFormat("tsv", "TSV", "text/tab-separated-values", "results"),
    ResultFormat("ttl", "Turtle", "text/turtle", "graph"),
    ResultFormat("nt", "N-Triples", "application/n-triples", "graph"),
    ResultFormat("nq", "N-Quads", "application/n-quads", "graph"),
    ResultFormat("trig", "TriG", "application/trig", "graph"),
    ResultFormat("jsonld", "JSON-LD", "application/ld+json", "graph"),
    ResultFormat("rdfxml", "RDF/XML", "application/rdf+xml", "graph"),
)
FORMAT_KEYS = frozenset(f.key for f in FORMATS)

_fingerprints: dict[str, tuple[float, str]] = {}


def asset_version(filename: str) -> str:
    """A short content hash of a static file, recomputed when the file changes."""
    path = STATIC_DIR / filename
    mtime = path.stat().st_mtime
    cached = _fingerprints.get(filename)
    if cached and cached[0] == mtime:
        return cached[1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    _fingerprints[filename] = (mtime, digest)
    return digest


def _root() -> str:
    """The app's root path (``/`` or the mount point behind a proxy), with a slash."""
    return request.script_root.rstrip("/") + "/"


def _queries_dir() -> Path:
    return Path(current_app.config.get("SASCI_KG_QUERIES_DIR", DEFAULT_QUERIES_DIR))


def _named_queries() -> tuple[list[NamedQuery], str | None]:
    """The named queries, and a message when they could not be read (the page still works)."""
    directory = _queries_dir()
    if not directory.is_dir():
        return [], None
    try:
        return list_queries(directory), None
    except SasciKgError as exc:
        log.warning("named queries unavailable: %s", exc)
        return [], str(exc)


@bp.get("/")
def index() -> ResponseReturnValue:
    """The query page; ``?query=…&format=…`` fills the editor and runs the query."""
    queries, queries_error = _named_queries()
    query = request.args.get("query", "")
    fmt = request.args.get("format", "")
    if fmt not in FORMAT_KEYS:
        fmt = ""
    root = _root()
    page_config = {
        "endpoint": root + "sparql",
        "root": root,
        "base": BASE,
        "prefixes": PREFIXES,
        "formats": [
            {"key": f.key, "label": f.label, "mediaType": f.media_type, "kind": f.kind}
            for f in FORMATS
        ],
        "autorun": bool(query.strip()),
        "renderLimit": RENDER_LIMIT,
    }
    html = render_template(
        "query_page.html",
        query=query or DEFAULT_QUERY,
        shared=bool(query),
        format=fmt,
        formats=FORMATS,
        queries=queries,
        queries_dir=_queries_dir(),
        queries_error=queries_error,
        prefixes=sorted(PREFIXES.items()),
        endpoint_url=request.host_url.rstrip("/") + root + "sparql",
        page_config=page_config,
        asset=lambda name: root + f"ui/static/{name}?v={asset_version(name)}",
    )
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.get("/ui/static/<path:filename>")
def static_file(filename: str) -> ResponseReturnValue:
    """The page's CSS and JS. A URL carrying the file's current hash is cached for a year
    (it changes when the file does); any other is revalidated with its ETag."""
    path = safe_join(str(STATIC_DIR), filename)
    if path is None or not Path(path).is_file():
        abort(404)
    fresh = request.args.get("v") == asset_version(filename)
    response = send_from_directory(STATIC_DIR, filename, max_age=ONE_YEAR if fresh else 0)
    if fresh:
        response.cache_control.immutable = True
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
