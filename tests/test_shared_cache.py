"""The answer cache the prefork server's processes share (``web/shared_cache.py``): what is
kept is found by every process, never under another key or store generation, and what the
ring has written over, or what is half written, is a miss, never a wrong answer."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sasci_kg.web import shared_cache
from sasci_kg.web.result_cache import CachedAnswer, ResultCache, entity_tag
from sasci_kg.web.shared_cache import _RECORD, _RESERVE_AT, SharedResultCache

GEN = (1, 2, 3)
JSON = "application/sparql-results+json"


def answer(body: bytes, rows: int = 1, seconds: float = 0.25) -> CachedAnswer:
    return CachedAnswer(body, rows, seconds, entity_tag(JSON, body))


def key(text: str) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    return (text, JSON, (), ())


@pytest.fixture
def cache() -> Iterator[SharedResultCache]:
    made = SharedResultCache(64 * 1024, 8 * 1024, counters=2)
    yield made
    made.close()


def test_an_answer_kept_is_found_as_it_was_kept(cache: SharedResultCache) -> None:
    kept = answer(b'{"boolean":true}', rows=1, seconds=0.125)
    cache.put(GEN, key("ASK {}"), kept)
    assert cache.get(GEN, key("ASK {}")) == kept
    assert cache.get(GEN, key("ASK { }")) is None  # another text
    assert cache.get((1, 2, 4), key("ASK {}")) is None  # another store generation
    assert cache.get(GEN, ("ASK {}", "text/csv", (), ())) is None  # another format
    assert cache.get(GEN, ("ASK {}", JSON, ("urn:g",), ())) is None  # another dataset
    assert cache.stats() == {"entries": 1, "bytes": cache.stats()["bytes"],
                             "max_bytes": 64 * 1024, "hits": 1, "misses": 4, "replayed": 0}


def test_a_miss_at_an_empty_slot_makes_no_digest(cache: SharedResultCache,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Most misses (a first asking) end at the slot the key's hash picks, still empty: no
    # digest is made for them (blake2b was most of a miss in a worker after an idle spell).
    made: list[bytes] = []
    real = shared_cache._digest
    monkeypatch.setattr(shared_cache, "_digest", lambda encoded: made.append(encoded) or real(
        encoded))

    def of_the_key() -> int:
        return sum(b"SELECT 1" in encoded for encoded in made)

    assert cache.get(GEN, key("SELECT 1")) is None and made == []
    cache.put(GEN, key("SELECT 1"), answer(b"one"))
    assert of_the_key() == 1
    found = cache.get(GEN, key("SELECT 1"))
    assert found is not None and found.body == b"one" and of_the_key() == 2


def test_a_new_store_generation_empties_it(cache: SharedResultCache) -> None:
    """(The old answers, never to be asked for again, counted in /healthz until written
    over: the figures looked as if a load never emptied the cache.)"""
    cache.put(GEN, key("a"), answer(b"a"))
    cache.put(GEN, key("b"), answer(b"b"))
    cache.put((1, 2, 4), key("a"), answer(b"new a"))
    assert cache.stats()["entries"] == 1
    assert cache.get(GEN, key("b")) is None
    assert cache.get((1, 2, 4), key("a")) == answer(b"new a")


def test_bytes_keys_and_text_keys_never_meet(cache: SharedResultCache) -> None:
    cache.put(GEN, ("replay", b"GET / HTTP/1.1\r\n\r\n"), answer(b"raw"))
    cache.put(GEN, ("replay", "GET / HTTP/1.1\r\n\r\n"), answer(b"text"))
    assert cache.get(GEN, ("replay", b"GET / HTTP/1.1\r\n\r\n")) == answer(b"raw")
    assert cache.get(GEN, ("replay", "GET / HTTP/1.1\r\n\r\n")) == answer(b"text")


def test_a_look_for_a_replay_counts_its_hit_only(cache: SharedResultCache) -> None:
    assert cache.get(GEN, key("a"), replay=True) is None
    cache.put(GEN, key("a"), answer(b"a"))
    assert cache.get(GEN, key("a"), replay=True) is not None
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["replayed"]) == (1, 0, 1)


def test_an_answer_over_the_entry_limit_is_not_kept(cache: SharedResultCache) -> None:
    cache.put(GEN, key("big"), answer(b"x" * (8 * 1024 + 1)))
    cache.put(None, key("no generation"), answer(b"x"))
    assert cache.get(GEN, key("big")) is None and cache.get(None, key("no generation")) is None
    assert cache.stats()["entries"] == 0


def test_the_ring_writes_over_the_oldest_answers_only(cache: SharedResultCache) -> None:
    bodies = {f"q{i}": os.urandom(700 + i % 300) for i in range(400)}  # ~6x the ring
    for text, body in bodies.items():
        cache.put(GEN, key(text), answer(body))
    found = {text: cache.get(GEN, key(text)) for text in bodies}
    kept = [text for text, got in found.items() if got is not None]
    assert kept and all(found[text] == answer(bodies[text]) for text in kept)
    # First in, first out: what is still there is the newest.
    assert kept == list(bodies)[-len(kept):]
    stats = cache.stats()
    assert stats["entries"] == len(kept) and stats["bytes"] <= 64 * 1024


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.binary(max_size=3000)), max_size=60))
def test_whatever_is_found_is_what_was_last_kept(puts: list[tuple[int, bytes]]) -> None:
    cache = SharedResultCache(16 * 1024, 4 * 1024)
    last: dict[int, bytes] = {}
    try:
        for number, body in puts:
            cache.put(GEN, key(str(number)), answer(body))
            if len(body) <= 4 * 1024:
                last[number] = body
        for number in range(41):
            got = cache.get(GEN, key(str(number)))
            assert got is None or got == answer(last[number])
        if puts and len(puts[-1][1]) <= 4 * 1024:  # the newest is always there
            assert cache.get(GEN, key(str(puts[-1][0]))) == answer(puts[-1][1])
    finally:
        cache.close()


def test_a_record_damaged_or_half_written_is_a_miss(cache: SharedResultCache) -> None:
    cache.put(GEN, key("q"), answer(b"the answer" * 20))
    start = cache._ring_at + 100  # inside the record's body
    cache.map[start:start + 1] = bytes([cache.map[start] ^ 0xFF])
    assert cache.get(GEN, key("q")) is None


def test_a_record_whose_header_is_damaged_is_a_miss(cache: SharedResultCache) -> None:
    """(The check covered the tag and body but not the tag's length: moving the line
    between them gave a wrong tag and a wrong body.)"""
    cache.put(GEN, key("q"), answer(b"BODY"))
    at = cache._ring_at + _RECORD.size - 2  # the tag's length, the header's last field
    cache.map[at:at + 2] = (int.from_bytes(cache.map[at:at + 2], "little") - 1).to_bytes(
        2, "little")
    assert cache.get(GEN, key("q")) is None


def _reserve(cache: SharedResultCache) -> int:
    return int.from_bytes(cache.map[_RESERVE_AT:_RESERVE_AT + 8], "little")


def test_a_record_the_writing_has_reached_is_a_miss_though_its_bytes_are_whole(
        cache: SharedResultCache) -> None:
    cache.put(GEN, key("q"), answer(b"kept"))
    # A writer has said it is writing over the record's place (and not begun).
    cache.map[_RESERVE_AT:_RESERVE_AT + 8] = (_reserve(cache) + cache.ring).to_bytes(
        8, "little")
    assert cache.get(GEN, key("q")) is None


def test_a_writer_that_died_writing_never_moves_the_ring_back(
        cache: SharedResultCache) -> None:
    """A worker can end in the middle of a write (its watchdog ends the process; the
    supervisor kills one that overruns): after it, writing goes on from where that write
    was to end, so what it may have written over stays gone."""
    cache.put(GEN, key("old"), answer(b"o" * 500))
    died_at = _reserve(cache) + cache.ring - 100  # reserve said, record half written
    cache.map[_RESERVE_AT:_RESERVE_AT + 8] = died_at.to_bytes(8, "little")
    cache.put(GEN, key("new"), answer(b"n" * 500))
    assert _reserve(cache) > died_at
    assert cache.get(GEN, key("old")) is None
    assert cache.get(GEN, key("new")) == answer(b"n" * 500)


def test_what_is_asked_for_stays_while_the_ring_goes_round(cache: SharedResultCache) -> None:
    """First in, first out alone would drop a hot answer after ``max_bytes`` of newer ones;
    one found in the older half of the ring is written again at its head."""
    cache.put(GEN, key("hot"), answer(b"h" * 700))
    for i in range(300):  # ~3x the ring of others, the hot one asked for all along
        cache.put(GEN, key(f"cold {i}"), answer(bytes([i % 256]) * 700))
        assert cache.get(GEN, key("hot")) == answer(b"h" * 700), i
    assert cache.get(GEN, key("cold 0")) is None


def test_a_replay_look_that_finds_a_mark_counts_nothing(cache: SharedResultCache) -> None:
    cache.put(GEN, ("replay", b"GET"), CachedAnswer(b"", 0, 0.0, ""))
    assert cache.get(GEN, ("replay", b"GET"), replay=True) == CachedAnswer(b"", 0, 0.0, "")
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["replayed"]) == (0, 0, 0)


def test_processes_forked_after_it_share_it(cache: SharedResultCache) -> None:
    cache.put(GEN, key("from the parent"), answer(b"p"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            cache.bind(1)
            if cache.get(GEN, key("from the parent")) == answer(b"p"):
                cache.put(GEN, key("from the child"), answer(b"c"))
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get(GEN, key("from the child")) == answer(b"c")
    assert cache.stats()["hits"] == 2  # one each, summed over the rows of counters


def test_a_process_that_dies_holding_the_lock_holds_up_nobody(
        cache: SharedResultCache) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        fcntl.lockf(cache.fd, fcntl.LOCK_EX)
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    done = threading.Event()

    def put() -> None:
        cache.put(GEN, key("after"), answer(b"a"))
        done.set()

    threading.Thread(target=put, daemon=True).start()
    assert done.wait(5), "the lock of a dead process was never let go"
    assert cache.get(GEN, key("after")) == answer(b"a")


def test_readers_never_see_a_wrong_answer_while_writers_go_round() -> None:
    """Two processes write ~40x the ring while this one reads: every hit is right."""
    cache = SharedResultCache(32 * 1024, 4 * 1024, counters=3)
    bodies = [bytes([i]) * (500 + 37 * i) for i in range(64)]
    children = []
    try:
        for row in (1, 2):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - a writer
                try:
                    cache.bind(row)
                    for n in range(2500):
                        i = (n * 7 + row) % 64
                        cache.put(GEN, key(str(i)), answer(bodies[i]))
                finally:
                    os._exit(0)
            children.append(pid)
        hits = 0
        deadline = time.monotonic() + 20
        running = set(children)
        while running:
            for i in range(64):
                got = cache.get(GEN, key(str(i)))
                if got is not None:
                    hits += 1
                    assert got == answer(bodies[i])
            running = {pid for pid in running if os.waitpid(pid, os.WNOHANG) == (0, 0)}
            assert time.monotonic() < deadline
        assert hits > 0
    finally:
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        cache.close()


def test_both_caches_count_a_hit_and_a_miss_alike() -> None:
    for made in (ResultCache(1 << 20, 1 << 16), SharedResultCache(1 << 20, 1 << 16)):
        made.put(GEN, key("a"), answer(b"a"))
        made.put(GEN, key("mark"), CachedAnswer(b"", 0, 0.0, ""))
        made.get(GEN, key("a"))
        made.get(GEN, key("b"))
        made.get(GEN, key("c"), replay=True)
        made.get(GEN, key("a"), replay=True)
        made.get(GEN, key("mark"), replay=True)
        stats = made.stats()
        assert (stats["entries"], stats["hits"], stats["misses"], stats["replayed"]) == (
            2, 2, 1, 1), made
