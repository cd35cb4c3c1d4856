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
    if song.rerolled_from_song_id is not None:
        head += f" 🎲 A reroll of song #{song.rerolled_from_song_id}."
    if winner_index is None:
        return (
            f"{head}\nListen and vote for the one that should be made in full quality. "
            f"Voting closes {ts(closes) if closes else 'soon'}; one vote per member, and you can change it. "
            "Don't like any? 🎲 **Reroll** makes a new set (these stay up for the vote until it is ready)."
        )
    plural = "s" if winner_votes != 1 else ""
    return (
        f"{head}\n🏆 Voting closed: **draft {winner_index + 1}** won with {winner_votes} vote{plural}. "
        "It is being made in full quality. The requester or a moderator can make another draft too "
        "with its **U** button."
    )


def rerolled_content(song: Song, requester_id: int, new_song_id: int | None) -> str:
    head = f"🎧 **Song #{song.id}** — {describe(song)} — drafts for <@{requester_id}>."
    where = f"song #{new_song_id}" if new_song_id else "a new song"
    return f"{head}\n🎲 Rerolled → {where}: its new drafts replaced this vote. These drafts stay here to listen to."
