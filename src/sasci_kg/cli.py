"""The ``sasci-kg`` command line: thin commands over the library.

Each command parses its options, calls the library, and prints: results to stdout,
progress and messages to stderr. Library errors become ``Error: …`` and exit status 1.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import pyoxigraph as ox

from . import __version__
from .backends import BACKEND_KINDS, BackendSettings, load_dataset, open_backend
from .build import SHACL_MODES, BuildResult, build_dataset, load_inputs, write_dataset
from .errors import FactsError, SasciKgError
from .export import FORMATS, get_format, gzip_bytes, serialize_quads
from .facts import count_fact_files, load_facts
from .network import WRITERS as NETWORK_FORMATS
from .queries import get_query, list_queries, run_named_query
from .remote import AUTH_KINDS
from .results import TABLE_FORMATS, render_result
from .store import LoadInput, default_store_path, load_store, open_store
from .trace import (
    DEFAULT_HOPS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_PATHS,
    DEFAULT_TIMEOUT,
    MAX_HOPS,
    MAX_LENGTH,
    MAX_PATHS,
    NETWORK_KINDS,
)
from .trace_links import LINK_KINDS
from .vocab import BASE
from .void import data_quads

F = TypeVar("F", bound=Callable[..., Any])

RDF_FILE_FORMATS = {
    ".ttl": ox.RdfFormat.TURTLE,
    ".trig": ox.RdfFormat.TRIG,
    ".nt": ox.RdfFormat.N_TRIPLES,
    ".nq": ox.RdfFormat.N_QUADS,
}


def _say(message: str) -> None:
    click.echo(message, err=True)


def shacl_options(func: F) -> F:
    """``--shacl=MODE`` (how to validate against the shapes) and ``--no-shacl`` (=off)."""
    func = click.option("--no-shacl", "no_shacl", is_flag=True,
                        help="Do not validate (the same as --shacl=off).")(func)
    return click.option(
        "--shacl", "shacl", type=click.Choice(SHACL_MODES), default="auto", show_default=True,
        is_flag=False, flag_value="auto",
        help="Validate against ontology/shapes.ttl: sparql (the shapes as SPARQL queries run "
             "by Oxigraph: 15 s at 10^6 triples), pyshacl (the reference; minutes from "
             "10^5), auto (sparql; pySHACL, with a note, where the shapes use a construct the "
             "SPARQL translator lacks and the graph is small) or off.")(func)


def _shacl_mode(shacl: str, no_shacl: bool) -> str:
    if no_shacl and shacl not in ("auto", "off"):
        raise click.UsageError(f"--no-shacl and --shacl={shacl} contradict each other")
    return "off" if no_shacl else shacl


def _build_with_progress(data_dir: Path, ontology_dir: Path, sources_dir: Path | None, *,
                         shacl: str) -> BuildResult:
    """Build the dataset with a progress bar over the fact files (on a terminal only)."""
    if not sys.stderr.isatty():
        return build_dataset(data_dir, ontology_dir, sources_dir=sources_dir, shacl=shacl)
    total = count_fact_files(data_dir) if Path(data_dir).is_dir() else 0
    started = time.monotonic()
    with click.progressbar(length=total, label="Reading the fact files",
                           file=sys.stderr) as bar:
        result = build_dataset(data_dir, ontology_dir, sources_dir=sources_dir, shacl=shacl,
                               progress=lambda _name: bar.update(1))
    _say(f"Built the graph ({time.monotonic() - started:.1f} s)")
    return result


def _fail_on_library_errors(func: F) -> F:
    """Turn library errors into click errors: 'Error: …' on stderr, exit status 1."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SasciKgError as exc:
            raise click.ClickException(str(exc)) from exc
        except BrokenPipeError:
            # The reader went (`| head`): no error, as other tools do. Python would try to
            # flush stdout again at exit and complain: point it at /dev/null first.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as exc:
            # The machine, not the data: a full disk, a missing permission, a folder gone.
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from exc

    return wrapper  # type: ignore[return-value]


