"""Render query results for people and scripts: a text table, or the standard formats.

``render_result`` takes a pyoxigraph result (solutions, boolean or triples) and a format
name and gives text or bytes; SELECT/ASK → table, csv, tsv, json (SPARQL 1.1 results JSON),
xml; CONSTRUCT/DESCRIBE → any RDF format of :mod:`sasci_kg.export`.
"""

from __future__ import annotations

import pyoxigraph as ox

from .errors import ExportError
from .export import FORMATS, serialize_quads, xml_carriage_returns
from .store import QueryResult
from .vocab import PREFIXES

RESULT_FORMATS = {
    "json": ox.QueryResultsFormat.JSON,
    "xml": ox.QueryResultsFormat.XML,
    "csv": ox.QueryResultsFormat.CSV,
    "tsv": ox.QueryResultsFormat.TSV,
}
TABLE_FORMATS = ("table", *RESULT_FORMATS)


def compact(term: object, prefixes: dict[str, str] = PREFIXES) -> str:
    """A short display form of a term: prefixed IRIs, plain literal values."""
    if term is None:
        return ""
    if isinstance(term, ox.NamedNode):
        best = ""
        for name, namespace in prefixes.items():
            if term.value.startswith(namespace) and len(namespace) > len(prefixes.get(best, "")):
                best = name
        if best:
            return f"{best}:{term.value[len(prefixes[best]):]}"
        return f"<{term.value}>"
    if isinstance(term, ox.Literal):
        return term.value
    return str(term)


def render_table(solutions: ox.QuerySolutions) -> str:
    """An aligned text table of SELECT solutions, with a row count."""
    names = [v.value for v in solutions.variables]
    rows = [[compact(solution[name]) for name in names] for solution in solutions]
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    out = [line(names), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def render_result(result: QueryResult, format_name: str) -> bytes:
    """Serialise a query result in the named format (see module docstring)."""
    if isinstance(result, ox.QueryTriples):
        name = "ttl" if format_name == "table" else format_name
        if name not in FORMATS:
            raise ExportError(f"a CONSTRUCT/DESCRIBE result cannot be written as '{format_name}'"
                              f"; use one of: {', '.join(FORMATS)}")
        quads = [ox.Quad(t.subject, t.predicate, t.object, ox.DefaultGraph()) for t in result]
        return serialize_quads(quads, name)
    if format_name == "table":
        if isinstance(result, ox.QueryBoolean):
            return (b"true\n" if bool(result) else b"false\n")
        return render_table(result).encode("utf-8")
    if format_name not in RESULT_FORMATS:
        raise ExportError(f"a SELECT/ASK result cannot be written as '{format_name}'; use one "
                          f"of: {', '.join(TABLE_FORMATS)}")
    fmt = RESULT_FORMATS[format_name]
    data = result.serialize(format=fmt)
    assert data is not None  # no output given: serialize returns the bytes
    return xml_carriage_returns(data) if fmt == ox.QueryResultsFormat.XML else data
