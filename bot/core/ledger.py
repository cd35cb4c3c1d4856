"""Posts that must happen once: a failed post waits before it is tried again, and a post Discord
took but the database did not record (a hiccup right after the post) is recorded on the next try
instead of being posted again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class PostLedger:
    def __init__(self) -> None:
        self._retry_at: dict[tuple[str, int], float] = {}
        self._failures: dict[tuple[str, int], int] = {}
        self._unrecorded: dict[tuple[str, int], Callable[[], None]] = {}

    def backing_off(self, what: str, song_id: int) -> bool:
        """True while a failed post of `what` for this song should not be retried yet."""
        return self._retry_at.get((what, song_id), 0.0) > time.monotonic()

    def failed(self, what: str, song_id: int, delay: float = 30.0) -> int:
        """Wait `delay` seconds before the next try; returns how many tries have failed so far."""
        self._retry_at[(what, song_id)] = time.monotonic() + delay
        self._failures[(what, song_id)] = self._failures.get((what, song_id), 0) + 1
        return self._failures[(what, song_id)]

    def forget(self, what: str, song_id: int) -> None:
        """The post is done, or given up: no more waiting or counting for it."""
        self._retry_at.pop((what, song_id), None)
        self._failures.pop((what, song_id), None)

    async def record(self, what: str, song_id: int, write: Callable[[], None]) -> None:
        """Record a post in the database; if that fails, keep it to record later (never post twice)."""
        self._unrecorded[(what, song_id)] = write
        await self.record_pending(what, song_id)

    async def record_pending(self, what: str, song_id: int) -> bool:
        """True when a post of `what` was made but not recorded; records it now if possible."""
        write = self._unrecorded.get((what, song_id))
        if write is None:
            return False
        await asyncio.to_thread(write)  # raises if the database is still unavailable: tried again next tick
        self._unrecorded.pop((what, song_id), None)
        return True
