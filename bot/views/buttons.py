"""The buttons on the bot's messages. Each is a `DynamicItem`: its custom id carries the ids it acts
on (`jb:vote:<song>:<draft>`), so a button pressed after a restart still works; nothing is kept in
memory per message. The callbacks only hand over to the studio (bot/studio.py), where the logic is.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import explain

if TYPE_CHECKING:
    from bot.studio import Studio


def studio_of(interaction: discord.Interaction) -> Studio:
    return interaction.client.studio  # type: ignore[attr-defined,no-any-return]


async def reply(interaction: discord.Interaction, message: str) -> None:
    """An ephemeral answer, whether or not the interaction was already answered or deferred."""
    if interaction.response.is_done():
        await interaction.followup.send(message, ephemeral=True)
    else:
        await interaction.response.send_message(message, ephemeral=True)


async def guarded(
    interaction: discord.Interaction, where: str, action: Callable[[], Awaitable[None]]
) -> None:
    """Run a button's action; any failure becomes a plain answer (with an error id for bugs)."""
    try:
        await action()
    except Exception as exc:
        message = explain(exc, where=where)
        with contextlib.suppress(discord.HTTPException):
            await reply(interaction, message)


class _IdButton:
    """Common parts of the buttons (a mixin before DynamicItem): build the item from the ids in
    the custom id, and guard the callback."""

    name = "button"
    custom_id: str

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Any:
        ids = {k: int(v) for k, v in match.groupdict().items()}
        return cls(**ids)

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, f"{self.name} ({self.custom_id})", lambda: self.act(interaction))

    async def act(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError


_Button = discord.ui.DynamicItem[discord.ui.Button[Any]]


class CancelButton(_IdButton, _Button, template=r"jb:cancel:(?P<song_id>\d+)"):
    name = "cancel"

    def __init__(self, song_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel", style=discord.ButtonStyle.danger, emoji="🛑", custom_id=f"jb:cancel:{song_id}"
            )
        )
        self.song_id = song_id

    async def act(self, interaction: discord.Interaction) -> None:
        await studio_of(interaction).cancel_pressed(interaction, self.song_id)


class VoteButton(_IdButton, _Button, template=r"jb:vote:(?P<song_id>\d+):(?P<draft_id>\d+)"):
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

    async def act(self, interaction: discord.Interaction) -> None:
        await studio_of(interaction).vote_pressed(interaction, self.song_id, self.draft_id)


class CloseVoteButton(_IdButton, _Button, template=r"jb:close:(?P<song_id>\d+)"):
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

    async def act(self, interaction: discord.Interaction) -> None:
        await studio_of(interaction).close_pressed(interaction, self.song_id)


class ContinueButton(_IdButton, _Button, template=r"jb:continue:(?P<clip_id>\d+)"):
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

    async def act(self, interaction: discord.Interaction) -> None:
        await studio_of(interaction).continue_pressed(interaction, self.clip_id)


class ClipVoteButton(_IdButton, _Button, template=r"jb:clipvote:(?P<clip_id>\d+)"):
    name = "clip vote"

    def __init__(self, clip_id: int, votes: int = 0) -> None:
        label = f"Vote ({votes})" if votes else "Vote"
        super().__init__(
            discord.ui.Button(
                label=label, style=discord.ButtonStyle.success, emoji="👍", custom_id=f"jb:clipvote:{clip_id}"
            )
        )
        self.clip_id = clip_id

    async def act(self, interaction: discord.Interaction) -> None:
        await studio_of(interaction).clip_vote_pressed(interaction, self.clip_id)


class PublishButton(_IdButton, _Button, template=r"jb:publish:(?P<clip_id>\d+)"):
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

    async def act(self, interaction: discord.Interaction) -> None:
        await studio_of(interaction).publish_pressed(interaction, self.clip_id)


ALL_ITEMS: tuple[type[_Button], ...] = (
    CancelButton,
    VoteButton,
    CloseVoteButton,
    ContinueButton,
    ClipVoteButton,
    PublishButton,
)


def status_view(song_id: int, show_cancel: bool) -> discord.ui.View | None:
    if not show_cancel:
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(song_id))
    return view


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


def clip_view(clip_id: int, votes: int = 0) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ContinueButton(clip_id))
    view.add_item(ClipVoteButton(clip_id, votes))
    view.add_item(PublishButton(clip_id))
    return view
