"""encrypt oauth tokens

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 17:00:00

The X/SoundCloud logins were stored in plain text. Encrypt every plain value with the token key
(JUKEBOT_TOKEN_KEY, else the key beside the data: db/secrets.py); downgrading decrypts them again.
Values already encrypted are left alone, so running it on a partly encrypted table is safe.
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from db.secrets import TokenCipher, token_cipher
from db.settings import get_settings

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOKENS = sa.table(
    "oauth_tokens",
    sa.column("provider", sa.String),
    sa.column("access_token", sa.String),
    sa.column("refresh_token", sa.String),
)


def _cipher(bind: sa.engine.Connection) -> TokenCipher:
    url = bind.engine.url
    file = url.database if url.get_backend_name() == "sqlite" else None
    sqlite_path = Path(file) if file and file != ":memory:" and not file.startswith("file:") else None
    key = get_settings().publish.token_key
    return token_cipher(sqlite_path, key.get_secret_value() if key is not None else None)


def _rewrite(change: str) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(TOKENS.c.provider, TOKENS.c.access_token, TOKENS.c.refresh_token)).all()
    if not rows:
        return  # no login stored: no key needed yet
    box = _cipher(bind)
    convert = box.encrypt if change == "encrypt" else box.decrypt
    for provider, access, refresh in rows:
        new_access, new_refresh = convert(access), convert(refresh)
        if (new_access, new_refresh) != (access, refresh):
            bind.execute(
                TOKENS.update()
                .where(TOKENS.c.provider == provider)
                .values(access_token=new_access, refresh_token=new_refresh)
            )


def upgrade() -> None:
    _rewrite("encrypt")


def downgrade() -> None:
    _rewrite("decrypt")
