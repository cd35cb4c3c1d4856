"""Shared fixtures. Every test that takes `db` (or `database_url`) runs twice: on SQLite and on PostgreSQL.

Fixtures
- `database_url` (str): URL of a fresh database already migrated to head. Params `sqlite` (a file in a
  temp folder) and `postgresql` (a new database with a random name on the test server, dropped after
  the test, so parallel runs never collide). The `postgresql` param carries the `postgres` marker.
- `db` (db.database.Database): a Database on `database_url`; disposed after the test.
- `empty_database_url` (str): same two params, but an empty database (no tables), for migration tests.
- `sqlite_url` / `postgres_url` (str): a fresh migrated database of that one dialect (not parametrised),
  for tests that only make sense on one of them.
- `storage` (db.storage.Storage): a Storage on a temp folder.
- `settings` (db.settings.Settings): Settings pointing at `database_url` and `storage`, with the rest
  at their defaults (no credentials); pass overrides with `settings.model_copy(update={...})`.

PostgreSQL: the server from JUKEBOT_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test,
an existing database used only to create and drop the per-test ones). If it cannot be reached, the
postgresql params FAIL with a message saying how to start it: they are never skipped, because CI must
test both dialects. For a quick local run on SQLite only: `pytest -m "not postgres"`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from db.database import Database
from db.settings import Settings
from db.storage import Storage

ADMIN_URL = os.environ.get("JUKEBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

_pg_error: str | None = None


def _admin() -> psycopg.Connection:
    """An autocommit connection to the admin database, or a clear pytest failure."""
    global _pg_error
    if _pg_error is None:
        try:
            return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            _pg_error = (
                f"PostgreSQL is not reachable at {ADMIN_URL} ({str(exc).strip()}). The PostgreSQL half of "
                "the tests cannot run. Start it: pg_ctlcluster --skip-systemctl-redirect "
                "$(ls /etc/postgresql) main start (or set JUKEBOT_TEST_POSTGRES_URL)."
            )
    pytest.fail(_pg_error, pytrace=False)


def _pg_url(name: str) -> str:
    base = ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def create_pg_database(template: str | None = None) -> str:
    """Create a database with a random name (optionally a copy of `template`); return its URL."""
    name = f"jukebot_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(stmt)
        # Commits need not wait for the disk in tests (locking and visibility are unchanged).
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name)))
    return _pg_url(name)


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _migrate(url: str) -> None:
    from db.migrate import upgrade_to_head

    database = Database(url)
    try:
        upgrade_to_head(database)
    finally:
        database.dispose()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "jukebot.db"
    _migrate(f"sqlite:///{path}")
    return path


def _sqlite_copy(template: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "jukebot.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


class _PgPool:
    """Migrated PostgreSQL databases, reused between tests.

    DROP DATABASE can take a second (it waits for a checkpoint), so a used database is emptied
    (DELETE in foreign-key order, id sequences reset, leftover connections closed) and handed to the
    next test instead. One whose schema a test changed (extra tables, another revision) is dropped
    in a background thread and replaced by a fresh copy of the migrated template.
    """

    def __init__(self) -> None:
        self.template: str | None = None
        self.expected: tuple[set[str], list[Any]] | None = None  # the template's tables and revision
        self.free: list[str] = []
        self.all: set[str] = set()
        self.doomed: queue.Queue[str | None] = queue.Queue()
        self.dropper: threading.Thread | None = None

    def checkout(self) -> str:
        while self.free:
            url = self.free.pop()
            if self._reset(url):
                return url
            self.drop_later(url)
        if self.template is None:
            url = create_pg_database()
            _migrate(url)
            self.template = url.rsplit("/", 1)[1]
        url = create_pg_database(template=self.template)
        self.all.add(url)
        return url

    def checkin(self, url: str) -> None:
        self.free.append(url)

    def _tables(self, conn: psycopg.Connection) -> set[str]:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}

    def _reset(self, url: str) -> bool:
        name = url.rsplit("/", 1)[1]
        try:
            with _admin() as admin:  # connections a test leaked (LISTEN, child processes)
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [name],
                )
                if self.expected is None:
                    with psycopg.connect(_pg_url(str(self.template))) as tpl:
                        self.expected = (
                            self._tables(tpl),
                            tpl.execute("SELECT version_num FROM alembic_version").fetchall(),
                        )
            with psycopg.connect(url, connect_timeout=5) as conn:
                conn.execute("SET lock_timeout = '5s'")
                tables = self._tables(conn)
                if (
                    tables,
                    conn.execute("SELECT version_num FROM alembic_version").fetchall(),
                ) != self.expected:
                    return False
                conn.execute("SET session_replication_role = replica")  # no FK triggers: any order
                for table in sorted(tables - {"alembic_version"}):
                    conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
                for (seq,) in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'S'").fetchall():
                    conn.execute(
                        "SELECT setval(%s::regclass, 1, false)", [sql.Identifier(seq).as_string(conn)]
                    )
            return True
        except psycopg.Error:
            return False

    def drop_later(self, url: str) -> None:
        self.all.discard(url)
        if self.dropper is None:
            self.dropper = threading.Thread(target=self._drop_loop, name="drop-test-databases", daemon=True)
            self.dropper.start()
        self.doomed.put(url)

    def _drop_loop(self) -> None:
        while (url := self.doomed.get()) is not None:
            with contextlib.suppress(Exception):
                drop_pg_database(url)

    def close(self) -> None:
        for url in list(self.all):
            self.drop_later(url)
        if self.template is not None:
            self.drop_later(_pg_url(self.template))
        if self.dropper is not None:
            self.doomed.put(None)
            self.dropper.join(120)


@pytest.fixture(scope="session")
def _pg_pool() -> Iterator[_PgPool]:
    pool = _PgPool()
    yield pool
    pool.close()


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    return _sqlite_copy(_sqlite_template, tmp_path / "sqlite")


@pytest.fixture
def postgres_url(_pg_pool: _PgPool) -> Iterator[str]:
    url = _pg_pool.checkout()
    yield url
    _pg_pool.checkin(url)


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield _sqlite_copy(request.getfixturevalue("_sqlite_template"), tmp_path / "sqlite")
        return
    pool: _PgPool = request.getfixturevalue("_pg_pool")
    url = pool.checkout()
    yield url
    pool.checkin(url)


@pytest.fixture(params=DIALECTS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty' / 'jukebot.db'}"
        return
    pool: _PgPool = request.getfixturevalue("_pg_pool")
    url = create_pg_database()
    yield url
    pool.drop_later(url)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path / "storage")


@pytest.fixture
def settings(database_url: str, storage: Storage) -> Settings:
    return Settings(database_url=database_url, storage_url=storage.root, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a module of tiny-model tests (`pytestmark =
    pytest.mark.usefixtures("one_torch_thread")`): several times faster than two on a shared
    2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
