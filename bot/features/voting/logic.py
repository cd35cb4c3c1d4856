"""Community voting on a song's drafts, run from the database so a restart loses nothing.

- `drafts_posted`: the window runs from the post (the song went to `voting` before the drafts were
  shown, so the first click counts: `db.lifecycle.open_vote`).
- `vote`: one vote per member per song, changeable; refused once the window has passed (the
  clock decides, not whether the watcher has closed it yet).
- `close_vote`: `db.lifecycle.close_vote` picks the winner (most votes; a tie goes to the
  requester's own vote, then to draft order), moves the song to `upsampling` and queues the upsample
  job in one transaction. Safe to call twice or from two places: only the first call closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select
from sqlmodel import Session, col

from bot.core.text import ts
from bot.errors import UserError
from db import lifecycle, repo
from db.database import Database
from db.models import Draft, Song, SongStatus, User, utcnow
from db.scope import GuildScope


@dataclass(frozen=True)
class Tally:
    song_id: int
    drafts: list[Draft]
    counts: dict[int, int]  # draft id -> votes

    def votes_for_index(self, index: int) -> int:
        d = next((d for d in self.drafts if d.index == index), None)
        return self.counts.get(d.id, 0) if d is not None and d.id is not None else 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class VoteResult:
    outcome: repo.VoteOutcome
    draft_index: int
    tally: Tally


@dataclass(frozen=True)
class Closed:
    song: Song
    winner: Draft
    tally: Tally
    job_id: int


def tally(target: Database | Session, song_id: int) -> Tally:
    drafts = repo.drafts_for_song(target, song_id)
    counts = {k: v for k, v in repo.vote_counts(target, song_id, repo.DRAFT).items() if k is not None}
    return Tally(song_id, drafts, counts)


def drafts_posted(db: Database, song_id: int, message_id: int, closes_at: datetime) -> None:
    """Record the drafts message; the window runs from the moment members could see the drafts.
    A reroll's drafts replace the vote of the song it rerolls, in the same transaction."""
    with db.write() as s:
        song = s.get(Song, song_id, with_for_update=True)
        if song is None:
            raise LookupError(f"There is no song {song_id}.")
        for d in repo.drafts_for_song(s, song_id):
            d.message_id = message_id
            s.add(d)
        if song.status == SongStatus.voting:
            song.vote_closes_at = closes_at
            s.add(song)
        if song.rerolled_from_song_id is not None:
            lifecycle.replace_vote(s, song.rerolled_from_song_id)


def unposted_drafts(s: Session, song_id: int) -> int:
    return int(
        s.execute(
            select(func.count())
            .select_from(Draft)
            .where(col(Draft.song_id) == song_id, col(Draft.message_id).is_(None))
        ).scalar_one()
    )


def vote(
    db: Database,
    scope: GuildScope,
    song_id: int,
    draft_id: int,
    voter_discord_id: int,
    voter_name: str = "",
    now: datetime | None = None,
) -> VoteResult:
    now = now or utcnow()
    with db.write() as s:
        song = scope.song(s, song_id, for_update=True)
        if song is None:
            raise UserError(f"There is no song #{song_id} here.")
        due = song.vote_closes_at is None or now >= song.vote_closes_at
        if song.status != SongStatus.voting or (due and lifecycle.live_reroll(s, song_id) is None):
            raise UserError(closed_message(s, song))  # a reroll on its way keeps the old vote open
        draft = scope.draft(s, song_id, draft_id)
        if draft is None:
            raise UserError("That draft is not part of this song.")
        outcome = repo.cast_vote(s, song_id, voter_discord_id, draft_id, repo.DRAFT, voter_name=voter_name)
        return VoteResult(outcome, draft.index, tally(s, song_id))


def closed_message(s: Session, song: Song) -> str:
    when = f" {ts(song.vote_closes_at)}" if song.vote_closes_at else ""
    if song.status == SongStatus.cancelled:
        return f"Song #{song.id} was cancelled, so its vote is over."
    if song.status == SongStatus.rerolled:
        return f"Song #{song.id} was rerolled: vote on its new drafts instead."
    winner = s.get(Draft, song.winner_draft_id) if song.winner_draft_id else None
    won = f" Draft {winner.index + 1} won." if winner is not None else ""
    return f"Voting on song #{song.id} closed{when}.{won}"


def due_votes(db: Database, now: datetime | None = None) -> list[int]:
    now = now or utcnow()
    with db.read() as s:
        rows = s.execute(
            select(col(Song.id)).where(
                col(Song.status) == SongStatus.voting.value, col(Song.vote_closes_at) <= now
            )
        ).all()
    return [int(r[0]) for r in rows]


def close_vote(
    db: Database, song_id: int, *, force: bool = False, now: datetime | None = None
) -> Closed | None:
    """Close the vote if it is due (or `force`, for an early close). None when it was not open."""
    closed = lifecycle.close_vote(db, song_id, force=force, now=now)
    if closed is None:
        return None
    return Closed(closed.song, closed.winner, tally(db, song_id), closed.job_id)


def song_with_drafts(db: Database, song_id: int) -> tuple[Song, list[Draft], int]:
    """A song the bot watches, its drafts and its requester's Discord id."""
    with db.read() as s:
        song = s.get(Song, song_id)
        if song is None:
            raise LookupError(f"no song {song_id}")
        user = s.get(User, song.user_id)
        drafts = repo.drafts_for_song(s, song_id)
        return song, drafts, user.discord_id if user else 0


def recently_closed_with_message(db: Database, since: datetime, limit: int = 200) -> list[int]:
    """Songs whose vote ended (closed, failed or cancelled) since `since` and whose drafts were
    posted: their drafts message should show the closed form (the newest first, at most `limit`)."""
    posted = exists().where(col(Draft.song_id) == col(Song.id), col(Draft.message_id).is_not(None))
    with db.read() as s:
        rows = s.execute(
            select(col(Song.id))
            .where(
                col(Song.status).not_in(
                    (SongStatus.queued.value, SongStatus.drafting.value, SongStatus.voting.value)
                ),
                col(Song.vote_closes_at).is_not(None),
                col(Song.vote_closes_at) >= since,
                posted,
            )
            .order_by(col(Song.id).desc())
            .limit(limit)
        ).all()
    return [int(r[0]) for r in rows]
