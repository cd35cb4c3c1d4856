"""timed lyrics of a clip and the early-listening preview of a song

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-08 12:00:00

`clips.lrc_key` and `clips.alignment_key`: the clip's timed lyrics (LRC) and its character
alignment (`alignment.json`) in the storage, for lyric models (null otherwise).
`songs.preview_message_id`: the Discord message with the level-1 preview posted while level 0
renders (null: none posted, or already replaced by the clip), so a restarted bot never posts it twice.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clips") as batch:
        batch.add_column(sa.Column("lrc_key", sa.String(), nullable=True))
        batch.add_column(sa.Column("alignment_key", sa.String(), nullable=True))
    with op.batch_alter_table("songs") as batch:
        batch.add_column(sa.Column("preview_message_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("songs") as batch:
        batch.drop_column("preview_message_id")
    with op.batch_alter_table("clips") as batch:
        batch.drop_column("alignment_key")
        batch.drop_column("lrc_key")
