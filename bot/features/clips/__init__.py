"""The clips feature: the clip post, the clip vote, the Publish button and the daily clip."""

from __future__ import annotations

from bot.core.bot import JukeBot
from bot.features.status import StatusBoard

from .buttons import ClipVoteButton, PublishButton, clip_view
from .cog import DailyCog
from .owner import OwnerCog
from .service import Clips

__all__ = ["Clips", "setup"]


async def setup(bot: JukeBot) -> None:
    bot.provide(Clips(bot, bot.need(StatusBoard), clip_view))
    await bot.add_cog(DailyCog(bot))
    await bot.add_cog(OwnerCog(bot))
    bot.add_dynamic_items(ClipVoteButton, PublishButton)
