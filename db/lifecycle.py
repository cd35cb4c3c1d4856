"""A song's life, in one place: its states, the moves allowed between them, and every write of
`songs.status`. Jobs have theirs in `db/queue.py`, publications in `publisher/state.py`.

    queued ─▶ drafting ─▶ voting ─close_vote─▶ upsampling ◀─choose_again─▶ done
       │          │          │  └─replace_vote─▶ rerolled      │
       └──────────┴──────────┴─────────────────────┴──▶ failed | cancelled ─retry─▶ queued | upsampling

- A move that is not in `MOVES` is refused (`IllegalMove`), except a move to where the song already
  is, which is a no-op: the watcher, the worker and a button may all report the same news.
- `close_vote` records the winner, moves the song to `upsampling` and queues the upsample job in ONE
  transaction, so no crash can leave a closed vote without its job.
- `cancel` and `retry` move the song and its job together.
- Reroll: `reroll` writes a new song (same recipe, new seed, `rerolled_from_song_id`) while the old
  vote stays open; the old vote does not close by the clock while its reroll is on its way. When the
  reroll's drafts are posted, `replace_vote` ends the old song as `rerolled` (counted: a reroll costs
  one song of the day, the new row). A reroll that fails or is cancelled leaves the old vote to close.
- Choose again: `choose_again` queues the upsample of one more draft of a song whose vote closed (each
  draft once: the job's key and clips' (song_id, draft_id) are unique) and brings a `done` song back to
  `upsampling`; `settle` ends it `done` again once no upsample job is left and every clip is posted.

Every function takes a Session from `db.write()` (or the Database, and opens one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlmodel import Session, col

from db import queue
from db.database import Database
from db.models import Clip, Draft, Job, JobKind, JobStatus, Song, SongStatus, Vote, utcnow

Q, D, V, U = SongStatus.queued, SongStatus.drafting, SongStatus.voting, SongStatus.upsampling
DONE, FAILED, CANCELLED = SongStatus.done, SongStatus.failed, SongStatus.cancelled
REROLLED = SongStatus.rerolled

FINAL = frozenset({DONE, FAILED, CANCELLED, REROLLED})
MOVES: dict[SongStatus, frozenset[SongStatus]] = {
    Q: frozenset({D, V, FAILED, CANCELLED}),  # V: a worker that drafted before reporting `drafting`
    D: frozenset({V, FAILED, CANCELLED}),
    V: frozenset({U, FAILED, CANCELLED, REROLLED}),
    U: frozenset({DONE, FAILED, CANCELLED}),
    DONE: frozenset({U}),  # choose again: one more draft upsampled
    REROLLED: frozenset(),
    FAILED: frozenset({Q, U}),  # retry
    CANCELLED: frozenset({Q, U}),  # retry
}
ACTIVE_JOB = (JobStatus.queued.value, JobStatus.running.value)
DRAFT_STAGE = "draft"


class IllegalMove(RuntimeError):
    """A status change the song's life does not allow (a bug or a stale caller)."""

    def __init__(self, song_id: int, current: str, wanted: str) -> None:
        super().__init__(f"song {song_id} cannot go from {current} to {wanted}")
        self.song_id, self.current, self.wanted = song_id, current, wanted


@contextmanager
def _tx(target: Database | Session) -> Iterator[Session]:
    if isinstance(target, Session):
        yield target
    else:
        with target.write() as s:
            yield s


def _locked(s: Session, song_id: int) -> Song:
    song = s.execute(select(Song).where(col(Song.id) == song_id).with_for_update()).scalar_one_or_none()
    if song is None:
        raise LookupError(f"There is no song {song_id}.")
    return song


def can_move(current: str, to: SongStatus) -> bool:
    return to == current or to in MOVES[SongStatus(current)]


def move(
    target: Database | Session,
    song_id: int,
    to: SongStatus,
    *,
    error: str | None = None,
    now: datetime | None = None,
) -> Song:
    """Move a song to `to` (IllegalMove when its life does not allow it; no-op when it is there)."""
    with _tx(target) as s:
        song = _locked(s, song_id)
        _apply(song, to, error=error, now=now)
        s.add(song)
        s.flush()
        return song


def _apply(song: Song, to: SongStatus, *, error: str | None = None, now: datetime | None = None) -> None:
    assert song.id is not None
    if not can_move(song.status, to):
        raise IllegalMove(song.id, song.status, to.value)
    if song.status != to:
        song.status = to.value
        song.updated_at = now or utcnow()
    if error is not None:
        song.error = error


