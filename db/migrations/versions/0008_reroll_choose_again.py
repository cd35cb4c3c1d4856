"""rerolls and second upsamples

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00

- `songs.rerolled_from_song_id`: a reroll (same recipe, new seed) names the song whose vote its
  drafts replace; the family tree follows it.
- `clips.draft_id`: a song may have one clip per draft (the vote's winner, then drafts chosen again),
  so `clips.song_id` is no longer unique; (song_id, draft_id) is. Existing clips are the winner's.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's copy of the old table names its unnamed UNIQUE(song_id) through this convention.
SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_unique_name() -> str:
    return "clips_song_id_key" if op.get_bind().dialect.name == "postgresql" else "uq_clips_song_id"


def upgrade() -> None:
    with op.batch_alter_table("songs") as batch:
        batch.add_column(sa.Column("rerolled_from_song_id", sa.Integer(), nullable=True))
        batch.create_index("ix_songs_rerolled_from_song_id", ["rerolled_from_song_id"])
    with op.batch_alter_table("clips") as batch:
        batch.add_column(sa.Column("draft_id", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE clips SET draft_id = (SELECT songs.winner_draft_id FROM songs WHERE songs.id = clips.song_id)"
    )
    with op.batch_alter_table("clips", naming_convention=SQLITE_NAMES) as batch:
        batch.drop_constraint(_old_unique_name(), type_="unique")
        batch.create_unique_constraint("uq_clips_song_draft", ["song_id", "draft_id"])
        batch.create_foreign_key("fk_clips_draft_id_drafts", "drafts", ["draft_id"], ["id"])
        batch.create_index("ix_clips_song_id", ["song_id"])


def downgrade() -> None:
    # The way back keeps one clip per song: the first one made (the vote's winner).
    op.execute("DELETE FROM clips WHERE id NOT IN (SELECT MIN(id) FROM clips GROUP BY song_id)")
    with op.batch_alter_table("clips", naming_convention=SQLITE_NAMES) as batch:
        batch.drop_index("ix_clips_song_id")
        batch.drop_constraint("fk_clips_draft_id_drafts", type_="foreignkey")
        batch.drop_constraint("uq_clips_song_draft", type_="unique")
        batch.create_unique_constraint(_old_unique_name(), ["song_id"])
        batch.drop_column("draft_id")
    with op.batch_alter_table("songs") as batch:
        batch.drop_index("ix_songs_rerolled_from_song_id")
        batch.drop_column("rerolled_from_song_id")
