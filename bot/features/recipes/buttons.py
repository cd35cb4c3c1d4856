"""The Remix button on clip posts (`jb:remix:<clip>`) and its form (`jb:remixform:<clip>`): a
modal prefilled with the clip's recipe. Both carry the clip id only, so they work after a restart."""

from __future__ import annotations

import discord

from bot.core.bot import JukeBot
from bot.core.buttons import DynamicButton, IdButton

from . import logic
from .service import Remixes

MAX_INPUT = 4000  # Discord's longest text input


class RemixButton(IdButton, DynamicButton, template=r"jb:remix:(?P<clip_id>\d+)"):
    name = "remix"

    def __init__(self, clip_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Remix",
                style=discord.ButtonStyle.secondary,
                emoji="🎛️",
                custom_id=f"jb:remix:{clip_id}",
            )
        )
        self.clip_id = clip_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(Remixes).remix_pressed(interaction, self.clip_id)


def remix_form(clip_id: int, source: logic.RemixSource, lyrics_max: int) -> discord.ui.Modal:
    """The form: artist, genre, lyrics, seed, length, filled in with the recipe (change one, keep
    the rest). Its answer comes from the recipes cog's listener, not from this object."""
    r = source.recipe
    modal = discord.ui.Modal(title=f"Remix song #{r.song_id}"[:45], custom_id=f"jb:remixform:{clip_id}")
    inputs: list[discord.ui.TextInput[discord.ui.Modal]] = [
        discord.ui.TextInput(label="Artist", custom_id="artist", default=r.artist[:100], max_length=100),
        discord.ui.TextInput(label="Genre", custom_id="genre", default=r.genre[:100], max_length=100),
        discord.ui.TextInput(
            label="Lyrics (empty: instrumental)",
            custom_id="lyrics",
            style=discord.TextStyle.paragraph,
            default=r.lyrics[:MAX_INPUT] or None,
            required=False,
            max_length=min(MAX_INPUT, max(lyrics_max, 1)),
        ),
        discord.ui.TextInput(
            label="Seed (same seed, same drafts; empty: new)",
            custom_id="seed",
            default=str(r.seed),
            required=False,
            max_length=20,
        ),
        discord.ui.TextInput(
            label="Length in seconds", custom_id="seconds", default=f"{r.seconds:g}", max_length=20
        ),
    ]
    for item in inputs:
        modal.add_item(item)
    return modal
