"""The info feature: `/queue`, `/song`, `/top`, `/me`, `/help`."""

from __future__ import annotations

from bot.core.bot import JukeBot

from .cog import InfoCog

__all__ = ["InfoCog", "setup"]


async def setup(bot: JukeBot) -> None:
    await bot.add_cog(InfoCog(bot))
