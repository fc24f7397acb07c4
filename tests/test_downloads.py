"""Downloads: made once per store generation into a file beside the store, published whole,
the same bytes as the export, remade (and the old files removed) after a load."""

from __future__ import annotations

import errno
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pyoxigraph as ox
import pytest
from conftest import app_for

from sasci_kg.downloads import (
    DownloadCache,
    GenerationChangedError,
    store_maker,
    store_token,
)
from sasci_kg.errors import DownloadBusyError, StoreError
from sasci_kg.export import gzip_bytes
from sasci_kg.store import LoadInput, load_store, open_store
from sasci_kg.vocab import BASE
from sasci_kg.void import META_GRAPH, Download, download_bytes

TTL = Download("ttl", False)
TTL_GZ = Download("ttl", True)


def _quads(word: str) -> list[ox.Quad]:
    graph = ox.NamedNode(BASE + "graph/source/x")
    person = ox.NamedNode(BASE + "id/person/" + word)
    return [
        ox.Quad(person, ox.NamedNode("https://schema.org/name"), ox.Literal(word), graph),
        ox.Quad(person, ox.NamedNode("http://www.w3.org/1999/02/22-rdf-syntax-ns#type"),
                ox.NamedNode("https://schema.org/Person"), graph),
        ox.Quad(ox.NamedNode(BASE + "id/dataset/sasci-kg"),
                ox.NamedNode("http://rdfs.org/ns/void#triples"), ox.Literal("2"), META_GRAPH),
    ]


def _load(store: Path, word: str) -> None:
    data = ox.serialize(_quads(word), format=ox.RdfFormat.N_QUADS) or b""
    load_store(store, [LoadInput(format=ox.RdfFormat.N_QUADS, data=data)])


class Counting:
    """A maker that writes fixed bytes and counts its calls."""

    def __init__(self, data: bytes = b"<a> <b> <c> .\n" * 1000):
        self.data = data
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, download: Download, out: Path) -> None:
        with self.lock:
            self.calls += 1
        out.write_bytes(self.data)


def test_a_request_that_must_not_wait_is_told_to_come_back(tmp_path: Path) -> None:
    """The prefork server's way: while another request makes a download, the next one is
    told when to ask again (503 + Retry-After), instead of holding a process in the wait.
    Once it is made, it is simply there."""
    cache = DownloadCache(tmp_path / "cache")
    making, release = threading.Event(), threading.Event()

    def slow(download: Download, out: Path) -> None:
        making.set()
        release.wait(10)
        out.write_bytes(b"<a> <b> <c> .\n")

    maker = threading.Thread(target=lambda: cache.get("g1", TTL, slow))
    maker.start()
    assert making.wait(10)
    with pytest.raises(DownloadBusyError) as busy:
        cache.get("g1", TTL_GZ, Counting(), wait=False)
    assert "sasci-kg.ttl.gz is not made yet" in str(busy.value) and busy.value.retry_after > 0
    release.set()
    maker.join()
    assert cache.get("g1", TTL, Counting(), wait=False).size == 14


