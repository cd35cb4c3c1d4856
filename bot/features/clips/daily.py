"""The daily clip: at each guild's configured time (and time zone), post the most-voted clip of the
last 24 hours that was never featured to the guild's daily channel, and hand it to the publisher
for its scheduled uploads.

The job runs in the bot's APScheduler (built by publisher/scheduler.py, persisted in our database).
A fire first marks the clip featured for that day (a unique row: a double fire or a restart finds
the day taken and does nothing), then posts. The job store keeps the entry point `bot.daily:daily_job`
by its import path; the clips cog registers `post_daily` there.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import discord

from bot.config import GuildSettings, guild_settings
from bot.core import media
from bot.core.bot import JukeBot
from bot.core.text import describe
from bot.daily import daily_job
from db import repo
from db.database import Database
from db.models import Clip, Song, utcnow

from .buttons import clip_view
from .service import Clips, may_publish

log = logging.getLogger("jukebot.bot.daily")


def job_id(guild_id: int) -> str:
    return f"daily:{guild_id}"


def local_day(now: datetime, tz: str) -> date:
    return now.astimezone(ZoneInfo(tz)).date()


def schedule_guild(scheduler: Any, gs: GuildSettings) -> None:
    """(Re)schedule the guild's daily clip at its time and time zone; off without a daily channel."""
    if scheduler is None:
        return
    from apscheduler.triggers.cron import CronTrigger

    if gs.daily_channel_id is None:
        if scheduler.get_job(job_id(gs.guild_id)) is not None:
            scheduler.remove_job(job_id(gs.guild_id))
        return
    at = gs.daily_clock
    scheduler.add_job(
        daily_job,
        CronTrigger(hour=at.hour, minute=at.minute, timezone=ZoneInfo(gs.timezone)),
        args=[gs.guild_id],
        id=job_id(gs.guild_id),
        name=f"daily clip for guild {gs.guild_id}",
        replace_existing=True,
        coalesce=True,
        misfire_grace_time=6 * 3600,  # a bot down at the time still posts when it comes back that day
        max_instances=1,
    )


def _pick(
    db: Database, guild_id: int, now: datetime, day: date, allow_unvoted: bool = False
) -> tuple[Clip, Song, int] | None:
    """Choose and mark the server's clip of the day, or None (nothing to feature, or the day is
    taken). A clip nobody voted for only when the moderators allow it."""
    if repo.featured_clip(db, guild_id, day) is not None:
        return None
    clip = repo.daily_pick(db, now, guild_id=guild_id, min_votes=0 if allow_unvoted else 1)
    if clip is None or clip.id is None or not repo.mark_featured(db, clip.id, day):
        return None
    with db.read() as s:
        song = s.get(Song, clip.song_id)
    assert song is not None
    votes = repo.clip_votes(db, clip.id)
    return clip, song, votes


async def post_daily(bot: JukeBot, guild_id: int, now: datetime | None = None) -> discord.Message | None:
    """Post the guild's clip of the day and schedule its uploads; None when there is nothing to do."""
    now = now or utcnow()
    gs = await bot.to_thread(guild_settings, bot.db, bot.settings, guild_id)
    if gs.daily_channel_id is None:
        return None
    day = local_day(now, gs.timezone)
    picked = await bot.to_thread(_pick, bot.db, guild_id, now, day, gs.daily_allow_unvoted)
    if picked is None:
        log.info("guild %s: no daily clip for %s", guild_id, day)
        return None
    clip, song, votes = picked
    assert clip.id is not None
    content = (
        f"🌟 **Clip of the day — {day:%A %d %B}**\n{describe(song)} · clip #{clip.id} · "
        f"{votes} vote{'s' if votes != 1 else ''}. Press **Continue** to take it further."
    )
    bundle = partial(media.clip_bundle, bot.storage, song, clip, stem=f"daily-{day.isoformat()}")
    view = clip_view(clip.id, votes, publish=await may_publish(bot, guild_id))
    msg = await bot.poster.send_first([gs.daily_channel_id], guild_id, content, bundle, view)
    if msg is None:
        await bot.poster.notify_moderators(
            guild_id,
            f"I could not post the daily clip (clip #{clip.id}) in "
            f"<#{gs.daily_channel_id}>: please check my permissions there.",
        )
    try:
        note = await bot.need(Clips).publish(clip.id, guild_id=guild_id)
        log.info("guild %s: daily clip %s: %s", guild_id, clip.id, note)
    except Exception:
        log.exception("guild %s: could not schedule the uploads of clip %s", guild_id, clip.id)
        await bot.poster.notify_moderators(
            guild_id, f"The daily clip #{clip.id} could not be scheduled for upload."
        )
    return msg
