"""One asyncio lock per song: posting drafts, closing a vote, posting the clip and cancelling never
interleave for the same song inside this process."""

from __future__ import annotations

import asyncio


class SongLocks:
    def __init__(self) -> None:
        self._locks: dict[int, asyncio.Lock] = {}

    def lock_for(self, song_id: int) -> asyncio.Lock:
        return self._locks.setdefault(song_id, asyncio.Lock())

    def forget(self, song_id: int) -> None:
        """A finished song needs no lock any more (kept while someone holds it)."""
        lock = self._locks.get(song_id)
        if lock is not None and not lock.locked():
            del self._locks[song_id]
