"""Alembic, driven from code so it works from an installed package (no alembic.ini in the cwd).

The migration scripts live in `db/migrations/`. Upgrades run in one transaction under a lock
(`BEGIN IMMEDIATE` on SQLite, an advisory lock on PostgreSQL), so a bot and its workers starting at
the same moment migrate once and never trip over each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from db import database
from db.database import UPGRADE_HINT, Database, DatabaseUnavailable, SchemaOutOfDate, explain_connect_error

_PG_MIGRATION_LOCK = 0x6A756B65  # "juke": one advisory lock id for all jukebot migrations


def alembic_config(db: Database | None = None) -> Config:
    """An Alembic Config pointing at the packaged migration scripts (and at `db`, when given)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(database.MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if db is not None:
        # ConfigParser treats % as interpolation; passwords may contain it.
        cfg.set_main_option("sqlalchemy.url", db.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"The migrations have {len(heads)} heads ({heads}); merge them into one.")
    return heads[0]


def _revisions(conn: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(conn).get_current_heads())


def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None for a database without jukebot's migrations."""
    try:
        with db.engine.connect() as conn:
            revs = _revisions(conn)
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(explain_connect_error(db.url, exc)) from None
    return revs[0] if revs else None


def _jukebot_tables_present(conn: Connection) -> list[str]:
    from sqlalchemy import inspect

    ours = set(SQLModel.metadata.tables)
    return sorted(ours & set(inspect(conn).get_table_names()))


def _schema_problem(conn: Connection) -> str | None:
    """None when the schema is at head, else a sentence for a person."""
    where = database.mask_url(conn.engine.url)
    head = head_revision()
    revs = _revisions(conn)
    if not revs:
        tables = _jukebot_tables_present(conn)
        if tables:
            return (
                f"The database at {where} has jukebot tables ({', '.join(tables[:3])}…) but no migration "
                "record (no alembic version), so jukebot cannot tell which schema it has. Point "
                "JUKEBOT_DATABASE_URL at a new, empty database and run `jukebot db upgrade`, or restore "
                "a backup made by jukebot."
            )
        return f"The database at {where} is empty (no jukebot tables yet): {UPGRADE_HINT}."
    script = script_directory()
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = [rev for rev in revs if rev not in known]
    if unknown:
        return (
            f"The database at {where} is at revision {unknown[0]}, which this jukebot does not know: "
            "it was upgraded by a newer jukebot. Install that newer version (or restore a backup)."
        )
    if revs != (head,):
        return (
            f"The database at {where} is at revision {', '.join(revs)} but this jukebot needs revision "
            f"{head} (a migration has not been applied): {UPGRADE_HINT}."
        )
    return None


def check_schema(db: Database) -> str:
    """Return the head revision if the database is at it; else raise SchemaOutOfDate."""
    try:
        with db.engine.connect() as conn:
            problem = _schema_problem(conn)
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(explain_connect_error(db.url, exc)) from None
    if problem:
        raise SchemaOutOfDate(problem)
    return head_revision()


@contextmanager
def _migration_connection(db: Database) -> Iterator[Connection]:
    """A connection inside one locked transaction; SQLite foreign keys off while tables are rebuilt."""
    with db.engine.connect() as conn:
        sqlite = db.dialect == "sqlite"
        if sqlite:
            # Must run outside a transaction (it is a no-op inside one); batch mode copies tables.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        try:
            with conn.begin():
                if not sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                yield conn
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def _run(db: Database, fn: Any, revision: str) -> str | None:
    cfg = alembic_config(db)
    db.ping()  # an unreachable server gets its own plain message
    try:
        with _migration_connection(db) as conn:
            if fn is command.upgrade and not _revisions(conn) and _jukebot_tables_present(conn):
                raise SchemaOutOfDate(str(_schema_problem(conn)))
            cfg.attributes["connection"] = conn
            fn(cfg, revision)
            revs = _revisions(conn)
    except SchemaOutOfDate:
        raise
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseUnavailable(
            f"Migrating the database at {db.masked_url} to {revision} failed: {detail}. Nothing was changed "
            "(migrations run in one transaction). Report this message to the jukebot maintainers."
        ) from exc
    return revs[0] if revs else None


def upgrade(db: Database, revision: str = "head") -> str | None:
    """Apply migrations up to `revision`; return the revision reached."""
    return _run(db, command.upgrade, revision)


def downgrade(db: Database, revision: str) -> str | None:
    """Undo migrations down to `revision` ("base" removes every jukebot table)."""
    return _run(db, command.downgrade, revision)


def upgrade_to_head(db: Database) -> str:
    reached = upgrade(db, "head")
    assert reached is not None
    return reached


def schema_drift(db: Database) -> list[Any]:
    """Differences between db/models.py and the database (empty when the migrations match the models)."""
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, SQLModel.metadata))


def new_revision(message: str) -> Path:
    """Write a new migration script autogenerated from db/models.py (for developers).

    It compares the models with a scratch SQLite database at head; the script uses batch
    operations, which work on SQLite and PostgreSQL alike.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Database(f"sqlite:///{tmp}/scratch.db")
        try:
            if script_directory().get_heads():
                upgrade_to_head(scratch)
            numbers = [
                int(m.group(1))
                for r in script_directory().walk_revisions()
                if (m := re.match(r"(\d+)", r.revision))
            ]
            rev_id = f"{max(numbers, default=0) + 1:04d}"
            cfg = alembic_config(scratch)
            with scratch.engine.connect() as conn:
                cfg.attributes["connection"] = conn
                script = command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)
        finally:
            scratch.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def open_database(url: str | None = None, *, upgrade: bool = True) -> Database:
    """Connect to `url` (default: JUKEBOT_DATABASE_URL) and make sure the schema is current.

    With upgrade=True the Alembic migrations run up to head (what every jukebot process does on
    start); with upgrade=False a schema that is behind raises SchemaOutOfDate telling the person to
    run `jukebot db upgrade`.
    """
    if url is None:
        from db.settings import get_settings

        url = get_settings().storage.database_url
    db = Database(url)
    try:
        db.ping()
        if upgrade:
            upgrade_to_head(db)
        else:
            check_schema(db)
    except BaseException:
        db.dispose()
        raise
    return db
