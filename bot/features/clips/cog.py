"""Wires the daily clip (daily.py) into the bot's scheduler: one cron job per guild with a daily
channel, rescheduled when a moderator changes the channel, the time or the time zone."""

from __future__ import annotations

from discord.ext import commands

from bot import daily as entry
from bot.config import GuildSettings, all_guild_settings
from bot.core.bot import JukeBot

from . import daily


class DailyCog(commands.Cog, name="Daily"):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        entry.register(self.post_daily)
        for gs in await self.bot.to_thread(all_guild_settings, self.bot.db, self.bot.settings):
            self.schedule_guild(gs)

    async def cog_unload(self) -> None:
        entry.register(None)

    async def post_daily(self, guild_id: int) -> object:
        return await daily.post_daily(self.bot, guild_id)

    def schedule_guild(self, gs: GuildSettings) -> None:
        daily.schedule_guild(self.bot.scheduler, gs)
