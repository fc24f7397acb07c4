"""The endpoint's settings: one frozen :class:`ServerConfig`, built by :func:`load_config` from
options (the CLI), ``SASCI_KG_…`` environment variables and an optional TOML file, in that order
of precedence, over safe defaults. No Flask here, so the CLI can import it cheaply.

The backend settings (``backend``, ``query_url``, … ``graph_namespaces``) have the names of the
CLI's backend options, so ``SASCI_KG_QUERY_URL`` means the same to ``serve`` as to ``query``;
they are checked once, into :attr:`ServerConfig.backend_settings`.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..backends import DEFAULT_TIMEOUT, BackendSettings
from ..errors import SasciKgError, StoreError
from ..guard import validate_allow_entry
from ..store import default_store_path
from ..vocab import BASE

ENV_PREFIX = "SASCI_KG_"


class ConfigError(SasciKgError):
    """A setting with a value that cannot be used; the message names it and the fix."""


def _default_server() -> str:
    # The prefork server is built on Linux's own calls (epoll, memfd, SCM_RIGHTS, prctl).
    return "prefork" if sys.platform.startswith("linux") else "granian"


def _default_query_workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def _setting(default: Any = MISSING, *, help: str, **kw: Any) -> Any:
    if callable(default) and not isinstance(default, type):
        return field(default_factory=default, metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Every setting of the SPARQL endpoint (environment name: ``SASCI_KG_`` + upper name)."""

    store: Path = _setting(default_store_path, help="the Oxigraph store directory to serve")
    host: str = _setting("127.0.0.1", help="address to listen on (loopback by default)")
    port: int = _setting(7878, help="TCP port to listen on")
    server: str = _setting(_default_server, help="HTTP server: prefork (the default on Linux), "
                                                 "granian or gunicorn")
    http_workers: int = _setting(1, help="HTTP worker processes (each has its own pool); "
                                         "prefork: processes = query_workers × http_workers")
    http_threads: int = _setting(48, help="request threads per HTTP worker (granian, gunicorn)")
    query_workers: int = _setting(
        _default_query_workers, help="query processes per HTTP worker = queries run at once"
    )
    queue_size: int = _setting(32, help="requests that may wait for a free query process")
    queue_timeout: float = _setting(5.0, help="seconds a request waits before a 503")
    timeout: float = _setting(10.0, help="default query time limit, seconds")
    max_timeout: float = _setting(60.0, help="largest time limit a request may ask for")
    max_query_bytes: int = _setting(100 * 1024, help="largest query or update text, bytes")
    max_depth: int = _setting(64, help="deepest nesting of brackets/braces/parentheses")
    max_rows: int = _setting(100_000, help="largest result, in rows (or triples)")
    max_result_bytes: int = _setting(64 * 1024 * 1024, help="largest result body, bytes")
    max_upload_bytes: int = _setting(16 * 1024 * 1024, help="largest Graph Store write body")
    worker_memory_mb: int = _setting(4096, help="address-space limit per query process; 0: none")
    result_cache_mb: int = _setting(
        64, help="query answers kept per store generation, MiB (one cache for the prefork "
        "server's workers; per HTTP process under granian and gunicorn); 0: none"
    )
    service_allow: tuple[str, ...] = _setting(
        (), help="IRI prefixes SERVICE/LOAD may reach (comma-separated); empty: none"
    )
    updates: bool = _setting(False, help="enable SPARQL Update and Graph Store writes")
    update_token: str | None = _setting(
        None, repr=False, help="bearer token that writes must carry (required with updates)"
    )
    trusted_proxies: int = _setting(
        0, help="number of reverse proxies whose X-Forwarded-* headers to trust"
    )
    cors: bool = _setting(True, help="allow cross-origin reads (never writes)")
    log_level: str = _setting("info", help="logging level: debug, info, warning, error")
    # Where the data is: the embedded store (above) or a remote SPARQL 1.1 engine. The names
    # are the CLI's backend options, so the environment variables mean the same everywhere.
    backend: str | None = _setting(
        None, help="embedded (the store directory) or remote (implied by query_url)"
    )
    query_url: str | None = _setting(None, help="remote: the engine's SPARQL query endpoint")
    update_url: str | None = _setting(
        None, help="remote: its update endpoint (not used by serve, which never writes)"
    )
    gsp_url: str | None = _setting(None, help="remote: its Graph Store Protocol endpoint")
    auth: str | None = _setting(None, help="remote: authentication: none, basic, digest, bearer")
    user: str | None = _setting(None, help="remote: user for basic or digest authentication")
    password: str | None = _setting(None, repr=False, help="remote: the user's password")
    password_file: Path | None = _setting(None, help="remote: file holding the password")
    token: str | None = _setting(None, repr=False, help="remote: bearer token for the engine")
    token_file: Path | None = _setting(None, help="remote: file holding the bearer token")
    remote_timeout: float = _setting(
        DEFAULT_TIMEOUT, help="remote: seconds each request to the engine may take at most"
    )
    remote_row_cap: int | None = _setting(
        None, help="remote: the engine's own result cap; answers that reach it are refused"
    )
    graph_namespaces: tuple[str, ...] = _setting(
        (BASE,), help="remote: IRI prefixes of the graphs that are ours (space-separated)"
    )

    def __post_init__(self) -> None:
        _validate(self)
        # Built once: it reads the password and token files and checks every URL.
        object.__setattr__(self, "_backend_settings", _backend_settings(self))

    @property
    def backend_settings(self) -> BackendSettings:
        """Where the data is, checked (credentials as ``Secret``; see :mod:`..backends`)."""
        settings: BackendSettings = self.__dict__["_backend_settings"]
        return settings

    @property
    def is_remote(self) -> bool:
        """Whether a remote SPARQL engine holds the data (not the embedded store)."""
        return self.backend_settings.is_remote

    @property
    def max_body_bytes(self) -> int:
        """The largest request body a query or update POST may have (URL-encoding can
        triple a query's size; a little room for the other parameters)."""
        return 3 * self.max_query_bytes + 64 * 1024


