"""Per-guild settings: a moderator's choices (the `guild_configs` row) over the global defaults.

Every reader goes through `guild_settings`, so a value set with `/mod ...` takes effect at once for
commands, the job watcher and the scheduler alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from db.database import Database
from db.models import GuildConfig
from db.settings import Settings

from .errors import UserError

_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class GuildSettings:
    guild_id: int
    drafts_channel_id: int | None
    clips_channel_id: int | None
    daily_channel_id: int | None
    mod_channel_id: int | None
    moderator_role_id: int | None
    songs_per_day: int
    max_running: int
    vote_window_minutes: float
    daily_time: str
    timezone: str
    daily_allow_unvoted: bool = False  # off: the daily clip needs at least one vote
    publish_allowed: bool = False  # may this server publish to the operator's accounts (bot owner's call)

    @property
    def daily_clock(self) -> time:
        return parse_daily_time(self.daily_time)


def parse_daily_time(value: str) -> time:
    m = _TIME.match(value.strip())
    if not m or not (0 <= int(m[1]) <= 23 and 0 <= int(m[2]) <= 59):
        raise UserError(
            f"`{value}` is not a time of day. Write it as HH:MM on a 24-hour clock, e.g. `18:30`."
        )
    return time(int(m[1]), int(m[2]))


def parse_timezone(value: str) -> str:
    name = value.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(
            f"`{value}` is not a time zone I know. Use a name like `Europe/Paris`, `America/New_York` or `UTC`."
        ) from None
    return name


def merge(settings: Settings, guild_id: int, row: GuildConfig | None) -> GuildSettings:
    def pick(name: str, default: Any) -> Any:
        value = getattr(row, name, None) if row is not None else None
        return default if value is None else value

    return GuildSettings(
        guild_id=guild_id,
        drafts_channel_id=row.drafts_channel_id if row else None,
        clips_channel_id=row.clips_channel_id if row else None,
        daily_channel_id=row.daily_channel_id if row else None,
        mod_channel_id=row.mod_channel_id if row else None,
        moderator_role_id=row.moderator_role_id if row else None,
        songs_per_day=int(pick("songs_per_day", settings.limits.songs_per_day)),
        max_running=int(
            row.max_running if row and row.max_running is not None else settings.limits.max_running_per_guild
        ),
        vote_window_minutes=float(pick("vote_window_minutes", settings.schedule.vote_window_minutes)),
        daily_time=str(pick("daily_time", settings.schedule.daily_time)),
        timezone=str(pick("timezone", settings.schedule.timezone)),
        daily_allow_unvoted=bool(row.daily_allow_unvoted) if row else False,
        publish_allowed=(
            row.publish_allowed
            if row is not None and row.publish_allowed is not None
            else guild_id in settings.publish.guilds
        ),
    )


def guild_settings(db: Database, settings: Settings, guild_id: int) -> GuildSettings:
    with db.read() as s:
        row = s.get(GuildConfig, guild_id)
    return merge(settings, guild_id, row)


def all_guild_settings(db: Database, settings: Settings) -> list[GuildSettings]:
    from sqlmodel import select

    with db.read() as s:
        rows = s.exec(select(GuildConfig)).all()
    return [merge(settings, r.guild_id, r) for r in rows]


UPDATABLE = {
    "drafts_channel_id",
    "clips_channel_id",
    "daily_channel_id",
    "mod_channel_id",
    "moderator_role_id",
    "songs_per_day",
    "max_running",
    "vote_window_minutes",
    "daily_time",
    "timezone",
    "daily_allow_unvoted",
    "publish_allowed",
}


def update_guild(db: Database, settings: Settings, guild_id: int, **changes: Any) -> GuildSettings:
    """Store a moderator's changes (only the given fields) and return the merged result."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not guild settings: {sorted(unknown)}")
    with db.write() as s:
        row = s.get(GuildConfig, guild_id, with_for_update=True)
        if row is None:
            row = GuildConfig(guild_id=guild_id)
        for name, value in changes.items():
            setattr(row, name, value)
        s.add(row)
        s.flush()
        merged = merge(settings, guild_id, row)
    return merged
