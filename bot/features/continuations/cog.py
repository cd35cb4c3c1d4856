"""Continuing music: `/continue clip:<n>` (or `audio:` an uploaded file) and the message context
menu "Continue this clip" (the Continue button on clip posts is in `buttons.py`).

A continuation is a new song primed on the clip's stored codes, or on the uploaded audio (stored
as it came; the worker encodes it with the VQ-VAE). Uploads are checked before any download.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.autocomplete import choices
from bot.core.bot import JukeBot
from bot.errors import UserError
from bot.features.requests import queued_text

from .logic import clip_by_message, clip_id_of_message
from .service import Continuations


class ContinueCog(commands.Cog, name="Continue"):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Continue this clip", callback=self.continue_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.guild_only()
    @app_commands.command(name="continue", description="Continue a posted clip, or audio you upload.")
    @app_commands.describe(
        clip="The clip number (shown on the clip's post)",
        audio="Or upload a short audio file to continue from (WAV, MP3, Ogg, FLAC)",
        seconds="How many seconds of new music to add",
        artist="Continue in the style of this artist (default: the clip's)",
        genre="Continue in this genre (default: the clip's)",
        at="With audio: the moment of the file to continue from, e.g. 0:42 (default: its start)",
    )
    async def continue_(
        self,
        interaction: discord.Interaction[JukeBot],
        clip: int | None = None,
        audio: discord.Attachment | None = None,
        seconds: float | None = None,
        artist: str | None = None,
        genre: str | None = None,
        at: app_commands.Range[str, 1, 20] | None = None,
    ) -> None:
        continuations = self.bot.need(Continuations)
        if clip is not None and audio is not None:
            raise UserError("Continue either a clip or an uploaded file, not both at once.")
        if at is not None and audio is None:
            raise UserError("`at:` picks the moment of an uploaded file: use it together with `audio:`.")
        if clip is None and audio is None:
            raise UserError("Tell me what to continue: `clip:` with a clip number, or `audio:` with a file.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        if clip is not None:
            submitted = await continuations.continue_clip(
                interaction, clip, seconds=seconds, artist=artist, genre=genre
            )
        else:
            assert audio is not None
            submitted = await continuations.continue_upload(interaction, audio, seconds, artist, genre, at)
        await interaction.followup.send(queued_text(submitted), ephemeral=True)

    @app_commands.guild_only()
    async def continue_message(
        self, interaction: discord.Interaction[JukeBot], message: discord.Message
    ) -> None:
        continuations = self.bot.need(Continuations)
        clip_id = clip_id_of_message(message) or await self.bot.to_thread(
            clip_by_message, self.bot.db, message.id
        )
        if clip_id is None:
            raise UserError("That message is not a clip I posted. Use this on a finished clip's post.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        submitted = await continuations.continue_clip(interaction, clip_id)
        await interaction.followup.send(queued_text(submitted), ephemeral=True)

    @continue_.autocomplete("artist")
    async def artist_autocomplete(
        self, interaction: discord.Interaction[JukeBot], current: str
    ) -> list[app_commands.Choice[str]]:
        return choices(self.bot.labels.artists.complete(current))

    @continue_.autocomplete("genre")
    async def genre_autocomplete(
        self, interaction: discord.Interaction[JukeBot], current: str
    ) -> list[app_commands.Choice[str]]:
        return choices(self.bot.labels.genres.complete(current))
