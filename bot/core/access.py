"""Who may do what, and ids a member typed or a button carried: those resolve only in the server
the interaction comes from (`db.scope.GuildScope`), never by a bare id."""

from __future__ import annotations

import discord

from bot.errors import UserError
from bot.permissions import is_moderator
from db.models import Clip, Song
from db.scope import GuildScope

from .bot import JukeBot
from .rows import discord_id_of, scoped


async def is_mod(interaction: discord.Interaction[JukeBot]) -> bool:
    return is_moderator(interaction, await interaction.client.guild_config(interaction.guild_id))


async def song_here(interaction: discord.Interaction[JukeBot], song_id: int) -> Song:
    """The song with this id in the server the interaction comes from; UserError otherwise."""
    bot = interaction.client
    song = await bot.to_thread(scoped, bot.db, GuildScope(interaction.guild_id).song, song_id)
    if song is None:
        raise UserError(f"There is no song #{song_id} here.")
    return song


async def clip_here(interaction: discord.Interaction[JukeBot], clip_id: int) -> Clip:
    """The clip with this id in the server the interaction comes from; UserError otherwise."""
    bot = interaction.client
    clip = await bot.to_thread(scoped, bot.db, GuildScope(interaction.guild_id).clip, clip_id)
    if clip is None:
        raise UserError(f"There is no clip #{clip_id} here.")
    return clip


async def may_manage(interaction: discord.Interaction[JukeBot], song: Song) -> bool:
    """The member who asked for the song, or a moderator."""
    bot = interaction.client
    requester = await bot.to_thread(discord_id_of, bot.db, song.user_id)
    return requester == interaction.user.id or await is_mod(interaction)
