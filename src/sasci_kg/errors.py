"""The one exception tree of the library. The CLI turns these into ``Error: …`` and exit 1;
the web app into an ``application/problem+json`` body with the right status.

    SasciKgError
    ├── FactsError          fact files that cannot be read or do not validate
    ├── ShaclError          the built graph breaks a SHACL shape
    │   └── UntranslatableShape  (shacl_sparql) a shape the SPARQL validator cannot translate
    ├── StoreError          the store cannot be opened, locked, loaded or swapped
    │   ├── StoreLockedError  another process holds the store's write lock
    │   └── RemoteError     a remote SPARQL engine failed us (web: 502)
    │       ├── RemoteUnavailableError  cannot connect: refused, reset, unknown host (502)
    │       ├── RemoteTimeoutError      no answer in time, or partial results on timeout (504)
    │       ├── RemoteProtocolError     an answer we cannot trust: bad status, type or body (502)
    │       └── RemoteIncompleteError   a 200 the engine cut short (row cap) (502)
    ├── QueryError          a SPARQL query that is malformed or cannot run
    │   ├── QueryRefusedError a query the policy refuses (SERVICE, LOAD, update, too large)
    │   └── NetworkTooLargeError  the whole network has too many links to draw
    ├── ExportError         an unknown format or graph asked of the exporter
    └── NotFoundError       a named query, entity or graph that does not exist
        ├── UnknownEntityError    a name that matches no entity (with suggestions)
        └── AmbiguousEntityError  a name that matches several entities (with candidates)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class SasciKgError(Exception):
    """Base class of every error the library raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem in a fact file: where it is and what is wrong (with the fix)."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class FactsError(SasciKgError):
    """Fact files that cannot be read or do not validate; carries every problem found."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the fact files"
        super().__init__(head + ":\n" + "\n".join(str(p) for p in self.problems))


class ShaclError(SasciKgError):
    """The built graph breaks a SHACL shape; the message is the readable report."""


class StoreError(SasciKgError):
    """The store cannot be opened, loaded or swapped."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class DownloadBusyError(SasciKgError):
    """Another request is making a download, and this one does not wait its turn (a server
    process with one thread, as the prefork server's: waiting would hold the process)."""

    def __init__(self, filename: str, retry_after: int = 10):
        super().__init__(f"{filename} is not made yet and another download is being made "
                         f"now; ask again in {retry_after} s")
        self.retry_after = retry_after


class RemoteError(StoreError):
    """A remote SPARQL engine failed: the web layer answers 502 (504 for timeouts)."""


class RemoteUnavailableError(RemoteError):
    """The remote engine cannot be reached: connection refused or reset, unknown host."""


class RemoteTimeoutError(RemoteError):
    """The remote engine gave no complete answer in time (ours, or its own time limit)."""


class RemoteProtocolError(RemoteError):
    """The remote engine answered something we cannot trust: status, media type or body."""


class RemoteIncompleteError(RemoteError):
    """The remote engine answered 200 but cut the result short (a row or size cap)."""


class QueryError(SasciKgError):
    """A SPARQL query that is malformed or cannot run."""


class QueryRefusedError(QueryError):
    """A query the endpoint's policy refuses (SERVICE, LOAD, an update, too large)."""


class NetworkTooLargeError(QueryError):
    """The network asked for has more than ``max_links`` links, too many to draw: draw part
    of it (around one entity, or fewer kinds of links)."""

    def __init__(self, max_links: int):
        super().__init__(
            f"the network has more than {max_links:,} links, too many to draw; draw part of "
            "it: around one entity within a few hops (--around ENTITY --hops N; on the web, "
            "around and hops), or with fewer kinds of links (--links)"
        )
        self.max_links = max_links


class ExportError(SasciKgError):
    """An unknown export format or graph."""


class NotFoundError(SasciKgError):
    """A named query, entity or graph that does not exist."""


class UnknownEntityError(NotFoundError):
    """A name that matches no entity; ``candidates`` holds the nearest, best first."""

    def __init__(self, text: str, parameter: str, candidates: Sequence[Any]):
        self.text, self.parameter, self.candidates = text, parameter, list(candidates)
        hint = ("did you mean " + " or ".join(str(c) for c in self.candidates[:5]) + "? "
                if self.candidates else "")
        super().__init__(f"{parameter}: nothing in the graph is called '{text}'; {hint}"
                         "give a name, part of one, an acronym or an IRI (person/…, org/…)")


class AmbiguousEntityError(NotFoundError):
    """A name that matches several entities; ``candidates`` holds them, best first."""

    def __init__(self, text: str, parameter: str, candidates: Sequence[Any]):
        self.text, self.parameter, self.candidates = text, parameter, list(candidates)
        shown = "; ".join(str(c) for c in self.candidates[:10])
        more = f" and {len(self.candidates) - 10} more" if len(self.candidates) > 10 else ""
        super().__init__(f"{parameter}: '{text}' matches {len(self.candidates)} entities: "
                         f"{shown}{more}; give more of the name, or one of these refs")
