"""The drafts message's buttons: one vote button per draft (`jb:vote:<song>:<draft>`) and
"Close the vote now" (`jb:close:<song>`)."""

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


def drafts_view(
    song_id: int, drafts: list[tuple[int, int, int]], *, open_: bool, winner_draft_id: int | None = None
) -> discord.ui.View:
    """drafts: (draft_id, index, votes). Open: vote buttons + close; closed: disabled, winner marked."""
    view = discord.ui.View(timeout=None)
    for draft_id, index, votes in drafts:
        label = f"Draft {index + 1}" + (f" · {votes} vote{'s' if votes != 1 else ''}" if votes else "")
        view.add_item(
            VoteButton(song_id, draft_id, label=label, disabled=not open_, winner=draft_id == winner_draft_id)
        )
    if open_:
        view.add_item(CloseVoteButton(song_id))
    return view
