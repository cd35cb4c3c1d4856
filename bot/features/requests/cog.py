"""`/generate artist genre [lyrics] [lyrics_prompt] [seconds] [drafts]`.

Autocomplete offers the model's own artist and genre names (thousands; 25 at a time, fuzzy); the
command checks the value again ("did you mean"). The answer comes within Discord's 3 seconds
(a deferred ephemeral reply), then one status message in the channel follows the song.
With `lyrics_prompt` the text model drafts lyrics first (the lyrics feature's Use / Regenerate /
Edit card); nothing is queued until the member presses Use.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.autocomplete import choices
from bot.core.bot import JukeBot
from bot.errors import UserError
from bot.features.lyrics.views import present_draft
from lyrics.request import LyricsRequest

from .logic import check_drafts, check_seconds
from .service import Requests, queued_text


def lyrics_note(bot: JukeBot, lyrics: str) -> str:
    """A line for the reply when the model cannot sing the member's words (else "")."""
    if not lyrics.strip() or bot.labels.sings_lyrics:
        return ""
    return (
        f"\nNote: this server's model (`{bot.settings.engine.model}`) does not sing words, so your lyrics "
        "are kept with the song but not sung."
    )


async def written_lyrics(bot: JukeBot, text: str, seconds: float) -> tuple[str, tuple[str, ...]]:
    """Member-written lyrics, fitted to what the model can sing (and moderated when configured)."""
    from lyrics.errors import LyricsError
    from lyrics.written import prepare_lyrics

    if not text.strip():
        return "", ()
    if len(text) > bot.settings.limits.max_lyrics_chars:
        raise UserError(
            f"Those lyrics are {len(text):,} characters; the most I take is {bot.settings.limits.max_lyrics_chars:,}. "
            "A clip sings about 20 characters a second, so a verse and a chorus are plenty."
        )
    try:
        fitted = await prepare_lyrics(text, seconds, settings=bot.settings)
    except LyricsError as exc:
        raise UserError(str(exc)) from None
    return fitted.lyrics, fitted.notes


class GenerateCog(commands.Cog, name="Generate"):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        # Let `/lyrics draft` → Use start a song too.
        lyrics_cog = self.bot.get_cog("Lyrics")
        if lyrics_cog is not None:
            lyrics_cog.use_handler = self.use_drafted_lyrics  # type: ignore[attr-defined]

    @app_commands.guild_only()
    @app_commands.command(
        name="generate", description="Make a new song in the style of an artist and a genre."
    )
    @app_commands.describe(
        artist="An artist the model knows (start typing to search)",
        genre="A genre the model knows (start typing to search)",
        lyrics="Words to sing (optional; or use lyrics_prompt to have them written)",
        lyrics_prompt="What the song should be about: the text model writes lyrics for you to check first",
        seconds="Length of the song in seconds",
        drafts="How many drafts to make for the vote",
    )
    async def generate(
        self,
        interaction: discord.Interaction[JukeBot],
        artist: str,
        genre: str,
        lyrics: str | None = None,
        lyrics_prompt: str | None = None,
        seconds: float | None = None,
        drafts: int | None = None,
    ) -> None:
        requests = self.bot.need(Requests)
        settings = self.bot.settings
        requests.check_rate(interaction.user.id)
        try:
            artist_ = await self.bot.to_thread(self.bot.labels.artists.resolve, artist)
            genre_ = await self.bot.to_thread(self.bot.labels.genres.resolve, genre)
            seconds_ = check_seconds(settings, seconds)
            n_drafts = check_drafts(settings, drafts)
            if lyrics and lyrics_prompt:
                raise UserError(
                    "Give either `lyrics` (your own words) or `lyrics_prompt` (to have them written), not both."
                )
        except UserError:
            requests.forget_rate(interaction.user.id)
            raise
        if lyrics_prompt:
            requests.forget_rate(interaction.user.id)  # counted when Use queues the song
            await self.draft_lyrics_first(interaction, lyrics_prompt, artist_, genre_, seconds_, n_drafts)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            text, notes = await written_lyrics(self.bot, lyrics or "", seconds_)
        except UserError:
            requests.forget_rate(interaction.user.id)
            raise
        submitted = await requests.submit(
            interaction, artist=artist_, genre=genre_, lyrics=text, seconds=seconds_, n_drafts=n_drafts
        )
        answer = queued_text(submitted)
        not_sung = lyrics_note(self.bot, text)
        if not_sung:
            answer += not_sung
        elif notes:
            answer += "\nI adjusted your lyrics so the model can sing them: " + "; ".join(notes)
        await interaction.followup.send(answer[:2000], ephemeral=True)

    async def draft_lyrics_first(
        self,
        interaction: discord.Interaction[JukeBot],
        prompt: str,
        artist: str,
        genre: str,
        seconds: float,
        n_drafts: int,
    ) -> None:
        from lyrics.client import NOT_CONFIGURED
        from lyrics.errors import LyricsInputError
        from lyrics.request import make_request

        settings = self.bot.settings
        if not (settings.lyrics.model or "").strip():
            raise UserError(NOT_CONFIGURED)
        try:
            request = make_request(prompt, settings=settings, seconds=seconds, artist=artist, genre=genre)
        except LyricsInputError as exc:
            raise UserError(str(exc)) from None

        async def on_use(use: discord.Interaction[JukeBot], text: str) -> None:
            await self.queue_with_lyrics(use, artist, genre, text, seconds, n_drafts)

        await present_draft(interaction, request, settings=settings, on_use=on_use)

    async def queue_with_lyrics(
        self,
        interaction: discord.Interaction[JukeBot],
        artist: str,
        genre: str,
        text: str,
        seconds: float,
        n_drafts: int,
    ) -> None:
        """The member pressed Use on a lyrics draft: queue the song with those lyrics."""
        requests = self.bot.need(Requests)
        await interaction.response.defer(ephemeral=True, thinking=True)
        requests.check_rate(interaction.user.id)
        submitted = await requests.submit(
            interaction, artist=artist, genre=genre, lyrics=text, seconds=seconds, n_drafts=n_drafts
        )
        answer = queued_text(submitted) + lyrics_note(self.bot, text)
        await interaction.followup.send(answer[:2000], ephemeral=True)

    async def use_drafted_lyrics(
        self, interaction: discord.Interaction[JukeBot], text: str, request: LyricsRequest
    ) -> None:
        """Use on a `/lyrics draft` card: its artist and genre were style hints, check them now."""
        if not request.artist or not request.genre:
            raise UserError(
                "To make a song from these lyrics I need an artist and a genre the model knows. Run "
                "`/lyrics draft` again with `artist` and `genre`, or paste the lyrics into `/generate`."
            )
        artist = await self.bot.to_thread(self.bot.labels.artists.resolve, request.artist)
        genre = await self.bot.to_thread(self.bot.labels.genres.resolve, request.genre)
        await self.queue_with_lyrics(
            interaction,
            artist,
            genre,
            text,
            check_seconds(self.bot.settings, request.seconds),
            self.bot.settings.limits.default_drafts,
        )

    @generate.autocomplete("artist")
    async def artist_autocomplete(
        self, interaction: discord.Interaction[JukeBot], current: str
    ) -> list[app_commands.Choice[str]]:
        return choices(self.bot.labels.artists.complete(current))

    @generate.autocomplete("genre")
    async def genre_autocomplete(
        self, interaction: discord.Interaction[JukeBot], current: str
    ) -> list[app_commands.Choice[str]]:
        return choices(self.bot.labels.genres.complete(current))
