"""One answer cache for every process of a forking server, in shared memory.

The prefork server's workers are processes: a :class:`~.result_cache.ResultCache` in each
would compute and keep every answer once per worker, so a repeated query missed whenever
it reached another worker, and the memory budget held each answer several times.
:class:`SharedResultCache` has the same interface and lives in one memory file the server
makes before it forks (:func:`share_results`), mapped by every worker.

The layout is a log and an index, the way an append-only cache is usually kept in shared
memory:

- the *log* is a ring of ``max_bytes``: each answer is appended as one record (its key's
  digest, a checksum, the row count, the time it took, its entity tag and body), and the
  oldest records are written over when the ring comes round; a record found in the older
  half is written again at the head, so what is asked for stays;
- the *index* is a table of slots ``(digest, position, length)``, searched with a few probes
  from a slot the key's hash picks, the digest saying which is the key's; a slot whose record
  the ring has passed over is free.

Writers take a POSIX record lock on the memory file (the kernel lets go of it if a worker
dies holding it). Readers take no lock: a record is copied out, then checked against its
checksum and the log's write position, so an answer being overwritten while read is a miss,
never a wrong answer. The store generation is part of each key's digest, so a new build's
answers never meet an old one's; the first answer kept for a new generation empties the index.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Hashable
from typing import Any

from flask import Flask

from .result_cache import CachedAnswer

_MAGIC = 0x5341534349434331  # "SASCICC1"
# header: magic, reserve (where the record being written, or the last one, ends), a field
# unused, index slots, ring bytes, counter rows; then the generation's mark (_GENERATION_AT)
_HEADER = struct.Struct("<QQQQQQ")
_HEADER_BYTES = 64
_COUNTER = struct.Struct("<QQQ")  # hits, misses, replayed of one process
_SLOT = struct.Struct("<16sQI4x")  # digest, position in the log (+1; 0: empty), length
_RECORD = struct.Struct("<I16s16sQdH")  # length, digest, checksum, rows, seconds, tag length
_PROBES = 8
_ALIGN = 8
_RESERVE_AT = 8
_GENERATION_AT = 48  # a mark of the store generation of the answers kept (0: none yet)
_POSITION = struct.Struct("<Q")


def _checksum(key: bytes, header: bytes, tag: bytes, body: bytes) -> bytes:
    """The record's check: its header (checksum field zeroed), tag and body, keyed with the
    server's own secret (the digests of keys can be worked out from outside: the store
    generation is public)."""
    h = hashlib.blake2b(header, digest_size=16, key=key)
    h.update(tag)
    h.update(body)
    return h.digest()


class SharedResultCache:
    """A :class:`~.result_cache.ResultCache` for several processes (see the module text).

    Made before the fork; ``counters`` is how many processes keep their own hit and miss
    counts in it (each one says which with :meth:`bind`); they are summed in :meth:`stats`.
    """

    shared = True

    def __init__(self, max_bytes: int, max_entry_bytes: int, counters: int = 1):
        if max_bytes <= 0:
            raise ValueError("a shared cache needs a budget")
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.ring = max_bytes
        slots = 1024
        while slots * 1024 < max_bytes:  # one slot per KiB of the budget, a power of two
            slots *= 2
        self.slots = slots
        self.counters = max(1, counters)
        self._index_at = _HEADER_BYTES + self.counters * _COUNTER.size
        self._ring_at = self._index_at + slots * _SLOT.size
        self.size = size = self._ring_at + self.ring  # the bytes mapped in each process
        self.fd = os.memfd_create("sasci-kg-answers", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        _HEADER.pack_into(self.map, 0, _MAGIC, 0, 0, slots, self.ring, self.counters)
        self._secret = os.urandom(32)  # (made before the fork: every worker has it)
        self._lock = threading.Lock()  # threads of one process (the POSIX lock is per process)
        self._counter = 0  # this process's row of counters
        self._hits = self._misses = self._replayed = 0
        self._last: tuple[Any, Hashable, bytes, int] | None = None  # the last key (see _key)
        self._generation_part: tuple[Any, bytes] | None = None  # (see _digest)

    def bind(self, counter: int) -> None:
        """Count this process's hits and misses in row ``counter`` (a worker's index; a
        worker that replaces one carries its counts on)."""
        self._counter = counter % self.counters
        self._hits, self._misses, self._replayed = _COUNTER.unpack_from(self.map, self._row())

    def _row(self) -> int:
        return _HEADER_BYTES + self._counter * _COUNTER.size

    # -- the interface of ResultCache

    def get(self, generation: Any, key: Hashable, *, replay: bool = False
            ) -> CachedAnswer | None:
        """The answer kept for ``key`` under ``generation``, if any (``replay``: as
        :meth:`ResultCache.get <.result_cache.ResultCache.get>`)."""
        answer = self._find(*self._key(generation, key))
        if answer is not None and (answer.body or not replay):
            self._hits += 1
            self._replayed += replay
        elif not replay:
            self._misses += 1
        else:
            return answer  # (nothing counted)
        _COUNTER.pack_into(self.map, self._row(), self._hits, self._misses, self._replayed)
        return answer

    def put(self, generation: Any, key: Hashable, answer: CachedAnswer) -> None:
        """Keep ``answer`` (not one over ``max_entry_bytes``, nor without a generation)."""
        tag = answer.etag.encode("ascii")
        length = _RECORD.size + len(tag) + len(answer.body)
        if generation is None or len(answer.body) > self.max_entry_bytes or length > self.ring:
            return
        encoded, first = self._key(generation, key)
        digest = _digest(encoded)
        header = _RECORD.pack(length, digest, bytes(16), answer.rows, answer.seconds, len(tag))
        record = _RECORD.pack(length, digest, _checksum(self._secret, header, tag, answer.body),
                              answer.rows, answer.seconds, len(tag)) + tag + answer.body
        self._locked_append(digest, first, record, generation)

    def _locked_append(self, digest: bytes, first: int, record: bytes,
                       generation: Any = None) -> None:
        with self._lock:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
            try:
                if generation is not None:
                    self._follow(generation)
                self._append(digest, first, record)
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def _follow(self, generation: Any) -> None:
        """A new store generation empties the index (lock held): the old answers can never
        be asked for again, and would count in :meth:`stats` until written over."""
        mark = int.from_bytes(_digest(_encoded_generation(generation))[:8], "little") or 1
        was = _POSITION.unpack_from(self.map, _GENERATION_AT)[0]
        if was != mark:
            if was:  # (a new cache's index is empty: writing zeros would only take memory)
                zeros = bytes(1 << 20)
                for at in range(self._index_at, self._ring_at, len(zeros)):
                    end = min(at + len(zeros), self._ring_at)
                    self.map[at:end] = zeros[:end - at]
            _POSITION.pack_into(self.map, _GENERATION_AT, mark)

    def stats(self) -> dict[str, int]:
        """Answers and bytes held now (by every process); hits, misses and the hits that
        were whole responses sent again, summed over the processes."""
        reserve = _POSITION.unpack_from(self.map, _RESERVE_AT)[0]
        entries = size = 0
        for _, position, length in _SLOT.iter_unpack(
                self.map[self._index_at:self._ring_at]):
            if position and position - 1 >= reserve - self.ring:
                entries += 1
                size += length
        hits = misses = replayed = 0
        for row in range(self.counters):
            h, m, r = _COUNTER.unpack_from(self.map, _HEADER_BYTES + row * _COUNTER.size)
            hits, misses, replayed = hits + h, misses + m, replayed + r
        return {"entries": entries, "bytes": size, "max_bytes": self.max_bytes,
                "hits": hits, "misses": misses, "replayed": replayed}

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)

    # -- inside

    def _key(self, generation: Any, key: Hashable) -> tuple[bytes, int]:
        """The key's bytes (the generation's first) and the index slot its search starts at;
        worked out once for a miss and the answer then kept under the same key.

        The slot comes from Python's own keyed hash of those bytes, the same in every worker
        (forks of one supervisor share its secret), not from the digest: a search that meets
        an empty slot there, as most misses do, makes no digest at all (blake2b was ~15 µs
        of a miss in a worker that had sat idle). The digest still says which record is the
        key's. A process with another secret would only miss more, never answer wrongly."""
        last = self._last
        if last is not None and last[1] is key and last[0] == generation:
            return last[2], last[3]
        seen = self._generation_part  # (made once per generation: its repr is most of it)
        if seen is None or seen[0] != generation:
            seen = self._generation_part = (generation, _encoded_generation(generation))
        encoded = seen[1] + b"".join(_encoded_key(key))
        first = hash(encoded) & (self.slots - 1)
        self._last = (generation, key, encoded, first)
        return encoded, first

    def _probes(self, first: int) -> list[tuple[int, bytes, int, int]]:
        """The slots a search from ``first`` looks at: (where, digest, position + 1, length)."""
        out = []
        for probe in range(_PROBES):
            at = self._index_at + ((first + probe) & (self.slots - 1)) * _SLOT.size
            out.append((at, *_SLOT.unpack_from(self.map, at)))
        return out

    def _find(self, encoded: bytes, first: int) -> CachedAnswer | None:
        # Slot by slot: most searches end at the first, empty or not (a miss on a first
        # asking is most of them, and unpacking all the probes at once cost ~10 µs of it in
        # a worker that had sat idle).
        digest = None
        for probe in range(_PROBES):
            at = self._index_at + ((first + probe) & (self.slots - 1)) * _SLOT.size
            found, position, length = _SLOT.unpack_from(self.map, at)
            if not position:
                return None  # never used: a slot once used is never empty again
            digest = digest or _digest(encoded)
            if found == digest:
                answer = self._read(digest, first, position - 1, length)
                if answer is not None:
                    return answer
        return None

    def _renew(self, digest: bytes, first: int, position: int, record: bytes) -> None:
        """Write a record found in the older half of the ring again at its head: what is
        asked for stays (the ring alone would drop it after ``max_bytes`` of newer ones,
        however often it was used)."""
        if position < _POSITION.unpack_from(self.map, _RESERVE_AT)[0] - self.ring // 2:
            self._locked_append(digest, first, record)

    def _read(self, digest: bytes, first: int, position: int, length: int
              ) -> CachedAnswer | None:
        oldest = _POSITION.unpack_from(self.map, _RESERVE_AT)[0] - self.ring
        if position < oldest or length < _RECORD.size:
            return None
        start = self._ring_at + position % self.ring
        record = self.map[start:start + length]
        # Written over while we copied it (the ring came round)? Then it is not ours to use.
        if position < _POSITION.unpack_from(self.map, _RESERVE_AT)[0] - self.ring:
            return None
        size, found, checksum, rows, seconds, tag_length = _RECORD.unpack_from(record)
        if size != length or found != digest or _RECORD.size + tag_length > length:
            return None
        tag = record[_RECORD.size:_RECORD.size + tag_length]
        body = record[_RECORD.size + tag_length:]
        header = _RECORD.pack(size, found, bytes(16), rows, seconds, tag_length)
        if _checksum(self._secret, header, tag, body) != checksum:
            return None
        self._renew(digest, first, position, record)
        return CachedAnswer(body, rows, seconds, tag.decode("ascii"))

    def _append(self, digest: bytes, first: int, record: bytes) -> None:
        """Write ``record`` at the head of the ring and point a slot at it (lock held)."""
        length = len(record)
        # From where the last writing was to end (reserve), even if it never did (a worker
        # that died writing): going back would make records written over count as whole.
        head = _POSITION.unpack_from(self.map, _RESERVE_AT)[0]
        offset = head % self.ring
        if offset + length > self.ring:  # records never wrap: start the ring again
            head += self.ring - offset
            offset = 0
        end = head + length
        end += -end % _ALIGN
        # Say first where the writing ends, so that a reader of a record written over
        # sees it has gone; then write the record.
        _POSITION.pack_into(self.map, _RESERVE_AT, end)
        start = self._ring_at + offset
        self.map[start:start + length] = record
        oldest = end - self.ring
        # The slot of the same key if there is one, else a free one, else the oldest. (A
        # never-used slot ends a search: the same key is never after one.)
        best, best_rank = 0, (3, 0)
        for at, found, position, _ in self._probes(first):
            rank = ((0, 0) if found == digest else
                    (1, 0) if not position or position - 1 < oldest else (2, position))
            if rank < best_rank:
                best, best_rank = at, rank
        _SLOT.pack_into(self.map, best, digest, head + 1, length)


