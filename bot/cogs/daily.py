"""The daily clip: at each guild's configured time (and time zone), post the most-voted clip of the
last 24 hours that was never featured to the guild's daily channel, and hand it to the publisher
for its scheduled uploads.

The job runs in the bot's APScheduler (built by publisher/scheduler.py, persisted in our database).
A fire first marks the clip featured for that day (a unique row: a double fire or a restart finds
the day taken and does nothing), then posts. Jobs reference `daily_job` by import path, so the
running bot is found through `_running`.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import discord
from discord.ext import commands

from bot import media
from bot.config import GuildSettings, all_guild_settings, guild_settings
from bot.status import describe
from bot.views.buttons import clip_view
from db import repo
from db.models import Clip, Song, utcnow

if TYPE_CHECKING:
    from bot.main import JukeBot

log = logging.getLogger("jukebot.bot.daily")

_running: dict[str, JukeBot] = {}


async def daily_job(guild_id: int) -> None:
    """The scheduled entry point (kept importable by path for the persistent job store)."""
    bot = _running.get("bot")
    if bot is None:
        log.warning("daily clip for guild %s fired with no bot running", guild_id)
        return
    cog = bot.get_cog("Daily")
    if isinstance(cog, DailyCog):
        await cog.post_daily(guild_id)


def job_id(guild_id: int) -> str:
    return f"daily:{guild_id}"


def local_day(now: datetime, tz: str) -> date:
    return now.astimezone(ZoneInfo(tz)).date()


def _pick(db: Any, guild_id: int, now: datetime, day: date) -> tuple[Clip, Song, int] | None:
    """Choose and mark the day's clip, or None (nothing to feature, or the day is taken)."""
    if repo.featured_clip(db, day) is not None:
        return None
    clip = repo.daily_pick(db, now, guild_id=guild_id)
    if clip is None or clip.id is None or not repo.mark_featured(db, clip.id, day):
        return None
    with db.read() as s:
        song = s.get(Song, clip.song_id)
    assert song is not None
    votes = repo.vote_counts(db, clip.song_id, repo.CLIP).get(None, 0)
    return clip, song, votes


class DailyCog(commands.Cog, name="Daily"):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        _running["bot"] = self.bot
        if self.bot.scheduler is None:
            return
        for gs in await self.bot.studio.run(all_guild_settings, self.bot.db, self.bot.settings):
            self.schedule_guild(gs)

    async def cog_unload(self) -> None:
        if _running.get("bot") is self.bot:
            _running.pop("bot", None)

    def schedule_guild(self, gs: GuildSettings) -> None:
        """(Re)schedule the guild's daily clip at its time and time zone; off without a channel."""
        scheduler = self.bot.scheduler
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

    async def post_daily(self, guild_id: int, now: datetime | None = None) -> discord.Message | None:
        now = now or utcnow()
        studio = self.bot.studio
        gs = await studio.run(guild_settings, self.bot.db, self.bot.settings, guild_id)
        if gs.daily_channel_id is None:
            return None
        day = local_day(now, gs.timezone)
        picked = await studio.run(_pick, self.bot.db, guild_id, now, day)
        if picked is None:
            log.info("guild %s: no daily clip for %s", guild_id, day)
            return None
        clip, song, votes = picked
        assert clip.id is not None
        bundle = await studio.run(media.clip_bundle, self.bot.storage, song, clip, studio.upload_limit(guild_id),
                                  stem=f"daily-{day.isoformat()}")
        content = (
            f"🌟 **Clip of the day — {day:%A %d %B}**\n{describe(song)} · clip #{clip.id} · "
            f"{votes} vote{'s' if votes != 1 else ''}. Press **Continue** to take it further."
        )
        msg = await studio._send_first([gs.daily_channel_id], guild_id, content, bundle, clip_view(clip.id, votes))
        if msg is None:
            await studio.notify_moderators(guild_id, f"I could not post the daily clip (clip #{clip.id}) in "
                                                     f"<#{gs.daily_channel_id}>: check my permissions there.")
        try:
            note = await studio.publish(clip.id)
            log.info("guild %s: daily clip %s: %s", guild_id, clip.id, note)
        except Exception:
            log.exception("guild %s: could not schedule the uploads of clip %s", guild_id, clip.id)
            await studio.notify_moderators(guild_id, f"The daily clip #{clip.id} could not be scheduled for upload.")
        return msg


async def setup(bot: JukeBot) -> None:
    await bot.add_cog(DailyCog(bot))
