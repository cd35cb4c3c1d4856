"""Remix: the Remix button on a clip post opens a form with the clip's recipe; what the member
submits becomes a new request through the same path as `/generate` (rate, quota, the server's cap,
one song per submitted form: `songs.request_key` is the form's interaction). A remix keeps what
the member did not change: the model's temperature choice, the number of drafts, and the clip or
upload the original continued."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import discord

from bot.core.bot import JukeBot
from bot.errors import UserError
from bot.features.requests import Requests, queued_text
from bot.features.requests.cog import written_lyrics
from bot.features.requests.logic import check_drafts, check_seconds
from db.scope import GuildScope

from . import logic

MakeForm = Callable[[int, logic.RemixSource, int], discord.ui.Modal]  # (clip id, source, lyrics max)


class Remixes:
    def __init__(self, bot: JukeBot, requests: Requests, form: MakeForm) -> None:
        self.bot = bot
        self.requests = requests
        self.form = form

    async def remix_pressed(self, interaction: discord.Interaction[JukeBot], clip_id: int) -> None:
        """Open the form prefilled with the clip's recipe (nothing is written until it is sent)."""
        source = await self.bot.to_thread(
            logic.remix_source, self.bot.db, GuildScope(interaction.guild_id), clip_id
        )
        modal = self.form(clip_id, source, self.bot.settings.limits.max_lyrics_chars)
        await interaction.response.send_modal(modal)
        # Answered from the submitted values alone (the cog's listener), so a form sent after a
        # restart still works: nothing is kept in memory.
        modal.stop()

    async def remix_submitted(
        self, interaction: discord.Interaction[JukeBot], clip_id: int, values: dict[str, str]
    ) -> None:
        bot, requests = self.bot, self.requests
        requests.check_rate(interaction.user.id)
        try:
            source = await bot.to_thread(
                logic.remix_source, bot.db, GuildScope(interaction.guild_id), clip_id
            )
            recipe, song = source.recipe, source.song
            artist_text = values.get("artist", "").strip() or recipe.artist
            genre_text = values.get("genre", "").strip() or recipe.genre
            artist = (
                recipe.artist
                if artist_text == recipe.artist
                else await bot.to_thread(bot.labels.artists.resolve, artist_text)
            )
            genre = (
                recipe.genre
                if genre_text == recipe.genre
                else await bot.to_thread(bot.labels.genres.resolve, genre_text)
            )
            seconds = check_seconds(
                bot.settings, logic.parse_seconds(values.get("seconds", ""), recipe.seconds)
            )
            seed = logic.parse_seed(values.get("seed", ""))
            n_drafts = check_drafts(bot.settings, min(recipe.n_drafts, bot.settings.limits.max_drafts))
        except UserError:
            requests.forget_rate(interaction.user.id)
            raise
        await interaction.response.defer(ephemeral=True, thinking=True)
        typed = values.get("lyrics", "")
        notes: tuple[str, ...] = ()
        try:
            if logic.same_lyrics(typed, recipe.lyrics):
                lyrics = recipe.lyrics  # already fitted: the same words give the same drafts
            else:
                lyrics, notes = await written_lyrics(bot, typed, seconds)
        except UserError:
            requests.forget_rate(interaction.user.id)
            raise
        submitted = await requests.submit(
            interaction,
            artist=artist,
            genre=genre,
            lyrics=lyrics,
            seconds=seconds,
            n_drafts=n_drafts,
            parent_clip_id=song.parent_clip_id,
            prime_key=song.prime_key,
            prime_seconds=song.prime_seconds,
            seed=seed,
            temperature=song.temperature or None,
        )
        changed = logic.changes(recipe, artist, genre, lyrics, submitted.song.seed, seconds)
        what = ", ".join(changed) if changed else "nothing: the same recipe and seed"
        answer = f"{queued_text(submitted)}\n🎛️ Remix of song #{recipe.song_id} — changed: {what}."
        if submitted.song.model != recipe.model:
            answer += f"\nNote: this server now uses model `{submitted.song.model}` (the original used `{recipe.model}`)."
        if notes:
            answer += "\nI adjusted your lyrics so the model can sing them: " + "; ".join(notes)
        await interaction.followup.send(answer[:2000], ephemeral=True)


def form_clip_id(interaction: discord.Interaction[Any]) -> int | None:
    """The clip of a submitted Remix form (`jb:remixform:<clip>`), else None (another modal)."""
    if interaction.type != discord.InteractionType.modal_submit or not interaction.data:
        return None
    m = logic.FORM_ID.match(str(interaction.data.get("custom_id", "")))
    return int(m["clip_id"]) if m else None