def _digest(encoded: bytes) -> bytes:
    """Which record is a key's: its bytes' digest, kept in its slot and its record."""
    return hashlib.blake2b(encoded, digest_size=16).digest()


def _encoded_generation(generation: Any) -> bytes:
    """A generation as bytes that no other gives (its kind, length and repr); with
    :func:`_encoded_key`'s, those of no other pair."""
    shown = repr(generation).encode("utf-8", "surrogatepass")
    return b"g%d:%s" % (len(shown), shown)


def _encoded_key(key: Hashable) -> list[bytes]:
    """A key (a tuple of strings, bytes or small tuples; or a string) as pieces of bytes
    that no other key gives: each piece says its kind and length, and what is neither a
    string nor bytes goes by its repr (which no two different values of strings, numbers
    and tuples share)."""
    parts: list[bytes] = []
    for item in key if type(key) is tuple else (key,):
        kind = type(item)
        if kind is str:
            data = item.encode("utf-8", "surrogatepass")
            parts += (b"s%d:" % len(data), data)
        elif kind is bytes:
            parts += (b"b%d:" % len(item), item)
        else:
            data = repr(item).encode("utf-8", "surrogatepass")
            parts += (b"r%d:" % len(data), data)
    return parts


def share_results(app: Flask, processes: int) -> None:
    """Give the app one answer cache for ``processes`` forked processes (made before the
    fork; each process then says which it is with ``bind``). Nothing when the cache is off."""
    runtime = app.extensions["sasci_kg"]
    results = runtime.results
    if isinstance(results, SharedResultCache) or results.max_bytes <= 0:
        return
    runtime.results = SharedResultCache(results.max_bytes, results.max_entry_bytes,
                                        counters=processes)
