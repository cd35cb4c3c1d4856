"""The continuations feature: `/continue`, the "Continue this clip" menu, the Continue button, and
members' uploads to continue from."""

from __future__ import annotations

from bot.core.bot import JukeBot
from bot.features.requests import Requests

from .buttons import ContinueButton, ContinueFromEndButton, ContinueFromMomentButton
from .cog import ContinueCog
from .service import Continuations

__all__ = ["Continuations", "ContinueButton", "setup"]


async def setup(bot: JukeBot) -> None:
    bot.provide(Continuations(bot, bot.need(Requests)))
    await bot.add_cog(ContinueCog(bot))
    bot.add_dynamic_items(ContinueButton, ContinueFromEndButton, ContinueFromMomentButton)
