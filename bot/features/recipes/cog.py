"""Answers submitted Remix forms from their values alone (see service.py): a form opened before a
restart is still answered after it."""

from __future__ import annotations

import discord
from discord.ext import commands

from bot.core.bot import JukeBot
from bot.core.replies import guarded

from . import logic
from .service import Remixes, form_clip_id


class RecipesCog(commands.Cog, name="Recipes"):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[JukeBot]) -> None:
        clip_id = form_clip_id(interaction)
        if clip_id is None:
            return
        values = logic.form_values(interaction.data or {})  # type: ignore[arg-type]
        remixes = self.bot.need(Remixes)
        await guarded(
            interaction,
            f"remix form (clip {clip_id})",
            lambda: remixes.remix_submitted(interaction, clip_id, values),
        )
