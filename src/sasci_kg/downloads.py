"""The downloads of the whole dataset, made on first request and kept on disk.

A download (``sasci-kg.ttl``, ``sasci-kg.nq.gz``, … :data:`~sasci_kg.void.DOWNLOADS`) is the
export of every graph but the dataset's description (:func:`~sasci_kg.void.download_bytes`,
the bytes ``sasci-kg export`` writes). The build does not make them: at 10^6 triples that
took most of the build's time and more than doubled its memory. :class:`DownloadCache` makes
each one the first time it is asked for in a store generation, writes it once into a folder
beside the store, ``.<store>.downloads/<generation>/<file name>.<sha256>``, and hands back
that file: a reader finds the whole file (renamed into place, read-only) or none, with its
sha256 in its name. One lock file serialises the making across threads and processes, so a
file is made once and two big ones are never made at the same time; making a new
generation's file removes the files of the older generations.

On the embedded store the bytes are made in a child process (:func:`store_maker`), which
opens the store read-only: its memory goes back to the system when it ends, and the
server's request threads do not wait for the GIL while a million quads are sorted. A gzip
file is compressed from the plain one, streamed, the same bytes as
:func:`~sasci_kg.export.gzip_bytes` gives.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyoxigraph as ox

from .errors import DownloadBusyError, StoreError
from .export import get_format, gzip_bytes
from .facts import paused_gc
from .void import Download, download_bytes

_BLOCK = 1 << 20
_NAME = re.compile(r"(?P<file>[A-Za-z0-9._-]+)\.(?P<sha256>[0-9a-f]{64})")
_TEMP_PREFIX = ".tmp-"
_CHANGED = 75  # the child's exit status when the store it was asked for is gone (EX_TEMPFAIL)

# Makes a plain (not gzipped) download's bytes into the given file.
Maker = Callable[[Download, Path], None]


class GenerationChangedError(StoreError):
    """The store was replaced while a download was being made from it: ask again."""


@dataclass(frozen=True)
class CachedDownload:
    """A download on disk: its file, sha256 and size in bytes."""

    download: Download
    path: Path
    sha256: str
    size: int


def store_token(path: Path | str) -> str | None:
    """An identity of the store at ``path`` that changes with every load, or None when there
    is no store: the device and inode of the directory and of its ``CURRENT`` file, and when
    that file was written (nanoseconds), since the inode numbers of a deleted store are soon
    given to a new one."""
    try:
        directory = os.stat(path)
        current = os.stat(Path(path) / "CURRENT")
    except OSError:
        return None
    return (f"{directory.st_dev:x}-{directory.st_ino:x}-{current.st_ino:x}-"
            f"{current.st_mtime_ns:x}")


class DownloadCache:
    """The downloads made so far, per generation, under ``root``."""

    def __init__(self, root: Path, *, private: bool = False):
        self.root = root
        self._owner = os.getpid() if private else None  # removes root when closed

    @classmethod
    def beside(cls, store: Path, *, make: bool = True,
               private_prefix: str = "sasci-kg-downloads-") -> DownloadCache:
        """The cache of the store at ``store``: ``.<name>.downloads`` in the same folder,
        or, where that folder cannot be written (a read-only store), a private temporary
        folder removed when the process ends. Unless ``make``, the folder beside the store
        is not made now when it could be (it is, with the first download)."""
        root = store.parent / f".{store.name}.downloads"
        if not make:
            usable = (root.is_dir() and os.access(root, os.W_OK | os.X_OK) if root.exists()
                      else os.access(store.parent, os.W_OK | os.X_OK))
            return cls(root) if usable else cls.private(private_prefix)
        try:
            root.mkdir(parents=True, exist_ok=True)
            if os.access(root, os.W_OK | os.X_OK):
                return cls(root)
        except OSError:
            pass
        return cls.private(private_prefix)

    @classmethod
    def private(cls, prefix: str = "sasci-kg-downloads-") -> DownloadCache:
        """A cache in a new temporary folder of this process, removed when it ends."""
        root = Path(tempfile.mkdtemp(prefix=prefix))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        return cls(root, private=True)

    def close(self) -> None:
        """Remove a private cache's folder now (a process that ends with ``os._exit``, as the
        prefork server's workers do, skips ``atexit``)."""
        if self._owner == os.getpid():
            shutil.rmtree(self.root, ignore_errors=True)

    def find(self, generation: str, download: Download) -> CachedDownload | None:
        """The download if it has been made in this generation (never makes it)."""
        folder = self.root / generation
        try:
            names = os.listdir(folder)
        except OSError:
            return None
        for name in names:
            match = _NAME.fullmatch(name)
            if match and match["file"] == download.filename:
                try:
                    size = (folder / name).stat().st_size
                except OSError:
                    return None
                return CachedDownload(download, folder / name, match["sha256"], size)
        return None

    def get(self, generation: str, download: Download, make: Maker, *,
            wait: bool = True) -> CachedDownload:
        """The download, made now (with ``make`` for its plain bytes) if it was not yet.

        ``generation`` names the store's data (no ``/``); ``make`` may raise
        :class:`GenerationChangedError` when that generation is gone. A failure to write
        (a full disk) is a :class:`StoreError` and leaves no file behind. Unless ``wait``,
        a download another maker is busy with raises :class:`DownloadBusyError`.
        """
        if not generation or "/" in generation or generation.startswith("."):
            raise ValueError(f"not a generation name: {generation!r}")
        found = self.find(generation, download)
        if found is not None:
            return found
        with self._locked(download.filename, wait=wait):
            made = self._make(generation, download, make)
            self._clean(keep=generation)
            return made

    def _make(self, generation: str, download: Download, make: Maker) -> CachedDownload:
        found = self.find(generation, download)  # made by another process while we waited
        if found is not None:
            return found
        if download.gzip:
            plain = self._make(generation, Download(download.format, False), make)
            return self._publish(generation, download, lambda out: gzip_file(plain.path, out))
        return self._publish(generation, download, lambda out: make(download, out))

    def _publish(self, generation: str, download: Download,
                 write: Callable[[Path], None]) -> CachedDownload:
        temp = self.root / f"{_TEMP_PREFIX}{os.getpid()}-{download.filename}"
        try:
            write(temp)
            digest = _sha256(temp)
            os.chmod(temp, 0o444)
            folder = self.root / generation
            folder.mkdir(exist_ok=True)
            path = folder / f"{download.filename}.{digest}"
            os.replace(temp, path)
        except OSError as exc:
            raise StoreError(f"cannot write {download.filename} into {self.root} ({exc}); free "
                             "some disk space (or fix the permissions) and ask again") from exc
        finally:
            temp.unlink(missing_ok=True)
        return CachedDownload(download, path, digest, path.stat().st_size)

    @contextmanager
    def _locked(self, filename: str, *, wait: bool) -> Iterator[None]:
        """One maker at a time across threads and processes (flock on a file per open)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise DownloadBusyError(filename) from None
            yield
        finally:
            os.close(fd)  # releases the lock

    def _clean(self, *, keep: str) -> None:
        """Remove older generations, and temporary files a killed maker left (we hold the
        lock: no other maker is writing). A file being sent stays readable until closed."""
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(_TEMP_PREFIX):
                Path(entry.path).unlink(missing_ok=True)
            elif entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".") \
                    and entry.name != keep:
                shutil.rmtree(entry.path, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def gzip_file(source: Path, out: Path) -> None:
    """Gzip ``source`` into ``out``, streamed: the bytes ``export.gzip_bytes`` gives for the
    whole file (level 6, mtime 0, no file name), without holding it in memory.

    The header is the one ``gzip_bytes`` writes (its last byte, the OS, differs between
    Python versions), then the raw deflate stream, then the CRC-32 and length.
    """
    header = gzip_bytes(b"")[:10]
    if header[:4] != b"\x1f\x8b\x08\x00":  # deflate, no optional fields
        raise RuntimeError(f"unexpected gzip header {header!r} from export.gzip_bytes")
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc, length = 0, 0
    with source.open("rb") as src, out.open("wb") as dst:
        dst.write(header)
        while block := src.read(_BLOCK):
            crc = zlib.crc32(block, crc)
            length += len(block)
            dst.write(compressor.compress(block))
        dst.write(compressor.flush())
        dst.write(struct.pack("<LL", crc, length & 0xFFFFFFFF))


def write_download(quads: Iterable[ox.Quad], download: Download, out: Path) -> None:
    """Write a download's bytes (every graph of ``quads`` but the description) to ``out``."""
    with paused_gc():  # a million quads and their sort keys, no cycles
        data = download_bytes(list(quads), download)
    out.write_bytes(data)


