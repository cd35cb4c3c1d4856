"""Alembic migrations: empty → head → base → head on both dialects, no drift from db/models.py,
clear messages for a database that is behind, ahead, or was never migrated, and packaging."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from db import database as database_module
from db import migrate
from db.database import Database, SchemaOutOfDate
from db.migrate import open_database
from db.models import ALL_TABLES

REPO = Path(__file__).resolve().parents[1]
TABLES = {t.__tablename__ for t in ALL_TABLES}  # type: ignore[attr-defined]


def test_upgrade_downgrade_upgrade_without_drift(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        assert migrate.current_revision(db) is None
        assert migrate.upgrade(db) == migrate.head_revision()
        assert set(db.table_names()) >= TABLES
        assert migrate.schema_drift(db) == [], (
            "db/models.py and the migrations differ: run `jukebot db revision`"
        )
        assert migrate.downgrade(db, "base") is None
        assert set(db.table_names()) <= {"alembic_version"}
        assert migrate.upgrade(db) == migrate.head_revision()
        assert migrate.schema_drift(db) == []
        assert migrate.check_schema(db) == migrate.head_revision()
    finally:
        db.dispose()


def test_every_model_table_has_a_migration() -> None:
    assert set(SQLModel.metadata.tables) == TABLES


def test_database_without_migration_record_is_explained(empty_database_url: str) -> None:
    """Tables made by create_all (not by jukebot's migrations): say so; never migrate over them."""
    db = Database(empty_database_url)
    try:
        SQLModel.metadata.create_all(db.engine)
        for upgrade in (False, True):
            with pytest.raises(SchemaOutOfDate) as err:
                open_database(empty_database_url, upgrade=upgrade)
            assert "no migration record" in str(err.value)
            assert "empty database" in str(err.value)
    finally:
        db.dispose()


def test_database_from_a_newer_jukebot_is_explained(database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
        with pytest.raises(SchemaOutOfDate) as err:
            open_database(database_url, upgrade=False)
        assert "at revision ffff_future, which this jukebot does not know" in str(err.value)
        assert "newer jukebot" in str(err.value)
    finally:
        db.dispose()


NEXT_REVISION = '''"""songs get a mood (test only)

Revision ID: 0099
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op

revision = "0099"
down_revision = "{down}"
branch_labels = None
depends_on = None


def _recreate() -> str:
    # "always" on SQLite: exercise its copy-and-move with rows and foreign keys in place
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade() -> None:
    with op.batch_alter_table("songs", recreate=_recreate()) as batch:
        batch.add_column(sa.Column("mood", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("songs", recreate=_recreate()) as batch:
        batch.drop_column("mood")
'''


def test_missing_migration_says_run_upgrade_and_upgrade_applies_it(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newer jukebot ships one more migration than the database has.
    scripts = tmp_path / "migrations"
    shutil.copytree(database_module.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.head_revision()
    (scripts / "versions" / "0099_mood.py").write_text(NEXT_REVISION.format(down=head))
    monkeypatch.setattr(database_module, "MIGRATIONS_DIR", scripts)

    db = Database(database_url)
    try:
        with db.session() as s:  # rows that must survive the table rebuild
            s.execute(
                text(
                    "INSERT INTO users (discord_id, name, created_at) VALUES (5, 'ann', '2026-01-01 00:00:00')"
                )
            )
            s.execute(
                text(
                    "INSERT INTO songs (user_id, status, title, model, artist, genre, lyrics, seconds, seed, n_drafts, "
                    "temperature, created_at, updated_at) VALUES ((SELECT id FROM users), 'queued', '', 'demo', 'a', 'g', "
                    "'', 5, 1, 3, 0.98, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            s.execute(
                text(
                    'INSERT INTO drafts (song_id, "index", audio_key, codes_key, seconds, created_at) '
                    "VALUES ((SELECT id FROM songs), 0, 'a.wav', 'a.npy', 1, '2026-01-01 00:00:00')"
                )
            )
        with pytest.raises(SchemaOutOfDate) as err:
            open_database(database_url, upgrade=False)
        assert str(err.value).endswith(
            f"is at revision {head} but this jukebot needs revision 0099 (a migration has not been applied): "
            "run `jukebot db upgrade`."
        )
        open_database(database_url).dispose()  # upgrade=True: what every process does on start
        assert migrate.current_revision(db) == "0099"
        with db.engine.connect() as conn:
            assert "mood" in {c["name"] for c in inspect(conn).get_columns("songs")}
            assert (
                conn.execute(
                    text("SELECT count(*) FROM drafts JOIN songs ON songs.id = drafts.song_id")
                ).scalar()
                == 1
            )
            if db.dialect == "sqlite":
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
                assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1  # switched back on
        assert migrate.downgrade(db, head) == head
        with db.engine.connect() as conn:
            assert "mood" not in {c["name"] for c in inspect(conn).get_columns("songs")}
    finally:
        db.dispose()


def test_the_wheel_ships_the_migrations(tmp_path: Path) -> None:
    """Migrations are found from an installed package, not from a cwd alembic.ini."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("jukebot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "db" / "migrations").rglob("*")
        if p.suffix in (".py", ".mako")
    }
    assert {
        "db/migrations/env.py",
        "db/migrations/script.py.mako",
        "db/migrations/versions/0001_initial_schema.py",
    } <= shipped
    assert shipped <= names


BROKEN_REVISION = '''"""a migration that fails half way (test only)"""
import sqlalchemy as sa
from alembic import op

revision = "0098"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("SELECT no_such_column FROM users")


def downgrade() -> None:
    op.drop_table("half_done")
'''


def test_a_failing_migration_changes_nothing_and_says_so(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(database_module.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = migrate.head_revision()
    (scripts / "versions" / "0098_broken.py").write_text(BROKEN_REVISION.format(down=head))
    monkeypatch.setattr(database_module, "MIGRATIONS_DIR", scripts)
    db = Database(database_url)
    try:
        with pytest.raises(database_module.DatabaseUnavailable) as err:
            open_database(database_url)
        assert "to head failed" in str(err.value) and "no_such_column" in str(err.value)
        assert "Nothing was changed" in str(err.value)
        assert "half_done" not in db.table_names()
        assert migrate.current_revision(db) == head
    finally:
        db.dispose()


def test_new_revision_writes_a_script_from_the_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jukebot db revision` (developers): with the models matching head, the script changes nothing."""
    scripts = tmp_path / "migrations"
    shutil.copytree(database_module.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(database_module, "MIGRATIONS_DIR", scripts)
    head = migrate.head_revision()
    path = migrate.new_revision("nothing new")
    assert path.parent == scripts / "versions"
    assert path.name == f"{int(head) + 1:04d}_nothing_new.py"
    script = path.read_text()
    assert "import sqlmodel" in script and f"down_revision: str | None = '{head}'" in script
    upgrade_body = script.split("def upgrade() -> None:")[1].split("def downgrade")[0]
    assert "op." not in upgrade_body
    assert migrate.head_revision() == f"{int(head) + 1:04d}"
