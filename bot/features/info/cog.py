"""Looking around: `/queue`, `/song id`, `/top [period]`, `/me`, `/help`. All answers are ephemeral
(only the member who asked sees them), like Midjourney's `/info`."""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.bot import JukeBot
from db.scope import GuildScope

from .answers import HELP, me_text, queue_lines, render_queue, song_answer, top_text


class InfoCog(commands.Cog, name="Info"):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot

    @app_commands.guild_only()
    @app_commands.command(name="queue", description="What the studio is making right now.")
    async def queue_(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        lines, waiting = await self.bot.to_thread(queue_lines, self.bot.db, interaction.guild_id)
        await interaction.followup.send(render_queue(lines, waiting)[:2000], ephemeral=True)

    @app_commands.guild_only()
    @app_commands.command(name="song", description="Everything about one song.")
    @app_commands.describe(id="The song number (e.g. from its status message)")
    async def song(self, interaction: discord.Interaction[JukeBot], id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        answer = await self.bot.to_thread(song_answer, self.bot.db, GuildScope(interaction.guild_id), id)
        embeds = [discord.Embed(title="Recipe", description=answer.recipe[:4096])]
        if answer.family:
            embeds.append(discord.Embed(title="Family", description=answer.family[:4096]))
        await interaction.followup.send(answer.text[:2000], embeds=embeds, ephemeral=True)

    @app_commands.guild_only()
    @app_commands.command(name="top", description="The most-voted clips, or song families.")
    @app_commands.describe(
        period="Which clips to rank (default: this week)",
        by="clip: each clip on its own; family: a song with everything continued or rerolled from it",
    )
    async def top(
        self,
        interaction: discord.Interaction[JukeBot],
        period: Literal["day", "week", "month", "all"] = "week",
        by: Literal["clip", "family"] = "clip",
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.bot.to_thread(top_text, self.bot.db, interaction.guild_id, period, None, by)
        await interaction.followup.send(text[:2000], ephemeral=True)

    @app_commands.guild_only()
    @app_commands.command(name="me", description="Your songs and how many you can still make today.")
    async def me(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.bot.to_thread(
            me_text, self.bot.db, self.bot.settings, interaction.user.id, interaction.guild_id
        )
        await interaction.followup.send(text[:2000], ephemeral=True)

    @app_commands.guild_only()
    @app_commands.command(name="help", description="How to make songs with jukebot.")
    async def help(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.response.send_message(HELP, ephemeral=True)
