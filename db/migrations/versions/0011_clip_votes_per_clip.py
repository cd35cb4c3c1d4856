"""clip votes per clip

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09 12:00:00

A song can have several clips (a draft chosen again), so a clip vote names its clip
(`votes.clip_id`): one vote per member per clip, one draft vote per member per song (two partial
unique indexes instead of the one constraint on song, member and stage). Existing clip votes go to
their song's first clip (the only clip there was when they were cast, or the vote's winner).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DRAFT_VOTE = sa.text("stage = 'draft'")
CLIP_VOTE = sa.text("stage = 'clip'")


def upgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.add_column(sa.Column("clip_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_votes_clip_id_clips", "clips", ["clip_id"], ["id"])
        batch.drop_constraint("uq_votes_member_song_stage", type_="unique")
        batch.create_index("ix_votes_clip_id", ["clip_id"], unique=False)
    op.execute(
        "UPDATE votes SET clip_id = (SELECT MIN(clips.id) FROM clips WHERE clips.song_id = votes.song_id) "
        "WHERE stage = 'clip'"
    )
    op.create_index(
        "uq_votes_member_song_draft",
        "votes",
        ["song_id", "user_id"],
        unique=True,
        sqlite_where=DRAFT_VOTE,
        postgresql_where=DRAFT_VOTE,
    )
    op.create_index(
        "uq_votes_member_clip",
        "votes",
        ["clip_id", "user_id"],
        unique=True,
        sqlite_where=CLIP_VOTE,
        postgresql_where=CLIP_VOTE,
    )


def downgrade() -> None:
    op.drop_index("uq_votes_member_clip", table_name="votes")
    op.drop_index("uq_votes_member_song_draft", table_name="votes")
    # Back to one clip vote per member per song: keep each member's first.
    op.execute(
        "DELETE FROM votes WHERE stage = 'clip' AND id NOT IN "
        "(SELECT MIN(v.id) FROM votes v WHERE v.stage = 'clip' GROUP BY v.song_id, v.user_id)"
    )
    with op.batch_alter_table("votes") as batch:
        batch.drop_index("ix_votes_clip_id")
        batch.drop_constraint("fk_votes_clip_id_clips", type_="foreignkey")
        batch.drop_column("clip_id")
        batch.create_unique_constraint("uq_votes_member_song_stage", ["song_id", "user_id", "stage"])
