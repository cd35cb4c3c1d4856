"""OAuth tokens kept in our database (table `oauth_tokens`), one row per provider ("soundcloud", "x")
and account: `guild_id` SHARED (0) is the operator's account, another id a server's own
(publisher/accounts.py decides which one a server publishes with).

Refresh tokens are single use on SoundCloud (OAuth 2.1) and X: after a refresh the old one is dead.
So a refresh is: call the token endpoint, COMMIT the new pair, and only then use the access token.
If two processes refresh at once, the platform accepts one; the other gets `invalid_grant`, re-reads
the row, finds the newer token its neighbour stored, and uses that. The one unrecoverable case is a
crash between the platform's answer and our commit: the new refresh token is lost and a person must
run `jukebot publish auth <provider> [--guild ID]` again (nothing can be done about it client-side).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlmodel import col, select

from db.database import Database
from db.models import OAuthToken, utcnow
from db.secrets import SecretsError, TokenCipher, token_cipher
from db.settings import get_settings
from publisher.errors import Outcome, PublishError
from publisher.oauth import OAuthClient, TokenSet

REFRESH_SKEW = timedelta(seconds=120)  # refresh this long before the stated expiry
NEIGHBOUR_WAITS = (
    0.2,
    0.5,
    1.0,
    0.0,
)  # after invalid_grant: re-read the row, waiting this long between looks


SHARED = 0  # oauth_tokens.guild_id of the operator's own account, shared by the allowed servers


@dataclass(frozen=True)
class StoredToken:
    provider: str
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scope: str
    account: str | None
    updated_at: datetime
    guild_id: int = SHARED

    def fresh(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        return self.expires_at is None or self.expires_at - REFRESH_SKEW > now


def cipher(db: Database) -> TokenCipher:
    """How this database's logins are encrypted (key: JUKEBOT_TOKEN_KEY, else the one beside the data)."""
    key = get_settings().publish.token_key
    return token_cipher(db.sqlite_file, key.get_secret_value() if key is not None else None)


def _stored(row: OAuthToken, db: Database) -> StoredToken:
    box = cipher(db)
    what = f"The stored {row.provider} login"
    access = box.decrypt(row.access_token, what=what)
    assert access is not None
    return StoredToken(
        provider=row.provider,
        access_token=access,
        refresh_token=box.decrypt(row.refresh_token, what=what),
        expires_at=row.expires_at,
        scope=row.scope,
        account=row.account,
        updated_at=row.updated_at,
        guild_id=row.guild_id,
    )


def _where(provider: str, guild_id: int) -> Any:
    return (col(OAuthToken.provider) == provider) & (col(OAuthToken.guild_id) == guild_id)


def login_command(provider: str, guild_id: int = SHARED) -> str:
    command = "x --oauth2" if provider == "x" else provider
    return f"jukebot publish auth {command}" + (f" --guild {guild_id}" if guild_id != SHARED else "")


def load_token(db: Database, provider: str, guild_id: int = SHARED) -> StoredToken | None:
    with db.read() as session:
        row = session.exec(select(OAuthToken).where(_where(provider, guild_id))).first()
        if row is None:
            return None
        try:
            return _stored(row, db)
        except SecretsError as exc:
            raise PublishError(f"{exc} (`{login_command(provider, guild_id)}`)", Outcome.auth) from None


def has_token(db: Database, provider: str, guild_id: int) -> bool:
    """Whether a login is stored for this account (without decrypting it)."""
    with db.read() as session:
        return session.exec(select(OAuthToken.provider).where(_where(provider, guild_id))).first() is not None


def save_token(
    db: Database,
    provider: str,
    tokens: TokenSet,
    *,
    account: str | None = None,
    guild_id: int = SHARED,
) -> StoredToken:
    """Insert or replace the account's tokens (committed when this returns)."""
    now = utcnow()
    with db.write() as session:
        row = session.exec(select(OAuthToken).where(_where(provider, guild_id))).first()
        box = cipher(db)
        access = box.encrypt(tokens.access_token)
        assert access is not None
        if row is None:
            row = OAuthToken(provider=provider, guild_id=guild_id, access_token=access, created_at=now)
        row.access_token = access
        # Some refresh answers omit the refresh token when it did not rotate; keep the one we have then.
        row.refresh_token = box.encrypt(tokens.refresh_token) or box.encrypt(row.refresh_token)
        row.expires_at = tokens.expires_at
        row.scope = tokens.scope
        row.token_type = tokens.token_type
        if account is not None:
            row.account = account
        row.updated_at = now
        session.add(row)
        session.flush()
        return _stored(row, db)


def delete_token(db: Database, provider: str, guild_id: int = SHARED) -> bool:
    with db.write() as session:
        row = session.exec(select(OAuthToken).where(_where(provider, guild_id))).first()
        if row is None:
            return False
        session.delete(row)
        return True


def set_account(db: Database, provider: str, account: str, guild_id: int = SHARED) -> None:
    with db.write() as session:
        session.execute(update(OAuthToken).where(_where(provider, guild_id)).values(account=account))


class TokenManager:
    """Hands out a valid access token for one account of one provider, refreshing (and storing) when
    needed. `guild_id`: SHARED for the operator's account, a server's id for its own."""

    def __init__(
        self,
        db: Database,
        provider: str,
        oauth: OAuthClient,
        http: httpx.AsyncClient,
        *,
        label: str,
        guild_id: int = SHARED,
    ) -> None:
        self.db = db
        self.provider = provider
        self.guild_id = guild_id
        self.oauth = oauth
        self.http = http
        self.label = label  # "SoundCloud", "X"
        self._lock = asyncio.Lock()

    @property
    def reauth_hint(self) -> str:
        # X's 1.0a keys need no login; a server's own account is logged in with --guild.
        return f"run `{login_command(self.provider, self.guild_id)}` to log in"

    async def access_token(self, *, force_refresh: bool = False, rejected: str | None = None) -> str:
        """A usable access token. `force_refresh` after the platform refused one (401); `rejected` is
        that token, so a token another process already replaced is simply used instead of refreshed."""
        async with self._lock:
            token = await asyncio.to_thread(load_token, self.db, self.provider, self.guild_id)
            if token is None:
                raise PublishError(f"{self.label} is not authorised yet: {self.reauth_hint}.", Outcome.auth)
            if rejected is not None and token.access_token != rejected and token.fresh():
                return token.access_token
            if token.fresh() and not force_refresh:
                return token.access_token
            return await self._refresh(token)

    async def _refresh(self, token: StoredToken) -> str:
        if not token.refresh_token:
            raise PublishError(
                f"The {self.label} login has expired and has no refresh token: {self.reauth_hint}.",
                Outcome.auth,
            )
        try:
            tokens = await self.oauth.refresh(self.http, token.refresh_token)
        except PublishError as exc:
            if exc.outcome is not Outcome.auth:
                raise
            # Perhaps another process used this single-use refresh token a moment ago; its answer reaches
            # the database a moment after the platform answered it, so look a few times.
            for delay in NEIGHBOUR_WAITS:
                latest = await asyncio.to_thread(load_token, self.db, self.provider, self.guild_id)
                if latest is not None and latest.refresh_token != token.refresh_token and latest.fresh():
                    return latest.access_token
                await asyncio.sleep(delay)
            raise PublishError(
                f"{self.label} refused our saved login ({exc.message}): {self.reauth_hint}.",
                Outcome.auth,
                status=exc.status,
            ) from exc
        # Store first: the old refresh token is dead now, and this one is the only way back in.
        await asyncio.to_thread(save_token, self.db, self.provider, tokens, guild_id=self.guild_id)
        return tokens.access_token
