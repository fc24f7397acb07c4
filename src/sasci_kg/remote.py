"""A remote SPARQL 1.1 engine behind the :class:`~sasci_kg.store.Backend` interface.

Spoken to only through the standards: queries form-encoded to the query URL (SPARQL 1.1
Protocol), updates form-encoded to a separate update URL (SPARQL 1.1 Update), whole graphs
through the Graph Store Protocol with ``?graph=`` and N-Triples bodies. Data always lives in
named graphs: engines disagree about the default graph (Virtuoso, Neptune and GraphDB use
the union of all graphs, Oxigraph a graph of its own), so every query names its dataset.
:func:`replace_graphs` loads a rebuilt dataset through staging graphs and moves them over
the live ones in one update request. Every engine quirk that could pass off a partial
answer as a whole one (row caps, "anytime" partial results, truncated bodies) is detected
and raised; nothing is printed.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import secrets
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Protocol

import pyoxigraph as ox

from .errors import (
    QueryError,
    RemoteError,
    RemoteIncompleteError,
    RemoteProtocolError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    StoreError,
)
from .store import LoadInput, QueryResult
from .vocab import BASE, PREFIXES

#: Where staging graphs live while a load runs: outside every namespace we publish, so no
#: query's dataset ever includes one, and any found at the start of a load are leftovers.
STAGING_NAMESPACE = "urn:sasci-kg:staging:"
#: A graph that never exists: the dataset of a query when the engine holds none of ours.
EMPTY_GRAPH = "urn:sasci-kg:no-graph"

SPARQL_RESULTS_JSON = "application/sparql-results+json"
N_TRIPLES = "application/n-triples"
_JSON_TYPES = {SPARQL_RESULTS_JSON, "application/json"}
_XML_TYPES = {"application/sparql-results+xml", "application/xml", "text/xml"}
_TRIPLE_TYPES = {
    N_TRIPLES: ox.RdfFormat.N_TRIPLES,
    "text/plain": ox.RdfFormat.N_TRIPLES,  # N-Triples' media type before RDF 1.1
    "text/turtle": ox.RdfFormat.TURTLE,
    "application/x-turtle": ox.RdfFormat.TURTLE,
}


# ---------------------------------------------------------------------------------------
# Credentials: kept out of every repr, log line and error message.


class Secret:
    """A credential whose ``repr``/``str`` never show it; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)

    def __bool__(self) -> bool:
        return bool(self._value)


class Auth(Protocol):
    """How requests to the engine authenticate: a header, a challenge handler, or a signer.

    ``apply`` may add headers to a request before it is sent (basic, bearer, or a custom
    signer such as AWS SigV4 for Neptune); ``handlers`` gives urllib handlers that answer
    a 401 challenge (digest).
    """

    @property
    def name(self) -> str: ...

    def apply(self, request: urllib.request.Request) -> None: ...

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]: ...


class NoAuth:
    """No authentication."""

    name = "none"

    def apply(self, request: urllib.request.Request) -> None:
        return None

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]:
        return []

    def __repr__(self) -> str:
        return "NoAuth()"


@dataclass(frozen=True)
class BasicAuth:
    """HTTP Basic: the password goes with every request (use HTTPS beyond loopback)."""

    user: str
    password: Secret = field(repr=False)
    name: str = field(default="basic", init=False)

    def apply(self, request: urllib.request.Request) -> None:
        token = f"{self.user}:{self.password.reveal()}".encode()
        request.add_unredirected_header("Authorization",
                                        "Basic " + base64.b64encode(token).decode("ascii"))

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]:
        return []


@dataclass(frozen=True)
class DigestAuth:
    """HTTP Digest (Virtuoso's /sparql-auth and GSP -auth URLs accept only this)."""

    user: str
    password: Secret = field(repr=False)
    name: str = field(default="digest", init=False)

    def apply(self, request: urllib.request.Request) -> None:
        return None

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]:
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        for url in urls:
            manager.add_password(None, url, self.user, self.password.reveal())
        return [urllib.request.HTTPDigestAuthHandler(manager)]


@dataclass(frozen=True)
class BearerAuth:
    """An ``Authorization: Bearer`` token (GraphDB, Stardog, QLever, gateways)."""

    token: Secret = field(repr=False)
    name: str = field(default="bearer", init=False)

    def apply(self, request: urllib.request.Request) -> None:
        request.add_unredirected_header("Authorization", "Bearer " + self.token.reveal())

    def handlers(self, urls: Sequence[str]) -> list[urllib.request.BaseHandler]:
        return []


AUTH_KINDS = ("none", "basic", "digest", "bearer")


def make_auth(kind: str, *, user: str | None = None, password: Secret | None = None,
              token: Secret | None = None) -> Auth:
    """The :class:`Auth` for a kind name; StoreError names what is missing."""
    if kind == "none":
        return NoAuth()
    if kind in ("basic", "digest"):
        if not user or not password:
            raise StoreError(f"--auth {kind} needs a user and a password: give --user (or "
                             "SASCI_KG_USER) and SASCI_KG_PASSWORD or --password-file")
        return BasicAuth(user, password) if kind == "basic" else DigestAuth(user, password)
    if kind == "bearer":
        if not token:
            raise StoreError("--auth bearer needs a token: set SASCI_KG_TOKEN or give "
                             "--token-file")
        return BearerAuth(token)
    raise StoreError(f"unknown authentication '{kind}'; use one of: {', '.join(AUTH_KINDS)}")


# ---------------------------------------------------------------------------------------
# URLs: checked once, shown without credentials or query strings.


