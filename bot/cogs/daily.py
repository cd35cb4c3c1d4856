"""Wires the daily clip (bot/daily.py) into the bot's scheduler: one cron job per guild with a
daily channel, rescheduled when a moderator changes the channel, the time or the time zone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord.ext import commands

from bot import daily
from bot.config import GuildSettings, all_guild_settings

if TYPE_CHECKING:
    from bot.main import JukeBot


class DailyCog(commands.Cog, name="Daily"):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        daily.register(self.bot)
        for gs in await self.bot.studio.run(all_guild_settings, self.bot.db, self.bot.settings):
            self.schedule_guild(gs)

    async def cog_unload(self) -> None:
        daily.register(None)

    def schedule_guild(self, gs: GuildSettings) -> None:
        daily.schedule_guild(self.bot.scheduler, gs)


async def setup(bot: JukeBot) -> None:
    await bot.add_cog(DailyCog(bot))
