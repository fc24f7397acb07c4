"""Query results kept per store generation: the graph changes only when a load swaps a new
store in, so the same query over the same store gives the same bytes until then.

A :class:`ResultCache` holds finished answers (already serialised, as the worker sent them)
under the store generation that produced them, least recently used first out, within a byte
budget; a new generation empties it. Every answer also gets a strong entity tag from its media
type and bytes (:func:`entity_tag`), so a client can revalidate with ``If-None-Match`` and get
a 304 whether or not its answer is still in the cache.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from werkzeug.http import parse_etags


def entity_tag(media_type: str, body: bytes) -> str:
    """The (unquoted) strong entity tag of a body in a media type: equal bytes, equal tag."""
    digest = hashlib.blake2b(media_type.encode("ascii", "replace"), digest_size=16)
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def not_modified(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` matches our (unquoted, strong) tag: RFC 9110 §13.1.2's weak
    comparison, ``*`` included."""
    tags = parse_etags(if_none_match)
    return tags.star_tag or tags.contains_weak(etag)


@dataclass(frozen=True)
class CachedAnswer:
    """A finished answer: the body, its row count, what it took to compute, its tag."""

    body: bytes
    rows: int
    seconds: float
    etag: str


class AnswerCache(Protocol):
    """What the query route needs of a cache of answers (:class:`ResultCache` in one
    process; :class:`~.shared_cache.SharedResultCache` for a forking server's processes)."""

    max_bytes: int
    max_entry_bytes: int
    shared: bool  # one cache for several processes

    def get(self, generation: Any, key: Hashable, *, replay: bool = False
            ) -> CachedAnswer | None: ...

    def put(self, generation: Any, key: Hashable, answer: CachedAnswer) -> None: ...

    def stats(self) -> dict[str, int]: ...


class ResultCache:
    """A thread-safe LRU of answers for one store generation at a time.

    ``max_bytes`` bounds the bodies held in all (0 switches the cache off); an answer over
    ``max_entry_bytes`` is never kept, so one big result cannot push out many small ones.
    """

    shared = False

    def __init__(self, max_bytes: int, max_entry_bytes: int):
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, CachedAnswer] = OrderedDict()
        self._generation: Any = None
        self._size = 0
        self.hits = 0
        self.misses = 0
        self.replayed = 0

    def get(self, generation: Any, key: Hashable, *, replay: bool = False
            ) -> CachedAnswer | None:
        """The answer kept for ``key`` under ``generation``, if any (and mark it recent).
        ``replay``: a look for a whole response to send again, where a miss is not counted
        (the app looks next), nor an empty record (the prefork worker's mark of bytes seen
        once), and a hit is counted as replayed too."""
        if self.max_bytes <= 0:
            return None
        with self._lock:
            answer = self._entries.get(key) if generation == self._generation else None
            if answer is not None:
                self._entries.move_to_end(key)
                if not replay or answer.body:
                    self.hits += 1
                    self.replayed += replay
            elif not replay:
                self.misses += 1
            return answer

    def put(self, generation: Any, key: Hashable, answer: CachedAnswer) -> None:
        """Keep ``answer``; an answer of a newer generation first drops every older one."""
        size = len(answer.body)
        if self.max_bytes <= 0 or size > self.max_entry_bytes or generation is None:
            return
        with self._lock:
            if generation != self._generation:
                self._entries.clear()
                self._size = 0
                self._generation = generation
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old.body)
            self._entries[key] = answer
            self._size += size
            while self._size > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped.body)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._size,
                    "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses,
                    "replayed": self.replayed}


class SmallMemo:
    """A bounded memo for cheap-to-recompute, often-repeated values (checked query texts,
    negotiated formats): when full it is simply emptied, which keeps it trivially correct.

    ``max_key_chars`` also bounds the characters of its keys (query texts), in all."""

    def __init__(self, max_entries: int, max_key_chars: int | None = None):
        self.max_entries = max_entries
        self.max_key_chars = max_key_chars
        self._values: dict[Hashable, Any] = {}
        self._key_chars = 0

    def get(self, key: Hashable) -> Any:
        return self._values.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        limit = self.max_key_chars
        chars = len(key) if isinstance(key, str) else 0
        if len(self._values) >= self.max_entries or (
                limit is not None and self._key_chars + chars > limit):
            self._values = {}  # a plain dict swap: safe to race with readers under the GIL
            self._key_chars = 0
        self._values[key] = value
        self._key_chars += chars
