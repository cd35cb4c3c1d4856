"""One place that knows how to talk to the database: SQLite (the single-machine default) or PostgreSQL.

SQLite is set up for several processes on one file (the bot and its workers): WAL so readers never
block the writer, a long busy timeout so writers wait for each other instead of failing, and our own
`BEGIN IMMEDIATE` (SQLAlchemy's documented pysqlite recipe) so a transaction that reads and then
writes takes the write lock up front and can never fail with "database is locked" half way.

PostgreSQL goes through psycopg 3; `postgresql://` URLs are rewritten to `postgresql+psycopg://`.

Every failure to reach or use the database becomes `DatabaseUnavailable` with a message in plain
words that names the URL with its password masked.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from db.private_files import private_file, private_folder

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
UPGRADE_HINT = "run `jukebot db upgrade`"


class DatabaseUnavailable(RuntimeError):
    """The database cannot be used; the message says why and what to do, in plain words."""


class SchemaOutOfDate(DatabaseUnavailable):
    """The database is reachable but its tables are not at the revision this code needs."""


def mask_url(url: str | URL) -> str:
    """The URL as it may be shown to a person: the password replaced by ***."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return str(url)
    return parsed.render_as_string(hide_password=True)


def normalize_url(url: str) -> URL:
    """Parse a database URL, choosing psycopg 3 for PostgreSQL. Raises DatabaseUnavailable."""
    raw = url.strip()
    if not raw:
        raise DatabaseUnavailable(
            "The database URL is empty. Set JUKEBOT_DATABASE_URL, e.g. sqlite:///./data/jukebot.db "
            "or postgresql://user:password@host:5432/jukebot."
        )
    try:
        parsed = make_url(raw)
    except ArgumentError:
        raise DatabaseUnavailable(
            f"The database URL {raw!r} is not a URL jukebot understands. Use sqlite:///path/to/jukebot.db "
            "or postgresql://user:password@host:5432/name (JUKEBOT_DATABASE_URL)."
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseUnavailable(
            f"The database URL {mask_url(parsed)} is for {backend!r}; jukebot works with SQLite "
            "(sqlite:///path/to/jukebot.db) or PostgreSQL (postgresql://user:password@host:5432/name)."
        )
    return parsed


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _prepare_sqlite_file(url: URL) -> None:
    """Create the folder of the database file, or say clearly why it cannot be used."""
    assert url.database is not None
    path = Path(url.database).expanduser()
    folder = path.parent.resolve()
    try:
        private_folder(folder)  # 0700 when we create it: the database holds members' names and logins
    except OSError as exc:
        raise DatabaseUnavailable(
            f"Cannot create the folder {folder} for the SQLite database {mask_url(url)}: "
            f"{exc.strerror or exc}. Choose a writable place with JUKEBOT_DATABASE_URL."
        ) from None
    # WAL needs to create -wal and -shm files next to the database, so the folder must be writable.
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        raise DatabaseUnavailable(
            f"The SQLite database {mask_url(url)} is in a folder jukebot cannot write to ({folder}). "
            "Make the folder and file writable for this user, or choose another place with "
            "JUKEBOT_DATABASE_URL."
        )
    # SQLite gives the -wal and -shm files the database file's mode: create it 0600 first.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        private_file(file)


def _install_sqlite_recipe(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control away from pysqlite; the "begin" listener below emits BEGIN.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def explain_connect_error(url: URL | str, exc: BaseException) -> str:
    """A plain-words sentence for a failed connection."""
    shown = mask_url(url)
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    low = " ".join(detail).lower()
    if "connection refused" in low or "could not connect" in low or "no route" in low:
        hint = "Is the PostgreSQL server running, and are the host and port right?"
    elif "timeout" in low or "timed out" in low:
        hint = "The server did not answer in time; check the host, port and firewall."
    elif "does not exist" in low and "database" in low:
        hint = "Create the database first (createdb), or fix its name in the URL."
    elif "password" in low or "authentication" in low:
        hint = "Check the user name and password in the URL."
    elif "unable to open database file" in low:
        hint = "Check that the folder exists and is writable."
    elif "could not translate host name" in low or "name or service not known" in low:
        hint = "The host name is unknown; check the spelling."
    else:
        hint = "Check JUKEBOT_DATABASE_URL."
    return f"Cannot reach the database at {shown}: {first}. {hint}"


class Database:
    """An engine plus the three ways to use it.

    - `session()`: a Session for work that writes (or reads then writes). Commits on a normal exit,
      rolls back on an exception. On SQLite it starts with `BEGIN IMMEDIATE`, so it is always safe
      under concurrency (one writer at a time, others wait up to the busy timeout).
    - `write()`: the same, named for intent; the queue uses it for claims and fenced writes.
    - `read()`: a Session for reads only, `BEGIN` (deferred) on SQLite, so readers run alongside a
      writer; it rolls back on exit, so a write made in it is thrown away.

    Objects stay usable after the block ends (expire_on_commit=False).
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = normalize_url(url)
        self.url: URL = parsed
        self.dialect: str = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
            if _is_memory_sqlite(parsed):
                kwargs["poolclass"] = StaticPool  # one shared connection, or each sees its own empty db
            else:
                _prepare_sqlite_file(parsed)
        else:
            kwargs["connect_args"] = {"connect_timeout": 10}
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ArgumentError, ImportError) as exc:
            raise DatabaseUnavailable(
                f"The database URL {mask_url(parsed)} cannot be used: {exc}. Use sqlite:///path/to/jukebot.db "
                "or postgresql://user:password@host:5432/name."
            ) from None
        self._on_dispose: list[Callable[[], None]] = []
        if self.dialect == "sqlite":
            _install_sqlite_recipe(self.engine)
            self._write_engine: Engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        else:
            self._write_engine = self.engine

    def __repr__(self) -> str:
        return f"Database({self.masked_url!r})"

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    @property
    def sqlite_file(self) -> Path | None:
        """The database file (SQLite on disk), else None."""
        if self.dialect != "sqlite" or _is_memory_sqlite(self.url) or not self.url.database:
            return None
        return Path(self.url.database).expanduser().resolve()

    @contextmanager
    def _session(self, bind: Engine, *, commit: bool) -> Iterator[Session]:
        session = Session(bind=bind, expire_on_commit=False)
        try:
            yield session
            if commit:
                session.commit()
            # else: close() below ends the transaction without expiring the loaded objects
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def session(self) -> Any:
        """Context manager: a Session that commits on exit (BEGIN IMMEDIATE on SQLite)."""
        return self._session(self._write_engine, commit=True)

    def write(self) -> Any:
        """Context manager: a Session for read-then-write work (BEGIN IMMEDIATE on SQLite)."""
        return self._session(self._write_engine, commit=True)

    def read(self) -> Any:
        """Context manager: a read-only Session (deferred BEGIN on SQLite); rolls back on exit."""
        return self._session(self.engine, commit=False)

    def ping(self) -> None:
        """Connect once; raise DatabaseUnavailable in plain words if that fails."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (OperationalError, SQLAlchemyError, OSError) as exc:
            raise DatabaseUnavailable(explain_connect_error(self.url, exc)) from None

    def table_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(inspect(conn).get_table_names())

    def on_dispose(self, callback: Callable[[], None]) -> None:
        """Run `callback` when this Database is disposed (e.g. to close a LISTEN connection)."""
        self._on_dispose.append(callback)

    def dispose(self) -> None:
        """Close every connection this Database opened."""
        while self._on_dispose:
            self._on_dispose.pop()()
        self.engine.dispose()