def store_maker(store: Path, token: str) -> Maker:
    """A maker that writes a download from the embedded store at ``store`` in a child
    process, refusing (:class:`GenerationChangedError`) if the store is no longer the one
    ``token`` names."""

    def make(download: Download, out: Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "sasci_kg.downloads", str(store), token, download.format,
             str(out)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            check=False, env={**os.environ, _PARENT_ENV: str(os.getpid())},
        )
        if done.returncode == _CHANGED:
            raise GenerationChangedError(f"{store}: the store was replaced while "
                                         f"{download.filename} was being made; ask again")
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise StoreError(f"{store}: making {download.filename} failed (exit status "
                             f"{done.returncode}): {detail[-1] if detail else 'no message'}")

    return make


_PARENT_ENV = "SASCI_KG_MAKER_PARENT"
# Set by a prefork worker (whose own address-space limit is sized for a query): the limit its
# download makers get back, the server's own (unlimited, or what the operator set).
MAKER_MEMORY_LIMIT_ENV = "SASCI_KG_MAKER_MEMORY_LIMIT"


def lift_memory_limit() -> None:
    """Give a maker started by a prefork worker the server's own address-space limit rather
    than the worker's: the whole dataset is sorted in memory here, ~1.7 GB of RSS at 10⁶
    triples and ~10 GiB at 10⁷, as under granian, where the web process has no query limit.
    A limit the operator set (``ulimit -v``) stays as it is."""
    wanted = os.environ.get(MAKER_MEMORY_LIMIT_ENV)
    if wanted is None:
        return
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    with contextlib.suppress(ValueError, OSError):  # (above the hard limit: keep ours)
        resource.setrlimit(resource.RLIMIT_AS, (int(wanted), hard))


def _end_with_parent(parent: str | None) -> None:
    """Die with the process that asked for this download (a killed worker must not leave a
    maker sorting gigabytes for no one)."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if parent is not None and os.getppid() != int(parent):  # it died before that
            os._exit(1)


def _child(argv: list[str]) -> int:
    """``python -m sasci_kg.downloads STORE TOKEN FORMAT OUT``: write one plain download."""
    from .store import open_store

    store, token, format_name, out = argv
    _end_with_parent(os.environ.get(_PARENT_ENV))
    lift_memory_limit()
    get_format(format_name)
    backend = open_store(store)
    if store_token(store) != token:  # replaced before we opened it: not the asked-for data
        return _CHANGED
    write_download(backend.quads(), Download(format_name, False), Path(out))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