def advance(target: Database | Session, song_id: int, to: SongStatus, *, error: str | None = None) -> bool:
    """Move when allowed, otherwise leave the song alone (a report that came too late: the song was
    cancelled or already moved on). True when the song is now at `to`."""
    with _tx(target) as s:
        song = _locked(s, song_id)
        if not can_move(song.status, to):
            return False
        _apply(song, to, error=error)
        s.add(song)
        return True


def finish(target: Database | Session, song_id: int, to: SongStatus, error: str | None = None) -> bool:
    """End a song (done, failed or cancelled) unless it has already ended. True when ended now."""
    assert to in FINAL
    with _tx(target) as s:
        song = _locked(s, song_id)
        if song.status in FINAL:
            return False
        _apply(song, to, error=error)
        s.add(song)
        return True


def first_job_key(song_id: int) -> str:
    return f"song:{song_id}:first"


def start(db: Database, song_id: int, kind: JobKind) -> int | None:
    """Queue the first job of a waiting song, in the transaction that checks it is still waiting (a
    song cancelled a moment ago gets no job). Idempotent. The job id, or None when it no longer waits."""
    with db.write() as s:
        song = _locked(s, song_id)
        if song.status != Q:
            return None
        return queue.enqueue(
            db, kind, {"song_id": song_id}, song_id=song_id, idempotency_key=first_job_key(song_id), session=s
        )


# --- voting ---------------------------------------------------------------------------------------


def open_vote(db: Database, song_id: int, closes_at: datetime, now: datetime | None = None) -> Song:
    """The drafts are ready: open the vote before they are shown, so the first click counts. A song
    already voting (a retried post) keeps its window."""
    with db.write() as s:
        song = _locked(s, song_id)
        if song.status in (Q, D):
            _apply(song, V, now=now)
            song.vote_closes_at = closes_at
            s.add(song)
        return song


def upsample_key(song_id: int) -> str:
    return f"song:{song_id}:upsample"


@dataclass(frozen=True)
class Closed:
    song: Song
    winner: Draft
    job_id: int


def pick_winner(s: Session, song: Song) -> Draft | None:
    """The draft with the most votes; a tie goes to the requester's own vote, then to draft order."""
    from db import repo

    assert song.id is not None
    drafts = repo.drafts_for_song(s, song.id)
    if not drafts:
        return None
    counts = repo.vote_counts(s, song.id, DRAFT_STAGE)
    own = s.execute(
        select(col(Vote.draft_id)).where(
            col(Vote.song_id) == song.id, col(Vote.user_id) == song.user_id, col(Vote.stage) == DRAFT_STAGE
        )
    ).scalar()
    return max(drafts, key=lambda d: (counts.get(d.id, 0), d.id == own, -d.index))


def close_vote(
    db: Database, song_id: int, *, force: bool = False, now: datetime | None = None
) -> Closed | None:
    """Close a due vote (or any open one with `force`): record the winner, move the song to
    `upsampling` and queue its upsample job, all in one transaction. None when it was not open or
    not due. Safe to call twice or from two places: only the first call closes."""
    now = now or utcnow()
    with db.write() as s:
        song = _locked(s, song_id)
        if song.status != V:
            return None
        if not force and (song.vote_closes_at is None or song.vote_closes_at > now):
            return None
        if not force and live_reroll(s, song_id) is not None:
            return None  # the old drafts stay votable until the reroll's replace them
        winner = pick_winner(s, song)
        if winner is None:
            raise RuntimeError(f"song {song_id} is voting but has no drafts")
        song.winner_draft_id = winner.id
        if force:
            song.vote_closes_at = now
        _apply(song, U, now=now)
        s.add(song)
        s.flush()
        job_id = queue.enqueue(
            db,
            JobKind.upsample,
            {"song_id": song_id, "draft_id": winner.id},
            song_id=song_id,
            idempotency_key=upsample_key(song_id),
            session=s,
        )
        return Closed(song, winner, job_id)


# --- reroll ---------------------------------------------------------------------------------------

LIVE_REROLL = (Q.value, D.value, V.value)


