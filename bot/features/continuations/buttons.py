"""The Continue button on clip posts and daily posts (`jb:continue:<clip>`)."""

from __future__ import annotations

import discord

from bot.core.bot import JukeBot
from bot.core.buttons import DynamicButton, IdButton

from .service import Continuations


class ContinueButton(IdButton, DynamicButton, template=r"jb:continue:(?P<clip_id>\d+)"):
    name = "continue"

    def __init__(self, clip_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Continue",
                style=discord.ButtonStyle.primary,
                emoji="➕",
                custom_id=f"jb:continue:{clip_id}",
            )
        )
        self.clip_id = clip_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(Continuations).continue_pressed(interaction, self.clip_id)
