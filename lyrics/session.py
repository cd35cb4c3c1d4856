"""The logic behind a draft shown to a member with Use / Regenerate / Edit, free of any front end:
the bot's view (bot/views/lyrics.py) is a thin adapter over this, so the rules are tested without
Discord."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from db.settings import Settings
from lyrics.client import Sleep
from lyrics.draft import DraftStream, LyricsDraft, edit_draft
from lyrics.present import EditThrottle, partial_preview
from lyrics.request import LyricsRequest

if TYPE_CHECKING:
    from openai import AsyncOpenAI

MAX_REGENERATIONS = 5  # each one costs a text-model call; a fresh /lyrics draft starts over

Show = Callable[[str], Awaitable[None]]


async def stream_with_previews(
    request: LyricsRequest,
    *,
    settings: Settings,
    show: Show,
    throttle: EditThrottle | None = None,
    client: AsyncOpenAI | None = None,
    sleep: Sleep = asyncio.sleep,
) -> LyricsDraft:
    """Draft `request`, calling `show(message_text)` with the partial text at most once per
    throttle interval (a retry shows at once). Raises LyricsError subclasses."""
    throttle = throttle or EditThrottle()
    drafting = DraftStream(request, settings=settings, client=client, sleep=sleep)
    # aclosing: if `show` fails (say the message was deleted), the request is closed at once.
    async with contextlib.aclosing(aiter(drafting)) as texts:
        async for text in texts:
            if not text or throttle.due():  # "" means a retry started: say so at once
                preview = partial_preview(
                    text,
                    attempt=drafting.attempt,
                    attempts=drafting.policy.attempts,
                    reason=drafting.retry_reason,
                )
                await show(preview)
    assert drafting.draft is not None
    return drafting.draft


class DraftSession:
    """One member's draft: who may press its buttons, how often it may be redrafted, whether it
    was used. The view asks before acting and reports what happened."""

    def __init__(
        self, draft: LyricsDraft, *, author_id: int, max_regenerations: int = MAX_REGENERATIONS
    ) -> None:
        self.draft = draft
        self.author_id = author_id
        self.max_regenerations = max_regenerations
        self.regenerations = 0
        self.used = False
        self.busy = False  # a regeneration or an edit is under way

    def refuse(self, user_id: int) -> str | None:
        """Why `user_id` may not press a button now, or None."""
        if user_id != self.author_id:
            return f"This draft belongs to <@{self.author_id}>; run `/lyrics draft` for your own."
        if self.used:
            return "These lyrics were already used."
        if self.busy:
            return "Hold on, I am still working on this draft."
        return None

    def refuse_regenerate(self) -> str | None:
        if self.regenerations >= self.max_regenerations:
            return (
                f"That was {self.max_regenerations} new drafts already. Press Edit to change the words "
                "yourself, or run `/lyrics draft` with a new prompt."
            )
        return None

    def start(self) -> None:
        self.busy = True

    def regenerated(self, draft: LyricsDraft | None) -> None:
        """A regeneration ended (None: it failed and the old draft stays)."""
        self.busy = False
        if draft is not None:
            self.draft = draft
            self.regenerations += 1

    async def edit(self, text: str, *, settings: Settings) -> LyricsDraft:
        """Replace the lyrics with the member's text (fitted, moderated). Raises LyricsError."""
        self.busy = True
        try:
            self.draft = await edit_draft(self.draft, text, settings=settings)
        finally:
            self.busy = False
        return self.draft

    def use(self) -> str:
        self.used = True
        return self.draft.lyrics
