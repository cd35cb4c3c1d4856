"""publication lease and marker

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 16:40:00

A publication is now leased like a job (token, owner, expiry renewed by a heartbeat) and carries a
unique marker in what is sent. Rows from before have no marker: they were sent without one, so they
are never matched on the platform by their text again (publisher/state.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.add_column(sa.Column("marker", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column("lease_token", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_publications_marker"), "publications", ["marker"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_publications_marker"), table_name="publications")
    with op.batch_alter_table("publications") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
        batch.drop_column("lease_token")
        batch.drop_column("marker")
