"""the bot owner's per-server publishing allowance

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 18:00:00

`guild_configs.publish_allowed`: set by the bot's owner with `/owner publish` (true: this server's
moderators may publish to the operator's X/SoundCloud account; false: they may not, whatever
`JUKEBOT_PUBLISH_GUILDS` says; null: the setting decides).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("guild_configs") as batch:
        batch.add_column(sa.Column("publish_allowed", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guild_configs") as batch:
        batch.drop_column("publish_allowed")
