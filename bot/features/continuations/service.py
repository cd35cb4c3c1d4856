"""Continuing a posted clip (the Continue button, `/continue clip:`, the "Continue this clip" menu)
or audio a member uploads (`/continue audio:`): a new song whose music starts from it.

A continuation starts its new music at a moment (`prime_at`, seconds): for a clip, the song keeps
the clip up to that moment (None: its end); for an upload, the part used ends there. The button
and the menu first offer "from the end" or "from a moment" (a modal asks for it)."""

from __future__ import annotations

import discord

from bot.core.bot import JukeBot
from bot.errors import UserError
from bot.features.requests import Requests, Submitted, queued_text
from bot.features.requests.logic import check_seconds, continuation_source
from db.audio.moments import clock
from db.scope import GuildScope

from . import uploads
from .logic import moment_in_clip


class Continuations:
    def __init__(self, bot: JukeBot, requests: Requests) -> None:
        self.bot = bot
        self.requests = requests

    async def offer_text(self, interaction: discord.Interaction[JukeBot], clip_id: int) -> str:
        """The question the Continue button and the menu ask (buttons.offer shows it with the
        two choices); UserError when there is no such clip in this server."""
        clip, _ = await self.bot.to_thread(
            continuation_source, self.bot.db, GuildScope(interaction.guild_id), clip_id
        )
        length = f" ({clock(clip.seconds)} long)" if clip.seconds > 0 else ""
        return (
            f"Continue clip #{clip_id}{length} from its end, or from a moment you choose? "
            "From a moment, the new song keeps the clip up to it and goes its own way from there."
        )

    async def continue_pressed(
        self, interaction: discord.Interaction[JukeBot], clip_id: int, at: str | None = None
    ) -> None:
        """ "From the end" (at None) or the moment modal's submission."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        submitted = await self.continue_clip(interaction, clip_id, at=at)
        await interaction.followup.send(queued_text(submitted), ephemeral=True)

    async def continue_clip(
        self,
        interaction: discord.Interaction[JukeBot],
        clip_id: int,
        *,
        seconds: float | None = None,
        artist: str | None = None,
        genre: str | None = None,
        at: str | None = None,
    ) -> Submitted:
        bot, requests = self.bot, self.requests
        requests.check_rate(interaction.user.id)
        try:
            seconds_ = check_seconds(bot.settings, seconds)
            clip, parent = await bot.to_thread(
                continuation_source, bot.db, GuildScope(interaction.guild_id), clip_id
            )
            prime_at = moment_in_clip(at, clip) if at is not None else None
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
            prime_at=prime_at,
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
            prime_at=part.end,
        )
        return Submitted(submitted.song, submitted.status_url, part.describe(audio.filename))
