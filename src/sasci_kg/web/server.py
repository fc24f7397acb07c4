"""The production server: :func:`run_server` runs the app under the prefork server (the
default on Linux: ``web/prefork/``, where each HTTP process runs its own queries), granian
or gunicorn, started programmatically. The CLI's ``serve`` command builds a
:class:`ServerConfig` and calls it.

Under granian and gunicorn the queries run in the executor's pool of processes. granian
(Rust: hyper and tokio) reads and writes HTTP outside Python and hands each request to a pool
of Python threads; gunicorn's gthread workers do all of it in Python. On the 2-core
benchmark machine a bare WSGI answer took 227 µs through granian and 462 µs through gunicorn,
and four clients got 12,300 against 2,850 answers a second (benchmarks/README.md): for a
light query that is most of the endpoint's time. gunicorn stays available
(``server = "gunicorn"``) for deployments built around it.

Request threads only wait on pipes (queries run in the executor's processes), so a few threads
per process serve many clients; pyoxigraph also releases the GIL.
"""

from __future__ import annotations

import atexit
import collections
import functools
import logging
import multiprocessing.util
import os
import sys
import threading
from typing import IO, Any

from gunicorn.app.base import BaseApplication

from ..errors import SasciKgError, StoreError
from ..store import store_generation
from . import close_app, create_app
from .config import ServerConfig

# gunicorn's largest request line (its hard maximum). A GET query whose URL is longer must be
# POSTed; gunicorn answers 414 for such lines before the app sees them.
MAX_REQUEST_LINE = 8190
# granian's buffer for the request line and headers; past it the request is refused (431/400).
MAX_HEADER_BYTES = 64 * 1024


class ServerError(SasciKgError):
    """The HTTP server could not start or stopped with an error (see its log lines)."""


