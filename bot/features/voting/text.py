"""The text of a song's drafts message, while the vote is open and once it closed."""

from __future__ import annotations

from datetime import datetime

from bot.core.text import describe, ts
from db.models import Song


def drafts_content(
    song: Song,
    requester_id: int,
    closes: datetime | None,
    winner_index: int | None = None,
    winner_votes: int = 0,
) -> str:
    head = f"🎧 **Song #{song.id}** — {describe(song)} — drafts for <@{requester_id}>."
    if winner_index is None:
        return (
            f"{head}\nListen and vote for the one that should be made in full quality. "
            f"Voting closes {ts(closes) if closes else 'soon'}; one vote per member, and you can change it."
        )
    plural = "s" if winner_votes != 1 else ""
    return (
        f"{head}\n🏆 Voting closed: **draft {winner_index + 1}** won with {winner_votes} vote{plural}. "
        "It is being made in full quality now."
    )
