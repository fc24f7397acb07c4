"""The production server: :func:`run_server` runs the app under gunicorn (gthread workers),
started programmatically. The CLI's ``serve`` command builds a :class:`ServerConfig` and calls it.

Request threads only wait on pipes (queries run in the executor's processes), so a few threads
per process serve many clients; pyoxigraph also releases the GIL.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from ..errors import SasciKgError, StoreError
from ..store import store_generation
from . import close_app, create_app
from .config import ServerConfig

# gunicorn's largest request line (its hard maximum). A GET query whose URL is longer must be
# POSTed; gunicorn answers 414 for such lines before the app sees them.
MAX_REQUEST_LINE = 8190


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


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, config: ServerConfig):
        self.sasci_config = config
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.sasci_config).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(self.sasci_config)


def configure_logging(config: ServerConfig) -> None:
    """Send the package's log lines (incl. the access log) to stderr, once."""
    logger = logging.getLogger("sasci_kg")
    logger.setLevel(config.log_level.upper())
    if not any(getattr(h, "_sasci_kg", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
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
        _Server(config).run()
    except SystemExit as exc:  # gunicorn's arbiter ends with sys.exit(); a library must not
        if exc.code not in (0, None):
            raise ServerError(
                f"the server on {config.host}:{config.port} stopped with status {exc.code} "
                "(is the port in use? see the log lines above)"
            ) from None