def data_options(func: F) -> F:
    """Where the fact files, ontology and source texts are."""
    options = [
        click.option("--data", "data_dir", type=click.Path(path_type=Path), default="data",
                     envvar="SASCI_KG_DATA", show_default=True,
                     help="Folder of curated fact files (one sub-folder per source)."),
        click.option("--ontology", "ontology_dir", type=click.Path(path_type=Path),
                     default="ontology", envvar="SASCI_KG_ONTOLOGY", show_default=True,
                     help="Folder with sasci.ttl, vocab.ttl and shapes.ttl."),
        # (a folder named that does not exist is an error: a mistyped one passed, unchecked)
        click.option("--sources", "sources_dir", default=None,
                     type=click.Path(exists=True, file_okay=False, path_type=Path),
                     envvar="SASCI_KG_SOURCES",
                     help="Folder of source texts to check evidence excerpts against."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_BACKEND_PARAMS = ("store_path", "backend", "query_url", "update_url", "gsp_url", "auth",
                   "user", "password_file", "token_file", "remote_timeout", "remote_row_cap",
                   "graph_namespaces")


STORE_HELP = "Oxigraph store directory [default: .sasci-kg/store; env SASCI_KG_STORE]."


def _backend_options(store_help: str = STORE_HELP) -> list[Callable[[F], F]]:
    """The options that say where the graph is (their values: ``_BACKEND_PARAMS``)."""
    return [
        click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
                     envvar="SASCI_KG_STORE", help=store_help),
        click.option("--backend", type=click.Choice(BACKEND_KINDS), default=None,
                     envvar="SASCI_KG_BACKEND",
                     help="embedded (the Oxigraph store, default) or remote (a SPARQL 1.1 "
                          "engine; implied by --query-url) [env SASCI_KG_BACKEND]."),
        click.option("--query-url", metavar="URL", envvar="SASCI_KG_QUERY_URL",
                     help="Remote: the engine's SPARQL query endpoint [env "
                          "SASCI_KG_QUERY_URL]."),
        click.option("--update-url", metavar="URL", envvar="SASCI_KG_UPDATE_URL",
                     help="Remote: its SPARQL Update endpoint, needed by load [env "
                          "SASCI_KG_UPDATE_URL]."),
        click.option("--gsp-url", metavar="URL", envvar="SASCI_KG_GSP_URL",
                     help="Remote: its Graph Store Protocol endpoint (?graph=), for whole-graph "
                          "reads and writes [env SASCI_KG_GSP_URL]."),
        click.option("--auth", type=click.Choice(AUTH_KINDS), default=None,
                     envvar="SASCI_KG_AUTH",
                     help="Remote: authentication [default: none; env SASCI_KG_AUTH]. The "
                          "password comes from SASCI_KG_PASSWORD or --password-file, a bearer "
                          "token from SASCI_KG_TOKEN or --token-file."),
        click.option("--user", envvar="SASCI_KG_USER",
                     help="Remote: user for basic/digest auth [env SASCI_KG_USER]."),
        click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="SASCI_KG_PASSWORD_FILE",
                     help="Remote: file holding the password [env SASCI_KG_PASSWORD_FILE]."),
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="SASCI_KG_TOKEN_FILE",
                     help="Remote: file holding the bearer token [env SASCI_KG_TOKEN_FILE]."),
        click.option("--remote-timeout", type=float, default=None, metavar="SECONDS",
                     envvar="SASCI_KG_REMOTE_TIMEOUT",
                     help="Remote: seconds to wait for each request [default: 30; env "
                          "SASCI_KG_REMOTE_TIMEOUT]."),
        click.option("--remote-row-cap", type=int, default=None, metavar="ROWS",
                     envvar="SASCI_KG_REMOTE_ROW_CAP",
                     help="Remote: the engine's own result cap (Virtuoso's ResultSetMaxRows); "
                          "answers that reach it are refused as cut short [env "
                          "SASCI_KG_REMOTE_ROW_CAP]."),
        click.option("--graph-namespace", "graph_namespaces", multiple=True, metavar="IRI",
                     envvar="SASCI_KG_GRAPH_NAMESPACES",
                     help="Remote: IRI prefix of the graphs that are ours (repeatable) "
                          "[default: https://w3id.org/sasci-kg/; env "
                          "SASCI_KG_GRAPH_NAMESPACES]."),
    ]


