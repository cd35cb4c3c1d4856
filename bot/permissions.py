"""Who may do what: the requester owns their song; moderators (a configured role, or the Manage
Server permission) may act on any song and change the guild's settings."""

from __future__ import annotations

import discord

from .config import GuildSettings


def is_moderator(interaction: discord.Interaction, gs: GuildSettings | None) -> bool:
    perms = interaction.permissions
    if perms.manage_guild or perms.administrator:
        return True
    user = interaction.user
    if gs is not None and gs.moderator_role_id is not None and isinstance(user, discord.Member):
        return any(role.id == gs.moderator_role_id for role in user.roles)
    return False
