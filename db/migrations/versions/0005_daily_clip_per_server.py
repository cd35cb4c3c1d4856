"""daily clip per server, unvoted daily clips opt-in, request keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 17:15:00

`clips.featured_on` was unique across every server, so with two servers only one got its daily
clip. The day's clip is now a row of `daily_clips` keyed by (server, day). Existing featured clips
move there with their song's server. `guild_configs.daily_allow_unvoted` lets moderators allow a
clip nobody voted for; `songs.request_key` makes a doubled request find the song it already made.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "daily_clips",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("day", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("clip_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clip_id"], ["clips.id"]),
        sa.PrimaryKeyConstraint("guild_id", "day"),
        sa.UniqueConstraint("clip_id"),
    )
    op.execute(
        "INSERT INTO daily_clips (guild_id, day, clip_id, created_at) "
        "SELECT COALESCE(songs.guild_id, 0), clips.featured_on, clips.id, clips.created_at "
        "FROM clips JOIN songs ON songs.id = clips.song_id WHERE clips.featured_on IS NOT NULL"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("clips_featured_on_key", "clips", type_="unique")
    with op.batch_alter_table("clips") as batch:
        batch.drop_column("featured_on")
    with op.batch_alter_table("guild_configs") as batch:
        batch.add_column(sa.Column("daily_allow_unvoted", sa.Boolean(), nullable=True))
    with op.batch_alter_table("songs") as batch:
        batch.add_column(sa.Column("request_key", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.create_unique_constraint("uq_songs_request_key", ["request_key"])


def downgrade() -> None:
    with op.batch_alter_table("songs") as batch:
        batch.drop_constraint("uq_songs_request_key", type_="unique")
        batch.drop_column("request_key")
    with op.batch_alter_table("guild_configs") as batch:
        batch.drop_column("daily_allow_unvoted")
    with op.batch_alter_table("clips") as batch:
        batch.add_column(sa.Column("featured_on", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    # One server's days survive the way back (the old schema had one clip per day in all).
    op.execute(
        "UPDATE clips SET featured_on = (SELECT MIN(d.day) FROM daily_clips d WHERE d.clip_id = clips.id "
        "AND NOT EXISTS (SELECT 1 FROM daily_clips e WHERE e.day = d.day AND e.clip_id < d.clip_id))"
    )
    with op.batch_alter_table("clips") as batch:
        batch.create_unique_constraint("clips_featured_on_key", ["featured_on"])
    op.drop_table("daily_clips")
