"""The status feature: one message per song, edited as it moves, with its Cancel button."""

from __future__ import annotations

from bot.core.bot import JukeBot

from .board import StatusBoard
from .buttons import CancelButton, status_view

__all__ = ["StatusBoard", "setup"]


async def setup(bot: JukeBot) -> None:
    bot.provide(StatusBoard(bot, status_view))
    bot.add_dynamic_items(CancelButton)
