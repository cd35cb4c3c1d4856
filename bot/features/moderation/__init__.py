"""The moderation feature: `/mod` (channels, limits, daily time, cancel and retry jobs, the server's
SoundCloud playlist)."""

from __future__ import annotations

from bot.core.bot import JukeBot

from .cog import ModCog

__all__ = ["ModCog", "setup"]


async def setup(bot: JukeBot) -> None:
    await bot.add_cog(ModCog(bot))
