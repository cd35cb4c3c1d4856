"""A per-member rate limit for requests that cost GPU time (a sliding window, in memory).

Quotas that must survive a restart (songs per day, songs in flight) are counted in the database;
this only stops a burst of clicks or commands within seconds, so memory is the right place.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    def __init__(self, count: int, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.seconds = seconds
        self._clock = clock
        self._hits: dict[int, deque[float]] = {}

    def retry_after(self, member_id: int) -> float:
        """0 if the member may go ahead now (and counts this request); else seconds to wait."""
        if self.count <= 0:
            return 0.0
        now = self._clock()
        hits = self._hits.setdefault(member_id, deque())
        while hits and now - hits[0] >= self.seconds:
            hits.popleft()
        if len(hits) >= self.count:
            return self.seconds - (now - hits[0])
        hits.append(now)
        return 0.0

    def forget(self, member_id: int) -> None:
        """Give back the last request (it was refused for another reason, so it should not count)."""
        hits = self._hits.get(member_id)
        if hits:
            hits.pop()


class DraftBudget:
    """How many lyric drafts (each one a call to the paid text model) a member may ask for per hour
    and a server per day: `/lyrics draft`, `/generate lyrics_prompt:` and Regenerate all draw on it.

    In memory (sliding windows, as RateLimiter): the drafts are not recorded in the database, so a
    restart of the bot forgets the windows; the budget bounds a burst or a night of abuse, not a
    month's bill. A value of 0 or less switches that budget off."""

    def __init__(
        self, per_member_hour: int, per_guild_day: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.member = RateLimiter(per_member_hour, 3600.0, clock)
        self.guild = RateLimiter(per_guild_day, 86400.0, clock)

    def take(self, member_id: int, guild_id: int | None) -> str | None:
        """Count one draft and return None, or say (without counting it) why not and when."""
        wait = self.member.retry_after(member_id)
        if wait > 0:
            return (
                f"Each member may ask for {self.member.count} lyric drafts an hour; "
                f"your next one is possible in {_human_wait(wait)}."
            )
        if guild_id is None:
            return None
        wait = self.guild.retry_after(guild_id)
        if wait > 0:
            self.member.forget(member_id)
            return (
                f"This server may ask for {self.guild.count} lyric drafts a day and has used them; "
                f"the next one is possible in {_human_wait(wait)}."
            )
        return None


def _human_wait(seconds: float) -> str:
    minutes = max(1, int(seconds // 60 + (1 if seconds % 60 else 0)))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
