"""The clips feature: the clip post, the clip vote, the Publish button and the daily clip."""

from __future__ import annotations

from functools import partial

from bot.core.bot import JukeBot
from bot.features.status import StatusBoard

from . import captions
from .buttons import ClipVoteButton, PublishButton, clip_view
from .cog import DailyCog
from .owner import OwnerCog
from .service import Clips

__all__ = ["Clips", "setup"]


async def setup(bot: JukeBot) -> None:
    from publisher.scheduler import set_caption_gate

    bot.provide(Clips(bot, bot.need(StatusBoard), clip_view))
    # Every clip the scheduler sends to the shared account passes the same caption check as Publish.
    set_caption_gate(partial(captions.refusal, bot.db, bot.settings))
    await bot.add_cog(DailyCog(bot))
    await bot.add_cog(OwnerCog(bot))
    bot.add_dynamic_items(ClipVoteButton, PublishButton)
