"""The recipes feature: the recipe card on clip posts and `/song`, and the Remix button and form."""

from __future__ import annotations

from bot.core.bot import JukeBot
from bot.features.requests import Requests

from .buttons import RemixButton, remix_form
from .card import Recipe, recipe_for, recipe_lines, recipe_of, recipe_text
from .cog import RecipesCog
from .service import Remixes

__all__ = [
    "Recipe",
    "RemixButton",
    "Remixes",
    "recipe_for",
    "recipe_lines",
    "recipe_of",
    "recipe_text",
    "setup",
]


async def setup(bot: JukeBot) -> None:
    bot.provide(Remixes(bot, bot.need(Requests), remix_form))
    await bot.add_cog(RecipesCog(bot))
    bot.add_dynamic_items(RemixButton)
