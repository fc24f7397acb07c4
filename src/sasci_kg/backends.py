"""Choose the store behind every command: embedded Oxigraph (the default) or a remote engine.

:class:`BackendSettings` says which, from CLI options or ``SASCI_KG_*`` environment
variables; :func:`open_backend` opens it and :func:`load_dataset` loads a rebuilt dataset
into it (an atomic directory swap for the embedded store, staged graphs moved in one
update for a remote engine). Credentials are held as :class:`~sasci_kg.remote.Secret` and
never shown by a repr, a message or :meth:`BackendSettings.describe`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import StoreError
from .remote import (
    AUTH_KINDS,
    RemoteBackend,
    Secret,
    check_url,
    make_auth,
    replace_graphs,
    safe_url,
)
from .store import Backend, LoadInput, default_store_path, load_store, open_store
from .vocab import BASE

BACKEND_KINDS = ("embedded", "remote")
DEFAULT_TIMEOUT = 30.0


def _read_secret(path: str | os.PathLike[str], what: str) -> Secret:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    value = text.strip("\r\n")
    if not value:
        raise StoreError(f"the {what} file {path} is empty")
    return Secret(value)


@dataclass(frozen=True)
class BackendSettings:
    """Which store to use and how to reach it.

    ``kind`` is ``embedded`` (an Oxigraph directory, ``store_path``) or ``remote`` (a SPARQL
    1.1 engine at ``query_url``, with ``update_url`` for loading and optionally ``gsp_url``
    for whole-graph reads and writes). ``auth`` is none, basic, digest or bearer.
    """

    kind: str = "embedded"
    store_path: Path | None = None
    query_url: str | None = None
    update_url: str | None = None
    gsp_url: str | None = None
    auth: str = "none"
    user: str | None = None
    password: Secret | None = field(default=None, repr=False)
    token: Secret | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    graph_namespaces: tuple[str, ...] = (BASE,)
    row_cap: int | None = None

    @property
    def is_remote(self) -> bool:
        return self.kind == "remote"

    @classmethod
    def from_options(
        cls,
        *,
        backend: str | None = None,
        store_path: Path | str | None = None,
        query_url: str | None = None,
        update_url: str | None = None,
        gsp_url: str | None = None,
        auth: str | None = None,
        user: str | None = None,
        password: str | Secret | None = None,
        password_file: str | os.PathLike[str] | None = None,
        token: str | Secret | None = None,
        token_file: str | os.PathLike[str] | None = None,
        timeout: float | str | None = None,
        graph_namespaces: Iterable[str] | str | None = None,
        row_cap: int | str | None = None,
    ) -> BackendSettings:
        """Settings from option values; the backend is remote when a query URL is given."""
        kind = (backend or ("remote" if query_url else "embedded")).strip().lower()
        if kind not in BACKEND_KINDS:
            raise StoreError(f"unknown backend '{backend}'; use one of: "
                             f"{', '.join(BACKEND_KINDS)}")
        secret_password = password if isinstance(password, Secret) else (
            Secret(password) if password else None)
        if password_file:
            secret_password = _read_secret(password_file, "password")
        secret_token = token if isinstance(token, Secret) else (Secret(token) if token else None)
        if token_file:
            secret_token = _read_secret(token_file, "token")
        auth_kind = (auth or "none").strip().lower()
        if auth_kind not in AUTH_KINDS:
            raise StoreError(f"unknown authentication '{auth}'; use one of: "
                             f"{', '.join(AUTH_KINDS)}")
        try:
            seconds = float(timeout) if timeout not in (None, "") else DEFAULT_TIMEOUT
        except ValueError:
            raise StoreError(f"the remote timeout '{timeout}' is not a number of seconds; "
                             "give e.g. --remote-timeout 30") from None
        if not seconds > 0:
            raise StoreError("the remote timeout must be a positive number of seconds")
        try:
            cap = int(row_cap) if row_cap not in (None, "") else None
        except ValueError:
            raise StoreError(f"the engine row cap '{row_cap}' is not a whole number of "
                             "rows") from None
        if cap is not None and cap <= 0:
            raise StoreError("the engine row cap must be a positive number of rows")
        if isinstance(graph_namespaces, str):
            graph_namespaces = graph_namespaces.split()
        namespaces = tuple(graph_namespaces) if graph_namespaces else (BASE,)
        settings = cls(
            kind=kind,
            store_path=Path(store_path) if store_path else None,
            query_url=query_url or None,
            update_url=update_url or None,
            gsp_url=gsp_url or None,
            auth=auth_kind,
            user=user or None,
            password=secret_password,
            token=secret_token,
            timeout=seconds,
            graph_namespaces=namespaces,
            row_cap=cap,
        )
        settings.check()
        return settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BackendSettings:
        """Settings from ``SASCI_KG_BACKEND``, ``SASCI_KG_QUERY_URL`` … (see the README)."""
        env = os.environ if environ is None else environ
        return cls.from_options(
            backend=env.get("SASCI_KG_BACKEND") or None,
            store_path=env.get("SASCI_KG_STORE") or None,
            query_url=env.get("SASCI_KG_QUERY_URL") or None,
            update_url=env.get("SASCI_KG_UPDATE_URL") or None,
            gsp_url=env.get("SASCI_KG_GSP_URL") or None,
            auth=env.get("SASCI_KG_AUTH") or None,
            user=env.get("SASCI_KG_USER") or None,
            password=env.get("SASCI_KG_PASSWORD") or None,
            password_file=env.get("SASCI_KG_PASSWORD_FILE") or None,
            token=env.get("SASCI_KG_TOKEN") or None,
            token_file=env.get("SASCI_KG_TOKEN_FILE") or None,
            timeout=env.get("SASCI_KG_REMOTE_TIMEOUT") or None,
            graph_namespaces=env.get("SASCI_KG_GRAPH_NAMESPACES") or None,
            row_cap=env.get("SASCI_KG_REMOTE_ROW_CAP") or None,
        )

    def check(self) -> None:
        """StoreError, naming the option and the fix, when the settings cannot work."""
        if not self.is_remote:
            return
        if not self.query_url:
            raise StoreError("--backend remote needs the engine's query URL: give --query-url "
                             "(or SASCI_KG_QUERY_URL), e.g. http://127.0.0.1:8890/sparql")
        check_url(self.query_url, "--query-url")
        if self.update_url:
            check_url(self.update_url, "--update-url")
        if self.gsp_url:
            check_url(self.gsp_url, "--gsp-url")
        make_auth(self.auth, user=self.user, password=self.password, token=self.token)

    def describe(self) -> str:
        """Where the data is, for messages and the service description: no credentials."""
        if not self.is_remote:
            return str(self.store_path or default_store_path())
        assert self.query_url
        who = f" as {self.user}" if self.user and self.auth in ("basic", "digest") else ""
        auth = f" ({self.auth} auth{who})" if self.auth != "none" else ""
        return f"remote SPARQL engine at {safe_url(self.query_url)}{auth}"


def open_backend(settings: BackendSettings | None = None) -> Backend:
    """The store the settings name: :class:`OxigraphBackend` or :class:`RemoteBackend`."""
    settings = settings or BackendSettings.from_env()
    if not settings.is_remote:
        return open_store(settings.store_path)
    return open_remote(settings)


def open_remote(settings: BackendSettings) -> RemoteBackend:
    """A :class:`RemoteBackend` for remote settings (StoreError for embedded ones)."""
    settings.check()
    if not settings.is_remote or not settings.query_url:
        raise StoreError("these settings name the embedded store, not a remote engine")
    return RemoteBackend(
        settings.query_url,
        update_url=settings.update_url,
        gsp_url=settings.gsp_url,
        auth=make_auth(settings.auth, user=settings.user, password=settings.password,
                       token=settings.token),
        timeout=settings.timeout,
        graph_namespaces=settings.graph_namespaces,
        row_cap=settings.row_cap,
    )


@dataclass(frozen=True)
class LoadSummary:
    """What a load did, whichever the backend."""

    target: str
    quads: int
    graphs: list[str]
    seconds: float
    dropped: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)  # remote: triples the engine rewrote


def load_dataset(
    settings: BackendSettings,
    inputs: Iterable[LoadInput],
    *,
    progress: Callable[[str], None] | None = None,
    accept_engine_changes: bool = False,
) -> LoadSummary:
    """Replace the dataset in the store the settings name, never leaving it half-loaded.

    On a remote engine the staged graphs are read back; if the engine stored any triple
    differently, the load fails unless ``accept_engine_changes`` (then they are listed).
    """
    started = time.monotonic()
    if not settings.is_remote:
        report = load_store(settings.store_path or default_store_path(), inputs,
                            progress=progress)
        return LoadSummary(target=str(report.path), quads=report.quads, graphs=report.graphs,
                           seconds=report.seconds)
    backend = open_remote(settings)
    remote = replace_graphs(backend, inputs, progress=progress,
                            accept_altered=accept_engine_changes)
    return LoadSummary(target=settings.describe(), quads=remote.quads, graphs=remote.graphs,
                       seconds=time.monotonic() - started, dropped=remote.dropped,
                       altered=[str(a) for a in remote.altered])
