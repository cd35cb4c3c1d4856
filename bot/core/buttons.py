"""The plumbing of the bot's buttons. Each is a `DynamicItem`: its custom id carries the ids it acts
on (`jb:vote:<song>:<draft>`), so a button pressed after a restart still works; nothing is kept in
memory per message. Each feature defines its buttons beside its logic and registers them in its
`setup`; a button's `act` hands over to that feature's service."""

from __future__ import annotations

import re
from typing import Any

import discord

from .bot import JukeBot
from .replies import guarded

DynamicButton = discord.ui.DynamicItem[discord.ui.Button[Any]]


class IdButton:
    """Common parts of the buttons (a mixin before DynamicItem): build the item from the ids in
    the custom id, and guard the callback."""

    name = "button"
    custom_id: str

    # The two hooks discord.py calls take any client (their signatures must match DynamicItem's);
    # the feature's `act` gets the interaction as `Interaction[JukeBot]`.
    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Any:
        ids = {k: int(v) for k, v in match.groupdict().items()}
        return cls(**ids)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await guarded(interaction, f"{self.name} ({self.custom_id})", lambda: self.act(interaction))

    async def act(self, interaction: discord.Interaction[JukeBot]) -> None:
        raise NotImplementedError
