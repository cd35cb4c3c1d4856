"""Lyrics a member wrote: the same fitting and moderation as drafts, no text model needed."""

from __future__ import annotations

import asyncio

from db.settings import Settings, get_settings
from lyrics.client import Sleep
from lyrics.errors import LyricsInputError
from lyrics.fit import FittedLyrics, fit_lyrics
from lyrics.moderation import check_lyrics


async def prepare_lyrics(
    text: str,
    seconds: float,
    *,
    settings: Settings | None = None,
    engine_model: str | None = None,
    sleep: Sleep = asyncio.sleep,
) -> FittedLyrics:
    """Clean and fit written lyrics to `seconds`, then moderate them.

    Raises LyricsInputError (too long to even read, or nothing singable), LyricsRejected (moderation
    said no, with the reason) or ModerationUnavailable. The notes say what was changed."""
    settings = settings or get_settings()
    if len(text) > settings.limits.max_lyrics_chars:
        raise LyricsInputError(
            f"These lyrics are {len(text):,} characters; the most I take is {settings.limits.max_lyrics_chars:,}. "
            "A clip only sings about 21 characters a second, so a verse and a chorus are plenty."
        )
    fitted = fit_lyrics(text, seconds, engine_model=engine_model or settings.engine.model)
    await check_lyrics(fitted.lyrics, settings=settings, drafted=False, sleep=sleep)
    return fitted
