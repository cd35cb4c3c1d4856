"""Answers to a member: ephemeral, whether or not the interaction was answered already, and every
failure of a handler turned into a plain sentence (with an error id for bugs)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.errors import explain


async def reply(interaction: discord.Interaction[Any], message: str) -> None:
    """An ephemeral answer, whether or not the interaction was already answered or deferred."""
    if interaction.response.is_done():
        await interaction.followup.send(message, ephemeral=True)
    else:
        await interaction.response.send_message(message, ephemeral=True)


async def guarded(
    interaction: discord.Interaction[Any], where: str, action: Callable[[], Awaitable[None]]
) -> None:
    """Run a button's action; any failure becomes a plain answer (with an error id for bugs)."""
    try:
        await action()
    except Exception as exc:
        message = explain(exc, where=where)
        with contextlib.suppress(discord.HTTPException):
            await reply(interaction, message)