def store_option(func: F) -> F:
    """Where the graph is: the embedded store (--store) or a remote SPARQL engine.

    The command receives one ``backend_settings`` (:class:`BackendSettings`). Passwords and
    tokens are read from SASCI_KG_PASSWORD / SASCI_KG_TOKEN or a file, never from an option
    (a command line is visible to every user of the machine).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, None) for name in _BACKEND_PARAMS}
        try:
            kwargs["backend_settings"] = BackendSettings.from_options(
                backend=values["backend"], store_path=values["store_path"],
                query_url=values["query_url"], update_url=values["update_url"],
                gsp_url=values["gsp_url"], auth=values["auth"], user=values["user"],
                password=os.environ.get("SASCI_KG_PASSWORD") or None,
                password_file=values["password_file"],
                token=os.environ.get("SASCI_KG_TOKEN") or None,
                token_file=values["token_file"], timeout=values["remote_timeout"],
                row_cap=values["remote_row_cap"],
                graph_namespaces=values["graph_namespaces"] or None)
        except SasciKgError as exc:
            raise click.ClickException(str(exc)) from exc
        return func(*args, **kwargs)

    decorated: Any = wrapper
    for option in reversed(_backend_options()):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


def backend_options(store_help: str) -> Callable[[F], F]:
    """The options of :func:`store_option`, passed to the command as they are (``serve``
    gives them to its configuration, which reads the same names from a file too)."""

    def decorate(func: F) -> F:
        for option in reversed(_backend_options(store_help)):
            func = option(func)
        return func

    return decorate


def _print_notices(notices: list[str]) -> None:
    for notice in notices:
        _say(f"Note: {notice}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sasci-kg")
def main() -> None:
    """Build the SASCI knowledge graph from curated facts and publish it over SPARQL."""


@main.command()
@data_options
@_fail_on_library_errors
def validate(data_dir: Path, ontology_dir: Path, sources_dir: Path | None) -> None:
    """Check the fact files: structure, references, controlled values, evidence.

    Every problem is reported as PATH:LINE: MESSAGE in one run; exit status 1 if any.
    """
    try:
        facts = load_facts(data_dir, ontology_dir, sources_dir=sources_dir)
    except FactsError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        count = len(exc.problems)
        raise click.ClickException(f"{count} problem{'s' if count != 1 else ''} found") from exc
    _print_notices(facts.notices)
    records = sum(1 for _ in facts.records())
    click.echo(f"OK: {records} records from {len(facts.sources)} source(s) in "
               f"{len(facts.files)} files")


@main.command()
@data_options
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default="build",
              show_default=True, help="Folder to write dataset.nq and dataset.trig to.")
@shacl_options
@_fail_on_library_errors
def build(data_dir: Path, ontology_dir: Path, sources_dir: Path | None, out_dir: Path,
          shacl: str, no_shacl: bool) -> None:
    """Build the dataset (facts + ontology → quads), SHACL-check it, write it to --out."""
    result = _build_with_progress(data_dir, ontology_dir, sources_dir,
                                  shacl=_shacl_mode(shacl, no_shacl))
    _print_notices(result.facts.notices if result.facts else [])
    for warning in result.warnings:
        _say(f"SHACL {warning}")
    for path in write_dataset(result, out_dir):
        click.echo(str(path))
    _say(f"Built {len(result.quads)} quads in {len(result.graph_sizes())} graphs")


def _file_input(path: Path) -> LoadInput:
    fmt = RDF_FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise click.BadParameter(
            f"{path}: unknown RDF file type '{path.suffix}'; use one of "
            f"{', '.join(RDF_FILE_FORMATS)}", param_hint="FILE")
    graph = None if fmt in (ox.RdfFormat.TRIG, ox.RdfFormat.N_QUADS) else \
        f"{BASE}graph/file/{path.name}"
    return LoadInput(format=fmt, path=path, graph=graph, label=str(path))


@main.command()
@data_options
@store_option
@shacl_options
@click.option("--accept-engine-changes", is_flag=True,
              help="Remote: load even if the engine stores some triples differently from what "
                   "was sent (Virtuoso 7 rewrites xsd:duration values); each change is listed.")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_fail_on_library_errors
def load(data_dir: Path, ontology_dir: Path, sources_dir: Path | None,
         backend_settings: BackendSettings, shacl: str, no_shacl: bool,
         accept_engine_changes: bool, files: tuple[Path, ...]) -> None:
    """Build the curated graph and load it (and any FILES) into the store.

    FILES are Turtle, TriG, N-Triples or N-Quads; each triples file goes into its own named
    graph (<https://w3id.org/sasci-kg/graph/file/NAME>), TriG/N-Quads keep their graphs.
    The new store is built beside the old one and swapped in only when complete; on a
    remote engine each graph is staged, size-checked and moved over the live one.
    """
    extra = [_file_input(f) for f in files]
    result = _build_with_progress(data_dir, ontology_dir, sources_dir,
                                  shacl=_shacl_mode(shacl, no_shacl))
    _print_notices(result.facts.notices if result.facts else [])
    progress = _say if sys.stderr.isatty() else None
    report = load_dataset(backend_settings, [*load_inputs(result), *extra], progress=progress,
                          accept_engine_changes=accept_engine_changes)
    for change in report.altered:
        _say(f"Note: the engine changed {change}")
    for graph in report.dropped:
        _say(f"Dropped <{graph}>: it is no longer in the dataset")
    if not backend_settings.is_remote:
        _note_shared_triples(backend_settings.store_path or default_store_path(), extra)
    click.echo(f"Loaded {report.quads} quads in {len(report.graphs)} graphs into "
               f"{report.target} ({report.seconds:.1f} s)")


def _note_shared_triples(store_path: Path, extra: list[LoadInput]) -> None:
    """Say which FILES repeat triples of other graphs: each graph holds its own copy, and the
    default graph, their union, then counts them twice (our build puts each in one)."""
    files = [(item.label, item.graph) for item in extra if item.graph is not None]
    if not files:
        return
    backend = open_store(store_path)
    try:
        for label, graph in files:
            shared = backend.shared_triples(graph)
            if shared:
                _say(f"Note: {shared} triple(s) of {label} are in other graphs too; "
                     "queries over the default graph (the union of the graphs) see each of "
                     "them once per graph: remove them from the file, or query its graph "
                     f"alone (GRAPH <{graph}>)")
    finally:
        backend.close()


def _read_query_text(sparql: str | None, query_file: Path | None) -> str:
    if sparql == "-":
        return sys.stdin.read()
    if sparql and query_file:
        raise click.UsageError("give the query as an argument or with -f, not both")
    if query_file:
        return query_file.read_text(encoding="utf-8")
    if sparql:
        return sparql
    raise click.UsageError("no query: give SPARQL as an argument, -f FILE, '-' for stdin, "
                           "or --name NAME")


@main.command()
@store_option
@click.argument("sparql", required=False)
@click.option("-f", "--file", "query_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Read the query from a file.")
@click.option("-n", "--name", "query_name", help="Run a named query from queries/.")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter of the named query (repeatable).")
@click.option("--queries", "queries_dir", type=click.Path(path_type=Path), default="queries",
              envvar="SASCI_KG_QUERIES", show_default=True, help="Folder of named queries.")
@click.option("--format", "format_name", default="table", show_default=True,
              type=click.Choice([*TABLE_FORMATS, *[f for f in FORMATS if f not in
                                                  TABLE_FORMATS]]),
              help="table/csv/tsv/json/xml for SELECT and ASK; an RDF format (ttl, nt, nq, "
                   "trig, jsonld, rdfxml) for CONSTRUCT and DESCRIBE (table means Turtle).")
@click.option("--list", "list_only", is_flag=True, help="List the named queries and exit.")
@_fail_on_library_errors
def query(backend_settings: BackendSettings, sparql: str | None, query_file: Path | None,
          query_name: str | None, params: tuple[str, ...], queries_dir: Path,
          format_name: str, list_only: bool) -> None:
    """Run a SPARQL query (argument, -f FILE, '-' for stdin, or --name NAME)."""
    if list_only:
        for named in list_queries(queries_dir):
            click.echo(f"{named.name}\t{named.title}")
        return
    backend = open_backend(backend_settings)
    if query_name:
        if sparql or query_file:
            raise click.UsageError("--name runs a named query; do not also give a query")
        values = {}
        for item in params:
            name, sep, value = item.partition("=")
            if not sep:
                raise click.BadParameter(f"'{item}' is not NAME=VALUE", param_hint="--param")
            values[name] = value
        result = run_named_query(backend, get_query(query_name, queries_dir), values)
    else:
        if params:
            raise click.UsageError("--param goes with --name")
        result = backend.query(_read_query_text(sparql, query_file))
    click.echo(render_result(result, format_name), nl=False)


@main.command()
@store_option
@_fail_on_library_errors
def stats(backend_settings: BackendSettings) -> None:
    """Count triples, entities by class, and triples per graph."""
    from .stats import store_stats

    summary = store_stats(open_backend(backend_settings))
    click.echo(f"triples: {summary.triples}")
    click.echo("graphs:")
    for graph, count in summary.graphs.items():
        click.echo(f"  {count:>8}  {graph}")
    click.echo("entities by class:")
    for cls, count in summary.classes.items():
        click.echo(f"  {count:>8}  {cls}")


@main.command()
@store_option
@click.option("--format", "format_name", type=click.Choice(list(FORMATS)), default=None,
              help="RDF format to write [default: ttl; nq with --canonical].")
@click.option("--graph", "graph_iri", default=None,
              help="Export only this named graph (the dataset's description: "
                   "https://w3id.org/sasci-kg/graph/meta).")
@click.option("--canonical", is_flag=True,
              help="Canonical N-Quads (RDFC-1.0): for hashing and diffing datasets.")
@click.option("--gzip", "compress", is_flag=True,
              help="Gzip the output (reproducibly: no time stamp, no file name).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@_fail_on_library_errors
def export(backend_settings: BackendSettings, format_name: str | None, graph_iri: str | None,
           canonical: bool, compress: bool, output: Path | None) -> None:
    """Export the graph deterministically (the same data gives the same bytes).

    Without --graph: every graph but the dataset's description, the same bytes as the
    server's /download/sasci-kg.* files.
    """
    if canonical and format_name not in (None, "nq"):
        raise click.UsageError("--canonical writes N-Quads; drop --format or use --format nq")
    name = format_name or ("nq" if canonical else "ttl")
    backend = open_backend(backend_settings)
    if graph_iri and graph_iri not in backend.graphs():
        raise click.BadParameter(f"no graph <{graph_iri}> in the store; graphs: "
                                 f"{', '.join(backend.graphs())}", param_hint="--graph")
    quads = backend.quads(graph_iri) if graph_iri else data_quads(backend.quads())
    data = serialize_quads(quads, get_format(name).name, canonical=canonical)
    if compress:
        data = gzip_bytes(data)
    if output:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(output)
        _say(f"Wrote {len(data)} bytes to {output}")
    else:
        click.echo(data, nl=False)  # bytes go to the binary stdout as they are


# -- connection tracing: trace, connections, network -------------------------------------

TRACE_FORMATS = ("text", "json", "csv", "dot", "svg")


def _link_kinds(ctx: click.Context, param: click.Parameter, value: str | None
                ) -> list[str] | None:
    """--links KIND,…: validated here so that a typo is a usage error naming the kinds."""
    if value is None:
        return None
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in LINK_KINDS]
    if unknown or not kinds:
        raise click.BadParameter(f"unknown link kind(s) {', '.join(unknown) or '(none)'}; "
                                 f"choose from {', '.join(LINK_KINDS)}")
    return kinds


def links_option(default_help: str) -> Callable[[F], F]:
    return click.option(
        "--links", "link_kinds", metavar="KIND,…", callback=_link_kinds,
        help=f"Follow only these kinds of link: {', '.join(LINK_KINDS)} [default: "
             f"{default_help}].")


def timeout_option(func: F) -> F:
    return click.option(
        "--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT,
        show_default=True, metavar="SECONDS",
        help="Stop searching after this long and answer with what was found.")(func)


def _emit(data: bytes | str, output: Path | None, *, binary: bool = False) -> None:
    """Write to --output (atomically) or stdout; a binary file never to a terminal."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if output:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_bytes(raw)
        tmp.replace(output)
        _say(f"Wrote {len(raw)} bytes to {output}")
    elif binary and sys.stdout.isatty():
        raise click.UsageError("this format is binary: write it to a file with -o FILE")
    else:
        click.echo(raw, nl=False)


@main.command()
@store_option
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.option("--max-length", type=click.IntRange(1, MAX_LENGTH), default=DEFAULT_MAX_LENGTH,
              show_default=True, help="The longest connection to look for, in links.")
@click.option("--paths", type=click.IntRange(1, MAX_PATHS), default=DEFAULT_PATHS,
              show_default=True, help="How many connections to give, shortest first.")
@links_option("all")
@timeout_option
@click.option("--format", "format_name", type=click.Choice(TRACE_FORMATS), default="text",
              show_default=True,
              help="text (sentences with evidence), json, csv (one row per fact), or a "
                   "picture of the connections: dot or svg.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@_fail_on_library_errors
def trace(backend_settings: BackendSettings, source: str, target: str, max_length: int,
          paths: int, link_kinds: list[str] | None, timeout: float, format_name: str,
          output: Path | None) -> None:
    """How FROM is connected to TO: the shortest connections, in words, with evidence.

    FROM and TO are names or parts of names, acronyms, or IRIs (in full, or as refs such
    as org/esrc or person/emma-back): "Equal Care Co-op", ESRC, "King's College". A name
    that matches several things, or nothing, is an error that lists the likeliest. No
    connection within --max-length links is an answer, not an error.
    """
    import json

    from .network import write_network
    from .trace import paths_network, tracer_for

    result = tracer_for(open_backend(backend_settings)).trace(
        source, target, max_length=max_length, paths=paths, links=link_kinds,
        timeout=timeout)
    if format_name == "text":
        _emit(result.to_text(), output)
    elif format_name == "json":
        _emit(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", output)
    elif format_name == "csv":
        _emit(result.to_csv(), output)
    else:
        _emit(write_network(paths_network(result), format_name), output)


@main.command()
@store_option
@click.argument("entity", metavar="ENTITY")
@click.option("--hops", type=click.IntRange(1, MAX_HOPS), default=DEFAULT_HOPS,
              show_default=True, help="How far to look, in links.")
@links_option("all")
@timeout_option
@click.option("--format", "format_name", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text for reading, json for scripts.")
@_fail_on_library_errors
def connections(backend_settings: BackendSettings, entity: str, hops: int,
                link_kinds: list[str] | None, timeout: float, format_name: str) -> None:
    """Everything within --hops links of ENTITY, grouped: organisations, people,
    sessions, ideas…, each with the sessions and people that connect it.

    "Who did the Equal Care Co-op meet at the event?" is
    `sasci-kg connections "Equal Care Co-op"`.
    """
    import json

    from .trace import tracer_for

    found = tracer_for(open_backend(backend_settings)).connections(
        entity, hops=hops, links=link_kinds, timeout=timeout)
    if format_name == "json":
        click.echo(json.dumps(found.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(found.to_text(), nl=False)


@main.command()
@store_option
@click.option("--format", "format_name", type=click.Choice(list(NETWORK_FORMATS)),
              default="svg", show_default=True,
              help="svg (drawn here), png (needs rsvg-convert or CairoSVG), graphml or gexf "
                   "(Gephi, yEd, Cytoscape), csv (edges) or nodes-csv, dot (Graphviz), json.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@click.option("--highlight", multiple=True, metavar="ENTITY",
              help="Give twice (FROM, then TO) to mark the shortest connection between them.")
@click.option("--around", metavar="ENTITY", default=None,
              help="Only the part of the network within --hops links of ENTITY.")
@click.option("--hops", type=click.IntRange(1, MAX_HOPS), default=DEFAULT_HOPS,
              show_default=True, help="With --around: how far to look, in links.")
@links_option(",".join(NETWORK_KINDS))
@timeout_option
@_fail_on_library_errors
def network(backend_settings: BackendSettings, format_name: str, output: Path | None,
            highlight: tuple[str, ...], around: str | None, hops: int,
            link_kinds: list[str] | None, timeout: float) -> None:
    """The network of organisations, people, sessions, the event, the project and its
    funder, as a picture or for graph tools; the same graph gives the same bytes."""
    from .network import write_network
    from .trace import tracer_for

    if highlight and len(highlight) != 2:
        raise click.UsageError("give --highlight twice: --highlight FROM --highlight TO")
    drawn = tracer_for(open_backend(backend_settings)).network(
        links=link_kinds, around=around, hops=hops,
        highlight=(highlight[0], highlight[1]) if highlight else None, timeout=timeout)
    _emit(write_network(drawn, format_name), output, binary=format_name == "png")


def _check_remote_graphs(settings: BackendSettings) -> None:
    """`serve` in front of a remote engine: say so when it holds none of our graphs (or
    cannot be reached now); the server starts anyway and serves what the engine holds."""
    from .backends import open_remote

    try:
        graphs = open_remote(settings).graphs()
    except SasciKgError as exc:
        _say(f"Note: {exc}. Serving anyway: queries answer 502/504 until the engine is up.")
        return
    if not graphs:
        namespaces = ", ".join(settings.graph_namespaces)
        _say(f"Note: the engine holds none of our graphs (under {namespaces}); load them with "
             "`sasci-kg load --backend remote …` (same options). Serving what it holds.")


def _restart_with_malloc_tunable() -> None:
    """Under the prefork server the HTTP processes run the queries, so they need the malloc
    setting the query processes start with (``executor.WORKER_MALLOC_TUNABLE``: ~15 % less
    CPU per light query). glibc reads it only at start: run this command again with it. Only
    the real command line is restarted, never a process that merely calls the CLI."""
    import sys

    from .executor import tune_worker_malloc

    argv = sys.orig_argv
    is_command = len(argv) > 1 and (Path(argv[1]).name == "sasci-kg"
                                    or argv[1:3] == ["-m", "sasci_kg"])
    before = os.environ.get("GLIBC_TUNABLES", "")
    tune_worker_malloc()
    if is_command and os.environ.get("GLIBC_TUNABLES", "") != before:
        os.execv(sys.executable, [sys.executable, *argv[1:]])


def _build_and_load_if_missing(store: Path, data_dir: Path, ontology_dir: Path,
                               sources_dir: Path | None) -> None:
    """`serve` on a machine with no store yet: build from data/ and load it first."""
    from .store import store_generation

    if store_generation(store) is not None:
        return
    _say(f"No store at {store}: building the graph from {data_dir} and loading it")
    result = _build_with_progress(data_dir, ontology_dir, sources_dir, shacl="auto")
    _print_notices(result.facts.notices if result.facts else [])
    report = load_store(store, load_inputs(result))
    _say(f"Loaded {report.quads} quads in {len(report.graphs)} graphs into {report.path}")


@main.command()
@data_options
@backend_options("Oxigraph store directory to serve [default: .sasci-kg/store; env "
                 "SASCI_KG_STORE]. Built from --data first when it does not exist.")
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1; env "
                                            "SASCI_KG_HOST].")
@click.option("--port", type=int, default=None, help="TCP port [default: 7878; env "
                                                     "SASCI_KG_PORT].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="TOML settings file (top level or a [serve] table) [env "
                                 "SASCI_KG_CONFIG].")
@click.option("--timeout", type=float, default=None,
              help="Default query time limit in seconds [default: 10].")
@click.option("--max-timeout", type=float, default=None,
              help="Largest time limit a request may ask for, seconds [default: 60].")
@click.option("--max-rows", type=int, default=None,
              help="Largest result in rows or triples; larger is an error [default: 100000].")
@click.option("--max-result-bytes", type=int, default=None,
              help="Largest result body in bytes [default: 64 MiB].")
@click.option("--query-workers", type=int, default=None,
              help="Query processes (queries run at once) [default: 2-8 by CPU count].")
@click.option("--http-workers", type=int, default=None,
              help="HTTP worker processes [default: 1].")
@click.option("--threads", "http_threads", type=int, default=None,
              help="Request threads per HTTP worker, granian and gunicorn [default: 48].")
@click.option("--server", type=click.Choice(["prefork", "granian", "gunicorn"]), default=None,
              help="HTTP server [default: prefork on Linux, else granian].")
@click.option("--result-cache-mb", type=int, default=None,
              help="Query answers kept per store generation, MiB; 0: none [default: 64].")
@click.option("--trusted-proxies", type=int, default=None,
              help="Reverse proxies whose X-Forwarded-* headers to trust [default: 0].")
@click.option("--service-allow", multiple=True, metavar="PREFIX",
              help="IRI prefix that SERVICE/LOAD may reach (repeatable) [default: none].")
@click.option("--updates/--no-updates", default=None,
              help="Enable SPARQL Update and Graph Store writes; they need the bearer token "
                   "in SASCI_KG_UPDATE_TOKEN [default: off].")
@click.option("--cors/--no-cors", default=None, help="Allow cross-origin reads [default: on].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None, help="Logging level [default: info].")
@_fail_on_library_errors
def serve(data_dir: Path, ontology_dir: Path, sources_dir: Path | None, store_path: Path | None,
          config_file: Path | None, service_allow: tuple[str, ...],
          graph_namespaces: tuple[str, ...], **settings: Any) -> None:
    """Serve the graph: SPARQL 1.1 endpoint, query page, linked-data pages, downloads.

    Builds and loads the graph first when the store does not exist yet. In front of a remote
    SPARQL engine (--query-url) it builds nothing: it serves what the engine holds, read-only,
    with the same checks and limits (load it with `sasci-kg load --backend remote`). Every
    setting can also come from SASCI_KG_<NAME> (e.g. SASCI_KG_PORT) or the --config file;
    options win. The server runs until Ctrl-C or SIGTERM.
    """
    from .web.config import load_config
    from .web.server import run_server

    options: dict[str, Any] = {k: v for k, v in settings.items() if v is not None}
    if store_path is not None:
        options["store"] = store_path
    if service_allow:
        options["service_allow"] = service_allow
    if graph_namespaces:
        options["graph_namespaces"] = graph_namespaces
    config = load_config(options, config_file=config_file)
    if config.server == "prefork":
        _restart_with_malloc_tunable()
    if config.is_remote:
        _check_remote_graphs(config.backend_settings)
        where = config.backend_settings.describe()
    else:
        _build_and_load_if_missing(config.store, data_dir, ontology_dir, sources_dir)
        where = str(config.store)
    _say(f"Serving {where} on http://{config.host}:{config.port}/ (Ctrl-C to stop)")
    run_server(config)
