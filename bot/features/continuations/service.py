"""Continuing a posted clip (the Continue button, `/continue clip:`, the "Continue this clip" menu)
or audio a member uploads (`/continue audio:`): a new song whose music starts from it."""

from __future__ import annotations

import discord

from bot.core.bot import JukeBot
from bot.errors import UserError
from bot.features.requests import Requests, Submitted, queued_text
from bot.features.requests.logic import check_seconds, continuation_source
from db.scope import GuildScope

from . import uploads


class Continuations:
    def __init__(self, bot: JukeBot, requests: Requests) -> None:
        self.bot = bot
        self.requests = requests

    async def continue_pressed(self, interaction: discord.Interaction[JukeBot], clip_id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        submitted = await self.continue_clip(interaction, clip_id)
        await interaction.followup.send(queued_text(submitted), ephemeral=True)

    async def continue_clip(
        self,
        interaction: discord.Interaction[JukeBot],
        clip_id: int,
        *,
        seconds: float | None = None,
        artist: str | None = None,
        genre: str | None = None,
    ) -> Submitted:
        bot, requests = self.bot, self.requests
        requests.check_rate(interaction.user.id)
        try:
            seconds_ = check_seconds(bot.settings, seconds)
            clip, parent = await bot.to_thread(
                continuation_source, bot.db, GuildScope(interaction.guild_id), clip_id
            )
            artist_ = await bot.to_thread(bot.labels.artists.resolve, artist) if artist else parent.artist
            genre_ = await bot.to_thread(bot.labels.genres.resolve, genre) if genre else parent.genre
        except UserError:
            requests.forget_rate(interaction.user.id)
            raise
        return await requests.submit(
            interaction,
            artist=artist_,
            genre=genre_,
            lyrics=parent.lyrics,
            seconds=seconds_,
            n_drafts=bot.settings.limits.default_drafts,
            parent_clip_id=clip.id,
        )

    async def continue_upload(
        self,
        interaction: discord.Interaction[JukeBot],
        audio: discord.Attachment,
        seconds: float | None,
        artist: str | None,
        genre: str | None,
        at: str | None = None,
    ) -> Submitted:
        bot, requests = self.bot, self.requests
        settings = bot.settings
        requests.check_rate(interaction.user.id)
        try:
            if not artist or not genre:
                raise UserError(
                    "To continue your own audio, also tell me the `artist` and `genre` to continue in."
                )
            artist_ = await bot.to_thread(bot.labels.artists.resolve, artist)
            genre_ = await bot.to_thread(bot.labels.genres.resolve, genre)
            seconds_ = check_seconds(settings, seconds)
            # The size Discord reports is checked before a single byte is fetched.
            uploads.check_declared(audio.filename, audio.size, settings.limits.max_upload_bytes)
            data = await uploads.download(bot.http_session, audio.url, settings.limits.max_upload_bytes)
            upload = await bot.to_thread(uploads.check_audio, data, audio.filename)
            part = uploads.choose_part(upload, at, settings.limits.max_prime_seconds)
            stored = await bot.to_thread(uploads.cut, upload, part) if part.start > 0 else upload.data
        except UserError:
            requests.forget_rate(interaction.user.id)
            raise
        key = uploads.storage_key(audio.filename if part.start == 0 else f"{audio.filename}.part.wav")
        await bot.to_thread(bot.storage.write_bytes, key, stored)
        submitted = await requests.submit(
            interaction,
            artist=artist_,
            genre=genre_,
            lyrics="",
            seconds=seconds_,
            n_drafts=settings.limits.default_drafts,
            prime_key=key,
            prime_seconds=part.seconds,
        )
        return Submitted(submitted.song, submitted.status_url, part.describe(audio.filename))
