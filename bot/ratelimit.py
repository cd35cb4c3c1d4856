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
