"""The drafts message's buttons: one vote button per draft (`jb:vote:<song>:<draft>`), "Close the
vote now" (`jb:close:<song>`) and 🎲 Reroll (`jb:reroll:<song>`) while the vote is open; after it,
one U-button per draft not yet made in full quality (`jb:again:<song>:<draft>`)."""

from __future__ import annotations

import discord

from bot.core.bot import JukeBot
from bot.core.buttons import DynamicButton, IdButton

from .service import Voting


class VoteButton(IdButton, DynamicButton, template=r"jb:vote:(?P<song_id>\d+):(?P<draft_id>\d+)"):
    name = "vote"

    def __init__(
        self,
        song_id: int,
        draft_id: int,
        *,
        label: str = "Vote",
        disabled: bool = False,
        winner: bool = False,
    ) -> None:
        style = discord.ButtonStyle.success if winner else discord.ButtonStyle.primary
        super().__init__(
            discord.ui.Button(
                label=label,
                style=style,
                disabled=disabled,
                emoji="🏆" if winner else "🗳️",
                custom_id=f"jb:vote:{song_id}:{draft_id}",
            )
        )
        self.song_id = song_id
        self.draft_id = draft_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(Voting).vote_pressed(interaction, self.song_id, self.draft_id)


class CloseVoteButton(IdButton, DynamicButton, template=r"jb:close:(?P<song_id>\d+)"):
    name = "close vote"

    def __init__(self, song_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Close the vote now",
                style=discord.ButtonStyle.secondary,
                emoji="⏹️",
                custom_id=f"jb:close:{song_id}",
            )
        )
        self.song_id = song_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(Voting).close_pressed(interaction, self.song_id)


class RerollButton(IdButton, DynamicButton, template=r"jb:reroll:(?P<song_id>\d+)"):
    name = "reroll"

    def __init__(self, song_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reroll",
                style=discord.ButtonStyle.secondary,
                emoji="🎲",
                custom_id=f"jb:reroll:{song_id}",
            )
        )
        self.song_id = song_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(Voting).reroll_pressed(interaction, self.song_id)


class AgainButton(IdButton, DynamicButton, template=r"jb:again:(?P<song_id>\d+):(?P<draft_id>\d+)"):
    name = "choose again"

    def __init__(self, song_id: int, draft_id: int, *, index: int = 0) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"U{index + 1}",
                style=discord.ButtonStyle.secondary,
                custom_id=f"jb:again:{song_id}:{draft_id}",
            )
        )
        self.song_id = song_id
        self.draft_id = draft_id

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        await interaction.client.need(Voting).again_pressed(interaction, self.song_id, self.draft_id)


def drafts_view(
    song_id: int,
    drafts: list[tuple[int, int, int]],
    *,
    open_: bool,
    winner_draft_id: int | None = None,
    again: set[int] | None = None,
) -> discord.ui.View:
    """drafts: (draft_id, index, votes). Open: vote buttons, close and reroll; closed: disabled,
    winner marked, and a U-button for each draft in `again` (may still be made in full quality)."""
    view = discord.ui.View(timeout=None)
    for draft_id, index, votes in drafts:
        label = f"Draft {index + 1}" + (f" · {votes} vote{'s' if votes != 1 else ''}" if votes else "")
        view.add_item(
            VoteButton(song_id, draft_id, label=label, disabled=not open_, winner=draft_id == winner_draft_id)
        )
    if open_:
        view.add_item(CloseVoteButton(song_id))
        view.add_item(RerollButton(song_id))
    for draft_id, index, _votes in drafts:
        if not open_ and again and draft_id in again:
            view.add_item(AgainButton(song_id, draft_id, index=index))
    return view