def gunicorn_options(config: ServerConfig) -> dict[str, Any]:
    """The gunicorn settings for ``config``."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    return {
        "bind": [f"{host}:{config.port}"],
        "workers": config.http_workers,
        "worker_class": "gthread",
        "threads": config.http_threads,
        # gthread's heartbeat is independent of request threads; the limit is a backstop.
        "timeout": int(config.max_timeout) + 30,
        # On SIGTERM, let requests in flight finish (they cannot outlast max_timeout).
        "graceful_timeout": int(config.max_timeout) + 5,
        "keepalive": 5,
        "limit_request_line": MAX_REQUEST_LINE,
        "accesslog": None,  # the app logs each request itself (without query values)
        "errorlog": "-",
        "loglevel": config.log_level,
        # X-Forwarded-* are honoured by the app's ProxyFix only when configured, never by
        # gunicorn's defaults (which trust them from 127.0.0.1).
        "forwarded_allow_ips": "",
        "secure_scheme_headers": {},
        "control_socket_disable": True,
        "proc_name": "sasci-kg",
        "preload_app": False,
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
    }


def _post_worker_init(worker: Any) -> None:
    # Start the query processes before the first request, not during it.
    runtime = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("sasci_kg")
    if runtime is not None:
        runtime.pool()


def _worker_exit(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        close_app(app)


def _granian_app(config: ServerConfig, _target: str) -> Any:
    """Build the app in a granian worker process, and start its query processes before the
    first request rather than during it."""
    app = create_app(config)
    app.extensions["sasci_kg"].pool()
    # Its query processes and temporary folders, when the worker ends: granian's workers
    # are multiprocessing children, which end with os._exit after multiprocessing's own
    # finalizers (not atexit's).
    multiprocessing.util.Finalize(app, close_app, args=(app,), exitpriority=10)
    return app


class _QuietThreadWarning(logging.Filter):
    # granian warns when request threads outnumber cores; ours mostly wait on a pipe to a
    # query process, so many threads are the design (they bound the queue before a 503).
    def filter(self, record: logging.LogRecord) -> bool:
        return "Python threads" not in record.getMessage()


def _run_granian(config: ServerConfig) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    logging.getLogger("_granian").addFilter(_QuietThreadWarning())
    server = Granian(
        "sasci_kg.web:create_app",  # shown in granian's log; the loader below builds the app
        address=config.host,
        port=config.port,
        interface=Interfaces.WSGI,
        workers=config.http_workers,
        blocking_threads=config.http_threads,
        http=HTTPModes.http1,
        # Headers (request line included) up to 64 KiB; a longer GET query must be POSTed.
        http1_settings=HTTP1Settings(max_buffer_size=MAX_HEADER_BYTES),
        websockets=False,
        log_enabled=True,
        log_level=LogLevels(config.log_level.lower()),
        log_access=False,  # the app logs each request itself (without query values)
        # On SIGTERM, let requests in flight finish (they cannot outlast max_timeout).
        workers_kill_timeout=int(config.max_timeout) + 5,
        # An HTTP worker that dies (killed by the OOM killer, a crash in an extension) is
        # replaced at once instead of the whole server stopping; granian still gives up on a
        # worker that dies again within 5.5 s of its start (a crash loop).
        respawn_failed_workers=True,
    )
    server.serve(target_loader=functools.partial(_granian_app, config))


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, config: ServerConfig):
        self.sasci_config = config
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.sasci_config).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.sasci_config)


class BatchedHandler(logging.Handler):
    """Log lines written to a stream in batches, by a thread of their own.

    Under four clients (light queries, cache off) the access log written line by line cost
    ~10 % of the throughput: a write to stderr per request, around which the request threads
    hand the GIL to each other. Here a request thread only appends its record; lines below
    WARNING reach the stream within ``interval`` seconds, and a warning or an error is written
    at once, with everything before it. Each process (granian forks its workers) has its own
    writer thread; what is left is written at exit.
    """

    def __init__(self, stream: IO[str], interval: float = 0.2):
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._records: collections.deque[logging.LogRecord] = collections.deque()
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._start_writer()
        os.register_at_fork(after_in_child=self._start_writer)
        atexit.register(self.flush)

    def _start_writer(self) -> None:
        self._records.clear()  # in a forked child: the parent writes its own records
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()  # (a copy could have been held at the fork)
        threading.Thread(target=self._write_batches, name="sasci-kg-log", daemon=True).start()

    def _write_batches(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock on the request's path: deque.append is atomic.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = record.getMessage(), None  # the arguments as they are now
        except Exception:  # noqa: BLE001 - logging must not raise into the request
            self.handleError(record)
            return
        self._records.append(record)
        if record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            lines = []
            while self._records:
                record = self._records.popleft()
                try:
                    lines.append(self.format(record) + "\n")
                except Exception:  # noqa: BLE001
                    self.handleError(record)
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except (OSError, ValueError):  # stderr closed or gone at exit
                    pass


def configure_logging(config: ServerConfig) -> None:
    """Send the package's log lines (incl. the access log) to stderr, once."""
    logger = logging.getLogger("sasci_kg")
    logger.setLevel(config.log_level.upper())
    if not any(getattr(h, "_sasci_kg", False) for h in logger.handlers):
        handler = BatchedHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(name)s %(message)s"))
        handler._sasci_kg = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def run_server(config: ServerConfig) -> None:
    """Serve ``config.store`` (or the remote engine the config names) until SIGTERM/SIGINT;
    stops the worker processes on the way out.

    Raises :class:`StoreError` before binding anything if there is no store to serve. A remote
    engine is not asked at start: the server comes up, and answers 502/504 while it is down.
    """
    if not config.is_remote and store_generation(config.store) is None:
        raise StoreError(
            f"{config.store}: no Oxigraph store here; run `sasci-kg load` first "
            "(or point --store / SASCI_KG_STORE at an existing store)"
        )
    configure_logging(config)
    try:
        if config.server == "gunicorn":
            _Server(config).run()
        elif config.server == "prefork":
            from .prefork import run_prefork

            run_prefork(config)
        else:
            _run_granian(config)
    except SystemExit as exc:  # gunicorn's arbiter ends with sys.exit(); a library must not
        if exc.code not in (0, None):
            raise ServerError(
                f"the server on {config.host}:{config.port} stopped with status {exc.code} "
                "(is the port in use, or did a worker keep crashing? see the log lines above)"
            ) from None
