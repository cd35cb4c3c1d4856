"""per-server publishing accounts and SoundCloud playlists

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-08 10:00:00

- `oauth_tokens.guild_id`: a login per provider AND account: 0 is the operator's shared account
  (every row stored before), another id a server's own (`jukebot publish auth … --guild ID`).
- `publications.account_guild_id`: whose login sent it; `publications.playlist_id`: the server's
  SoundCloud playlist the track was added to.
- `soundcloud_playlists`: one per server.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _primary_key(columns: list[str]) -> None:
    """Replace the table's primary key. SQLite's is unnamed: batch mode rebuilds the table with the new
    one; PostgreSQL's is named by the default convention and dropped first."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("oauth_tokens", recreate="always" if sqlite else "auto") as batch:
        if not sqlite:
            batch.drop_constraint("oauth_tokens_pkey", type_="primary")
        batch.create_primary_key("oauth_tokens_pkey", columns)


def upgrade() -> None:
    with op.batch_alter_table("oauth_tokens") as batch:
        batch.add_column(sa.Column("guild_id", sa.BigInteger(), nullable=False, server_default="0"))
    _primary_key(["provider", "guild_id"])
    with op.batch_alter_table("publications") as batch:
        batch.add_column(sa.Column("account_guild_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("playlist_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.create_table(
        "soundcloud_playlists",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("account_guild_id", sa.BigInteger(), nullable=False),
        sa.Column("playlist_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("guild_name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("guild_id"),
    )


def downgrade() -> None:
    op.drop_table("soundcloud_playlists")
    with op.batch_alter_table("publications") as batch:
        batch.drop_column("playlist_id")
        batch.drop_column("account_guild_id")
    # Servers' own logins cannot live in a table with one row per provider: only the shared ones stay.
    op.execute("DELETE FROM oauth_tokens WHERE guild_id <> 0")
    _primary_key(["provider"])
    with op.batch_alter_table("oauth_tokens") as batch:
        batch.drop_column("guild_id")
