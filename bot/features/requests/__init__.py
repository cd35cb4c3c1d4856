"""The requests feature: `/generate`, quotas and the guild's cap, and starting waiting songs."""

from __future__ import annotations

from bot.core.bot import JukeBot
from bot.features.status import StatusBoard

from .cog import GenerateCog
from .service import Requests, Submitted, queued_text

__all__ = ["Requests", "Submitted", "queued_text", "setup"]


async def setup(bot: JukeBot) -> None:
    bot.provide(Requests(bot, bot.need(StatusBoard)))
    await bot.add_cog(GenerateCog(bot))
