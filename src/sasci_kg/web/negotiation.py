"""Content negotiation: which format answers a request, from ``Accept`` (q-values, wildcards)
or a ``format=`` override. Plain functions and tables that any blueprint can import: pass the
offered formats, get a :class:`Format` or a :class:`NotAcceptableError` (→ 406).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from ..errors import SasciKgError
from ..vocab import Namespace

# W3C's identifiers for formats, as used by the service description (sd:resultFormat).
FORMATS = Namespace("http://www.w3.org/ns/formats/")


@dataclass(frozen=True)
class Format:
    """One serialisation: short name, canonical media type, aliases, file extension."""

    key: str
    media_type: str
    extension: str
    label: str
    iri: str
    aliases: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # extra values accepted by format= (besides key, extension)

    @property
    def content_type(self) -> str:
        """The Content-Type header: text types say their charset (RFC 6838 §4.2.1)."""
        if self.media_type.startswith("text/"):
            return f"{self.media_type}; charset=utf-8"
        return self.media_type

    @property
    def media_types(self) -> tuple[str, ...]:
        return (self.media_type, *self.aliases)


def _fmt(key: str, media: str, ext: str, label: str, iri: str, aliases: Sequence[str] = (),
         names: Sequence[str] = ()) -> Format:
    return Format(key, media, ext, label, str(FORMATS) + iri, tuple(aliases), tuple(names))


# SELECT / ASK. The first is the default.
JSON = _fmt("json", "application/sparql-results+json", "srj", "SPARQL JSON", "SPARQL_Results_JSON",
            ["application/json", "text/javascript", "application/javascript"], ["srj"])
XML = _fmt("xml", "application/sparql-results+xml", "srx", "SPARQL XML", "SPARQL_Results_XML",
           ["application/xml", "text/xml"], ["srx"])
CSV = _fmt("csv", "text/csv", "csv", "CSV", "SPARQL_Results_CSV")
TSV = _fmt("tsv", "text/tab-separated-values", "tsv", "TSV", "SPARQL_Results_TSV")
RESULT_FORMATS: tuple[Format, ...] = (JSON, XML, CSV, TSV)

# CONSTRUCT / DESCRIBE and graphs. The first is the default.
TURTLE = _fmt("ttl", "text/turtle", "ttl", "Turtle", "Turtle",
              ["application/x-turtle", "application/turtle", "text/n3", "text/rdf+n3",
               "application/n3"], ["turtle", "n3"])
NTRIPLES = _fmt("nt", "application/n-triples", "nt", "N-Triples", "N-Triples",
                ["text/plain"], ["ntriples", "n-triples"])
NQUADS = _fmt("nq", "application/n-quads", "nq", "N-Quads", "N-Quads", ["text/x-nquads"],
              ["nquads", "n-quads"])
TRIG = _fmt("trig", "application/trig", "trig", "TriG", "TriG", ["application/x-trig"])
JSONLD = _fmt("jsonld", "application/ld+json", "jsonld", "JSON-LD", "JSON-LD",
              ["application/x-json+ld", "application/json"], ["json-ld", "json"])
RDFXML = _fmt("rdfxml", "application/rdf+xml", "rdf", "RDF/XML", "RDF_XML",
              ["application/xml", "text/xml"], ["rdf+xml", "rdf", "xml", "owl"])
GRAPH_FORMATS: tuple[Format, ...] = (TURTLE, NTRIPLES, NQUADS, TRIG, JSONLD, RDFXML)
# The whole dataset needs a format with named graphs.
DATASET_FORMATS: tuple[Format, ...] = (TRIG, NQUADS)

# SPARQLWrapper sends its wish in all three; Fuseki reads output, Virtuoso format.
FORMAT_PARAMETERS = ("format", "output", "results")


class NotAcceptableError(SasciKgError):
    """No offered format is acceptable to the client (HTTP 406)."""

    def __init__(self, offered: Sequence[Format], asked: str):
        super().__init__(
            f"cannot answer in any format you accept ({asked}); this resource is offered as "
            + ", ".join(f.media_type for f in offered)
            + " (or use format=" + "|".join(f.key for f in offered) + ")"
        )
        self.offered = [f.media_type for f in offered]


class ConflictingFormatError(SasciKgError):
    """The format parameters name different formats (HTTP 400)."""


def _media_range(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _quality(accept: MIMEAccept, media_type: str, *, exact: bool = False) -> float:
    """The q-value the client gives ``media_type``: from its most specific matching range
    (RFC 9110 §12.5.1: exact type, then type/*, then */*); 0 when none matches. Parameters
    in the client's ranges (``text/csv; charset=utf-8``) do not stop a match. With
    ``exact``, only a range naming the type itself counts."""
    main = media_type.split("/", 1)[0]
    best: tuple[int, float] | None = None
    for value, quality in accept:
        rng = _media_range(value)
        if rng == media_type:
            specificity = 3
        elif exact:
            continue
        elif rng == f"{main}/*":
            specificity = 2
        elif rng in ("*/*", "*"):
            specificity = 1
        else:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, quality)
    return best[1] if best else 0.0


def negotiate(accept_header: str | None, offered: Sequence[Format]) -> Format:
    """The best offered format for an ``Accept`` header; the first offered wins ties and
    answers when there is no header. Raises :class:`NotAcceptableError`."""
    if not accept_header or not accept_header.strip():
        return offered[0]
    accept = parse_accept_header(accept_header, MIMEAccept)
    best: Format | None = None
    best_q = 0.0
    for fmt in offered:
        q = format_quality(accept, fmt)
        if q > best_q:
            best, best_q = fmt, q
    if best is None:
        raise NotAcceptableError(offered, f"Accept: {accept_header}")
    return best


def format_quality(accept: MIMEAccept, fmt: Format) -> float:
    """How much the client wants ``fmt``: its canonical type through any range (wildcards
    included), its aliases only when named outright — so ``text/*`` does not pick JSON for
    its ``text/javascript`` alias, and ``…+json;q=0, */*`` really refuses JSON."""
    q = _quality(accept, fmt.media_type)
    for alias in fmt.aliases:
        q = max(q, _quality(accept, alias, exact=True))
    return q


def format_by_name(value: str, offered: Iterable[Format]) -> Format | None:
    """The offered format a ``format=`` value names (key, extension, alias name or media type,
    case-insensitive), or None."""
    name = _media_range(value)
    for fmt in offered:
        if name == fmt.key or name == fmt.extension or name in fmt.names:
            return fmt
    for fmt in offered:
        if name in fmt.media_types:
            return fmt
    return None


def choose_format(
    accept_header: str | None,
    overrides: Sequence[str],
    offered: Sequence[Format],
) -> Format:
    """Pick the response format: an override (``format``/``output``/``results`` values, each
    maybe a comma-separated list of media types) wins over ``Accept``.

    Overrides that name different offered formats → :class:`ConflictingFormatError`; overrides
    that name none of them → :class:`NotAcceptableError`.
    """
    if not overrides:
        return negotiate(accept_header, offered)
    chosen: set[str] = set()
    first: Format | None = None
    for value in overrides:
        for part in value.split(","):
            if not part.strip():
                continue
            fmt = format_by_name(part, offered)
            if fmt is not None:
                chosen.add(fmt.key)
                first = first or fmt
                break  # one value is one wish; its later media types are fallbacks
    if first is None:
        raise NotAcceptableError(offered, "format=" + ", ".join(overrides))
    if len(chosen) > 1:
        raise ConflictingFormatError(
            "the format parameters ask for different formats ("
            + ", ".join(sorted(chosen))
            + "); send one"
        )
    return first


def offered_by_key(key: str) -> Format:
    """Look a format up by its short name in every table (KeyError if unknown)."""
    for fmt in (*RESULT_FORMATS, *GRAPH_FORMATS):
        if fmt.key == key:
            return fmt
    raise KeyError(key)


def content_disposition(fmt: Format, stem: str = "result") -> str:
    """An ``attachment`` Content-Disposition with a file name in the format's extension."""
    return f'attachment; filename="{stem}.{fmt.extension}"'


def wants_html(accept_header: str | None, offered: Sequence[Format]) -> bool:
    """True when the client prefers HTML to every offered format (a browser)."""
    if not accept_header:
        return False
    accept = parse_accept_header(accept_header, MIMEAccept)
    html = max(_quality(accept, "text/html"), _quality(accept, "application/xhtml+xml"))
    if html <= 0:
        return False
    others = max((format_quality(accept, f) for f in offered), default=0.0)
    # A browser's */* carries less weight than its explicit text/html.
    return html >= others and any(_media_range(v) == "text/html" for v, _ in accept)