def live_reroll(s: Session, song_id: int) -> Song | None:
    """The reroll of this song that is on its way (its drafts not yet posted), if any."""
    return (
        s.execute(
            select(Song)
            .where(col(Song.rerolled_from_song_id) == song_id, col(Song.status).in_(LIVE_REROLL))
            .order_by(col(Song.id).desc())
            .limit(1)
        )
        .scalars()
        .first()
    )


def replace_vote(s: Session, song_id: int, now: datetime | None = None) -> bool:
    """A reroll's drafts are posted: the vote of the song it rerolls ends (`rerolled`). True when it
    ended now; False when that vote had already closed (the reroll then stands on its own)."""
    song = _locked(s, song_id)
    if song.status != V:
        return False
    _apply(song, REROLLED, now=now)
    song.vote_closes_at = now or utcnow()
    s.add(song)
    return True


# --- choose again ---------------------------------------------------------------------------------

UPSAMPLED = (U, DONE)  # a song whose vote chose a draft
AGAIN_KEYS = "song:%:upsample:%"  # LIKE pattern of `again_key` (the winner's is `upsample_key`)


def again_key(song_id: int, draft_id: int) -> str:
    return f"song:{song_id}:upsample:{draft_id}"


def choose_again(db: Database, s: Session, song_id: int, draft_id: int, now: datetime | None = None) -> int:
    """Queue the upsample of one more draft of a song whose vote closed; a finished song goes back to
    `upsampling` until that clip is posted. Idempotent per draft (the job's key). The job id."""
    song = _locked(s, song_id)
    if song.status not in UPSAMPLED:
        raise IllegalMove(song_id, song.status, "another upsample")
    _apply(song, U, now=now)
    s.add(song)
    s.flush()
    return queue.enqueue(
        db,
        JobKind.upsample,
        {"song_id": song_id, "draft_id": draft_id},
        song_id=song_id,
        idempotency_key=again_key(song_id, draft_id),
        session=s,
    )


def settle(s: Session, song_id: int) -> bool:
    """An upsampling song with a posted clip ends `done` again once none of its upsample jobs is
    queued or running and every clip is posted (a chosen-again draft that failed leaves the song's
    other clips as they were). True when it is done now."""
    song = _locked(s, song_id)
    if song.status != U:
        return song.status == DONE
    active = s.execute(
        select(col(Job.id)).where(
            col(Job.song_id) == song_id,
            col(Job.kind) == JobKind.upsample.value,
            col(Job.status).in_(ACTIVE_JOB),
        )
    ).first()
    clips = s.execute(select(Clip).where(col(Clip.song_id) == song_id)).scalars().all()
    if active is not None or not clips or any(c.message_id is None for c in clips):
        return False
    _apply(song, DONE)
    s.add(song)
    return True


# --- cancel and retry -----------------------------------------------------------------------------


class CancelOutcome(StrEnum):
    cancelled = "cancelled"  # stopped now
    requested = "requested"  # a worker is on it; it stops at its next heartbeat
    finished = "finished"  # nothing to cancel any more


def latest_job(s: Session, song_id: int) -> Job | None:
    stmt = select(Job).where(col(Job.song_id) == song_id).order_by(col(Job.id).desc()).limit(1)
    return s.execute(stmt).scalar_one_or_none()


def cancel(db: Database, song_id: int) -> CancelOutcome:
    """Cancel a song and its job in one transaction. A running job is asked to stop; its song becomes
    `cancelled` when the worker (or, if the worker died, the sweeper) ends the job."""
    with db.write() as s:
        song = _locked(s, song_id)
        if song.status in FINAL:
            return CancelOutcome.finished
        job = latest_job(s, song_id)
        if job is not None and job.id is not None and job.status in ACTIVE_JOB:
            result = queue.cancel(db, job.id, session=s)
            if result == queue.CancelResult.requested:
                return CancelOutcome.requested
        _apply(song, CANCELLED)
        s.add(song)
        return CancelOutcome.cancelled


def retry(db: Database, job_id: int) -> Job:
    """Put a failed or cancelled job back in the queue (it resumes from its checkpoint) and move its
    song back into the studio, in one transaction. LookupError / ValueError when it cannot be."""
    now = utcnow()
    with db.write() as s:
        job = queue.requeue(s, job_id, now=now)
        if job.song_id is not None:
            song = _locked(s, job.song_id)
            _apply(song, U if job.kind == JobKind.upsample.value else Q, now=now)
            song.error = None
            s.add(song)
        return job
