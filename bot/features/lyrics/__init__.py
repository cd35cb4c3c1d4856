"""The lyrics feature: `/lyrics draft` and the Use / Regenerate / Edit card (also shown by
`/generate lyrics_prompt:`)."""

from __future__ import annotations

from bot.core.bot import JukeBot

from .cog import LyricsCog

__all__ = ["LyricsCog", "setup"]


async def setup(bot: JukeBot) -> None:
    await bot.add_cog(LyricsCog(bot))
