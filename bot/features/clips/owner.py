"""`/owner publish allow|deny`: the bot's owner (the application's owner, `bot.is_owner`, which
asks Discord's application info once and caches it) decides which servers may publish to the
operator's X/SoundCloud account. Stored per server (`guild_configs.publish_allowed`) over the
`JUKEBOT_PUBLISH_GUILDS` setting. A server with its own account (`jukebot publish auth … --guild ID`)
publishes there without this allowance; a deny stops it too. Captions going to the shared account
are moderated by default (publisher/accounts.py)."""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.config import update_guild
from bot.core.bot import JukeBot


@app_commands.guild_only()
class OwnerCog(commands.GroupCog, name="Owner", group_name="owner", group_description="For the bot's owner."):
    def __init__(self, bot: JukeBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[JukeBot]) -> bool:  # type: ignore[override]
        if not await self.bot.is_owner(interaction.user):
            raise app_commands.CheckFailure(
                "Only the bot's owner can do that (the owner of its Discord application)."
            )
        return True

    @app_commands.command(name="publish", description="Allow or deny publishing from this server.")
    @app_commands.describe(
        action="allow: this server's moderators may publish to your accounts; deny: they may not"
    )
    async def publish(
        self, interaction: discord.Interaction[JukeBot], action: Literal["allow", "deny"]
    ) -> None:
        assert interaction.guild_id is not None
        allowed = action == "allow"
        await self.bot.to_thread(
            update_guild, self.bot.db, self.bot.settings, interaction.guild_id, publish_allowed=allowed
        )
        text = (
            "Publishing is allowed from this server: its moderators can press Publish, and its daily clip "
            "is uploaded, to your X/SoundCloud account."
            if allowed
            else "Publishing is off for this server: nothing from here goes to your X/SoundCloud account."
        )
        await interaction.response.send_message(text, ephemeral=True)
