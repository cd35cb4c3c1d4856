"""Continuing music: `/continue clip:<n>` (or `audio:` an uploaded file) and the message context
menu "Continue this clip" (the Continue button on clip posts is in `buttons.py`).

A continuation is a new song primed on the clip's stored codes, or on the uploaded audio (stored
as it came; the worker encodes it with the VQ-VAE). Uploads are checked before any download.
`at:` is where the new music starts: the song keeps the clip up to it, or uses the part of the
file just before it. The moment modal of the Continue button is answered here too
(`on_interaction`), so one opened before a restart still works.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.autocomplete import choices
from bot.core.bot import JukeBot
from bot.core.replies import guarded
from bot.errors import UserError
from bot.features.requests import queued_text

from .buttons import MODAL_ID, MOMENT_INPUT, offer
from .logic import clip_by_message, clip_id_of_message, modal_value
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
        at="Where the new music starts, e.g. 0:42 (default: the clip's end, or a file's first seconds)",
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
        if clip is None and audio is None:
            raise UserError("Tell me what to continue: `clip:` with a clip number, or `audio:` with a file.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        if clip is not None:
            submitted = await continuations.continue_clip(
                interaction, clip, seconds=seconds, artist=artist, genre=genre, at=at
            )
        else:
            assert audio is not None
            submitted = await continuations.continue_upload(interaction, audio, seconds, artist, genre, at)
        await interaction.followup.send(queued_text(submitted), ephemeral=True)

    @app_commands.guild_only()
    async def continue_message(
        self, interaction: discord.Interaction[JukeBot], message: discord.Message
    ) -> None:
        clip_id = clip_id_of_message(message) or await self.bot.to_thread(
            clip_by_message, self.bot.db, message.id
        )
        if clip_id is None:
            raise UserError("That message is not a clip I posted. Use this on a finished clip's post.")
        await offer(interaction, clip_id)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[JukeBot]) -> None:
        """The moment modal's submission (see buttons.MomentModal)."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data: Any = interaction.data or {}
        m = MODAL_ID.match(str(data.get("custom_id", "")))
        if m is None:
            return
        moment = modal_value(data, MOMENT_INPUT) or ""
        continuations = self.bot.need(Continuations)
        await guarded(
            interaction,
            f"continue from a moment ({m[0]})",
            lambda: continuations.continue_pressed(interaction, int(m[1]), at=moment),
        )

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
