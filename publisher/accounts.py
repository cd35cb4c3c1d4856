"""Which X/SoundCloud account a server publishes with: its own, or the operator's shared one.

- A server's OWN account is a login stored under its id (`jukebot publish auth soundcloud --guild ID`,
  run by the operator): its clips go there. Nothing else of the operator's is involved.
- Otherwise the operator's SHARED account (a login stored under guild 0; for X also the OAuth 1.0a
  keys of the settings), and only where the bot's owner allowed it (`/owner publish allow`, or
  JUKEBOT_PUBLISH_GUILDS): it is the operator's page that every allowed server writes on.
- The owner's explicit deny (`/owner publish deny`) stops publishing from that server altogether.

Captions are moderated by default whenever a clip would go out on the shared account
(`caption_moderation_on`): a member of one server otherwise writes on a page others read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from db.database import Database
from db.models import GuildConfig
from db.settings import Settings
from publisher.tokens import SHARED, has_token


@dataclass(frozen=True)
class Account:
    provider: str  # x | soundcloud
    guild_id: int  # oauth_tokens.guild_id: SHARED (the operator's) or the server's own

    @property
    def shared(self) -> bool:
        return self.guild_id == SHARED


def owner_word(db: Database, guild_id: int) -> bool | None:
    """The bot owner's `/owner publish` choice for this server (None: never said)."""
    with db.read() as s:
        row = s.get(GuildConfig, guild_id)
    return row.publish_allowed if row is not None else None


def shared_allowed(db: Database, settings: Settings, guild_id: int) -> bool:
    """May this server publish to the operator's shared account: the owner's word, else the setting."""
    word = owner_word(db, guild_id)
    return word if word is not None else guild_id in settings.publish.guilds


def account_for(db: Database, settings: Settings, provider: str, guild_id: int | None) -> Account | None:
    """The account this server's clips go to on `provider`, or None when it may not publish there.
    Blocking (database reads)."""
    if guild_id is None or guild_id == SHARED:
        return None  # a clip from no server belongs to nobody's page
    if owner_word(db, guild_id) is False:
        return None
    if has_token(db, provider, guild_id):
        return Account(provider, guild_id)
    if shared_allowed(db, settings, guild_id):
        return Account(provider, SHARED)
    return None


def accounts_for_guild(
    db: Database, settings: Settings, guild_id: int | None, platforms: Iterable[str]
) -> dict[str, Account]:
    """Per platform (of `platforms`), the account the server publishes with; platforms it may not
    publish to are left out."""
    found = {p: account_for(db, settings, p, guild_id) for p in platforms}
    return {p: a for p, a in found.items() if a is not None}


def caption_moderation_on(settings: Settings, accounts: Iterable[Account]) -> bool:
    """The operator's explicit setting, else on whenever one of the accounts is the shared one."""
    if settings.publish.caption_moderation is not None:
        return settings.publish.caption_moderation
    return any(a.shared for a in accounts)


def not_allowed_text(guild_id: int | None) -> str:
    return (
        "publishing from this server is off: it has no account of its own for this platform, and the "
        "bot's owner has not allowed it to use the shared one (`/owner publish allow`, or "
        f"`jukebot publish auth … --guild {guild_id}` for its own account)."
    )
