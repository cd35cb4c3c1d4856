"""The Continue button on clip posts and daily posts (`jb:continue:<clip>`), and what it offers:
"From the end" (`jb:continue-end:<clip>`) or "From a moment…" (`jb:continue-at:<clip>`), which
opens a modal asking for the moment (`jb:continue-at-modal:<clip>`).

Every id is in the custom id, so a button pressed, or a modal submitted, after a restart still works.
The modal's submission is handled by the cog's interaction listener, not by the modal object: the
object lives in the process that opened it, and is gone after a restart."""

from __future__ import annotations

import re

import discord

from bot.core.bot import JukeBot
from bot.core.buttons import DynamicButton, IdButton

from .service import Continuations

MOMENT_INPUT = "moment"  # the modal's text input
MODAL_ID = re.compile(r"^jb:continue-at-modal:(\d+)$")


class ContinueButton(IdButton, DynamicButton, template=r"jb:continue:(?P<clip_id>\d+)"):
    name = "continue"

    def __init__(self, clip_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Continue",
                style=discord.ButtonStyle.primary,
                emoji="➕",
                custom_id=f"jb:continue:{clip_id}",
            )
        )
        self.clip_id = clip_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await offer(interaction, self.clip_id)


class ContinueFromEndButton(IdButton, DynamicButton, template=r"jb:continue-end:(?P<clip_id>\d+)"):
    name = "continue from the end"

    def __init__(self, clip_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="From the end",
                style=discord.ButtonStyle.primary,
                emoji="⏭️",
                custom_id=f"jb:continue-end:{clip_id}",
            )
        )
        self.clip_id = clip_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(Continuations).continue_pressed(interaction, self.clip_id)


class ContinueFromMomentButton(IdButton, DynamicButton, template=r"jb:continue-at:(?P<clip_id>\d+)"):
    name = "continue from a moment"

    def __init__(self, clip_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="From a moment…",
                style=discord.ButtonStyle.secondary,
                emoji="⏱️",
                custom_id=f"jb:continue-at:{clip_id}",
            )
        )
        self.clip_id = clip_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        # A modal must be the first answer, within Discord's 3 s: nothing is looked up before it.
        await interaction.response.send_modal(MomentModal(self.clip_id))


class MomentModal(discord.ui.Modal):
    """Asks where the new music starts. Submissions go to the cog's listener (see the module)."""

    def __init__(self, clip_id: int) -> None:
        super().__init__(
            title=f"Continue clip #{clip_id} from a moment",
            custom_id=f"jb:continue-at-modal:{clip_id}",
            timeout=15 * 60,  # the listener still answers later submissions
        )
        self.moment: discord.ui.TextInput[MomentModal] = discord.ui.TextInput(
            label="Where the new music starts (e.g. 0:42)",
            placeholder="0:42",
            custom_id=MOMENT_INPUT,
            max_length=20,
            required=True,
        )
        self.add_item(self.moment)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Handled by ContinueCog.on_interaction, the same before and after a restart."""


def choice_view(clip_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ContinueFromEndButton(clip_id))
    view.add_item(ContinueFromMomentButton(clip_id))
    return view


async def offer(interaction: discord.Interaction[JukeBot], clip_id: int) -> None:
    """The Continue button and the menu: from the end, or from a moment (an ephemeral question
    whose buttons work after a restart too)."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    text = await interaction.client.need(Continuations).offer_text(interaction, clip_id)
    await interaction.followup.send(text, view=choice_view(clip_id), ephemeral=True)
