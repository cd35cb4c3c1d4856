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

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

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
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        conn.execute(stmt)
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


_pg_template_name: str | None = None


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[None]:
    yield
    if _pg_template_name is not None:
        drop_pg_database(_pg_url(_pg_template_name))


def _pg_migrated_copy() -> str:
    """A fresh migrated PostgreSQL database, copied from a session-wide template (fast)."""
    global _pg_template_name
    if _pg_template_name is None:
        url = create_pg_database()
        _migrate(url)
        _pg_template_name = url.rsplit("/", 1)[1]
    return create_pg_database(template=_pg_template_name)


def _sqlite_copy(template: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "jukebot.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    return _sqlite_copy(_sqlite_template, tmp_path / "sqlite")


@pytest.fixture
def postgres_url(_pg_template: None) -> Iterator[str]:
    url = _pg_migrated_copy()
    yield url
    drop_pg_database(url)


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, _sqlite_template: Path, _pg_template: None) -> Iterator[str]:
    if request.param == "sqlite":
        yield _sqlite_copy(_sqlite_template, tmp_path / "sqlite")
        return
    url = _pg_migrated_copy()
    yield url
    drop_pg_database(url)


@pytest.fixture(params=DIALECTS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty' / 'jukebot.db'}"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


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
