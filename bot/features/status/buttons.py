"""The Cancel button on a song's status message (`jb:cancel:<song>`)."""

from __future__ import annotations

import discord

from bot.core.bot import JukeBot
from bot.core.buttons import DynamicButton, IdButton

from .board import StatusBoard


class CancelButton(IdButton, DynamicButton, template=r"jb:cancel:(?P<song_id>\d+)"):
    name = "cancel"

    def __init__(self, song_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel", style=discord.ButtonStyle.danger, emoji="🛑", custom_id=f"jb:cancel:{song_id}"
            )
        )
        self.song_id = song_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(StatusBoard).cancel_pressed(interaction, self.song_id)


def status_view(song_id: int, show_cancel: bool) -> discord.ui.View | None:
    if not show_cancel:
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(song_id))
    return view