def test_a_download_is_made_once_and_published_with_its_sha256(tmp_path: Path) -> None:
    cache, make = DownloadCache(tmp_path / "cache"), Counting()
    found: list[object] = []
    threads = [threading.Thread(target=lambda: found.append(cache.get("g1", TTL, make)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert make.calls == 1 and len(set(found)) == 1  # type: ignore[arg-type]
    made = cache.get("g1", TTL, make)
    assert made.sha256 == hashlib.sha256(make.data).hexdigest()
    assert made.path == tmp_path / "cache" / "g1" / f"sasci-kg.ttl.{made.sha256}"
    assert made.path.read_bytes() == make.data and made.size == len(make.data)
    assert cache.find("g1", TTL) == made and cache.find("g2", TTL) is None


def test_a_gzip_download_is_the_plain_one_compressed_reproducibly(tmp_path: Path) -> None:
    cache, make = DownloadCache(tmp_path), Counting()
    compressed = cache.get("g1", TTL_GZ, make)
    assert compressed.path.read_bytes() == gzip_bytes(make.data)
    assert cache.find("g1", TTL) is not None and make.calls == 1  # the plain one, on the way
    cache.get("g1", TTL, make)
    assert make.calls == 1


def test_a_new_generation_removes_the_files_of_the_old(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path)
    cache.get("g1", TTL, Counting(b"old\n"))
    (tmp_path / ".tmp-99999-sasci-kg.ttl").write_bytes(b"half")  # a killed maker's
    new = cache.get("g2", TTL, Counting(b"new\n"))
    assert not (tmp_path / "g1").exists()
    assert not list(tmp_path.glob(".tmp-*"))
    assert new.path.read_bytes() == b"new\n"


def test_a_failed_make_leaves_no_file(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path)

    def full_disk(download: Download, out: Path) -> None:
        out.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StoreError, match="No space left"):
        cache.get("g1", TTL, full_disk)

    def replaced(download: Download, out: Path) -> None:
        raise GenerationChangedError("replaced")

    with pytest.raises(GenerationChangedError):
        cache.get("g1", TTL, replaced)
    assert cache.find("g1", TTL) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_a_store_that_cannot_be_written_beside_gets_a_private_cache(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    cache = DownloadCache.beside(tmp_path / "file" / "store")
    assert cache.root.is_dir() and not cache.root.is_relative_to(tmp_path)
    assert DownloadCache.beside(tmp_path / "store").root == tmp_path / ".store.downloads"


def test_a_cache_chosen_ahead_makes_no_folder_until_a_download(tmp_path: Path) -> None:
    # (The prefork server chooses its cache before it forks, so that the workers share it.)
    cache = DownloadCache.beside(tmp_path / "a", make=False)
    assert cache.root == tmp_path / ".a.downloads" and not cache.root.exists()
    (tmp_path / ".b.downloads").write_text("in the way")
    private = DownloadCache.beside(tmp_path / "b", make=False)
    assert private.root.is_dir() and not private.root.is_relative_to(tmp_path)
    private.close()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    _load(tmp_path / "store", "alice")
    return tmp_path / "store"


def test_the_store_maker_writes_the_export_in_a_child(store: Path, tmp_path: Path) -> None:
    token = store_token(store)
    assert token is not None
    out = tmp_path / "out.ttl"
    store_maker(store, token)(TTL, out)
    backend = open_store(store)
    expected = download_bytes(list(backend.quads()), TTL)
    backend.close()
    assert out.read_bytes() == expected
    assert b"alice" in expected and b"void#triples" not in expected  # not the description
    with pytest.raises(GenerationChangedError):
        store_maker(store, token + "0")(TTL, tmp_path / "other.ttl")


def test_every_load_is_a_new_generation(store: Path) -> None:
    first = store_token(store)
    _load(store, "alice")  # the same data, loaded again
    assert store_token(store) not in (first, None)
    assert store_token(store.parent / "nowhere") is None


@pytest.fixture
def client(store: Path) -> Iterator[object]:
    with app_for(store, query_workers=1) as application:
        yield application.test_client()


def test_the_server_remakes_downloads_after_a_load(client: object, store: Path) -> None:
    from flask.testing import FlaskClient

    assert isinstance(client, FlaskClient)
    first = client.get("/download/sasci-kg.nt", buffered=True)
    assert first.status_code == 200 and b"alice" in first.data
    folder = store.parent / ".store.downloads"
    (old,) = [p for p in folder.iterdir() if p.is_dir()]
    _load(store, "bob")
    again = client.get("/download/sasci-kg.nt", buffered=True,
                       headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 200 and b"bob" in again.data and b"alice" not in again.data
    assert again.headers["ETag"] != first.headers["ETag"]
    assert not old.exists() and len([p for p in folder.iterdir() if p.is_dir()]) == 1


def test_a_one_thread_server_is_told_503_while_another_download_is_made(store: Path) -> None:
    """The prefork server's processes have one thread (``wsgi.multithread`` false): a
    request there does not wait its turn; one served by threads does."""
    import fcntl
    import os

    folder = store.parent / ".store.downloads"
    folder.mkdir(exist_ok=True)
    with app_for(store, query_workers=1) as application:
        client = application.test_client()
        fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process is making a download
            busy = client.get("/download/sasci-kg.nt", buffered=True,
                              environ_overrides={"wsgi.multithread": False})
            unlock = threading.Timer(0.5, lambda: fcntl.flock(fd, fcntl.LOCK_UN))
            unlock.start()
            waited = client.get("/download/sasci-kg.nt", buffered=True,
                                environ_overrides={"wsgi.multithread": True})
            unlock.join()
        finally:
            os.close(fd)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "10"
        assert busy.json is not None and busy.json["type"].endswith("/download-being-made")
        assert waited.status_code == 200


@pytest.mark.parametrize("server_limit", [None, str(1 << 41)])
def test_a_maker_gets_the_server_s_memory_limit_not_a_worker_s(server_limit: str | None
                                                                ) -> None:
    """The prefork server's workers run with a soft address-space limit sized for a query,
    and name the server's own; the download maker they start (it sorts the whole dataset in
    memory) takes that one. Started by anything else, it keeps what it inherited (an
    operator's ``ulimit -v``)."""
    import os
    import subprocess
    import sys

    from sasci_kg.downloads import MAKER_MEMORY_LIMIT_ENV

    code = ("import resource\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 40, hard))\n"
            "from sasci_kg.downloads import lift_memory_limit\n"
            "lift_memory_limit()\n"
            "print(resource.getrlimit(resource.RLIMIT_AS)[0])\n")
    env = {k: v for k, v in os.environ.items() if k != MAKER_MEMORY_LIMIT_ENV}
    if server_limit is not None:
        env[MAKER_MEMORY_LIMIT_ENV] = server_limit
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env)
    assert done.stdout.strip() == (server_limit or str(1 << 40))


def test_a_private_cache_is_removed_when_closed_by_its_own_process(tmp_path: Path) -> None:
    import os

    shared = DownloadCache(tmp_path / "beside-the-store")
    shared.root.mkdir()
    shared.close()
    assert shared.root.exists()  # a cache beside the store outlives every process
    cache = DownloadCache.private()
    other = DownloadCache.private()
    other._owner = os.getpid() + 1  # as a forked copy sees its parent's
    cache.close()
    other.close()
    assert not cache.root.exists() and other.root.exists()
    other._owner = os.getpid()
    other.close()
    assert not other.root.exists()
