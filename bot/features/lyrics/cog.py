"""`/lyrics draft`: draft lyrics with the text model and show them with Use / Regenerate / Edit
before anything is queued.

Use hands the lyrics on through `LyricsCog.use_handler` (set by the generate feature:
`bot.get_cog("Lyrics").use_handler = handler`, with `handler(interaction, lyrics, request)`). Until
one is set, Use answers with the lyrics ready to paste into /generate.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.bot import JukeBot
from bot.errors import explain
from db.settings import Settings
from lyrics.client import NOT_CONFIGURED
from lyrics.errors import LyricsInputError
from lyrics.request import LyricsRequest, make_request

from .views import OnUse, present_draft

log = logging.getLogger("jukebot.bot.lyrics")

UseHandler = Callable[[discord.Interaction[JukeBot], str, LyricsRequest], Awaitable[None]]


class LyricsCog(commands.Cog, name="Lyrics"):
    lyrics = app_commands.Group(
        name="lyrics", description="Write song lyrics with the text model.", guild_only=True
    )

    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot
        self.use_handler: UseHandler | None = None

    @property
    def settings(self) -> Settings:
        return self.bot.settings

    def _on_use(self, request: LyricsRequest) -> OnUse | None:
        handler = self.use_handler
        if handler is None:
            return None

        async def on_use(interaction: discord.Interaction[JukeBot], lyrics: str) -> None:
            await handler(interaction, lyrics, request)

        return on_use

    @lyrics.command(
        name="draft", description="Draft lyrics from a prompt; nothing is queued until you press Use."
    )
    @app_commands.describe(
        prompt="What the song is about (theme, story, images)",
        artist="An artist whose style to lean on (a hint for the words only)",
        genre="A genre for the words",
        seconds="How long the clip will be; the lyrics are cut to fit",
        language="The language to write in (default: the language of your prompt)",
        mood="The mood, e.g. wistful, defiant, euphoric",
    )
    async def draft(
        self,
        interaction: discord.Interaction[JukeBot],
        prompt: app_commands.Range[str, 1, 1000],
        artist: app_commands.Range[str, 1, 100] | None = None,
        genre: app_commands.Range[str, 1, 100] | None = None,
        seconds: float | None = None,
        language: app_commands.Range[str, 1, 50] | None = None,
        mood: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        settings = self.settings
        try:
            request = make_request(
                prompt,
                settings=settings,
                seconds=seconds,
                artist=artist,
                genre=genre,
                language=language,
                mood=mood,
            )
        except LyricsInputError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        if not (settings.lyrics.model or "").strip():
            await interaction.response.send_message(NOT_CONFIGURED, ephemeral=True)
            return
        await present_draft(interaction, request, settings=settings, on_use=self._on_use(request))

    @draft.autocomplete("artist")
    async def _artist(
        self, interaction: discord.Interaction[JukeBot], current: str
    ) -> list[app_commands.Choice[str]]:
        return self._choices("artists", current)

    @draft.autocomplete("genre")
    async def _genre(
        self, interaction: discord.Interaction[JukeBot], current: str
    ) -> list[app_commands.Choice[str]]:
        return self._choices("genres", current)

    def _choices(self, kind: str, current: str) -> list[app_commands.Choice[str]]:
        """Suggestions from the model's own artist/genre names (the bot's `labels`); the option
        stays free text, since a style hint need not be a name the model knows."""
        try:
            index = getattr(self.bot.labels, kind, None)
            names: list[str] = index.complete(current) if index is not None else []
        except Exception:  # suggestions are a nicety: never let them break the command
            log.debug("lyrics autocomplete failed", exc_info=True)
            return []
        return [app_commands.Choice(name=n.replace("_", " ")[:100], value=n[:100]) for n in names]

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        message = explain(error, where="/lyrics")
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
