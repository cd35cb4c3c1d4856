"""db.database: connecting, SQLite set-up, transactions, and plain-words errors."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select

from db.database import Database, DatabaseUnavailable, SchemaOutOfDate, mask_url, normalize_url
from db.migrate import head_revision, open_database
from db.models import User


def test_postgres_urls_use_psycopg3_and_passwords_are_masked() -> None:
    assert normalize_url("postgresql://u:pw@h:5432/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u:pw@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    assert mask_url("postgresql+psycopg://u:s3cret@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url at all", "is not a URL jukebot understands"),
        ("", "The database URL is empty"),
        ("mysql://u:pw@h/d", "jukebot works with SQLite"),
        ("postgresql+nosuchdriver://u@h/d", "cannot be used"),
    ],
)
def test_garbage_urls_get_a_clear_message(url: str, expected: str) -> None:
    with pytest.raises(DatabaseUnavailable) as err:
        open_database(url)
    assert expected in str(err.value)
    assert "sqlite:///" in str(err.value)  # says what a good URL looks like
    assert "pw@" not in str(err.value)


def test_unreachable_server_says_so_and_hides_the_password() -> None:
    with pytest.raises(DatabaseUnavailable) as err:
        open_database("postgresql://jukebot:topsecret@127.0.0.1:1/jukebot")
    message = str(err.value)
    assert message.startswith(
        "Cannot reach the database at postgresql+psycopg://jukebot:***@127.0.0.1:1/jukebot"
    )
    assert "Is the PostgreSQL server running" in message
    assert "topsecret" not in message


@pytest.mark.postgres
def test_missing_postgres_database_says_create_it() -> None:
    from tests.conftest import ADMIN_URL

    url = ADMIN_URL.rsplit("/", 1)[0] + "/jukebot_no_such_database_here"
    with pytest.raises(DatabaseUnavailable) as err:
        open_database(url)
    assert "does not exist" in str(err.value)
    assert "Create the database first" in str(err.value)


def test_sqlite_creates_the_folder_of_the_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "jukebot.db"
    database = open_database(f"sqlite:///{target}")
    try:
        assert target.exists()
        assert database.dialect == "sqlite"
    finally:
        database.dispose()


def test_sqlite_in_a_folder_that_cannot_exist_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnavailable) as err:
        open_database(f"sqlite:///{blocker}/jukebot.db")
    assert f"Cannot create the folder {blocker}" in str(err.value)
    assert "JUKEBOT_DATABASE_URL" in str(err.value)


def test_sqlite_pragmas(sqlite_url: str) -> None:
    database = Database(sqlite_url)
    try:
        with database.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    finally:
        database.dispose()


def _other_writer_can_start(path: str) -> bool:
    """Can a second connection take the write lock right now (no waiting)?"""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        other.close()


def test_sqlite_write_takes_the_write_lock_up_front_and_read_does_not(sqlite_url: str) -> None:
    database = Database(sqlite_url)
    path = str(database.url.database)
    try:
        with database.write() as s:
            s.exec(select(User)).all()  # only a read so far, yet the write lock is held
            assert not _other_writer_can_start(path)
        with database.session() as s:
            s.exec(select(User)).all()
            assert not _other_writer_can_start(path)
        with database.read() as s:
            s.exec(select(User)).all()
            assert _other_writer_can_start(path)
        assert _other_writer_can_start(path)
    finally:
        database.dispose()


def test_session_commits_on_exit_and_rolls_back_on_error(db: Database) -> None:
    with db.session() as s:
        s.add(User(discord_id=1, name="ann"))
    with pytest.raises(RuntimeError), db.session() as s:
        s.add(User(discord_id=2, name="bob"))
        s.flush()
        raise RuntimeError("boom")
    with db.read() as s:
        s.add(User(discord_id=3, name="cid"))  # a read session throws writes away
        s.flush()
    with db.read() as s:
        names = [u.name for u in s.exec(select(User)).all()]
    assert names == ["ann"]


def test_objects_stay_usable_after_the_session(db: Database) -> None:
    with db.session() as s:
        user = User(discord_id=7, name="dee")
        s.add(user)
    assert user.id is not None and user.name == "dee"


def test_times_come_back_as_aware_utc_on_both_dialects(db: Database) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 5, 1, 14, 0, tzinfo=plus_two)
    naive = datetime(2026, 5, 1, 12, 30)
    with db.session() as s:
        s.add(User(discord_id=1, created_at=local))
        s.add(User(discord_id=2, created_at=naive))  # naive means UTC
    with db.read() as s:
        a = s.exec(select(User).where(User.discord_id == 1)).one()
        b = s.exec(select(User).where(User.discord_id == 2)).one()
        later = s.exec(select(User).where(User.created_at > datetime(2026, 5, 1, 12, 15, tzinfo=UTC))).all()
    assert a.created_at == datetime(2026, 5, 1, 12, 0, tzinfo=UTC) and a.created_at.tzinfo is not None
    assert b.created_at == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    assert [u.discord_id for u in later] == [2]


def test_open_database_upgrades_an_empty_database(empty_database_url: str) -> None:
    with pytest.raises(SchemaOutOfDate) as err:
        open_database(empty_database_url, upgrade=False)
    assert "run `jukebot db upgrade`" in str(err.value)
    database = open_database(empty_database_url)
    try:
        assert "jobs" in database.table_names()
    finally:
        database.dispose()
    open_database(empty_database_url, upgrade=False).dispose()  # now at head: no complaint


def test_processes_starting_together_migrate_once(empty_database_url: str) -> None:
    """Bot and workers start at the same moment on an empty database: each upgrade waits its turn."""
    errors: list[BaseException] = []
    reached: list[str] = []

    def start() -> None:
        try:
            database = open_database(empty_database_url)
            from db.migrate import current_revision

            reached.append(str(current_revision(database)))
            database.dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert reached == [head_revision()] * 3


@pytest.mark.postgres
def test_reused_postgres_test_databases_come_back_empty(_pg_pool: Any) -> None:
    """conftest hands a used PostgreSQL database to the next test: it must be as good as new."""
    url = _pg_pool.checkout()
    database = Database(url)
    try:
        with database.session() as s:
            s.add(User(discord_id=1, name="left over"))
        with database.session() as s:
            s.execute(text("CREATE TABLE test_stray (id int)"))
    finally:
        database.dispose()
    _pg_pool.checkin(url)
    assert _pg_pool.checkout() != url  # a changed schema is never handed out again
    _pg_pool.checkin(_pg_pool.checkout())

    url = _pg_pool.checkout()
    database = Database(url)
    try:
        with database.session() as s:
            s.add(User(discord_id=1, name="left over"))
    finally:
        database.dispose()
    _pg_pool.checkin(url)
    again = _pg_pool.checkout()
    assert again == url
    database = Database(again)
    try:
        with database.session() as s:
            assert s.exec(select(User)).all() == []
            user = User(discord_id=2, name="fresh")
            s.add(user)
        assert user.id == 1  # id sequences start over
    finally:
        database.dispose()
        _pg_pool.checkin(again)
