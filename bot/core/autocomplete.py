"""Autocomplete answers: Discord takes at most 25 choices of at most 100 characters."""

from __future__ import annotations

from discord import app_commands


def choices(names: list[str]) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=n[:100], value=n[:100]) for n in names]
