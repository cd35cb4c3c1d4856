"""Small typed functions on users, songs, drafts, votes and clips, for the bot, the worker and the
publisher.

Each takes either a Database (it then runs in its own write transaction) or a Session (it then joins
that transaction and leaves the commit to the caller, e.g. inside `queue.fenced(...)`).

A song's status is never written here: every move goes through `db/lifecycle.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from db.database import Database
from db.models import (
    CLIP_VOTE,
    DRAFT_VOTE,
    Clip,
    DailyClip,
    Draft,
    Job,
    JobStatus,
    Song,
    SongStatus,
    User,
    Vote,
    utcnow,
)

Target = Database | Session

DRAFT = "draft"
CLIP = "clip"


@contextmanager
def _tx(target: Target) -> Iterator[Session]:
    if isinstance(target, Session):
        yield target
        target.flush()
    else:
        with target.write() as s:
            yield s


@contextmanager
def _read(target: Target) -> Iterator[Session]:
    if isinstance(target, Session):
        yield target
    else:
        with target.read() as s:
            yield s


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _day(day: date | str) -> str:
    return day.isoformat() if isinstance(day, date) else date.fromisoformat(day).isoformat()


# --- users ---------------------------------------------------------------------------------------


def get_or_create_user(target: Target, discord_id: int, name: str = "") -> User:
    """The user with this Discord id, created on first sight; the display name is kept current."""
    with _tx(target) as s:
        s.execute(
            _insert(s)(User)
            .values(discord_id=discord_id, name=name, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["discord_id"])
        )
        user = s.execute(select(User).where(col(User.discord_id) == discord_id)).scalar_one()
        if name and user.name != name:
            user.name = name
            s.add(user)
        return user


# --- songs and drafts ------------------------------------------------------------------------------


def create_song(
    target: Target,
    *,
    user_id: int,
    artist: str,
    genre: str,
    seconds: float,
    seed: int,
    lyrics: str = "",
    title: str = "",
    model: str = "demo",
    n_drafts: int = 3,
    temperature: float | None = None,
    guild_id: int | None = None,
    channel_id: int | None = None,
    parent_clip_id: int | None = None,
    prime_key: str | None = None,
    prime_seconds: float | None = None,
    prime_at: float | None = None,
    request_key: str | None = None,
) -> Song:
    """A new song request, status `queued`. `request_key` (unique) names the request it answers."""
    song = Song(
        user_id=user_id,
        artist=artist,
        genre=genre,
        seconds=seconds,
        seed=seed,
        lyrics=lyrics,
        title=title,
        model=model,
        n_drafts=n_drafts,
        temperature=0.0 if temperature is None else temperature,  # 0.0: the model's recommendation
        guild_id=guild_id,
        channel_id=channel_id,
        parent_clip_id=parent_clip_id,
        prime_key=prime_key,
        prime_seconds=prime_seconds,
        prime_at=prime_at,
        request_key=request_key,
        status=SongStatus.queued.value,
    )
    with _tx(target) as s:
        s.add(song)
        s.flush()
        return song


def song_by_id(target: Target, song_id: int) -> Song | None:
    """For ids the system stored (a job's payload). An id a member typed goes through db.scope."""
    with _read(target) as s:
        return s.get(Song, song_id)


def add_draft(
    target: Target,
    song_id: int,
    index: int,
    audio_key: str,
    codes_key: str,
    *,
    waveform_key: str | None = None,
    seconds: float = 0.0,
) -> Draft:
    """Record draft `index` of a song; a retried job that writes it again replaces the keys."""
    with _tx(target) as s:
        draft = s.execute(
            select(Draft).where(col(Draft.song_id) == song_id, col(Draft.index) == index)
        ).scalar_one_or_none()
        if draft is None:
            draft = Draft(song_id=song_id, index=index, audio_key=audio_key, codes_key=codes_key)
        draft.audio_key, draft.codes_key = audio_key, codes_key
        draft.waveform_key, draft.seconds = waveform_key, seconds
        s.add(draft)
        s.flush()
        return draft


def draft_by_id(target: Target, draft_id: int | None) -> Draft | None:
    """For ids the system stored (a clip's draft). An id a button carried goes through db.scope."""
    if draft_id is None:
        return None
    with _read(target) as s:
        return s.get(Draft, draft_id)


def drafts_for_song(target: Target, song_id: int) -> list[Draft]:
    """The song's drafts in draft order."""
    stmt = select(Draft).where(col(Draft.song_id) == song_id).order_by(col(Draft.index))
    with _read(target) as s:
        return list(s.execute(stmt).scalars())


# --- votes ------------------------------------------------------------------------------------------


class VoteOutcome(StrEnum):
    new = "new"
    changed = "changed"
    unchanged = "unchanged"


def cast_vote(
    target: Target,
    song_id: int,
    voter_discord_id: int,
    draft_id: int | None = None,
    stage: str = DRAFT,
    *,
    voter_name: str = "",
    clip_id: int | None = None,
) -> VoteOutcome:
    """Stage 'draft': one vote per member per song, for one of its drafts (`draft_id`); voting again
    changes it. Stage 'clip': one vote per member per clip (`clip_id`, one of the song's clips; default
    its first); a song with several clips has votes for each.
    """
    if stage not in (DRAFT, CLIP):
        raise ValueError(f"Unknown vote stage {stage!r}; use 'draft' or 'clip'.")
    with _tx(target) as s:
        if stage == DRAFT:
            draft = s.get(Draft, draft_id) if draft_id is not None else None
            if draft is None or draft.song_id != song_id:
                raise ValueError(f"Draft {draft_id} is not one of song {song_id}'s drafts.")
            clip_id = None
            key, where = ["song_id", "user_id"], DRAFT_VOTE
        else:
            if clip_id is None:  # the song's first clip (its vote's winner)
                clip_id = s.execute(
                    select(func.min(col(Clip.id))).where(col(Clip.song_id) == song_id)
                ).scalar()
            clip = s.get(Clip, clip_id) if clip_id is not None else None
            if clip is None or clip.song_id != song_id:
                raise ValueError(f"Clip {clip_id} is not one of song {song_id}'s clips.")
            draft_id = None
            key, where = ["clip_id", "user_id"], CLIP_VOTE
        user = get_or_create_user(s, voter_discord_id, voter_name)
        now = utcnow()
        inserted = s.execute(
            _insert(s)(Vote)
            .values(
                song_id=song_id,
                user_id=user.id,
                stage=stage,
                draft_id=draft_id,
                clip_id=clip_id,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=key, index_where=where)
            .returning(col(Vote.id))
        ).first()
        if inserted is not None:
            return VoteOutcome.new
        if stage == CLIP:
            return VoteOutcome.unchanged
        changed = s.execute(
            update(Vote)
            .where(
                col(Vote.song_id) == song_id,
                col(Vote.user_id) == user.id,
                col(Vote.stage) == stage,
                col(Vote.draft_id) != draft_id,
            )
            .values(draft_id=draft_id, updated_at=now)
            .returning(col(Vote.id))
        ).first()
        return VoteOutcome.changed if changed is not None else VoteOutcome.unchanged


def vote_counts(target: Target, song_id: int, stage: str = DRAFT) -> dict[int | None, int]:
    """Votes per draft id (stage 'draft'); per clip id for stage 'clip' (see also `clip_votes`)."""
    key = col(Vote.draft_id) if stage == DRAFT else col(Vote.clip_id)
    stmt = (
        select(key, func.count()).where(col(Vote.song_id) == song_id, col(Vote.stage) == stage).group_by(key)
    )
    with _read(target) as s:
        rows = s.execute(stmt).all()
    return {k: int(n) for k, n in rows}


def clip_votes(target: Target, clip_id: int) -> int:
    """The clip's votes for the daily clip (its own, not its song's other clips')."""
    stmt = select(func.count()).where(col(Vote.stage) == CLIP, col(Vote.clip_id) == clip_id)
    with _read(target) as s:
        return int(s.execute(stmt).scalar() or 0)


# --- clips ------------------------------------------------------------------------------------------


def add_clip(
    target: Target,
    song_id: int,
    audio_key: str,
    codes_key: str,
    *,
    mp3_key: str | None = None,
    waveform_key: str | None = None,
    seconds: float = 0.0,
    draft_id: int | None = None,
    lrc_key: str | None = None,
    alignment_key: str | None = None,
) -> Clip:
    """Record the clip of one draft of a song (a song has one per draft upsampled); a retried job
    that writes it again replaces the keys."""
    with _tx(target) as s:
        clip = s.execute(
            select(Clip).where(col(Clip.song_id) == song_id, col(Clip.draft_id) == draft_id)
            if draft_id is not None
            else select(Clip).where(col(Clip.song_id) == song_id, col(Clip.draft_id).is_(None))
        ).scalar_one_or_none()
        if clip is None:
            clip = Clip(song_id=song_id, draft_id=draft_id, audio_key=audio_key, codes_key=codes_key)
        clip.audio_key, clip.codes_key, clip.mp3_key = audio_key, codes_key, mp3_key
        clip.waveform_key, clip.seconds = waveform_key, seconds
        clip.lrc_key, clip.alignment_key = lrc_key, alignment_key
        s.add(clip)
        s.flush()
        return clip


def first_clip(target: Target, song_id: int) -> Clip | None:
    """The song's first clip (its vote's winner); a draft chosen again later has its own."""
    with _read(target) as s:
        return s.execute(
            select(Clip).where(col(Clip.song_id) == song_id).order_by(col(Clip.id)).limit(1)
        ).scalar_one_or_none()


def clips_of_song(target: Target, song_id: int) -> list[Clip]:
    with _read(target) as s:
        return list(
            s.execute(select(Clip).where(col(Clip.song_id) == song_id).order_by(col(Clip.id))).scalars()
        )


def clip_by_id(target: Target, clip_id: int) -> Clip | None:
    """For ids the system stored (a song's parent clip). An id a member typed goes through db.scope."""
    with _read(target) as s:
        return s.get(Clip, clip_id)


def top_clips(
    target: Target,
    since: datetime,
    until: datetime | None = None,
    *,
    limit: int = 10,
    guild_id: int | None = None,
    unfeatured_only: bool = False,
) -> list[tuple[Clip, int]]:
    """Clips made in [since, until), most clip votes first (then the earlier clip), with their votes."""
    votes = (
        select(col(Vote.clip_id), func.count().label("n"))
        .where(col(Vote.stage) == CLIP)
        .group_by(col(Vote.clip_id))
        .subquery()
    )
    n = func.coalesce(votes.c.n, 0)
    stmt = (
        select(Clip, n)
        .join(Song, col(Song.id) == col(Clip.song_id))
        .outerjoin(votes, votes.c.clip_id == col(Clip.id))
        .where(col(Clip.created_at) >= since)
        .order_by(n.desc(), col(Clip.created_at), col(Clip.id))
        .limit(limit)
    )
    if until is not None:
        stmt = stmt.where(col(Clip.created_at) < until)
    if guild_id is not None:
        stmt = stmt.where(col(Song.guild_id) == guild_id)
    if unfeatured_only:
        stmt = stmt.where(
            ~select(col(DailyClip.clip_id)).where(col(DailyClip.clip_id) == col(Clip.id)).exists()
        )
    with _read(target) as s:
        return [(c, int(k)) for c, k in s.execute(stmt).all()]


def daily_pick(
    target: Target,
    now: datetime | None = None,
    *,
    hours: float = 24.0,
    guild_id: int | None = None,
    min_votes: int = 1,
) -> Clip | None:
    """The most-voted clip of the last `hours` never featured, with at least `min_votes` votes."""
    now = now or utcnow()
    found = top_clips(
        target, now - timedelta(hours=hours), now, limit=1, guild_id=guild_id, unfeatured_only=True
    )
    return found[0][0] if found and found[0][1] >= min_votes else None


def featured_clip(target: Target, guild_id: int, day: date | str) -> Clip | None:
    """The server's clip of that day, if it has one."""
    stmt = (
        select(Clip)
        .join(DailyClip, col(DailyClip.clip_id) == col(Clip.id))
        .where(col(DailyClip.guild_id) == guild_id, col(DailyClip.day) == _day(day))
    )
    with _read(target) as s:
        return s.execute(stmt).scalar_one_or_none()


def featured_day(target: Target, clip_id: int) -> str | None:
    """The day a clip was its server's clip of the day (YYYY-MM-DD), or None."""
    with _read(target) as s:
        return s.execute(select(col(DailyClip.day)).where(col(DailyClip.clip_id) == clip_id)).scalar()


def mark_featured(target: Target, clip_id: int, day: date | str) -> bool:
    """Make the clip its server's clip of the day. False when that server's day already has one
    or the clip was featured before (unique rows: safe when two processes try at once)."""
    with _tx(target) as s:
        guild_id = s.execute(
            select(col(Song.guild_id))
            .join(Clip, col(Clip.song_id) == col(Song.id))
            .where(col(Clip.id) == clip_id)
        ).scalar()
        try:
            with s.begin_nested():
                s.add(DailyClip(guild_id=guild_id or 0, day=_day(day), clip_id=clip_id))
                s.flush()
        except IntegrityError:
            return False
        return True


# --- quotas -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberUsage:
    songs_since: int  # songs requested since the given time (e.g. the start of today)
    queued: int  # the member's jobs waiting in the queue
    running: int  # the member's jobs being rendered now


def start_of_day(now: datetime | None = None) -> datetime:
    now = (now or utcnow()).astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def member_usage(target: Target, user_id: int, since: datetime | None = None) -> MemberUsage:
    """What a member is using now, for quotas: songs since `since` (default: UTC midnight), jobs."""
    since = since or start_of_day()
    songs = (
        select(func.count())
        .select_from(Song)
        .where(col(Song.user_id) == user_id, col(Song.created_at) >= since)
    )
    jobs = (
        select(col(Job.status), func.count())
        .join(Song, col(Song.id) == col(Job.song_id))
        .where(
            col(Song.user_id) == user_id,
            col(Job.status).in_([JobStatus.queued.value, JobStatus.running.value]),
        )
        .group_by(col(Job.status))
    )
    with _read(target) as s:
        n_songs = int(s.execute(songs).scalar_one())
        by_status = {status: int(n) for status, n in s.execute(jobs).all()}
    return MemberUsage(
        n_songs, by_status.get(JobStatus.queued.value, 0), by_status.get(JobStatus.running.value, 0)
    )


def running_in_guild(target: Target, guild_id: int) -> int:
    """Jobs of this guild's songs being rendered now."""
    stmt = (
        select(func.count())
        .select_from(Job)
        .join(Song, col(Song.id) == col(Job.song_id))
        .where(col(Song.guild_id) == guild_id, col(Job.status) == JobStatus.running.value)
    )
    with _read(target) as s:
        return int(s.execute(stmt).scalar_one())
