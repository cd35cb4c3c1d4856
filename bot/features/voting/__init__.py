"""The voting feature: the drafts post, its vote, close, reroll and choose-again buttons, and the vote
in the database."""

from __future__ import annotations

from bot.core.bot import JukeBot
from bot.features.status import StatusBoard

from .buttons import AgainButton, CloseVoteButton, RerollButton, VoteButton, drafts_view
from .service import Voting

__all__ = ["Voting", "setup"]


async def setup(bot: JukeBot) -> None:
    bot.provide(Voting(bot, bot.need(StatusBoard), drafts_view))
    bot.add_dynamic_items(VoteButton, CloseVoteButton, RerollButton, AgainButton)
