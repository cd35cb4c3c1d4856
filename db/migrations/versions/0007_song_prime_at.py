"""a continuation's moment: songs.prime_at

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 20:00:00

`songs.prime_at`: where the new music of a continuation starts, in seconds of its parent clip (the
song keeps the clip up to it) or of the member's uploaded file (the part used ends there); null:
from the clip's end (every continuation before this revision).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("songs") as batch:
        batch.add_column(sa.Column("prime_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("songs") as batch:
        batch.drop_column("prime_at")
