"""The clip post's buttons: Continue (from the continuations feature), the clip vote for the daily
clip (`jb:clipvote:<clip>`), Publish for moderators (`jb:publish:<clip>`, only where the server may
publish) and Remix (from the
recipes feature)."""

from __future__ import annotations

import discord

from bot.core.bot import JukeBot
from bot.core.buttons import DynamicButton, IdButton
from bot.features.continuations import ContinueButton
from bot.features.recipes import RemixButton

from .service import Clips


class ClipVoteButton(IdButton, DynamicButton, template=r"jb:clipvote:(?P<clip_id>\d+)"):
    name = "clip vote"

    def __init__(self, clip_id: int, votes: int = 0) -> None:
        label = f"Vote ({votes})" if votes else "Vote"
        super().__init__(
            discord.ui.Button(
                label=label, style=discord.ButtonStyle.success, emoji="👍", custom_id=f"jb:clipvote:{clip_id}"
            )
        )
        self.clip_id = clip_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(Clips).clip_vote_pressed(interaction, self.clip_id)


class PublishButton(IdButton, DynamicButton, template=r"jb:publish:(?P<clip_id>\d+)"):
    name = "publish"

    def __init__(self, clip_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Publish (moderators)",
                style=discord.ButtonStyle.secondary,
                emoji="📣",
                custom_id=f"jb:publish:{clip_id}",
            )
        )
        self.clip_id = clip_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(Clips).publish_pressed(interaction, self.clip_id)


def clip_view(clip_id: int, votes: int = 0, *, publish: bool = True) -> discord.ui.View:
    """`publish`: the server may publish (its own account, or the owner's allowance); otherwise the
    Publish button is not offered at all (a press would only be refused)."""
    view = discord.ui.View(timeout=None)
    view.add_item(ContinueButton(clip_id))
    view.add_item(ClipVoteButton(clip_id, votes))
    if publish:
        view.add_item(PublishButton(clip_id))
    view.add_item(RemixButton(clip_id))
    return view
