"""Alembic migration scripts for jukebot's tables (run through db.migrate, not an alembic.ini)."""
