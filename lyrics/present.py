"""How drafts and fitted lyrics are shown: plain text, pure functions, no Discord import, so the
bot's views and the command line say the same thing and both are testable without a front end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lyrics.budget import LyricBudget

if TYPE_CHECKING:
    from lyrics.draft import LyricsDraft

DRAFTING = "✍️ Drafting lyrics…"
DISCORD_MESSAGE_LIMIT = 2000


def _fence_safe(text: str) -> str:
    # A model that writes ``` would close our code block early.
    return text.replace("```", "'''")


def code_block(text: str) -> str:
    return f"```\n{_fence_safe(text)}\n```"


def retry_note(attempt: int, attempts: int, reason: str | None = None) -> str:
    after = f" after {reason}" if reason else ""
    return f"trying again{after}, attempt {attempt} of {attempts}"


def partial_preview(
    text: str, *, attempt: int = 1, attempts: int = 1, reason: str | None = None, limit: int = 1800
) -> str:
    """The message shown while a draft streams in: the latest text (its end, if long)."""
    head = DRAFTING
    if attempt > 1:
        head += f" ({retry_note(attempt, attempts, reason)})"
    text = text.strip()
    if not text:
        return head
    room = max(20, limit - len(head) - 10)
    if len(text) > room:
        text = "…" + text[-(room - 1) :]
    return f"{head}\n{code_block(text)}"


def seconds_text(seconds: float) -> str:
    return f"{seconds:g} s"


def style_line(
    *, seconds: float, artist: str | None, genre: str | None, chars: int, budget: LyricBudget
) -> str:
    parts = [seconds_text(seconds)]
    style = ", ".join(x for x in (artist, genre) if x)
    if style:
        parts.append(f"style: {style}")
    parts.append(f"{chars:,} of {budget.max_chars:,} characters")
    return " · ".join(parts)


def notes_text(notes: Sequence[str], *, limit: int = 1000) -> str:
    """'Changes:' and a bullet per note; empty when nothing changed."""
    if not notes:
        return ""
    lines = ["Changes:"]
    for note in notes:
        line = f"• {note}"
        if len("\n".join([*lines, line])) > limit - 2:
            lines.append("• …")
            break
        lines.append(line)
    return "\n".join(lines)


def one_line(lyrics: str) -> str:
    """The lyrics on one line for a slash-command option (those cannot hold line breaks). The
    engine reads a backslash as a line break, as the original Jukebox code does."""
    return " \\ ".join(line for line in lyrics.split("\n") if line.strip())


def generate_hint(lyrics: str, *, artist: str | None, genre: str | None, seconds: float) -> str:
    """What to do with lyrics when Use cannot start a song by itself."""
    args = [f"artist:{artist or '…'}", f"genre:{genre or '…'}", f"seconds:{seconds:g}", "lyrics:"]
    return (
        "Here are your lyrics. To sing them, run `/generate "
        + " ".join(args)
        + "` and paste this line (a backslash is a line break):\n"
        + code_block(one_line(lyrics))
    )


def fit_for_message(text: str, limit: int = DISCORD_MESSAGE_LIMIT) -> str:
    """Shorten a message to Discord's limit without cutting a code block in half."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 5]
    if cut.count("```") % 2:
        return cut + "…\n```"
    return cut + "…"


class EditThrottle:
    """Streamed text arrives many times a second; a Discord message may be edited about once a
    second. `due()` says whether enough time has passed since the last edit it allowed."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        now = self._clock()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            return True
        return False


@dataclass(frozen=True)
class DraftCard:
    """A draft laid out for a front end (the bot turns it into an embed)."""

    title: str
    body: str  # the lyrics in a code block, so they copy cleanly
    changes: str  # notes_text(...), "" when nothing changed
    footer: str


def draft_card(draft: LyricsDraft) -> DraftCard:
    request = draft.request
    title = "Your lyrics (edited)" if draft.edited else "Lyrics draft"
    subject = request.prompt if len(request.prompt) <= 80 else request.prompt[:77] + "…"
    return DraftCard(
        title=f"{title}: {subject}",
        body=code_block(draft.lyrics),
        changes=notes_text(draft.notes),
        footer=style_line(
            seconds=request.seconds,
            artist=request.artist,
            genre=request.genre,
            chars=len(draft.lyrics),
            budget=request.budget,
        ),
    )