def safe_url(url: str) -> str:
    """``url`` for messages: no user info, no query string (either may carry a secret)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_url(url: str, option: str) -> str:
    """An absolute http(s) URL without credentials in it, or StoreError naming the option."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"{option}: '{safe_url(url)}' is not an http(s) URL; give the "
                         "engine's full endpoint URL, e.g. http://127.0.0.1:8890/sparql")
    if parts.username or parts.password:
        raise StoreError(f"{option}: the URL carries credentials; remove them from the URL and "
                         "use --auth with --user and SASCI_KG_PASSWORD (or a token) instead")
    if parts.fragment:
        raise StoreError(f"{option}: remove the '#…' fragment from the URL")
    return url


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# HTTP: one request, bounded in time and size, never following redirects.


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Message
    body: bytes

    @property
    def media_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def snippet(self, limit: int = 300) -> str:
        text = " ".join(self.body[:4096].decode("utf-8", "replace").split())
        return text[:limit] + ("…" if len(text) > limit else "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: credentials must not follow a request to another URL."""

    def redirect_request(self, req: urllib.request.Request, fp: object, code: int, msg: str,
                         headers: object, newurl: str) -> None:
        return None


def _socket_of(response: object) -> socket.socket | None:
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _read_body(response: http.client.HTTPResponse, deadline: float, limit: int,
               what: str) -> bytes:
    """The whole body, or RemoteTimeoutError past the deadline / RemoteProtocolError."""
    chunks: list[bytes] = []
    total = 0
    sock = _socket_of(response)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RemoteTimeoutError(f"{what}: the answer did not arrive in full in time")
        if sock is not None:
            sock.settimeout(remaining)
        chunk = response.read1(65536)
        if not chunk:
            if response.length:  # fewer bytes than Content-Length announced
                raise http.client.IncompleteRead(b"".join(chunks), response.length)
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise RemoteIncompleteError(
                f"{what}: the answer is larger than {limit // (1 << 20)} MiB; ask for less "
                "(LIMIT, a narrower pattern) or raise the backend's max_bytes")
        chunks.append(chunk)


class _Http:
    """Requests to one engine with one authentication, a total time limit and a size cap."""

    def __init__(self, auth: Auth, urls: Sequence[str], *, timeout: float, max_bytes: int):
        self.auth = auth
        self.urls = list(urls)
        self.timeout = timeout
        self.max_bytes = max_bytes

    def request(self, method: str, url: str, *, what: str, data: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float | None = None,
                ) -> _Response:
        limit = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + limit
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        request.add_header("User-Agent", "sasci-kg")
        self.auth.apply(request)
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect(),
                                                      *self.auth.handlers(self.urls)]
        if _is_loopback(url):
            handlers.append(urllib.request.ProxyHandler({}))
        opener = urllib.request.build_opener(*handlers)
        where = f"{what} at {safe_url(url)}"
        try:
            try:
                response = opener.open(request, timeout=limit)
            except urllib.error.HTTPError as exc:
                # Read a bounded piece of the error body for the message.
                try:
                    body = exc.read(65536) if exc.fp is not None else b""
                except (OSError, http.client.HTTPException):
                    body = b""
                finally:
                    exc.close()
                return _Response(exc.code, exc.headers, body)
            with response:
                body = _read_body(response, deadline, self.max_bytes, where)
                return _Response(response.status, response.headers, body)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise RemoteTimeoutError(
                    f"{where}: no answer within {limit:g} s; the engine is busy or the query "
                    "too costly (raise the timeout with --remote-timeout or "
                    "SASCI_KG_REMOTE_TIMEOUT)") from None
            raise RemoteUnavailableError(
                f"{where}: cannot connect ({_reason(reason)}); is the engine running, and is "
                "the URL right?") from None
        except TimeoutError:
            raise RemoteTimeoutError(
                f"{where}: no complete answer within {limit:g} s; the engine is busy or the "
                "query too costly (raise the timeout with --remote-timeout or "
                "SASCI_KG_REMOTE_TIMEOUT)") from None
        except http.client.IncompleteRead:
            raise RemoteProtocolError(f"{where}: the engine closed the connection in the "
                                      "middle of its answer") from None
        except (ConnectionError, http.client.RemoteDisconnected) as exc:
            raise RemoteUnavailableError(f"{where}: the connection failed "
                                         f"({_reason(exc)})") from None
        except http.client.HTTPException as exc:
            raise RemoteProtocolError(f"{where}: not a valid HTTP answer "
                                      f"({type(exc).__name__})") from None
        except OSError as exc:
            raise RemoteUnavailableError(f"{where}: {_reason(exc)}") from None


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)


# ---------------------------------------------------------------------------------------
# SPARQL text: find the query form, the dataset clause, the prefixes used, and where a
# VALUES block binds the parameters — without a full parser, never inside a string, IRI or
# comment. The engine parses the result; we only insert well-formed, escaped terms.