def _validate(config: ServerConfig) -> None:
    positive = (
        "port", "http_workers", "http_threads", "query_workers", "max_query_bytes",
        "max_depth", "max_rows", "max_result_bytes", "max_upload_bytes",
    )
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be a positive number, not {getattr(config, name)}")
    for name in ("timeout", "max_timeout", "queue_timeout"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name} must be more than 0 seconds")
    if (config.queue_size < 0 or config.trusted_proxies < 0 or config.worker_memory_mb < 0
            or config.result_cache_mb < 0):
        raise ConfigError("queue_size, trusted_proxies, worker_memory_mb and result_cache_mb "
                          "cannot be negative")
    if config.timeout > config.max_timeout:
        raise ConfigError(
            f"timeout ({config.timeout:g} s) is above max_timeout ({config.max_timeout:g} s); "
            "raise max_timeout or lower timeout"
        )
    if config.server not in ("granian", "prefork", "gunicorn"):
        raise ConfigError(f"server must be prefork, granian or gunicorn, not {config.server!r}")
    if config.server == "prefork" and not sys.platform.startswith("linux"):
        raise ConfigError("the prefork server runs on Linux only; use server = \"granian\"")
    if config.port > 65535:
        raise ConfigError(f"port {config.port} is not a TCP port (1-65535)")
    if config.updates and not config.update_token:
        raise ConfigError(
            "updates are enabled but no token is set; set SASCI_KG_UPDATE_TOKEN "
            "(at least 16 characters) or leave updates off"
        )
    if config.update_token is not None and len(config.update_token) < 16:
        raise ConfigError("update_token is too short: use at least 16 random characters")
    for entry in config.service_allow:
        try:
            validate_allow_entry(entry)
        except ValueError as exc:
            raise ConfigError(f"service_allow: {exc}") from None
    if config.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(f"log_level {config.log_level!r} is not debug/info/warning/error")


def _backend_settings(config: ServerConfig) -> BackendSettings:
    """The backend settings, or ConfigError naming the setting and the fix."""
    try:
        settings = BackendSettings.from_options(
            backend=config.backend, store_path=config.store, query_url=config.query_url,
            update_url=config.update_url, gsp_url=config.gsp_url, auth=config.auth,
            user=config.user, password=config.password, password_file=config.password_file,
            token=config.token, token_file=config.token_file, timeout=config.remote_timeout,
            row_cap=config.remote_row_cap, graph_namespaces=config.graph_namespaces,
        )
    except StoreError as exc:
        raise ConfigError(str(exc)) from None
    if settings.is_remote and config.updates:
        raise ConfigError(
            "updates: the endpoint never writes to a remote engine; leave updates off and "
            "change the data with `sasci-kg load --backend remote …`"
        )
    return settings


_FIELDS = {f.name: f for f in fields(ServerConfig)}


def _convert(name: str, value: Any) -> Any:
    """Turn a string (environment, CLI) or TOML value into the field's type."""
    kind = _FIELDS[name].type
    try:
        if kind == "Path":
            return Path(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if name == "graph_namespaces":  # IRIs may hold commas: whitespace, as the CLI's
            items = value.split() if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if kind == "tuple[str, ...]":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(validate_allow_entry(str(i).strip()) for i in items if str(i).strip())
        if kind == "str | None":
            return None if value is None or value == "" else str(value)
        if kind == "Path | None":
            return None if value is None or value == "" else Path(value)
        if kind == "int | None":
            if isinstance(value, bool):
                raise ValueError(value)
            return None if value is None or value == "" else int(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name}: {value!r} is not a valid {kind} ({exc})"
        ) from None


def load_config(
    options: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | str | None = None,
) -> ServerConfig:
    """Build the configuration: ``options`` > ``SASCI_KG_*`` environment > file > defaults.

    ``options`` use the field names (``None`` values are ignored, so unset CLI options fall
    through). The file is TOML with the same names, at the top level or under ``[serve]``;
    it is ``config_file``, else ``SASCI_KG_CONFIG``, else none.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the configuration file ({exc})") from None
        table = data.get("serve", data)
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[name] = _convert(name, value)
    for name in _FIELDS:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None:
            values[name] = _convert(name, env_value)
    for name, value in (options or {}).items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = _convert(name, value)
    return ServerConfig(**values)


def describe_settings() -> list[tuple[str, str, str]]:
    """(name, environment variable, help) for each setting, for the CLI's help and docs."""
    return [
        (f.name, ENV_PREFIX + f.name.upper(), f.metadata["help"]) for f in fields(ServerConfig)
    ]
