"""Continuing music: `/continue clip:<n>` (or `audio:` an uploaded file), the message context menu
"Continue this clip", and the Continue button on clip posts (in bot/studio.py).

A continuation is a new song primed on the clip's stored codes, or on the uploaded audio (stored
as it came; the worker encodes it with the VQ-VAE). Uploads are checked before any download.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands
from sqlalchemy import select
from sqlmodel import col

from bot import uploads
from bot.cogs.generate import choices
from bot.errors import UserError
from bot.songs import check_seconds
from bot.studio import Submitted
from db.models import Clip

if TYPE_CHECKING:
    from bot.main import JukeBot

CONTINUE_ID = re.compile(r"^jb:continue:(\d+)$")


def clip_id_of_message(message: discord.Message) -> int | None:
    """The clip a message shows, read from its Continue button (clip posts and daily posts)."""
    for row in message.components:
        for child in getattr(row, "children", []):
            m = CONTINUE_ID.match(getattr(child, "custom_id", None) or "")
            if m:
                return int(m[1])
    return None


def _clip_by_message(db: object, message_id: int) -> int | None:
    from db.database import Database

    assert isinstance(db, Database)
    with db.read() as s:
        return s.execute(select(col(Clip.id)).where(col(Clip.message_id) == message_id)).scalar()


class ContinueCog(commands.Cog, name="Continue"):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Continue this clip", callback=self.continue_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="continue", description="Continue a posted clip, or audio you upload.")
    @app_commands.describe(
        clip="The clip number (shown on the clip's post)",
        audio="Or upload a short audio file to continue from (WAV, MP3, Ogg, FLAC)",
        seconds="How many seconds of new music to add",
        artist="Continue in the style of this artist (default: the clip's)",
        genre="Continue in this genre (default: the clip's)",
    )
    async def continue_(
        self,
        interaction: discord.Interaction,
        clip: int | None = None,
        audio: discord.Attachment | None = None,
        seconds: float | None = None,
        artist: str | None = None,
        genre: str | None = None,
    ) -> None:
        studio = self.bot.studio
        if clip is not None and audio is not None:
            raise UserError("Continue either a clip or an uploaded file, not both at once.")
        if clip is None and audio is None:
            raise UserError("Tell me what to continue: `clip:` with a clip number, or `audio:` with a file.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        if clip is not None:
            submitted = await studio.continue_clip(
                interaction, clip, seconds=seconds, artist=artist, genre=genre
            )
        else:
            assert audio is not None
            submitted = await self.continue_upload(interaction, audio, seconds, artist, genre)
        await interaction.followup.send(studio.queued_text(submitted), ephemeral=True)

    async def continue_upload(
        self,
        interaction: discord.Interaction,
        audio: discord.Attachment,
        seconds: float | None,
        artist: str | None,
        genre: str | None,
    ) -> Submitted:
        studio = self.bot.studio
        settings = self.bot.settings
        studio.check_rate(interaction.user.id)
        try:
            if not artist or not genre:
                raise UserError(
                    "To continue your own audio, also tell me the `artist` and `genre` to continue in."
                )
            artist_ = studio.labels.artists.resolve(artist)
            genre_ = studio.labels.genres.resolve(genre)
            seconds_ = check_seconds(settings, seconds)
            # The size Discord reports is checked before a single byte is fetched.
            uploads.check_declared(audio.filename, audio.size, settings.max_upload_bytes)
            data = await uploads.download(self.bot.http_session, audio.url, settings.max_upload_bytes)
            upload = await studio.run(uploads.check_audio, data, audio.filename)
        except UserError:
            studio.limiter.forget(interaction.user.id)
            raise
        key = uploads.storage_key(audio.filename)
        await studio.run(self.bot.storage.write_bytes, key, upload.data)
        prime = min(upload.duration or settings.max_prime_seconds, settings.max_prime_seconds)
        return await studio.submit(
            interaction,
            artist=artist_,
            genre=genre_,
            lyrics="",
            seconds=seconds_,
            n_drafts=settings.default_drafts,
            prime_key=key,
            prime_seconds=prime,
        )

    async def continue_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        studio = self.bot.studio
        clip_id = clip_id_of_message(message) or await studio.run(_clip_by_message, self.bot.db, message.id)
        if clip_id is None:
            raise UserError("That message is not a clip I posted. Use this on a finished clip's post.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        submitted = await studio.continue_clip(interaction, clip_id)
        await interaction.followup.send(studio.queued_text(submitted), ephemeral=True)

    @continue_.autocomplete("artist")
    async def artist_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return choices(self.bot.studio.labels.artists.complete(current))

    @continue_.autocomplete("genre")
    async def genre_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return choices(self.bot.studio.labels.genres.complete(current))


async def setup(bot: JukeBot) -> None:
    await bot.add_cog(ContinueCog(bot))