_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>\#[^\n\r]*)
    | (?P<string>'''(?:[^'\\]|\\.|'(?!''))*'''|\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\"
                 |'(?:[^'\\\n\r]|\\.)*'|"(?:[^"\\\n\r]|\\.)*")
    | (?P<iri><[^<>"{}|^`\\\x00-\x20]*>)
    | (?P<var>[?$][A-Za-z0-9_\u00B7-\uFFFF]+)
    | (?P<bnode>_:[A-Za-z0-9_\u00B7-\uFFFF.\-]+)
    | (?P<pname>(?:[A-Za-z\u00C0-\uFFFF][A-Za-z0-9_\-.\u00B7-\uFFFF]*)?:
                (?:[A-Za-z0-9_\-.:%\\\u00B7-\uFFFF]*))
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_UPDATE_WORDS = {"INSERT", "DELETE", "LOAD", "CLEAR", "CREATE", "DROP", "COPY", "MOVE", "ADD",
                 "WITH"}
_QUERY_FORMS = {"SELECT", "CONSTRUCT", "DESCRIBE", "ASK"}
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    found = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "punct"
        if kind in ("ws", "comment"):
            continue
        found.append(_Token(kind, match.group(), match.start(), match.end()))
    return found


@dataclass(frozen=True)
class PreparedQuery:
    """A query made ready for a remote engine: its form and the text to send."""

    form: str  # SELECT, CONSTRUCT, DESCRIBE or ASK
    text: str
    has_dataset: bool  # the query names its own dataset (FROM / FROM NAMED)


def _term_text(name: str, term: object) -> str:
    """A term as SPARQL text, checked so that it cannot break out of the VALUES block."""
    if isinstance(term, ox.NamedNode):
        if re.search(r"[<>\"{}|^`\\\x00-\x20]", term.value):
            raise QueryError(f"parameter '{name}': '{term.value}' is not an IRI")
        return f"<{term.value}>"
    if isinstance(term, ox.Literal):
        return str(term)  # N-Triples form: quotes, backslashes and newlines escaped
    raise QueryError(f"parameter '{name}': only IRIs and literals can be bound")


def prepare_query(
    sparql: str,
    *,
    prefixes: dict[str, str] | None = None,
    substitutions: dict[str, ox.NamedNode | ox.Literal] | None = None,
    base_iri: str | None = None,
) -> PreparedQuery:
    """Add the default prefixes the query uses but does not declare, bind ``substitutions``
    with a VALUES block, and say which form the query has; QueryError when it is no query.
    """
    prefixes = PREFIXES if prefixes is None else prefixes
    tokens = _tokens(sparql)
    declared: set[str] = set()
    has_base = False
    i = 0
    while i < len(tokens) and tokens[i].kind == "word" and tokens[i].text.upper() in (
            "PREFIX", "BASE"):
        if tokens[i].text.upper() == "BASE":
            has_base = True
            i += 2
        else:
            if i + 1 < len(tokens) and tokens[i + 1].kind == "pname":
                declared.add(tokens[i + 1].text.split(":", 1)[0])
            i += 3
    if i >= len(tokens) or tokens[i].kind != "word":
        raise QueryError("not a SPARQL query: expected SELECT, CONSTRUCT, DESCRIBE or ASK")
    form = tokens[i].text.upper()
    if form in _UPDATE_WORDS:
        raise QueryError(f"{form} is an update, not a query; the query URL takes only "
                         "SELECT, CONSTRUCT, DESCRIBE and ASK")
    if form not in _QUERY_FORMS:
        raise QueryError(f"not a SPARQL query: expected SELECT, CONSTRUCT, DESCRIBE or ASK, "
                         f"found '{tokens[i].text}'")
    body = tokens[i + 1:]

    used = {t.text.split(":", 1)[0] for t in tokens if t.kind == "pname"}
    prologue = []
    if base_iri and not has_base:
        prologue.append(f"BASE {_term_text('base_iri', ox.NamedNode(base_iri))}")
    for name in sorted(used - declared):
        if name in prefixes:
            prologue.append(f"PREFIX {name}: <{prefixes[name]}>")

    has_dataset = any(t.kind == "word" and t.text.upper() == "FROM" for t in body
                      if _depth_zero(body, t))
    text = sparql
    if substitutions:
        text = _bind_values(sparql, form, body, substitutions)
    if prologue:
        text = "\n".join(prologue) + "\n" + text
    return PreparedQuery(form=form, text=text, has_dataset=has_dataset)


def _depth_zero(body: list[_Token], token: _Token) -> bool:
    depth = 0
    for t in body:
        if t is token:
            return depth == 0
        if t.text == "{":
            depth += 1
        elif t.text == "}":
            depth -= 1
    return False


def _bind_values(sparql: str, form: str, body: list[_Token],
                 substitutions: dict[str, ox.NamedNode | ox.Literal]) -> str:
    """Insert ``VALUES ?name { term }`` at the start of the query's WHERE group."""
    for name in substitutions:
        if not _VARIABLE_NAME.match(name):
            raise QueryError(f"'{name}' is not a SPARQL variable name")
    if form == "SELECT":
        projected = _projection(body)
        if projected is not None:
            for name in substitutions:
                if name not in projected:
                    raise QueryError(f"query cannot run: the SPARQL query does not project "
                                     f"?{name} in its SELECT clause; a parameter must be a "
                                     "projected variable")
    block = " ".join(f"VALUES ?{name} {{ {_term_text(name, term)} }}"
                     for name, term in substitutions.items())
    groups_to_skip = 1 if form == "CONSTRUCT" else 0
    if form == "CONSTRUCT" and body and body[0].kind == "word" and body[0].text.upper() == \
            "WHERE":
        groups_to_skip = -1  # CONSTRUCT WHERE { triples }: no VALUES inside; append
    braces = parens = 0
    if groups_to_skip >= 0:
        for token in body:
            if token.text == "(":
                parens += 1
            elif token.text == ")":
                parens -= 1
            elif token.text == "{":
                if braces == 0 and parens == 0:
                    if groups_to_skip == 0:
                        return f"{sparql[:token.end]} {block}\n{sparql[token.end:]}"
                    groups_to_skip -= 1
                braces += 1
            elif token.text == "}":
                braces -= 1
    # No WHERE group (DESCRIBE <iri>, CONSTRUCT WHERE): a trailing VALUES clause.
    return f"{sparql}\n{block}\n"


def _projection(body: list[_Token]) -> set[str] | None:
    """The variables a SELECT projects, or None for ``SELECT *``."""
    names: set[str] = set()
    parens = 0
    previous = ""
    for token in body:
        if token.text in ("{",) or (token.kind == "word" and token.text.upper() in (
                "WHERE", "FROM")) and parens == 0:
            break
        if token.text == "(":
            parens += 1
        elif token.text == ")":
            parens -= 1
        elif token.text == "*" and parens == 0:
            return None
        elif token.kind == "var" and (parens == 0 or previous == "AS"):
            names.add(token.text[1:])
        previous = token.text.upper()
    return names


# ---------------------------------------------------------------------------------------
# Results: parse completely before handing back, so a broken body is an error, not a 200.

_VIRTUOSO_PARTIAL = "S1TAT"


def _label_map() -> Callable[[str], str]:
    labels: dict[str, str] = {}

    def label(value: str) -> str:
        if value not in labels:
            labels[value] = f"r{len(labels)}"
        return labels[value]

    return label


def _normalise_json_bnodes(data: dict[str, object]) -> None:
    """Give blank nodes labels pyoxigraph accepts (Virtuoso sends ``nodeID://b10000``)."""
    label = _label_map()
    results = data.get("results")
    bindings = results.get("bindings") if isinstance(results, dict) else None
    if not isinstance(bindings, list):
        return
    for row in bindings:
        if not isinstance(row, dict):
            continue
        for value in row.values():
            if isinstance(value, dict) and value.get("type") == "bnode" and isinstance(
                    value.get("value"), str):
                value["value"] = label(value["value"])


def _solutions(body: bytes, media_type: str, what: str
               ) -> ox.QuerySolutions | ox.QueryBoolean:
    if media_type in _JSON_TYPES:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _broken(body, what, f"not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not ("boolean" in data or "results" in data):
            raise _broken(body, what, "not a SPARQL JSON result (no results or boolean)")
        _normalise_json_bnodes(data)
        payload = json.dumps(data).encode()
        fmt = ox.QueryResultsFormat.JSON
    elif media_type in _XML_TYPES:
        label = _label_map()
        payload = re.sub(rb"<bnode>([^<]*)</bnode>",
                         lambda m: b"<bnode>" + label(m.group(1).decode()).encode() +
                         b"</bnode>", body)
        fmt = ox.QueryResultsFormat.XML
    else:
        raise RemoteProtocolError(f"{what}: the engine answered '{media_type or 'no type'}', "
                                  "not SPARQL results JSON or XML")
    try:
        parsed = ox.parse_query_results(payload, format=fmt)
        if isinstance(parsed, ox.QuerySolutions):
            for _ in parsed:  # read to the end: a bad term fails here, not in the caller
                pass
            parsed = ox.parse_query_results(payload, format=fmt)
    except (SyntaxError, ValueError) as exc:
        raise _broken(body, what, f"not valid SPARQL results ({exc})") from None
    return parsed


def _broken(body: bytes, what: str, why: str) -> RemoteError:
    text = body[-200:].decode("utf-8", "replace")
    if "operation has been cancelled" in text or "timed out" in text.lower():
        # oxigraph serve --timeout-s: a 200 whose body stops with this text
        return RemoteTimeoutError(f"{what}: the engine stopped the query at its time limit "
                                  "and sent a broken answer")
    return RemoteProtocolError(f"{what}: {why}")


def _count_rows(body: bytes, media_type: str) -> int:
    """How many result rows or triples an answer holds (0 when it cannot tell)."""
    if media_type in _JSON_TYPES:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return 0
        results = data.get("results") if isinstance(data, dict) else None
        bindings = results.get("bindings") if isinstance(results, dict) else None
        return len(bindings) if isinstance(bindings, list) else 0
    if media_type in _XML_TYPES:
        return len(re.findall(rb"<result[\s>]", body))
    return sum(1 for line in body.splitlines() if line.strip() and not line.startswith(b"#"))


def _triples(body: bytes, media_type: str, what: str) -> list[ox.Triple]:
    fmt = _TRIPLE_TYPES.get(media_type)
    if fmt is None:
        raise RemoteProtocolError(f"{what}: the engine answered '{media_type or 'no type'}', "
                                  "not N-Triples or Turtle")
    try:
        return [item.triple if isinstance(item, ox.Quad) else item
                for item in ox.parse(body, format=fmt)]
    except (SyntaxError, ValueError) as exc:
        raise _broken(body, what, f"not valid {fmt.name} ({exc})") from None


def _as_query_triples(triples: Iterable[ox.Triple]) -> ox.QueryTriples:
    """A pyoxigraph ``QueryTriples`` holding ``triples`` (it has no public constructor)."""
    store = ox.Store()
    graph = ox.NamedNode(EMPTY_GRAPH)
    store.extend(ox.Quad(t.subject, t.predicate, t.object, graph) for t in triples)
    result = store.query("CONSTRUCT { ?s ?p ?o } WHERE { GRAPH <" + EMPTY_GRAPH +
                         "> { ?s ?p ?o } }")
    assert isinstance(result, ox.QueryTriples)
    return result


# ---------------------------------------------------------------------------------------
# The backend.


class RemoteBackend:
    """A remote SPARQL 1.1 engine: Protocol queries, Update, and the Graph Store Protocol.

    ``graph_namespaces`` are the IRI prefixes of the graphs that are ours: only those are
    listed, queried as the union default graph, replaced and dropped. ``update_url`` and
    ``gsp_url`` may be left out for read-only use (``serve``); without ``gsp_url``, graphs
    are read with CONSTRUCT and written with INSERT DATA.

    ``row_cap`` is the engine's own result cap, when it has one it does not always announce:
    Virtuoso flags a capped SELECT with ``X-SPARQL-MaxRows`` but cuts CONSTRUCT and GSP
    reads at the cap silently, so any answer that reaches ``row_cap`` rows or triples is
    refused as possibly cut short.
    """

    def __init__(
        self,
        query_url: str,
        *,
        update_url: str | None = None,
        gsp_url: str | None = None,
        auth: Auth | None = None,
        timeout: float = 30.0,
        graph_namespaces: Sequence[str] = (BASE,),
        max_bytes: int = 512 << 20,
        graphs_ttl: float = 5.0,
        row_cap: int | None = None,
    ):
        self.query_url = check_url(query_url, "--query-url")
        self.update_url = check_url(update_url, "--update-url") if update_url else None
        self.gsp_url = check_url(gsp_url, "--gsp-url") if gsp_url else None
        if timeout <= 0:
            raise StoreError("the remote timeout must be a positive number of seconds")
        self.auth: Auth = auth or NoAuth()
        self.graph_namespaces = tuple(graph_namespaces)
        if not self.graph_namespaces or any(not ns for ns in self.graph_namespaces):
            raise StoreError("give at least one non-empty graph namespace")
        self.graphs_ttl = graphs_ttl
        if row_cap is not None and row_cap <= 0:
            raise StoreError("the engine's row cap must be a positive number of rows")
        self.row_cap = row_cap
        urls = [u for u in (self.query_url, self.update_url, self.gsp_url) if u]
        self._http = _Http(self.auth, urls, timeout=timeout, max_bytes=max_bytes)
        self._graphs: tuple[float, list[str]] | None = None

    @property
    def timeout(self) -> float:
        return self._http.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._http.timeout = value

    def __repr__(self) -> str:
        return (f"RemoteBackend(query_url={safe_url(self.query_url)!r}, "
                f"update_url={safe_url(self.update_url) if self.update_url else None!r}, "
                f"gsp_url={safe_url(self.gsp_url) if self.gsp_url else None!r}, "
                f"auth={self.auth.name!r})")

    def describe(self) -> str:
        """A one-line, credential-free description for messages."""
        return f"remote SPARQL engine at {safe_url(self.query_url)}"

    # -- the Backend interface ------------------------------------------------------------

    def query(
        self,
        sparql: str,
        *,
        default_graph: list[str] | None = None,
        named_graphs: list[str] | None = None,
        substitutions: dict[str, ox.NamedNode | ox.Literal] | None = None,
        base_iri: str | None = None,
        timeout: float | None = None,
        prefixes: dict[str, str] | None = None,
    ) -> QueryResult:
        """Run a query; by default its dataset is our graphs (union default graph).

        ``prefixes`` (default: ``vocab.PREFIXES``) are declared for the query when it uses
        them without declaring them; ``timeout`` overrides the backend's for this request.
        """
        prepared = prepare_query(sparql, prefixes=prefixes, substitutions=substitutions,
                                 base_iri=base_iri)
        params: list[tuple[str, str]] = [("query", prepared.text)]
        # Dataset parameters override a query's FROM (SPARQL 1.1 Protocol 2.1.4), as the
        # embedded backend's arguments do; a query with its own FROM and no arguments keeps it.
        if default_graph or named_graphs or not prepared.has_dataset:
            ours: list[str] = []
            if not default_graph or not named_graphs:
                ours = self.graphs() or [EMPTY_GRAPH]
            params += [("default-graph-uri", g) for g in (default_graph or ours)]
            params += [("named-graph-uri", g) for g in (named_graphs or ours)]
        return self._run_query(prepared.form, params, timeout=timeout)

    def graphs(self) -> list[str]:
        """Our named graphs in the engine (under ``graph_namespaces``), sorted; cached briefly."""
        now = time.monotonic()
        cached = self._graphs
        if cached is not None and now - cached[0] < self.graphs_ttl:
            return list(cached[1])
        names = self.graphs_uncached()
        self._graphs = (now, names)
        return list(names)

    def graphs_uncached(self) -> list[str]:
        """Our named graphs, asked of the engine now."""
        return self._graphs_under(self.graph_namespaces)

    def quads(self, graph: str | None = None) -> Iterator[ox.Quad]:
        """Every quad of our graphs (or of one), read whole per graph and size-checked."""
        names = [graph] if graph else self.graphs()
        sizes = self.graph_sizes(names)
        for name in names:
            yield from self._graph_quads(name, sizes[name])

    def __len__(self) -> int:
        total = 0
        for size in self.graph_sizes().values():
            total += size
        return total

    def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""
        self._graphs = None

    # -- reading --------------------------------------------------------------------------

    def _run_query(self, form: str, params: list[tuple[str, str]], *,
                   timeout: float | None = None) -> QueryResult:
        accept = SPARQL_RESULTS_JSON if form in ("SELECT", "ASK") else N_TRIPLES
        # Form-encoded POST: Virtuoso 7 never answers a direct application/sparql-query POST.
        response = self._http.request(
            "POST", self.query_url, what="the SPARQL query",
            data=urllib.parse.urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Accept": f"{accept}, */*;q=0.1"},
            timeout=timeout)
        what = f"the SPARQL query at {safe_url(self.query_url)}"
        self._check(response, what, query=True)
        self._check_complete(response, what)
        if form in ("SELECT", "ASK"):
            result: QueryResult = _solutions(response.body, response.media_type, what)
            self._check_cap(_count_rows(response.body, response.media_type), what)
        else:
            triples = _triples(response.body, response.media_type, what)
            self._check_cap(len(triples), what)
            result = _as_query_triples(triples)
        return result

    def _check_cap(self, count: int, what: str) -> None:
        if self.row_cap is not None and count >= self.row_cap:
            raise RemoteIncompleteError(
                f"{what}: the answer has {count} rows or triples, as many as the engine's row "
                f"cap ({self.row_cap}), so it may have been cut short and is refused; ask for "
                "less (LIMIT/OFFSET) or raise the cap (Virtuoso: [SPARQL] ResultSetMaxRows, "
                "then SASCI_KG_REMOTE_ROW_CAP)")

    def _check(self, response: _Response, what: str, *, query: bool = False) -> None:
        status = response.status
        if 200 <= status < 300:
            return
        detail = response.snippet()
        if 300 <= status < 400:
            raise RemoteProtocolError(
                f"{what}: the engine redirected ({status}) to "
                f"{safe_url(response.headers.get('Location') or '?')}; configure that URL "
                "directly (redirects are not followed, so credentials stay put)")
        if status in (401, 403):
            raise RemoteError(
                f"{what}: the engine refused access ({status}); check --auth, --user and "
                "SASCI_KG_PASSWORD / SASCI_KG_TOKEN, and that the account may do this")
        if status == 400 and query:
            raise QueryError(f"the SPARQL engine refused the query (400): {detail}")
        if status == 404:
            raise RemoteProtocolError(f"{what}: not found (404); check the URL — {detail}")
        if status in (502, 503, 504):
            raise RemoteUnavailableError(f"{what}: the engine is unavailable ({status})"
                                         f"{': ' + detail if detail else ''}")
        raise RemoteProtocolError(f"{what}: the engine answered {status}"
                                  f"{': ' + detail if detail else ''}")

    def _check_complete(self, response: _Response, what: str) -> None:
        """Refuse 200s the engine itself marks as cut short (Virtuoso's headers)."""
        state = response.headers.get("X-SQL-State")
        if state:
            message = " ".join((response.headers.get("X-SQL-Message") or "").split())[:200]
            if state.strip().upper() == _VIRTUOSO_PARTIAL:
                raise RemoteTimeoutError(
                    f"{what}: the engine stopped the query at its time limit and returned "
                    f"partial results (X-SQL-State: {state}); the answer is refused. Raise "
                    "the engine's limit (Virtuoso: [SPARQL] MaxQueryExecutionTime) or ask "
                    "for less")
            raise RemoteIncompleteError(f"{what}: the engine flagged its answer as not "
                                        f"complete (X-SQL-State: {state} {message})".rstrip())
        cap = response.headers.get("X-SPARQL-MaxRows")
        if cap is not None:
            try:
                limit = int(cap.strip())
            except ValueError:
                limit = 0
            if limit <= 0 or _count_rows(response.body, response.media_type) >= limit:
                raise RemoteIncompleteError(
                    f"{what}: the engine cut the answer at its row cap of {cap.strip()} "
                    "(X-SPARQL-MaxRows); the answer is refused. Raise the cap (Virtuoso: "
                    "[SPARQL] ResultSetMaxRows in virtuoso.ini) or page with LIMIT/OFFSET")

    def _select(self, sparql: str) -> list[dict[str, object]]:
        """Run a SELECT over the engine's whole dataset (no dataset parameters)."""
        result = self._run_query("SELECT", [("query", sparql)])
        assert isinstance(result, ox.QuerySolutions)
        names = [v.value for v in result.variables]
        return [{n: solution[n] for n in names if solution[n] is not None}
                for solution in result]

    def _all_graphs(self) -> list[str]:
        """Every non-empty named graph in the engine, ours or not (the engine's own too)."""
        rows = self._select("SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }")
        return [g.value for g in (r.get("g") for r in rows) if isinstance(g, ox.NamedNode)]

    def _graphs_under(self, prefixes: Sequence[str]) -> list[str]:
        """The non-empty named graphs whose IRIs start with one of ``prefixes``, sorted."""
        test = " || ".join(f"STRSTARTS(STR(?g), {_term_text('prefix', ox.Literal(p))})"
                           for p in prefixes)
        rows = self._select(f"SELECT DISTINCT ?g WHERE {{ GRAPH ?g {{ ?s ?p ?o }} "
                            f"FILTER({test}) }}")
        return sorted(g.value for g in (r.get("g") for r in rows)
                      if isinstance(g, ox.NamedNode) and g.value.startswith(tuple(prefixes)))

    def graph_sizes(self, graphs: Iterable[str] | None = None) -> dict[str, int]:
        """The number of triples in each of ``graphs`` (default: ours), from the engine."""
        names = list(graphs) if graphs is not None else self.graphs()
        sizes = {name: 0 for name in names}
        if not names:
            return sizes
        values = " ".join(_term_text("graph", ox.NamedNode(g)) for g in names)
        rows = self._select("SELECT ?g (COUNT(*) AS ?n) WHERE { VALUES ?g { " + values +
                            " } GRAPH ?g { ?s ?p ?o } } GROUP BY ?g")
        for row in rows:
            g, n = row.get("g"), row.get("n")
            if isinstance(g, ox.NamedNode) and isinstance(n, ox.Literal):
                sizes[g.value] = int(n.value)
        return sizes

    def _graph_quads(self, graph: str, expected: int | None = None) -> Iterator[ox.Quad]:
        """One graph read whole, and refused unless it has the ``expected`` (else counted)
        number of triples: Virtuoso cuts GSP and CONSTRUCT reads at its cap silently."""
        name = ox.NamedNode(graph)
        what = f"graph <{graph}>"
        if self.gsp_url:
            response = self._http.request(
                "GET", _graph_url(self.gsp_url, graph), what=f"reading {what}",
                headers={"Accept": f"{N_TRIPLES}, text/turtle;q=0.5"})
            if response.status == 404:
                return
            self._check(response, f"reading {what} from {safe_url(self.gsp_url)}")
            self._check_complete(response, f"reading {what}")
            triples = _triples(response.body, response.media_type, f"reading {what}")
            self._check_cap(len(triples), f"reading {what}")
        else:
            result = self._run_query("CONSTRUCT", [(
                "query", f"CONSTRUCT {{ ?s ?p ?o }} WHERE {{ GRAPH <{graph}> {{ ?s ?p ?o }} }}")])
            assert isinstance(result, ox.QueryTriples)
            triples = list(result)
        if expected is None:
            expected = self.graph_sizes([graph])[graph]
        if len(set(triples)) != expected:
            raise RemoteIncompleteError(
                f"reading {what}: the engine sent {len(triples)} triples but counts "
                f"{expected}; the answer was cut short (a row cap?) and is refused")
        for triple in triples:
            yield ox.Quad(triple.subject, triple.predicate, triple.object, name)

    # -- writing --------------------------------------------------------------------------

    def update(self, sparql: str, *, timeout: float | None = None) -> None:
        """Send one SPARQL Update request (form-encoded) to the update URL."""
        if not self.update_url:
            raise StoreError("this remote backend has no update URL; give --update-url (or "
                             "SASCI_KG_UPDATE_URL) to load or change data")
        response = self._http.request(
            "POST", self.update_url, what="the SPARQL update",
            data=urllib.parse.urlencode([("update", sparql)]).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Accept": "*/*"},
            timeout=timeout)
        self._check(response, f"the SPARQL update at {safe_url(self.update_url)}")
        self._graphs = None

    def put_graph(self, graph: str, ntriples: bytes, *, append: bool = False) -> None:
        """Replace (PUT) or extend (POST) one graph with an N-Triples body."""
        if self.gsp_url:
            response = self._http.request(
                "POST" if append else "PUT", _graph_url(self.gsp_url, graph),
                what=f"writing graph <{graph}>", data=ntriples,
                headers={"Content-Type": N_TRIPLES})
            self._check(response, f"writing graph <{graph}> to {safe_url(self.gsp_url)}")
        else:
            text = ntriples.decode("utf-8")
            prefix = "" if append else f"DROP SILENT GRAPH <{graph}> ;\n"
            self.update(f"{prefix}INSERT DATA {{ GRAPH <{graph}> {{\n{text}\n}} }}")
        self._graphs = None


def _graph_url(gsp_url: str, graph: str) -> str:
    separator = "&" if urllib.parse.urlsplit(gsp_url).query else "?"
    return f"{gsp_url}{separator}{urllib.parse.urlencode({'graph': graph})}"


# ---------------------------------------------------------------------------------------
# Loading: stage every graph, check its size, then move them all over the live ones at once.


@dataclass(frozen=True)
class Alteration:
    """A triple the engine stored differently from what was sent (N-Triples text)."""

    graph: str
    sent: str
    stored: str | None

    def __str__(self) -> str:
        came_back = f"came back as {self.stored}" if self.stored else "is missing"
        return f"<{self.graph}>: {self.sent} {came_back}"


@dataclass
class RemoteLoadReport:
    """What a remote load did (sizes as counted by the engine afterwards)."""

    target: str
    quads: int
    graphs: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    altered: list[Alteration] = field(default_factory=list)
    seconds: float = 0.0


def _has_bnode(triple: ox.Triple) -> bool:
    return isinstance(triple.subject, ox.BlankNode) or isinstance(triple.object, ox.BlankNode)


def _alterations(backend: RemoteBackend, store: ox.Store, graph: str, staged: str,
                 size: int) -> list[Alteration]:
    """Triples of ``graph`` that the engine stored differently (blank nodes aside: their
    labels are the engine's own)."""
    sent = {q.triple for q in store.quads_for_pattern(None, None, None, ox.NamedNode(graph))
            if not _has_bnode(q.triple)}
    got = {q.triple for q in backend._graph_quads(staged, size) if not _has_bnode(q.triple)}
    found = []
    extra = sorted(got - sent, key=str)
    for triple in sorted(sent - got, key=str):
        twin = next((t for t in extra if t.subject == triple.subject and
                     t.predicate == triple.predicate), None)
        found.append(Alteration(graph, f"{triple} .", f"{twin} ." if twin else None))
    return found


def _staged_dataset(inputs: Iterable[LoadInput], directory: str,
                    progress: Callable[[str], None] | None) -> ox.Store:
    """The inputs in a scratch on-disk store: the same graphs the embedded load would make."""
    store = ox.Store(directory)
    for item in inputs:
        if progress:
            progress(f"reading {item.label or item.path or 'data'}")
        to_graph = ox.NamedNode(item.graph) if item.graph else None
        try:
            if item.path is not None:
                store.bulk_load(path=str(item.path), format=item.format, to_graph=to_graph)
            else:
                store.bulk_load(item.data, format=item.format, to_graph=to_graph)
        except SyntaxError as exc:
            raise StoreError(f"{item.label or item.path}: not valid {item.format.name} ({exc}); "
                             "fix the file and load again — the engine was not changed") from exc
    return store


def _graph_chunks(store: ox.Store, graph: str, chunk: int) -> Iterator[bytes]:
    """N-Triples of one graph in chunks; a graph with blank nodes goes in one piece (each
    request would otherwise mint its own blank nodes)."""
    name = ox.NamedNode(graph)
    has_bnodes = bool(store.query(
        "ASK { GRAPH ?g { ?s ?p ?o FILTER(isBlank(?s) || isBlank(?o)) } }",
        substitutions={ox.Variable("g"): name}))
    size = chunk if not has_bnodes else None
    batch: list[ox.Triple] = []
    for quad in store.quads_for_pattern(None, None, None, name):
        batch.append(quad.triple)
        if size is not None and len(batch) >= size:
            yield _ntriples(batch)
            batch = []
    if batch or size is None:
        yield _ntriples(batch)


def _ntriples(triples: list[ox.Triple]) -> bytes:
    data = ox.serialize(triples, format=ox.RdfFormat.N_TRIPLES)
    assert data is not None  # None only when writing to a file
    return data


def replace_graphs(
    backend: RemoteBackend,
    inputs: Iterable[LoadInput],
    *,
    progress: Callable[[str], None] | None = None,
    prune: bool = True,
    chunk_triples: int = 50_000,
    verify: bool = True,
    accept_altered: bool = False,
) -> RemoteLoadReport:
    """Replace our graphs in the engine with ``inputs``, safely.

    Each graph is uploaded under a staging name, its size checked against what was sent;
    then one update request moves every staged graph over its live one and (``prune``)
    drops graphs of ours that the new dataset no longer has. Queries never see a
    half-loaded graph; afterwards the engine holds exactly the new graphs of ours — no
    staging graphs, no leftovers. Graphs outside ``backend.graph_namespaces`` are never
    touched, and an input with such a graph (or default-graph triples) is refused.

    With ``verify`` each staged graph is read back and compared with what was sent: an
    engine that rewrites literals (Virtuoso 7 turns ``"P5Y"^^xsd:duration`` into ``"60"``)
    makes the load fail before the swap, unless ``accept_altered``, when the changes are
    only listed in the report.
    """
    started = time.monotonic()
    if not backend.update_url:
        raise StoreError("loading into a remote engine needs its update URL: give --update-url "
                         "(or SASCI_KG_UPDATE_URL)")
    workdir = tempfile.mkdtemp(prefix="sasci-kg-remote-load-")
    try:
        store = _staged_dataset(inputs, workdir, progress)
        if any(True for _ in store.quads_for_pattern(None, None, None, ox.DefaultGraph())):
            raise StoreError("the input has triples in the default graph; a remote engine "
                             "keeps data only in named graphs: put them in a named graph "
                             "(TriG/N-Quads) or load a Turtle/N-Triples file, which gets one")
        graphs = sorted(g.value for g in store.named_graphs() if isinstance(g, ox.NamedNode))
        foreign = [g for g in graphs if not g.startswith(backend.graph_namespaces)]
        if foreign:
            raise StoreError(
                f"graph <{foreign[0]}> is outside our graph namespaces "
                f"({', '.join(backend.graph_namespaces)}); the loader never touches other "
                "graphs: rename the graph, or add its namespace with --graph-namespace / "
                "SASCI_KG_GRAPH_NAMESPACES")
        expected = {g: sum(1 for _ in store.quads_for_pattern(None, None, None,
                                                              ox.NamedNode(g)))
                    for g in graphs}

        # Leftovers of a load that was killed before its swap: ours by construction.
        leftovers = backend._graphs_under([STAGING_NAMESPACE])
        if leftovers:
            backend.update(" ;\n".join(f"DROP SILENT GRAPH <{g}>" for g in leftovers))

        run = f"{STAGING_NAMESPACE}{int(time.time())}-{secrets.token_hex(4)}:"
        staging = {g: f"{run}{index}" for index, g in enumerate(graphs)}
        try:
            for graph in graphs:
                if progress:
                    progress(f"uploading <{graph}> ({expected[graph]} triples)")
                for number, body in enumerate(_graph_chunks(store, graph, chunk_triples)):
                    backend.put_graph(staging[graph], body, append=number > 0)
            sizes = backend.graph_sizes(staging.values())
            for graph in graphs:
                got = sizes.get(staging[graph], 0)
                if got != expected[graph]:
                    raise RemoteError(
                        f"graph <{graph}>: the engine holds {got} triples after the upload, "
                        f"{expected[graph]} were sent; the live graphs were not changed")
            altered: list[Alteration] = []
            if verify:
                if progress:
                    progress("reading the staged graphs back to compare")
                for graph in graphs:
                    altered += _alterations(backend, store, graph, staging[graph],
                                            expected[graph])
            if altered and not accept_altered:
                raise RemoteError(
                    f"the engine stored {len(altered)} triple(s) differently from what was "
                    f"sent, e.g. {altered[0]}; the live graphs were not changed. Change the "
                    "data, or load anyway with --accept-engine-changes (each change is "
                    "listed)")
            live = backend.graphs_uncached()
            dropped = [g for g in live if g not in expected] if prune else []
            operations = [f"MOVE <{staging[g]}> TO <{g}>" for g in graphs]
            operations += [f"DROP SILENT GRAPH <{g}>" for g in dropped]
            if progress:
                progress(f"swapping in {len(graphs)} graphs"
                         f"{f', dropping {len(dropped)}' if dropped else ''}")
            if operations:
                backend.update(" ;\n".join(operations))
        except BaseException:
            _drop_quietly(backend, staging.values())
            raise
        del store
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    # Check the result as the engine now reports it, not as planned.
    listed = backend._graphs_under([*backend.graph_namespaces, run])
    after = [g for g in listed if not g.startswith(run)]
    stray = [g for g in listed if g.startswith(run)]
    sizes = backend.graph_sizes(after)
    wrong = [g for g in graphs if sizes.get(g) != expected[g]]
    extra = [g for g in after if g not in expected] if prune else []
    if stray or wrong or extra:
        problems = [f"graph <{g}> has {sizes.get(g, 0)} triples, not {expected[g]}"
                    for g in wrong[:3]]
        problems += [f"graph <{g}> should have been dropped" for g in extra[:3]]
        if stray:
            problems.append(f"{len(stray)} staging graph(s) remain")
        raise RemoteError("the swap did not finish as planned: " + "; ".join(problems) +
                          "; run the load again (it cleans up) and check the engine's log")
    return RemoteLoadReport(
        target=safe_url(backend.query_url),
        quads=sum(sizes.values()),
        graphs=sorted(after),
        dropped=dropped,
        altered=altered,
        seconds=time.monotonic() - started,
    )


def _drop_quietly(backend: RemoteBackend, graphs: Iterable[str]) -> None:
    """Best-effort removal of staging graphs after a failed load (the next load retries)."""
    names = list(graphs)
    if not names:
        return
    try:
        backend.update(" ;\n".join(f"DROP SILENT GRAPH <{g}>" for g in names))
    except RemoteError:
        pass
