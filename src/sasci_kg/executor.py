"""Run SPARQL in a small pool of long-lived worker processes that can be killed.

pyoxigraph cannot cancel a query, and a crafted query can crash or hang its parser, so every
parse, evaluation and serialisation happens in a worker; the caller gets the finished bytes and
their metadata through a pipe, or an exception. A worker past its time limit is SIGKILLed and
replaced. Workers open the store read-only and reopen it when a load swaps in a new one.

With a remote SPARQL engine behind the endpoint (a :class:`~sasci_kg.backends.BackendSettings`
instead of a store path), a worker checks the query's syntax with pyoxigraph, then forwards
it through :class:`~sasci_kg.remote.RemoteBackend`, each request bounded by the job's time
limit; the same serialisers, row and byte caps apply to the answer.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import pickle
import re
import resource
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Any, cast

import pyoxigraph as ox

from .backends import BackendSettings, open_remote
from .errors import (
    NotFoundError,
    QueryError,
    RemoteError,
    RemoteIncompleteError,
    RemoteProtocolError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    SasciKgError,
    StoreError,
    StoreLockedError,
)
from .export import xml_carriage_returns
from .guard import QuerySyntaxError, tokenize
from .offline import take_offline
from .remote import EMPTY_GRAPH, RemoteBackend
from .store import Generation, default_store_path, replace_store, store_generation
from .vocab import PREFIXES

log = logging.getLogger(__name__)

JSON_RESULTS = "application/sparql-results+json"

# ---------------------------------------------------------------------------------------
# Errors (subclasses of the library tree in errors.py).


class QueryTimeoutError(QueryError):
    """A query that did not finish within its time limit; its worker was killed."""

    def __init__(self, limit: float):
        super().__init__(
            f"the query did not finish within {limit:g} s and was stopped; make it more "
            "selective (a LIMIT, fewer OPTIONALs or unbounded paths) or ask for a longer "
            "`timeout` (up to this endpoint's maximum)"
        )
        self.limit = limit


class ResultTooLargeError(QueryError):
    """A result over the row or byte cap; nothing of it is sent."""

    def __init__(self, cap: str, limit: int):
        unit = "rows" if cap == "max-rows" else "bytes"
        super().__init__(
            f"the result has more than {limit} {unit} ({cap}); add a LIMIT, page with "
            "LIMIT/OFFSET, or select fewer variables"
        )
        self.cap = cap
        self.limit = limit


class ExecutorBusyError(SasciKgError):
    """Every worker is busy and the wait queue is full (or the wait ran out)."""

    def __init__(self, retry_after: int):
        super().__init__(
            f"all query workers are busy; try again in {retry_after} s"
        )
        self.retry_after = retry_after


class WorkerCrashedError(SasciKgError):
    """The worker process died while running a job (``phase``: parse or run).
    ``memory_mb``: the address-space limit a query process has (0: none)."""

    def __init__(self, phase: str, exitcode: int | None, *, memory_mb: int = 0):
        if phase == "parse":
            message = (
                "the query crashed the SPARQL parser (it is too complex: very long chains of "
                "operators, paths or OPTIONALs); simplify it"
            )
        elif memory_mb:
            message = (
                "the query process stopped while running the query, most likely because it "
                f"needed more than the {memory_mb} MiB of memory a query may use; narrow it "
                "(more specific patterns, fewer joins, a LIMIT); the error is logged"
            )
        else:
            message = "the query worker stopped unexpectedly (out of memory?); the error is logged"
        super().__init__(message)
        self.phase = phase
        self.exitcode = exitcode


class QueryTooComplexError(WorkerCrashedError):
    """The query crashed its worker before it ran: the parser or planner gave out (400).

    The query is at fault, not the server: a long chain of unary operators or path steps
    overflows the parser's stack, and no size or nesting limit can rule every such chain out.
    """


# pyoxigraph's query call parses, plans and, for what must see every solution first (ORDER BY,
# aggregates, DISTINCT …), evaluates: a worker that dies inside it has crashed the parser only if
# it died soon. A query within the guard's size and nesting limits parses in milliseconds, while
# running out of memory takes seconds of work — or less, under a small memory limit: so also
# by how it died. The parser's stack overflows (SIGSEGV); a failed allocation aborts
# (SIGABRT), the kernel's OOM killer sends SIGKILL: only a SIGSEGV soon is the parser's.
PARSE_WINDOW = 0.25


def crash_error(*, parsed: bool, seconds: float, exitcode: int | None,
                memory_mb: int = 0) -> WorkerCrashedError:
    """The error for a worker that died ``seconds`` into a query job: the parser's (400) or a
    failure while running (500; ``memory_mb``: the worker's memory limit, for the message)."""
    if not parsed and seconds < PARSE_WINDOW and exitcode == -signal.SIGSEGV:
        return QueryTooComplexError("parse", exitcode)
    return WorkerCrashedError("run", exitcode, memory_mb=memory_mb)


class StoreUnavailableError(StoreError):
    """The store directory is missing or cannot be opened right now."""


class InvalidRdfError(SasciKgError):
    """An RDF document sent to be written that does not parse."""


# ---------------------------------------------------------------------------------------
# Jobs and outcomes. Formats travel as media types: pyoxigraph's format objects do not pickle.


@dataclass(frozen=True)
class QueryJob:
    """Run a query and serialise its result.

    ``default_graph``/``named_graphs`` are the protocol's dataset (None: not given); ``union``
    makes the default graph the union of all graphs when no dataset is given at all.
    """

    sparql: str
    media_type: str
    prefixes: Mapping[str, str] = field(default_factory=dict)
    default_graph: tuple[str, ...] | None = None
    named_graphs: tuple[str, ...] | None = None
    union: bool = True
    base_iri: str | None = None
    max_rows: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    # The store generation the request saw, when it looked (saves the worker looking again).
    generation: Generation | None = None
    # Whether the embedded store parses the text with ``prefixes`` declared (the guard found
    # a prefix it does not declare itself); if not, they only name the namespaces of a graph
    # result's Turtle, and a text that fails to parse without them is parsed again with the
    # default prefixes. Handing the parser the 37 default prefixes cost ~12 µs a query warm,
    # several times that cold.
    declare_prefixes: bool = True


@dataclass(frozen=True)
class DumpJob:
    """Serialise one graph (``graph`` IRI), the union default graph (``graph=None``,
    ``dataset=False``) or the whole dataset (``dataset=True``)."""

    media_type: str
    graph: str | None = None
    dataset: bool = False
    prefixes: Mapping[str, str] = field(default_factory=dict)
    max_rows: int = 1_000_000
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class InfoJob:
    """Report the named graphs and the number of quads."""


@dataclass(frozen=True)
class UpdateJob:
    """Apply a SPARQL Update (on a staging copy, then swapped in)."""

    sparql: str
    prefixes: Mapping[str, str] = field(default_factory=dict)
    base_iri: str | None = None


@dataclass(frozen=True)
class GraphWriteJob:
    """A Graph Store Protocol write: ``put`` (replace), ``post`` (add) or ``delete`` a graph."""

    action: str
    graph: str
    data: bytes = b""
    media_type: str = ""


Job = QueryJob | DumpJob | InfoJob | UpdateJob | GraphWriteJob


@dataclass(frozen=True)
class Outcome:
    """A finished job: the serialised body and what the worker measured."""

    body: bytes
    rows: int = 0
    seconds: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# RDF serialisation (also used by the web layer for small documents it builds itself).

_PREFIX_LINE = re.compile(rb"@prefix ([^:\s]*): <([^>]*)> \.\n")
_PREFIX_BLOCK = re.compile(rb"(?:@prefix [^:\s]*: <[^>]*> \.\n)*")
# Up to this many prefixes, pyoxigraph is given them all and the unused ones are dropped from
# its output afterwards: finding the used ones first, term by term in Python, took longer
# than the serialisation. A query declaring very many is matched first (pyoxigraph tries
# every prefix on every IRI).
_ALL_PREFIXES_UP_TO = 64
_NAMESPACE_END = re.compile(r"[/#]")
# A prefix name is written where no longer name runs into it from the left.
_NAME_START = rb"(?<![\w.:\-])"
_WRITTEN_NAME = re.compile(_NAME_START + rb"([\w.\-]*):")
_PLAIN_NAME = re.compile(rb"[\w.\-]*")
_PREFIXED_FORMATS = ("Turtle", "TriG")


def serialize_rdf(
    items: Iterable[ox.Triple] | Iterable[ox.Quad],
    format: ox.RdfFormat,
    prefixes: Mapping[str, str] | None = None,
    *,
    max_bytes: int | None = None,
) -> bytes:
    """Serialise triples or quads, sorted, declaring only the prefixes the output uses.

    Raises :class:`ResultTooLargeError` as soon as the output passes ``max_bytes``.
    """
    ordered: list[Any] = sorted(items, key=str)
    candidates: Mapping[str, str] | None = None
    if prefixes and format.name in _PREFIXED_FORMATS and len(prefixes) <= _ALL_PREFIXES_UP_TO:
        candidates = prefixes  # the unused ones are dropped below
    elif prefixes and format.name in (*_PREFIXED_FORMATS, "RDF/XML"):
        candidates = _candidate_prefixes(ordered, prefixes)
    writer = _CappedWriter(max_bytes)
    ox.serialize(ordered, cast(_Sink, writer), format,
                 prefixes=dict(candidates) if candidates else None)
    data = writer.value()
    if candidates and format.name in _PREFIXED_FORMATS:
        data = _tidy_prefixes(data)
    elif format == ox.RdfFormat.RDF_XML:
        data = xml_carriage_returns(data)  # (each CR grows to 5 bytes: capped again)
        if max_bytes is not None and len(data) > max_bytes:
            raise _CapExceeded
    return data


def _iris(term: object, out: set[str]) -> None:
    if isinstance(term, ox.NamedNode):
        out.add(term.value)
    elif isinstance(term, ox.Literal):
        out.add(term.datatype.value)
    elif isinstance(term, (ox.Triple, ox.Quad)):
        _iris(term.subject, out)
        _iris(term.predicate, out)
        _iris(term.object, out)
        if isinstance(term, ox.Quad):
            _iris(term.graph_name, out)


def _candidate_prefixes(items: Sequence[object], prefixes: Mapping[str, str]) -> dict[str, str]:
    """The prefixes whose namespace starts at least one IRI of the data."""
    iris: set[str] = set()
    for item in items:
        _iris(item, iris)
    by_namespace = {ns: name for name, ns in prefixes.items()}
    used: dict[str, str] = {}
    for iri in iris:
        # Only the text up to a '/' or '#' can be a namespace here: find those in C (a loop
        # over every character was most of a CONSTRUCT's time in the worker).
        for separator in _NAMESPACE_END.finditer(iri):
            if (name := by_namespace.get(iri[: separator.end()])) is not None:
                used[name] = prefixes[name]
    for name, ns in prefixes.items():  # namespaces that end elsewhere than / or #
        if name not in used and ns[-1:] not in ("/", "#") and any(i.startswith(ns) for i in iris):
            used[name] = ns
    return used


def _tidy_prefixes(data: bytes) -> bytes:
    """Drop declared prefixes the body never uses and sort the rest (deterministic output).

    A name counts as used when ``name:`` appears in the body outside a longer name; a false
    "used" (the text inside a literal) only keeps a harmless declaration.
    """
    header = _PREFIX_BLOCK.match(data)
    pos = header.end() if header else 0
    declared: list[tuple[bytes, bytes]] = _PREFIX_LINE.findall(data, 0, pos)
    body = data[pos:]
    # Every name written before a ':' in one pass (a search per declared name was most of a
    # small CONSTRUCT's time); a name this pattern cannot spell is searched for on its own.
    written = set(_WRITTEN_NAME.findall(body))
    kept = sorted(
        (name, iri)
        for name, iri in declared
        if name in written
        or (_PLAIN_NAME.fullmatch(name) is None
            and re.search(_NAME_START + re.escape(name) + rb":", body))
    )
    return b"".join(b"@prefix %s: <%s> .\n" % pair for pair in kept) + body


# What pyoxigraph's serialisers are given to write to (made once: IO[bytes] costs a call into
# typing each time it is written, on every query).
_Sink = IO[bytes]


class _CapExceeded(Exception):
    """Raised inside serialisation when the output passes the byte cap."""


class _CappedWriter:
    """A binary sink for pyoxigraph's serialisers that stops at ``limit`` bytes."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if self.limit is not None and len(self._buffer) > self.limit:
            raise _CapExceeded
        return len(data)

    def flush(self) -> None:
        pass

    def value(self) -> bytes:
        return bytes(self._buffer)


# A JSON string as pyoxigraph writes one (every '"' and '\\' inside it escaped).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
# The start of a solution that binds a variable: its first term, after its name. No string
# can hold it (a '"' inside one is escaped, and no key ends with '{'), nor does a term's own
# object start so ('{"type":' is followed by a string). A triple term's subject looks the same
# (its key is "subject"), and follows its "value".
_SOLUTION_START = re.compile(rb'\{"[^"]*+":\{"type":')
_TRIPLE_SUBJECT = b'"value":{"subject":{"type":'


def _json_rows(data: bytes | bytearray) -> int:
    """The solutions in SPARQL JSON written by pyoxigraph, or in the start of it, read the
    slow way: the strings taken out (~13 ns a byte). Its output is compact, and outside
    strings "[{" and ",{" stand only where a solution starts: the head's variables are
    strings, and every term and nested term follows a ':'. In the start of a document, a '"'
    left after that is where an unfinished string begins: what follows it is not counted."""
    structure = _JSON_STRING.sub(b"", data)
    unfinished = structure.find(b'"')
    if unfinished >= 0:
        structure = structure[:unfinished]
    return structure.count(b"[{") + structure.count(b",{")


class _SolutionCounter(_CappedWriter):
    """A capped sink for pyoxigraph's SPARQL JSON that counts the solutions as they are
    written, and stops past ``max_rows``.

    The solutions that bind a variable are counted by their starts (:data:`_SOLUTION_START`,
    found from a literal '{"' in C: ~0.6 ns a byte, whatever the variables), less the triple
    terms' subjects: exact. A solution that binds nothing is ``{}``, which a string may hold
    too: those written are counted as maybe solutions, and when they could take the count
    past the cap, the solutions so far are counted the slow way (:func:`_json_rows`; again
    only once the maybes have doubled), and once all is written if any is there.
    """

    def __init__(self, limit: int, max_rows: int, variables: Sequence[ox.Variable]):
        super().__init__(limit)
        self.max_rows = max_rows
        self.started = 0  # solutions that bind a variable, in what is written so far
        self.maybe_empty = 0  # "{}" written so far
        self.look_past = max_rows  # (see the class text)
        # A start not yet whole at the end of what was written is looked for again: none is
        # longer than this.
        self._longest = max((len(v.value.encode("utf-8")) for v in variables), default=0) + 13
        self._counted = 0  # how much of the buffer has been looked at
        self._resume = 0  # where the last start found ends

    def write(self, data: bytes) -> int:
        written = super().write(data)
        buffer, counted = self._buffer, self._counted
        for found in _SOLUTION_START.finditer(buffer, max(self._resume, counted - self._longest)):
            self.started += 1
            self._resume = found.end()
        # (A triple subject ends where its start does: both are counted at the same write.)
        self.started -= buffer.count(_TRIPLE_SUBJECT,
                                     max(0, counted - len(_TRIPLE_SUBJECT) + 1))
        self.maybe_empty += buffer.count(b"{}", max(0, counted - 1))
        self._counted = len(buffer)
        if self.started > self.max_rows:
            raise ResultTooLargeError("max-rows", self.max_rows)
        if self.started + self.maybe_empty > self.look_past:
            if _json_rows(buffer) > self.max_rows:
                raise ResultTooLargeError("max-rows", self.max_rows)
            self.look_past = 2 * (self.started + self.maybe_empty)
        return written

    def rows(self, body: bytes) -> int:
        """The solutions in ``body`` (all that was written)."""
        return _json_rows(body) if self.maybe_empty else self.started


def _serialize_solutions(
    solutions: ox.QuerySolutions, media_type: str, max_rows: int, max_bytes: int
) -> tuple[bytes, int]:
    """SPARQL JSON written by pyoxigraph within the byte and row caps (its solutions counted
    as it writes: :class:`_SolutionCounter`); other formats converted from it by pyoxigraph.
    (Writing the JSON row by row in Python, to count the rows, took ~10 µs a row: 15 ms of
    a 1,400-row text search's ~170 ms.)
    """
    # The JSON is only an intermediate for the other formats, which are usually smaller.
    writer = _SolutionCounter(max_bytes if media_type == JSON_RESULTS else 4 * max_bytes,
                              max_rows, solutions.variables)
    try:
        solutions.serialize(cast(_Sink, writer), ox.QueryResultsFormat.JSON)
    except _CapExceeded:
        raise ResultTooLargeError("max-bytes", max_bytes) from None
    out = writer.value()
    rows = writer.rows(out)
    if rows > max_rows:
        raise ResultTooLargeError("max-rows", max_rows)
    if media_type == JSON_RESULTS:
        return out, rows
    parsed = ox.parse_query_results(out, ox.QueryResultsFormat.JSON)
    converted = _CappedWriter(max_bytes)
    fmt = results_format(media_type)
    try:
        parsed.serialize(cast(_Sink, converted), fmt)
    except _CapExceeded:
        raise ResultTooLargeError("max-bytes", max_bytes) from None
    if fmt == ox.QueryResultsFormat.XML:
        out = xml_carriage_returns(converted.value())  # (each CR grows to 5 bytes: capped again)
        if len(out) > max_bytes:
            raise ResultTooLargeError("max-bytes", max_bytes)
        return out, rows
    return converted.value(), rows


def _collect(items: Iterable[Any], max_rows: int) -> list[Any]:
    collected: list[Any] = []
    for item in items:
        if len(collected) >= max_rows:
            raise ResultTooLargeError("max-rows", max_rows)
        collected.append(item)
    return collected


def _capped_rdf(
    items: Sequence[Any], media_type: str, prefixes: Mapping[str, str], max_bytes: int
) -> bytes:
    try:
        return serialize_rdf(items, rdf_format(media_type), prefixes, max_bytes=max_bytes)
    except _CapExceeded:
        raise ResultTooLargeError("max-bytes", max_bytes) from None


# ---------------------------------------------------------------------------------------
# The worker process.


class _StoreHandle:
    """The worker's read-only store, reopened when a load has swapped in a new one."""

    def __init__(self, path: Path):
        self.path = path
        self.generation: Generation | None = None
        self._store: ox.Store | None = None

    def get(self, seen: Generation | None = None) -> ox.Store:
        """The store; ``seen`` is its generation if the caller has just looked (a new one is
        looked at again after it is opened, as always)."""
        generation = seen or store_generation(self.path)
        if generation is None:
            raise StoreUnavailableError(
                f"{self.path}: no store here (is a load replacing it?); try again shortly"
            )
        if self._store is None or generation != self.generation:
            self._store = None
            for attempt in range(3):
                try:
                    store = ox.Store.read_only(str(self.path))
                except (OSError, RuntimeError) as exc:  # swapped while opening: try again
                    if attempt == 2:  # (RuntimeError: RocksDB found the store damaged)
                        raise StoreUnavailableError(
                            f"{self.path}: cannot open ({exc}); if the store is damaged, "
                            "rebuild it with `sasci-kg load`"
                        ) from exc
                    time.sleep(0.05)
                    continue
                if store_generation(self.path) == generation:
                    self._store = store
                    break
                generation = store_generation(self.path)
            else:
                raise StoreUnavailableError(f"{self.path}: the store keeps changing; try again")
            self.generation = generation
        assert self._store is not None
        return self._store

    def changed(self) -> bool:
        return store_generation(self.path) != self.generation


class _RemoteHandle:
    """The worker's remote engine: one :class:`RemoteBackend` (its graph list cached briefly)."""

    generation: Generation | None = None  # a remote engine has no store generations

    def __init__(self, settings: BackendSettings):
        self.settings = settings
        self._backend: RemoteBackend | None = None
        self._parser: ox.Store | None = None

    def get(self) -> RemoteBackend:
        if self._backend is None:
            self._backend = open_remote(self.settings)
        return self._backend

    def parser(self) -> ox.Store:
        """An empty in-memory store, to check a query's syntax before it is forwarded."""
        if self._parser is None:
            self._parser = ox.Store()
        return self._parser

    def changed(self) -> bool:
        return False


_SYNTAX = re.compile(r"error at (\d+):(\d+): (.*)", re.DOTALL)
# The prefixed name that ends where the parser stopped ("Prefix not found").
_PNAME_BEFORE = re.compile(r"([A-Za-z][\w.-]*)?:[\w.%:-]*\Z")


def _syntax_error(exc: SyntaxError, sparql: str = "") -> QuerySyntaxError:
    text = str(exc)
    m = _SYNTAX.match(text)
    if not m:
        return QuerySyntaxError(f"syntax error: {text[:300]}")
    line, column, rest = int(m.group(1)), int(m.group(2)), " ".join(m.group(3).split())
    lines = sparql.split("\n")
    name = (_PNAME_BEFORE.search(lines[line - 1][:column - 1])
            if rest.startswith("expected one of Prefix not found") and line <= len(lines)
            else None)
    if name is not None:
        # pyoxigraph lists every character it would have taken instead: say what is wrong.
        prefix = name.group(1) or ""
        rest = (f"the prefix {prefix}: (in {name.group(0)}) is declared neither in the query "
                f"nor among the endpoint's default prefixes; declare it: PREFIX {prefix}: <…>")
    elif (relative := _relative_iri_before(sparql, line, column)) is not None:
        # pyoxigraph says "expected one of GROUP_CONCAT, …" or "expected OPTIONAL" at the end
        # of the group: name the IRI, which it cannot resolve without a base.
        iri, line, column = relative
        rest = (f"the IRI {iri} is relative, and a query here has no base IRI; write it in "
                "full (<https://…>) or declare one first: BASE <https://…>")
    if len(rest) > 200:
        rest = rest[:200] + "…"
    return QuerySyntaxError(
        f"syntax error at line {line}, column {column}: {rest}", line=line, column=column
    )


# A relative reference as people write one (<x>, <#y>, <../z>): not <?b&&?c>, which the
# tokenizer reads as an IRI in `FILTER(?a<?b&&?c>?d)`.
_RELATIVE = re.compile(
    r"(?![A-Za-z][A-Za-z0-9+.-]*:)[A-Za-z0-9#./_~%-][A-Za-z0-9#./_~%:@!$()*+,;=-]*")


def _relative_iri_before(sparql: str, line: int, column: int) -> tuple[str, int, int] | None:
    """The first relative IRI of a query without BASE, with its line and column, if it comes
    before the place pyoxigraph gave up (line, column)."""
    lines = sparql.split("\n")
    offset = sum(len(text) + 1 for text in lines[:line - 1]) + column - 1
    try:
        for token in tokenize(sparql):
            if token.offset >= offset:
                return None
            if token.keyword == "BASE":
                return None
            if token.kind == "iri" and _RELATIVE.fullmatch(token.text[1:-1]):
                before = sparql[:token.offset]
                return token.text, before.count("\n") + 1, token.offset - before.rfind("\n")
    except QuerySyntaxError:
        return None
    return None


def _run_query(job: QueryJob, handle: _StoreHandle, parsed: Callable[[], None]) -> Outcome:
    kwargs: dict[str, Any] = {"prefixes": job.prefixes if job.declare_prefixes else {},
                              "base_iri": job.base_iri}
    if job.default_graph is not None or job.named_graphs is not None:
        # SPARQL 1.1 Protocol §2.1.4: the protocol dataset replaces the query's own.
        kwargs["default_graph"] = [ox.NamedNode(g) for g in job.default_graph or ()]
        kwargs["named_graphs"] = [ox.NamedNode(g) for g in job.named_graphs or ()]
    elif job.union:
        kwargs["use_default_graph_as_union"] = True
    store = handle.get(job.generation)
    try:
        result = store.query(job.sparql, **kwargs)
    except SyntaxError as exc:
        if job.declare_prefixes:
            raise _syntax_error(exc, job.sparql) from None
        # The guard can judge a text to need no default prefix when it does: it reads
        # `<xsd:integer(1)&&?n>` as one IRI, where the engine reads "less than". Parsed again
        # as it would have been with them: the same answer as declaring them every time.
        kwargs["prefixes"] = PREFIXES
        try:
            result = store.query(job.sparql, **kwargs)
        except SyntaxError as again:
            raise _syntax_error(again, job.sparql) from None
    parsed()
    return _serialise_result(result, job)


def _serialise_result(
    result: ox.QuerySolutions | ox.QueryBoolean | ox.QueryTriples, job: QueryJob
) -> Outcome:
    """A query's result as the job's media type, within its row and byte caps."""
    if isinstance(result, ox.QueryBoolean):
        body = result.serialize(format=results_format(job.media_type))
        assert body is not None
        return Outcome(body, rows=1)
    if isinstance(result, ox.QuerySolutions):
        results_format(job.media_type)
        body, rows = _serialize_solutions(result, job.media_type, job.max_rows, job.max_bytes)
        return Outcome(body, rows=rows)
    assert isinstance(result, ox.QueryTriples)
    if rdf_format(job.media_type) == ox.RdfFormat.N_TRIPLES:
        body, rows = _sorted_ntriples(result, job.max_rows, job.max_bytes)
        return Outcome(body, rows=rows)
    triples = _collect(result, job.max_rows)
    return Outcome(_capped_rdf(triples, job.media_type, job.prefixes, job.max_bytes), len(triples))


class _LineCounter(_CappedWriter):
    """A capped sink for pyoxigraph's N-Triples that stops past ``max_rows`` lines (one per
    triple: a line break inside a literal is written as an escape)."""

    def __init__(self, limit: int, max_rows: int):
        super().__init__(limit)
        self.max_rows = max_rows
        self.lines = 0

    def write(self, data: bytes) -> int:
        written = super().write(data)
        self.lines += data.count(b"\n")
        if self.lines > self.max_rows:
            raise ResultTooLargeError("max-rows", self.max_rows)
        return written


def _sorted_ntriples(triples: ox.QueryTriples, max_rows: int, max_bytes: int
                     ) -> tuple[bytes, int]:
    """A graph result as N-Triples in the order :func:`serialize_rdf` gives (sorted by each
    triple's text), written by pyoxigraph and its lines sorted: a line is the triple's text
    and " .", and " " sorts before anything that can follow a term, so the orders agree.
    (Collecting the triples in Python and sorting them by str() was ~60 µs of a light
    CONSTRUCT's ~1 ms.)"""
    writer = _LineCounter(max_bytes, max_rows)
    try:
        ox.serialize(triples, cast(_Sink, writer), ox.RdfFormat.N_TRIPLES)
    except _CapExceeded:
        raise ResultTooLargeError("max-bytes", max_bytes) from None
    lines = writer.value().split(b"\n")[:-1]  # (each ends with one; nothing after the last)
    lines.sort()
    return b"\n".join(lines) + b"\n" if lines else b"", len(lines)


def results_format(media_type: str) -> ox.QueryResultsFormat:
    """pyoxigraph's results format for a media type (QueryError if it is not one)."""
    fmt = ox.QueryResultsFormat.from_media_type(media_type)
    if fmt is None:
        raise QueryError(f"{media_type} is not a SPARQL results format; this result needs one")
    return fmt


def rdf_format(media_type: str) -> ox.RdfFormat:
    """pyoxigraph's RDF format for a media type (QueryError if it is not one)."""
    fmt = ox.RdfFormat.from_media_type(media_type)
    if fmt is None:
        raise QueryError(f"{media_type} is not an RDF format; this result needs one")
    return fmt


def _run_dump(job: DumpJob, handle: _StoreHandle) -> Outcome:
    store = handle.get()
    items: list[Any]
    if job.dataset:
        items = _collect(store.quads_for_pattern(None, None, None, None), job.max_rows)
    elif job.graph is not None:
        graph = ox.NamedNode(job.graph)
        if not store.contains_named_graph(graph):
            raise NotFoundError(f"there is no graph <{job.graph}> in this dataset")
        quads = store.quads_for_pattern(None, None, None, graph)
        items = _collect((q.triple for q in quads), job.max_rows)
    else:  # the default graph, which this endpoint defines as the union of all graphs
        triples = store.query(
            "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }", use_default_graph_as_union=True
        )
        assert isinstance(triples, ox.QueryTriples)
        items = list(dict.fromkeys(_collect(triples, job.max_rows)))
    return Outcome(_capped_rdf(items, job.media_type, job.prefixes, job.max_bytes), len(items))


def _run_info(handle: _StoreHandle) -> Outcome:
    store = handle.get()
    graphs = sorted(g.value for g in store.named_graphs() if isinstance(g, ox.NamedNode))
    return Outcome(b"", info={"graphs": graphs, "quads": len(store)})


# A job's requests to the engine end this much before its time limit (at most), so that the
# worker reports the time-out itself instead of being killed and replaced: it only waits on a
# socket, and the engine's own error may be more telling.
_REMOTE_MARGIN = 0.25


@contextmanager
def _within_limit(handle: _RemoteHandle, limit: float | None,
                  started: float) -> Iterator[RemoteBackend]:
    """The backend, with every request of the job bounded by the job's time limit (counted
    from ``started``, a ``time.monotonic()`` value); running out is a QueryTimeoutError."""
    backend = handle.get()
    if limit is None:
        yield backend
        return
    until = started + limit - min(_REMOTE_MARGIN, limit / 5)
    try:
        with backend.within(until - time.monotonic()):
            yield backend
    except RemoteTimeoutError:
        # The job's limit ran out (not the engine's own time-out, nor its partial answer).
        if time.monotonic() >= until - 0.05:
            raise QueryTimeoutError(limit) from None
        raise


def _has_service(sparql: str) -> bool:
    try:
        return any(token.keyword == "SERVICE" for token in tokenize(sparql))
    except QueryError:
        return False


def _check_syntax(job: QueryJob, handle: _RemoteHandle) -> None:
    """Parse the query with pyoxigraph before it goes to the engine: the same syntax errors
    (line and column) as the embedded store, and nothing but SPARQL reaches the engine.

    The parse is an evaluation on an empty store: lazy for SELECT, CONSTRUCT and DESCRIBE,
    eager (and instant) for ASK. A query with SERVICE is left to the engine, so that an
    allowed service is not called twice.
    """
    if _has_service(job.sparql):
        return
    try:
        handle.parser().query(job.sparql, prefixes=dict(job.prefixes), base_iri=job.base_iri)
    except SyntaxError as exc:
        raise _syntax_error(exc, job.sparql) from None


def _remote_dataset(parts: tuple[str, ...] | None) -> list[str] | None:
    # The Backend interface treats an empty list as "not given": a protocol dataset that
    # names no graph for a part must still replace our union, with a graph that never exists.
    return None if parts is None else (list(parts) or [EMPTY_GRAPH])


def _run_remote_query(job: QueryJob, handle: _RemoteHandle, parsed: Callable[[], None],
                      limit: float | None, started: float) -> Outcome:
    _check_syntax(job, handle)
    parsed()
    dataset = job.default_graph is not None or job.named_graphs is not None
    with _within_limit(handle, limit, started) as backend:
        # SPARQL 1.1 Protocol §2.1.4: the protocol dataset replaces the query's own; without
        # one, the backend answers over our graphs, or over the query's FROM when it has one.
        result = backend.query(
            job.sparql,
            default_graph=_remote_dataset(job.default_graph if dataset else None),
            named_graphs=_remote_dataset(job.named_graphs if dataset else None),
            base_iri=job.base_iri,
            prefixes=dict(job.prefixes),
        )
    return _serialise_result(result, job)


def _run_remote_dump(job: DumpJob, handle: _RemoteHandle, limit: float | None,
                     started: float) -> Outcome:
    with _within_limit(handle, limit, started) as backend:
        graphs = backend.graphs()
        if job.graph is not None:
            if job.graph not in graphs:
                raise NotFoundError(f"there is no graph <{job.graph}> in this dataset")
            graphs = [job.graph]
        sizes = backend.graph_sizes(graphs)
        # Refuse before reading: the engine counts cheaply, a whole read is not.
        if (job.dataset or job.graph is not None) and sum(sizes.values()) > job.max_rows:
            raise ResultTooLargeError("max-rows", job.max_rows)
        # Each graph is read whole and refused unless it has as many triples as counted.
        quads = (quad for graph in graphs for quad in backend.graph_quads(graph, sizes[graph]))
        items: list[Any]
        if job.dataset:
            items = _collect(quads, job.max_rows)
        elif job.graph is not None:
            items = _collect((quad.triple for quad in quads), job.max_rows)
        else:  # the union default graph: a triple in two graphs counts once
            items = list(dict.fromkeys(quad.triple for quad in quads))
            if len(items) > job.max_rows:
                raise ResultTooLargeError("max-rows", job.max_rows)
    return Outcome(_capped_rdf(items, job.media_type, job.prefixes, job.max_bytes), len(items))


def _run_remote_info(handle: _RemoteHandle, limit: float | None,
                     started: float) -> Outcome:
    with _within_limit(handle, limit, started) as backend:
        graphs = backend.graphs_uncached()
        sizes = backend.graph_sizes(graphs)
    return Outcome(b"", info={"graphs": graphs, "quads": sum(sizes.values())})


def _run_write(job: UpdateJob | GraphWriteJob, path: Path) -> Outcome:
    """Apply a write to a staging copy and swap it in, under the store's write lock.

    Why not write in place: Oxigraph documents that opening a store read-only while another
    process writes it is undefined behaviour, and the query workers hold read-only handles.
    So the live directory is never written. A RocksDB checkpoint (``backup``: hard links to
    the immutable table files) becomes the staging store, the write is applied there, and the
    same rename swap as ``load_store`` makes it live; readers reopen on the new generation.
    Writes are serialised by the store's write lock (a concurrent load or write → locked).
    """
    info: dict[str, Any] = {}

    def build(staging: Path) -> None:
        ox.Store.read_only(str(path)).backup(str(staging))
        store = ox.Store(str(staging))
        info.update(_apply_write(job, store))
        store.flush()
        del store

    replace_store(path, build)
    return Outcome(b"", info={**info, "generation": store_generation(path)})


def _apply_write(job: UpdateJob | GraphWriteJob, store: ox.Store) -> dict[str, Any]:
    if isinstance(job, UpdateJob):
        try:
            store.update(job.sparql, prefixes=dict(job.prefixes), base_iri=job.base_iri)
        except SyntaxError as exc:
            raise _syntax_error(exc, job.sparql) from None
        return {}
    graph = ox.NamedNode(job.graph)
    exists = store.contains_named_graph(graph)
    if job.action == "delete":
        if not exists:
            raise NotFoundError(f"there is no graph <{job.graph}> in this dataset")
        store.remove_graph(graph)
        return {"created": False}
    if job.action == "put" and exists:
        store.clear_graph(graph)
    try:
        # Relative IRIs in the body are resolved against the graph's IRI (RFC 3986 §5.1).
        store.load(job.data, format=rdf_format(job.media_type), to_graph=graph,
                   base_iri=job.graph)
    except SyntaxError as exc:
        raise InvalidRdfError(f"the request body is not valid {job.media_type}: {exc}") from None
    if not exists:
        store.add_graph(graph)
    return {"created": not exists}


# A remote engine's errors cross the pipe by kind name.
_REMOTE_ERRORS: dict[str, type[RemoteError]] = {
    "unavailable": RemoteUnavailableError,
    "timeout": RemoteTimeoutError,
    "protocol": RemoteProtocolError,
    "incomplete": RemoteIncompleteError,
}
_REMOTE_KINDS = {cls: kind for kind, cls in _REMOTE_ERRORS.items()}


def _error_reply(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, QuerySyntaxError):
        return ("error", "syntax", str(exc), {"line": exc.line, "column": exc.column})
    if isinstance(exc, ResultTooLargeError):
        return ("error", "cap", str(exc), {"cap": exc.cap, "limit": exc.limit})
    if isinstance(exc, NotFoundError):
        return ("error", "notfound", str(exc), {})
    if isinstance(exc, StoreLockedError):
        return ("error", "locked", str(exc), {})
    if isinstance(exc, StoreUnavailableError):
        return ("error", "unavailable", str(exc), {})
    if isinstance(exc, InvalidRdfError):
        return ("error", "invalid-rdf", str(exc), {})
    if isinstance(exc, QueryTimeoutError):
        return ("error", "timeout", str(exc), {"limit": exc.limit})
    if isinstance(exc, RemoteError):
        return ("error", "remote", str(exc), {"kind": _REMOTE_KINDS.get(type(exc), "")})
    if isinstance(exc, (QueryError, ValueError, RuntimeError, TypeError)):
        return ("error", "query", f"the query cannot run: {exc}", {})
    return ("error", "internal", f"{type(exc).__name__}: {exc}", {})


def _rebuild_error(reply: tuple[Any, ...]) -> SasciKgError:
    _, code, message, extra = reply
    if code == "syntax":
        return QuerySyntaxError(message, line=extra.get("line"), column=extra.get("column"))
    if code == "cap":
        return ResultTooLargeError(extra["cap"], extra["limit"])
    if code == "notfound":
        return NotFoundError(message)
    if code == "locked":
        return StoreLockedError(message)
    if code == "unavailable":
        return StoreUnavailableError(message)
    if code == "invalid-rdf":
        return InvalidRdfError(message)
    if code == "timeout":
        return QueryTimeoutError(extra["limit"])
    if code == "remote":
        return _REMOTE_ERRORS.get(extra.get("kind", ""), RemoteError)(message)
    if code == "query":
        return QueryError(message)
    return StoreError(message)


_SIZE = struct.Struct("!i")
_BIG_SIZE = struct.Struct("!Q")


def _receive(conn: Connection) -> Any:
    """``conn.recv()``, reading a message of up to 64 KiB in one system call.

    multiprocessing reads the 4-byte length and then the payload: two reads, and in the web
    process two releases of the GIL that other request threads fight over, on every job.
    Safe because each side has at most one message in flight: a job, then its one reply.
    """
    fd = conn.fileno()
    data: bytes | bytearray = os.read(fd, 65536)
    if not data:
        raise EOFError
    data = _read_until(fd, data, _SIZE.size)
    (size,) = _SIZE.unpack_from(data)
    start = _SIZE.size
    if size == -1:  # over 2 GiB: an 8-byte length follows (multiprocessing's framing)
        data = _read_until(fd, data, start + _BIG_SIZE.size)
        (size,) = _BIG_SIZE.unpack_from(data, start)
        start += _BIG_SIZE.size
    data = _read_until(fd, data, start + size)
    return pickle.loads(memoryview(data)[start:start + size])


def _send(conn: Connection, message: Any) -> None:
    """``conn.send(message)`` in the same framing, pickled by plain :func:`pickle.dumps`:
    multiprocessing's ForkingPickler copies the copyreg dispatch table and builds a BytesIO on
    every call (~8 % of the web process's Python time per query), for reducers (sockets,
    connections) that jobs and replies never hold."""
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _read_until(fd: int, data: bytes | bytearray, size: int) -> bytes | bytearray:
    """``data`` and what follows it on ``fd``, until there are ``size`` bytes (never more)."""
    if len(data) >= size:
        return data
    buffer = bytearray(data)
    while len(buffer) < size:
        more = os.read(fd, min(size - len(buffer), 1 << 20))
        if not more:
            raise OSError("got end of file during message")
        buffer += more
    return buffer


def _watch_parent(parent: int) -> None:
    """Exit when the parent goes away, even while a query runs (pyoxigraph frees the GIL)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _worker_main(conn: Connection, phase: Any, target: str | BackendSettings,
                 memory_limit_mb: int, writer: bool, offline: bool = False) -> None:
    """The loop of one worker process: receive (job, time limit), send a reply. ``target`` is
    the store directory, or the settings of a remote engine.

    ``phase`` is a byte of shared memory the parent clears before each job and the worker sets
    once the query has parsed: if the worker dies, the parent reads it to tell a query that
    crashed the parser (400) from a failure while running (500) — without a message per job,
    which would cost the parent a wake-up on every query.
    """

    def parsed() -> None:
        phase.value = 1

    if offline:  # first, while this process has one thread (offline.py)
        take_offline()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; no Ctrl-C tracebacks
    try:  # Linux: die with the process that started us
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    if memory_limit_mb > 0:
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    handle: _StoreHandle | _RemoteHandle
    if isinstance(target, BackendSettings):
        handle = _RemoteHandle(target)
    else:
        handle = _StoreHandle(Path(target))
        if not writer:
            try:
                handle.get()  # open early so that the first query does not pay for it
            except StoreError:
                pass
    while True:
        try:
            message = _receive(conn)
        except (EOFError, OSError):
            return
        if message is None:
            return
        job, limit = message
        started = time.perf_counter()
        try:
            outcome = _dispatch(job, handle, parsed, limit, time.monotonic())
        except BaseException as exc:  # report every failure to the parent, then carry on
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            _send(conn, _error_reply(exc))
            continue
        info = dict(outcome.info)
        info.setdefault("generation", handle.generation)
        # One message, body included: a second write would wake the parent twice.
        _send(conn, ("ok", outcome.rows, time.perf_counter() - started, info, outcome.body))


def _dispatch(job: Job, handle: _StoreHandle | _RemoteHandle, parsed: Callable[[], None],
              limit: float | None, started: float) -> Outcome:
    if isinstance(handle, _RemoteHandle):
        if isinstance(job, QueryJob):
            return _run_remote_query(job, handle, parsed, limit, started)
        if isinstance(job, DumpJob):
            return _run_remote_dump(job, handle, limit, started)
        if isinstance(job, InfoJob):
            return _run_remote_info(handle, limit, started)
        raise StoreError("this endpoint never writes to a remote engine; change its data with "
                         "`sasci-kg load --backend remote`")
    if isinstance(job, (UpdateJob, GraphWriteJob)):
        return _run_write(job, handle.path)
    for attempt in (1, 2):
        try:
            if isinstance(job, QueryJob):
                return _run_query(job, handle, parsed)
            if isinstance(job, DumpJob):
                return _run_dump(job, handle)
            return _run_info(handle)
        except OSError:
            # A load swapped the store under us and removed files the old handle had not
            # opened yet: run once more on the new store.
            if attempt == 2 or not handle.changed():
                raise
            if isinstance(job, QueryJob):  # (the generation it saw is the old one)
                job = replace(job, generation=None)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------
# The pool, used from the web process's request threads.


# glibc keeps 7 freed chunks of each size per thread; pyoxigraph allocates and frees hundreds
# per query, so most of its allocations took malloc's slow path (15 % of a query worker's CPU
# on light queries, by perf). With a deeper cache the workers spent ~15 % less CPU per light
# query, for ~14 MiB more each. Ignored by other C libraries.
WORKER_MALLOC_TUNABLE = "glibc.malloc.tcache_count=1000"


def tune_worker_malloc() -> None:
    """Put :data:`WORKER_MALLOC_TUNABLE` in the environment the forkserver (and so every query
    worker) starts with — unless ``GLIBC_TUNABLES`` already sets the tcache. The C library
    reads it only when a program starts, so this process itself is unchanged."""
    current = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache_count" not in current:
        os.environ["GLIBC_TUNABLES"] = (f"{current}:{WORKER_MALLOC_TUNABLE}" if current
                                        else WORKER_MALLOC_TUNABLE)


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    phase: Any  # shared byte: 0 until the worker's current query has parsed, then 1
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        # The pipe is a socketpair: a receive timeout on it lets one blocking read both wait
        # for the reply and take it — one release of the GIL, where poll + read took two.
        self.sock = socket.socket(fileno=os.dup(self.conn.fileno()))

    def receive(self, seconds: float) -> Any:
        """The reply, or :class:`TimeoutError` if none comes within ``seconds``."""
        whole, fraction = divmod(max(seconds, 0.001), 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             _TIMEVAL.pack(int(whole), int(fraction * 1_000_000)))
        try:
            return _receive(self.conn)
        except BlockingIOError:  # EAGAIN: the receive timeout passed
            raise TimeoutError from None

    def close(self) -> None:
        self.sock.close()
        self.conn.close()


_TIMEVAL = struct.Struct("@ll")


class WorkerPool:
    """A fixed number of worker processes, with a short bounded queue in front of them.

    The workers open ``store_path``, or the remote engine of a remote ``BackendSettings``
    (read-only: no writer pool for an engine). ``size`` workers run jobs at once; up to
    ``max_waiting`` callers wait at most ``wait_timeout`` seconds for a free one, and the
    rest get :class:`ExecutorBusyError`.
    """

    def __init__(
        self,
        store_path: Path | str | BackendSettings,
        *,
        size: int = 2,
        max_waiting: int = 32,
        wait_timeout: float = 5.0,
        memory_limit_mb: int = 0,
        writer: bool = False,
        offline: bool = False,
    ):
        # What the workers open: a store directory, or a remote engine's settings.
        self.target: str | BackendSettings
        self.store_path: Path | None
        if isinstance(store_path, BackendSettings) and store_path.is_remote:
            if writer:
                raise StoreError("the endpoint never writes to a remote engine; change its "
                                 "data with `sasci-kg load --backend remote`")
            self.target = store_path
            self.store_path = None
        else:
            if isinstance(store_path, BackendSettings):
                store_path = store_path.store_path or default_store_path()
            self.store_path = Path(store_path)
            self.target = str(self.store_path)
        self.size = size
        self.max_waiting = max_waiting
        self.wait_timeout = wait_timeout
        self.memory_limit_mb = memory_limit_mb
        self.writer = writer
        self.offline = offline  # the workers in a network namespace of their own (offline.py)
        self.owner_pid = os.getpid()
        # forkserver: safe to start from a threaded process (no fork of our threads), and
        # the preloaded module makes each new worker a cheap fork.
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["sasci_kg.executor"])
        tune_worker_malloc()
        self._cond = threading.Condition()
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._waiting = 0
        self._closed = False
        self._spawners: list[threading.Thread] = []
        for _ in range(size):
            self._add(self._start_worker())

    # -- lifecycle

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        phase = self._ctx.RawValue("b", 0)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, phase, self.target, self.memory_limit_mb, self.writer,
                  self.offline),
            name="sasci-kg-writer" if self.writer else "sasci-kg-query",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return _Worker(process, parent_conn, phase)

    def _add(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                _stop(worker, polite=False)
                return
            self._workers.append(worker)
            self._idle.append(worker)
            self._cond.notify()

    def _replace_later(self) -> None:
        def spawn() -> None:
            try:
                self._add(self._start_worker())
            except (OSError, ValueError, RuntimeError):  # shutting down, or out of resources
                log.exception("could not start a replacement query worker")

        with self._cond:
            if self._closed:
                return
            thread = threading.Thread(target=spawn, name="sasci-kg-respawn", daemon=True)
            self._spawners = [t for t in self._spawners if t.is_alive()] + [thread]
        thread.start()

    def close(self) -> None:
        """Stop every worker (politely, then SIGKILL); idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
            self._idle.clear()
            spawners = list(self._spawners)
            self._cond.notify_all()
        for thread in spawners:
            thread.join(timeout=5)
        for worker in workers:
            _stop(worker, polite=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def pids(self) -> list[int]:
        """The worker process ids (for health reports and tests)."""
        with self._cond:
            return [w.process.pid for w in self._workers if w.process.pid is not None]

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "size": self.size,
                "alive": len(self._workers),
                "idle": len(self._idle),
                "waiting": self._waiting,
            }

    # -- running jobs

    def _acquire(self, wait: float | None) -> _Worker:
        wait = self.wait_timeout if wait is None else wait
        retry_after = max(1, math.ceil(self.wait_timeout))
        with self._cond:
            if self._closed:
                raise ExecutorBusyError(retry_after)
            if not self._idle and self._waiting >= self.max_waiting:
                raise ExecutorBusyError(retry_after)
            self._waiting += 1
            try:
                ready = self._cond.wait_for(lambda: self._idle or self._closed, timeout=wait)
            finally:
                self._waiting -= 1
            if not ready or self._closed:
                raise ExecutorBusyError(retry_after)
            return self._idle.pop()

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                _stop(worker, polite=False)
                return
            self._idle.append(worker)
            self._cond.notify()

    def _discard(self, worker: _Worker) -> None:
        with self._cond:
            if worker in self._workers:
                self._workers.remove(worker)
        _stop(worker, polite=False)
        self._replace_later()

    def run(self, job: Job, *, timeout: float, wait: float | None = None) -> Outcome:
        """Run ``job`` on a free worker; raise on timeout, crash, busy pool or job error.

        ``wait`` bounds the wait for a free worker (default: the pool's ``wait_timeout``).
        """
        worker = self._acquire(wait)
        try:
            result = self._exchange(worker, job, timeout)
        except BaseException:
            self._discard(worker)  # timed out or crashed: kill it, start a fresh one
            raise
        self._release(worker)
        if isinstance(result, SasciKgError):
            raise result
        return result

    def _exchange(self, worker: _Worker, job: Job, timeout: float) -> Outcome | SasciKgError:
        """Send the job and wait for its reply; a job error comes back as a value, since the
        worker that reported it is fine. Timeouts and crashes raise."""
        conn = worker.conn
        began = time.monotonic()
        deadline = began + timeout
        worker.phase.value = 0
        try:
            _send(conn, (job, timeout))
            try:
                reply = worker.receive(deadline - time.monotonic())
            except TimeoutError:
                log.warning(
                    "query worker %s killed after the %.1f s limit", worker.process.pid, timeout
                )
                raise QueryTimeoutError(timeout) from None
            if reply[0] == "error":
                return _rebuild_error(reply)
            _, rows, seconds, info, body = reply
            return Outcome(body, rows=rows, seconds=seconds, info=info)
        except (EOFError, OSError) as exc:
            seconds = time.monotonic() - began
            worker.process.join(timeout=1)
            exitcode = worker.process.exitcode
            error = crash_error(
                parsed=bool(worker.phase.value) or not isinstance(job, QueryJob),
                seconds=seconds, exitcode=exitcode, memory_mb=self.memory_limit_mb)
            log.error(
                "query worker %s died during %s, %.2f s into the job (exit code %s): %s",
                worker.process.pid, error.phase, seconds, exitcode, exc,
            )
            raise error from None


def _stop(worker: _Worker, *, polite: bool) -> None:
    """End a worker: ask it to exit (when polite), then SIGKILL it, and reap it."""
    process = worker.process
    if polite and process.is_alive():
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
        process.join(timeout=1)
    if process.is_alive():
        process.kill()
    process.join(timeout=5)
    worker.close()
    try:
        process.close()
    except ValueError:  # still running after SIGKILL and 5 s: leave it to the OS
        log.error("query worker %s did not exit after SIGKILL", process.pid)
