"""The run archive: every Bluesky run streamed into an embedded tiled catalog (no server process).

One archive lives in a *data directory*::

    <data_dir>/catalog.db   tiled catalog (SQLite, WAL), unless ``catalog_uri`` names PostgreSQL
    <data_dir>/tables.db    event tables (SQLite, WAL), unless ``catalog_uri`` names PostgreSQL
    <data_dir>/data/        array data (zarr), e.g. 1024-channel spectra or waveforms

With a ``postgresql://`` catalog URI the catalog and the event tables both live in that database; arrays
still go to ``<data_dir>/data`` (so readers on other hosts must see that directory at the same path).

The catalog is served in-process: ``tiled.catalog.from_uri`` -> ``build_app`` -> ``Context.from_app`` ->
``from_context``.  Initialising a new catalog costs seconds (tiled runs ``tiled catalog init`` in a
subprocess); an existing one is detected and reopened without it.  Any number of processes may open the
same archive; readers see a run grow while it is written (each flushed batch of events).

Usage::

    with open_archive(site) as archive:
        archive.subscribe(RE)           # every run of RE is written (batches of 50 events)
        RE(count([det], 10), source="3C123")
        run = archive.client[-1]        # newest run; run["primary"].read() -> xarray.Dataset
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from obsctl.site import ArchiveConfig, Site

logger = logging.getLogger(__name__)

ENV_DIR = "OBSCTL_ARCHIVE_DIR"
#: Default number of events gathered before one write (STACK: batch 1 ~ 40 ms/event, 100 ~ 1-2 ms/event).
DEFAULT_BATCH_SIZE = 50
#: The root of the catalog presents itself as a databroker-2 catalog of runs (SQL layout, v3 runs).
ROOT_SPECS = [{"name": "CatalogOfBlueskyRuns", "version": "3.0"}]


class ArchiveError(RuntimeError):
    """The archive cannot be opened (bad location, database not reachable, catalog init failed)."""


def default_data_dir() -> Path:
    """``$OBSCTL_ARCHIVE_DIR``, else ``$XDG_DATA_HOME/obsctl/archive`` (``~/.local/share/obsctl/archive``)."""
    if env := os.environ.get(ENV_DIR):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "obsctl" / "archive"


@dataclass(frozen=True)
class ArchiveLocation:
    """Where one archive lives: its directory, catalog database and event-table database."""

    data_dir: Path
    catalog_uri: str
    tables_uri: str
    backend: Literal["sqlite", "postgresql"]

    @property
    def array_dir(self) -> Path:
        """Directory of the zarr array data."""
        return self.data_dir / "data"

    def redacted(self) -> str:
        """The catalog URI without a password (for messages)."""
        parts = urlsplit(self.catalog_uri)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.catalog_uri


def _strip_driver(uri: str) -> str:
    """``postgresql+asyncpg://`` -> ``postgresql://`` (tiled adds the async driver itself)."""
    scheme, sep, rest = uri.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def resolve_location(site_or_config: Site | ArchiveConfig | None = None, *, data_dir: str | Path | None = None,
                     uri: str | None = None) -> ArchiveLocation:
    """Work out the archive location.

    Precedence: the ``data_dir``/``uri`` arguments, then the site's ``[archive]`` section (a relative
    ``data_dir`` is taken relative to the site file), then ``$OBSCTL_ARCHIVE_DIR``, then the default
    directory.  An empty ``catalog_uri`` means SQLite files inside the data directory.
    """
    if isinstance(site_or_config, Site):
        cfg, resolve = site_or_config.archive, site_or_config.resolve
    elif isinstance(site_or_config, ArchiveConfig):
        cfg, resolve = site_or_config, (lambda p: Path(p).expanduser().resolve())
    elif site_or_config is None:
        cfg, resolve = ArchiveConfig(), (lambda p: Path(p).expanduser().resolve())
    else:
        raise TypeError(f"site_or_config must be a Site, an ArchiveConfig or None, not {type(site_or_config).__name__}")
    if data_dir is not None and str(data_dir) != "":
        ddir = Path(data_dir).expanduser().resolve()
    elif cfg.data_dir:
        ddir = resolve(cfg.data_dir)
    else:
        ddir = default_data_dir().resolve()
    curi = _strip_driver(uri if uri else cfg.catalog_uri)
    if uri and not uri.startswith(("sqlite", "postgresql")):
        raise ValueError(f"uri must be a sqlite:// or postgresql:// URL, got {uri!r}")
    if curi.startswith("postgresql"):
        if not urlsplit(curi).path.strip("/"):
            raise ValueError(f"the PostgreSQL catalog URL must name a database: {curi!r}")
        return ArchiveLocation(ddir, curi, curi, "postgresql")
    if not curi:
        curi = f"sqlite:///{ddir / 'catalog.db'}"
    return ArchiveLocation(ddir, curi, f"sqlite:///{ddir / 'tables.db'}", "sqlite")


