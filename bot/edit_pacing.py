"""When each song's status message may be edited next, so the bot stays inside Discord's limits.

Discord allows about 5 message edits per 5 s per channel (every song in the channel shares them)
and answers 429 beyond (issue #14, defect 16). The pacer keeps status edits to a smaller budget per
channel (head-room for the bot's other messages there), at most one edit per song every
`song_interval` seconds, and lets songs that share a channel take turns (the one that waited longest
goes first).

It holds no message text: a song either wants an edit or not, so a newer change replaces a pending
one instead of queueing behind it, and the caller renders the latest state when the edit is due.
Pure and clock-free (the caller passes `now`, e.g. `loop.time()`); no Discord imports.

    pacer.want(song_id, channel_id, now)       # the song's state changed
    for song_id in pacer.due(now): edit it     # granted edits (already counted)
    sleep until pacer.next_due_at(now)         # or until the next change
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class PacingRules:
    channel_edits: int = 3  # status edits per channel in any `channel_window` (Discord allows 5)
    channel_window: float = 5.0
    song_interval: float = 3.0  # at least this long between two edits of one song

    def __post_init__(self) -> None:
        if self.channel_edits < 1 or self.channel_window <= 0 or self.song_interval < 0:
            raise ValueError(f"pacing rules must be positive: {self}")


@dataclass
class _Song:
    channel_id: int
    wanted_since: float | None = None  # None: nothing new to show
    last_edit: float | None = None


class EditPacer:
    def __init__(self, rules: PacingRules | None = None) -> None:
        self.rules = rules or PacingRules()
        self._songs: dict[int, _Song] = {}
        # Times of the edits granted per channel within the last window (a sliding window is
        # stricter than Discord's fixed one, so it never lets through more than Discord would).
        self._channel_edits: dict[int, deque[float]] = {}

    # ---------------------------------------------------------------- the caller tells

    def want(self, song_id: int, channel_id: int, now: float) -> None:
        """The song's message should show a newer state. Wanting again before the edit goes out
        changes nothing: the edit that goes out will render the latest state anyway."""
        song = self._songs.get(song_id)
        if song is None or song.channel_id != channel_id:
            song = self._songs[song_id] = _Song(channel_id, last_edit=song.last_edit if song else None)
        if song.wanted_since is None:
            song.wanted_since = now

    def sent(self, song_id: int | None, channel_id: int, now: float) -> None:
        """An edit or message went to the channel outside `due` (e.g. drafts posted, an edit made
        at once in answer to a button): count it in the channel's budget and, for a song, its
        interval. A pending want of that song stays pending (the caller may have sent older text)."""
        self._record(channel_id, now)
        if song_id is not None:
            song = self._songs.setdefault(song_id, _Song(channel_id))
            song.last_edit = now

    def forget(self, song_id: int) -> None:
        """The song's message is final or gone: drop what is pending for it."""
        self._songs.pop(song_id, None)

    # ---------------------------------------------------------------- the pacer answers

    def due(self, now: float) -> list[int]:
        """The songs whose message may be edited now, counted as edited at `now`: per channel
        the ones that waited longest since their last edit, within the channel's budget."""
        granted: list[int] = []
        for channel_id, songs in self._waiting_by_channel(now).items():
            free = self.rules.channel_edits - len(self._window(channel_id, now))
            for song_id in songs[: max(0, free)]:
                song = self._songs[song_id]
                song.wanted_since = None
                song.last_edit = now
                self._record(channel_id, now)
                granted.append(song_id)
        return granted

    def next_due_at(self, now: float) -> float | None:
        """The earliest time a pending edit may go out (`now` when one may already), or None when
        nothing is pending: how long the refresher may sleep if nothing else changes."""
        best: float | None = None
        for song in self._songs.values():
            if song.wanted_since is None:
                continue
            at = max(now, self._song_free_at(song), self._channel_free_at(song.channel_id, now))
            best = at if best is None else min(best, at)
        return best

    def pending(self) -> set[int]:
        return {sid for sid, s in self._songs.items() if s.wanted_since is not None}

    # ---------------------------------------------------------------- inside

    def _waiting_by_channel(self, now: float) -> dict[int, list[int]]:
        """Songs that want an edit and whose own interval has passed, per channel, in turn order:
        never edited first, then the oldest last edit, then the oldest want."""
        out: dict[int, list[tuple[float, float, int]]] = {}
        for song_id, song in self._songs.items():
            if song.wanted_since is None or self._song_free_at(song) > now:
                continue
            last = float("-inf") if song.last_edit is None else song.last_edit
            out.setdefault(song.channel_id, []).append((last, song.wanted_since, song_id))
        return {cid: [sid for *_, sid in sorted(items)] for cid, items in out.items()}

    def _song_free_at(self, song: _Song) -> float:
        return float("-inf") if song.last_edit is None else song.last_edit + self.rules.song_interval

    def _window(self, channel_id: int, now: float) -> deque[float]:
        edits = self._channel_edits.setdefault(channel_id, deque())
        while edits and edits[0] <= now - self.rules.channel_window:
            edits.popleft()
        return edits

    def _channel_free_at(self, channel_id: int, now: float) -> float:
        edits = self._window(channel_id, now)
        if len(edits) < self.rules.channel_edits:
            return now
        # The edit that frees a slot is the one `channel_edits` back from the end.
        return edits[-self.rules.channel_edits] + self.rules.channel_window

    def _record(self, channel_id: int, now: float) -> None:
        self._window(channel_id, now).append(now)


def worker_gone_quiet(
    heartbeat_at: datetime | None, heartbeat_seconds: float, now: datetime, missed: int = 3
) -> bool:
    """Whether a running job's worker has missed more than `missed` heartbeats, so its status
    should say "waiting for a worker" instead of the last percent and ETA (which would otherwise
    stay until the lease runs out). None (no heartbeat recorded yet) is not quiet: a claim writes
    the first heartbeat. Naive datetimes are taken as UTC (how SQLite hands them back)."""
    if heartbeat_at is None:
        return False
    if heartbeat_seconds <= 0:
        raise ValueError(f"heartbeat_seconds must be positive, not {heartbeat_seconds}")
    silent = (_utc(now) - _utc(heartbeat_at)).total_seconds()
    return silent > missed * heartbeat_seconds


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when