def _sqlite_path(uri: str) -> Path:
    return Path(uri.split(":///", 1)[1]) if ":///" in uri else Path(uri.split("://", 1)[1])


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also when this thread already runs a loop (Jupyter)."""
    with ThreadPoolExecutor(1, thread_name_prefix="obsctl-archive-probe") as pool:
        return pool.submit(asyncio.run, coro).result()


async def _pg_revision(uri: str) -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(uri, timeout=10)
    except (OSError, asyncpg.PostgresError) as err:
        raise ArchiveError(f"cannot connect to the archive database: {err}") from None
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


def catalog_revision(loc: ArchiveLocation) -> str | None:
    """The catalog's schema revision, or ``None`` when no catalog has been initialised there yet."""
    if loc.backend == "postgresql":
        return _run_coroutine(_pg_revision(loc.catalog_uri))
    path = _sqlite_path(loc.catalog_uri)
    if not path.is_file():
        return None
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute("SELECT version_num FROM alembic_version LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()
    return row[0] if row else None


@contextmanager
def _init_lock(data_dir: Path):
    """Serialise catalog initialisation between processes opening the same new archive."""
    with open(data_dir / ".init.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prepare_sqlite_tables(path: Path) -> None:
    """Create the event-table database in WAL mode so readers in other processes never block the writer."""
    con = sqlite3.connect(path, timeout=10)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


_NORMALIZER: type | None = None


def _event_trusting_normalizer() -> type:
    """``RunNormalizer`` that skips the per-Event JSON-schema check (every other document is still checked)
    and has an EventPage of at least one batch written in one table append.

    The plugin unpacks a page into single events and appends a table every ``batch_size`` of them; an append
    costs about 40 ms whatever its size, so a fly scan's page of 1500 samples took 30 appends.  While a page's
    events pass, the run writer's batch is raised to the page's length (never lowered), then set back.  Should
    the plugin's run writer lose its ``_batch_size``, pages are simply written batch by batch as before.
    """
    global _NORMALIZER
    if _NORMALIZER is None:
        from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer

        class EventTrustingNormalizer(RunNormalizer):
            def emit(self, name: Any, doc: dict) -> None:
                if getattr(name, "value", name) == "event":
                    self.dispatcher.process(name, doc)
                else:
                    super().emit(name, doc)

            def event_page(self, doc: dict) -> None:
                writers = [w for w in getattr(self, "_token_refs", {}).values() if hasattr(w, "_batch_size")]
                saved = [w._batch_size for w in writers]
                for w, batch in zip(writers, saved, strict=True):
                    w._batch_size = max(batch, len(doc["seq_num"]))
                try:
                    super().event_page(doc)
                finally:
                    for w, batch in zip(writers, saved, strict=True):
                        w._batch_size = batch

        _NORMALIZER = EventTrustingNormalizer
    return _NORMALIZER


class RunArchive:
    """An open run archive.

    Attributes
    ----------
    client : the tiled client of the catalog root (databroker ``CatalogOfBlueskyRuns``):
        ``client[uid]``, ``client[-1]`` (newest), ``client.search(query)``; runs give
        ``run.start``, ``run.stop`` and ``run["primary"].read()`` (xarray).
    location : where the archive lives.
    """

    def __init__(self, server: _Server, initialised: bool) -> None:
        self._server = server
        self.client = server.client
        self.location = server.location
        #: True when this open created the catalog
        self.initialised = initialised
        self._subscriptions: list[tuple[Any, int]] = []
        self._closed = False

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.location.backend

    @property
    def closed(self) -> bool:
        return self._closed

    def writer(self, batch_size: int = DEFAULT_BATCH_SIZE, *, validate_events: bool = False,
               backup_dir: str | Path | None = None) -> Any:
        """A ``bluesky_tiled_plugins.TiledWriter`` callback writing into this archive.

        ``batch_size`` events are gathered per table write (readers see a run grow batch by batch; the rest is
        written with the stop document); an EventPage of at least that many events is written in one.
        Documents pass through the plugin's ``RunNormalizer`` (reserved key names, numpy dtypes, legacy
        Resource/Datum); it also re-checks every document against the JSON schema, which for Event documents
        costs ~0.7 ms each, about a third of the archive's share of a plan's time.  The RunEngine has already
        validated its events, so that check is skipped for events unless ``validate_events``.  With
        ``backup_dir``, a run whose writing fails is saved there as JSON lines instead of raising into the
        RunEngine (the writer then keeps every document of a run in memory).  Array data of any size
        (spectra, profiles, maps, short vectors) go to the zarr store.
        """
        from bluesky_tiled_plugins import TiledWriter
        from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer

        self._check_open()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        return TiledWriter(self.client, batch_size=batch_size,
                           normalizer=RunNormalizer if validate_events else _event_trusting_normalizer(),
                           backup_directory=str(backup_dir) if backup_dir is not None else None,
                           max_array_size=0)  # every array to zarr: the SQL tables cannot hold lists

    def subscribe(self, RE: Any, batch_size: int = DEFAULT_BATCH_SIZE, *, validate_events: bool = False,
                  backup_dir: str | Path | None = None) -> int:
        """Write every run of RunEngine ``RE`` into the archive; returns the RunEngine subscription token.

        Without ``backup_dir`` a failing archive write raises inside the RunEngine (the plan is aborted and
        its cleanup runs), so data are never silently lost.  See :meth:`writer` for the options.
        """
        token = RE.subscribe(self.writer(batch_size, validate_events=validate_events, backup_dir=backup_dir))
        self._subscriptions.append((RE, token))
        return token

    def unsubscribe(self, RE: Any, token: int) -> None:
        """Stop writing RE's runs (token from :meth:`subscribe`)."""
        RE.unsubscribe(token)
        self._subscriptions = [(r, t) for r, t in self._subscriptions if not (r is RE and t == token)]

    def close(self) -> None:
        """Unsubscribe every RunEngine and shut the in-process server down (no thread is left behind).

        Events of a run still open that were not yet flushed (less than one batch) are lost: close after runs end.
        """
        if self._closed:
            return
        for RE, token in self._subscriptions:
            try:
                RE.unsubscribe(token)
            except (KeyError, ValueError):
                pass
        self._subscriptions.clear()
        self._closed = True
        _release(self._server)

    def _check_open(self) -> None:
        if self._closed:
            raise ArchiveError("the archive is closed")

    def __enter__(self) -> RunArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<RunArchive {state} {self.backend} {self.location.data_dir} catalog={self.location.redacted()}>"


def open_archive(site_or_config: Site | ArchiveConfig | None = None, *, data_dir: str | Path | None = None,
                 uri: str | None = None, init: bool | None = None) -> RunArchive:
    """Open (creating on first use) the run archive.

    Parameters
    ----------
    site_or_config : a :class:`~obsctl.site.Site` (its ``[archive]`` section) or an ``ArchiveConfig``; ``None``
        for the defaults.
    data_dir : overrides the data directory.
    uri : overrides the catalog URL (``postgresql://user@host:5432/db`` or ``sqlite:///path``).
    init : ``None`` initialise the catalog only when none exists (checked cheaply first), ``True`` always
        run tiled's init (a no-op on an existing catalog, but slow), ``False`` never (error if none exists).

    Opening a location that is already open in this process shares its in-process server (tiled keeps
    process-wide connection pools per database); each handle is closed on its own, the server with the last.

    Raises
    ------
    ArchiveError : the database is unreachable, ``init=False`` and no catalog exists there, or the catalog is
        already open in this process with another data directory.
    """
    loc = resolve_location(site_or_config, data_dir=data_dir, uri=uri)
    with _OPEN_LOCK:
        server = _OPEN.get(loc.catalog_uri)
        if server is not None:
            if server.location != loc:
                raise ArchiveError(f"the catalog {loc.redacted()} is already open in this process with data "
                                   f"directory {server.location.data_dir}, not {loc.data_dir}")
            server.refs += 1
            return RunArchive(server, initialised=False)
        tree, initialised = _open_tree(loc, init)
        server = _serve(tree, loc)
        _OPEN[loc.catalog_uri] = server
        return RunArchive(server, initialised=initialised)


def _open_tree(loc: ArchiveLocation, init: bool | None) -> tuple[Any, bool]:
    # check first (database reachable? catalog there?) so that a failing open creates no directory
    if catalog_revision(loc) is None and init is False:
        raise ArchiveError(f"no run archive catalog at {loc.redacted()} (open with init=None to create one)")
    try:
        loc.array_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ArchiveError(f"cannot create the archive directory {loc.data_dir}: {err.strerror}") from None

    with _init_lock(loc.data_dir):
        exists = catalog_revision(loc) is not None
        do_init = bool(init) or not exists

        from tiled.catalog import from_uri
        from tiled.catalog.adapter import DatabaseInitializationError

        if loc.backend == "sqlite":
            _prepare_sqlite_tables(_sqlite_path(loc.tables_uri))
        try:
            tree = from_uri(loc.catalog_uri, writable_storage=[str(loc.array_dir), loc.tables_uri],
                            init_if_not_exists=do_init, specs=ROOT_SPECS)
        except DatabaseInitializationError as err:
            raise ArchiveError(f"cannot initialise the archive catalog at {loc.redacted()}: {err}") from None
    return tree, do_init and not exists


@dataclass(eq=False)
class _Server:
    """One in-process tiled app per archive location, shared by every RunArchive opened on it."""

    location: ArchiveLocation
    context: Any
    client: Any
    refs: int = 1


#: Open servers by location.  tiled keeps process-wide registries of catalog engines and storage pools keyed
#: by database; two apps on the same databases in one process would share (and, closing, dispose) each
#: other's pools, leaving the survivor's table writes unseen by other processes.  So a process serves each
#: location once and hands out references.
_OPEN: dict[str, _Server] = {}
_OPEN_LOCK = threading.RLock()


def _release(server: _Server) -> None:
    with _OPEN_LOCK:
        server.refs -= 1
        if server.refs > 0:
            return
        if _OPEN.get(server.location.catalog_uri) is server:
            del _OPEN[server.location.catalog_uri]
        server.context.close()


def _serve(tree: Any, loc: ArchiveLocation) -> _Server:
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    # The embedded app announces itself at INFO on stderr at every open; keep the session quiet.
    app_logger = logging.getLogger("tiled.server.app")
    if app_logger.level in (logging.NOTSET, logging.INFO, logging.DEBUG):
        app_logger.setLevel(logging.WARNING)
    app = build_app(tree)
    with warnings.catch_warnings():
        # starlette's TestClient (the in-process transport) warns that it prefers httpx2; harmless here.
        warnings.filterwarnings("ignore", message=".*httpx.*", category=UserWarning)
        context = Context.from_app(app)
    client = None
    try:
        client = from_context(context)
    finally:
        if client is None:
            context.close()
    return _Server(loc, context, client)
