"""Song requests: checking what a member asks for, quotas, putting songs into the queue (within the
guild's concurrency cap), cancelling and retrying. Synchronous database work; the cogs call it
through `asyncio.to_thread`.

A song starts as `queued` without a job when its guild already has as many songs in the studio as
its cap allows; the job watcher starts it when a slot frees up (queue instead of reject).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select
from sqlmodel import Session, col

from bot.config import GuildSettings
from bot.core.quota import IN_FLIGHT, NOT_COUNTED, QUOTA_WINDOW, check_quota, counted_since
from bot.errors import UserError
from db import lifecycle, queue, repo
from db.database import Database
from db.models import Clip, Job, JobKind, Song, SongStatus, User, utcnow
from db.scope import GuildScope
from db.settings import Settings

ACTIVE_JOB = lifecycle.ACTIVE_JOB


@dataclass(frozen=True)
class Requester:
    discord_id: int
    name: str
    guild_id: int | None
    channel_id: int | None


def check_seconds(settings: Settings, seconds: float | None) -> float:
    if seconds is None:
        return float(settings.limits.default_seconds)
    if (
        not math.isfinite(seconds)
        or seconds < settings.limits.min_seconds
        or seconds > settings.limits.max_seconds
    ):
        raise UserError(
            f"A song can be {settings.limits.min_seconds:g} to {settings.limits.max_seconds:g} seconds long; "
            f"you asked for {seconds:g}. Try `seconds:{settings.limits.default_seconds:g}`."
        )
    return float(seconds)


def check_drafts(settings: Settings, drafts: int | None) -> int:
    if drafts is None:
        return settings.limits.default_drafts
    if drafts < 1 or drafts > settings.limits.max_drafts:
        raise UserError(f"You can ask for 1 to {settings.limits.max_drafts} drafts; you asked for {drafts}.")
    return drafts


def job_kind_for(song: Song) -> JobKind:
    if song.parent_clip_id is not None or song.prime_key is not None:
        return JobKind.continue_
    return JobKind.draft


def _lock_member(s: Session, who: Requester) -> User:
    user = repo.get_or_create_user(s, who.discord_id, who.name)
    # Serialise this member's requests (PostgreSQL row lock; SQLite's BEGIN IMMEDIATE already does).
    locked = s.execute(select(User).where(col(User.id) == user.id).with_for_update()).scalar_one()
    return locked


def request_song(
    db: Database,
    settings: Settings,
    gs: GuildSettings | None,
    who: Requester,
    *,
    artist: str,
    genre: str,
    lyrics: str = "",
    seconds: float,
    n_drafts: int,
    parent_clip_id: int | None = None,
    prime_key: str | None = None,
    prime_seconds: float | None = None,
    prime_at: float | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    request_key: str | None = None,
    same_press_seconds: float = 0.0,
) -> Song:
    """Check the member's quota and write the song (status queued). Raises UserError.

    Idempotent: a request whose `request_key` (the interaction id) already made a song gets that
    song back, and so does a second press of the same Continue button by the same member within
    `same_press_seconds` of the first (same parent clip, same style and length). The member's row
    is locked first, so two presses at once are answered one after the other: one song, one slot."""
    now = utcnow()
    with db.write() as s:
        user = _lock_member(s, who)
        assert user.id is not None
        earlier = _same_request(
            s,
            request_key,
            user.id,
            parent_clip_id,
            (artist, genre, seconds, lyrics, prime_at),
            now - timedelta(seconds=same_press_seconds) if same_press_seconds > 0 else None,
        )
        if earlier is not None:
            return earlier
        check_quota(s, settings, gs, user.id, now)
        return repo.create_song(
            s,
            user_id=user.id,
            artist=artist,
            genre=genre,
            seconds=seconds,
            seed=seed if seed is not None else secrets.randbits(31),
            lyrics=lyrics,
            title=f"{artist} · {genre}",
            model=settings.engine.model,
            n_drafts=n_drafts,
            temperature=temperature,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            parent_clip_id=parent_clip_id,
            prime_key=prime_key,
            prime_seconds=prime_seconds,
            prime_at=prime_at,
            request_key=request_key,
        )


def _same_request(
    s: Session,
    request_key: str | None,
    user_id: int,
    parent_clip_id: int | None,
    what: tuple[str, str, float, str, float | None],
    since: datetime | None,
) -> Song | None:
    """The song an earlier delivery of this request (or press of this button) already made."""
    if request_key is not None:
        song = s.execute(select(Song).where(col(Song.request_key) == request_key)).scalar_one_or_none()
        if song is not None:
            return song
    if parent_clip_id is None or since is None:
        return None
    artist, genre, seconds, lyrics, prime_at = what
    same_moment = col(Song.prime_at).is_(None) if prime_at is None else col(Song.prime_at) == prime_at
    return (
        s.execute(
            select(Song)
            .where(
                col(Song.user_id) == user_id,
                col(Song.parent_clip_id) == parent_clip_id,
                col(Song.artist) == artist,
                col(Song.genre) == genre,
                col(Song.seconds) == seconds,
                col(Song.lyrics) == lyrics,
                same_moment,
                col(Song.created_at) >= since,
                col(Song.status).not_in(NOT_COUNTED),
            )
            .order_by(col(Song.id).desc())
            .limit(1)
        )
        .scalars()
        .first()
    )


def continuation_source(db: Database, scope: GuildScope, clip_id: int) -> tuple[Clip, Song]:
    """The clip of this server to continue and its song; UserError when there is no such clip here."""
    with db.read() as s:
        found = scope.clip_with_song(s, clip_id)
    if found is None:
        raise UserError(
            f"There is no clip #{clip_id} here. The clip number is in the message the clip was posted with."
        )
    return found


def start_pending(db: Database, cap_for: Callable[[int], int]) -> list[tuple[int, int]]:
    """Queue a job for each waiting song whose guild has a free slot (oldest first).

    A slot is a song of the guild with a queued or running job; `cap_for(guild_id)` says how many
    there may be. Idempotent (`db.lifecycle.start`). Returns
    (song_id, job_id) pairs started now."""
    has_job = exists().where(col(Job.song_id) == col(Song.id))
    with db.read() as s:
        waiting = (
            s.execute(
                select(Song)
                .where(col(Song.status) == SongStatus.queued.value, ~has_job)
                .order_by(col(Song.id))
            )
            .scalars()
            .all()
        )
        busy_rows = s.execute(
            select(col(Song.guild_id), func.count(func.distinct(col(Song.id))))
            .join(Job, col(Job.song_id) == col(Song.id))
            .where(col(Job.status).in_(ACTIVE_JOB))
            .group_by(col(Song.guild_id))
        ).all()
    busy = {gid: int(n) for gid, n in busy_rows}
    started: list[tuple[int, int]] = []
    for song in waiting:
        assert song.id is not None
        if song.guild_id is not None:
            if busy.get(song.guild_id, 0) >= cap_for(song.guild_id):
                continue
            busy[song.guild_id] = busy.get(song.guild_id, 0) + 1
        job_id = lifecycle.start(db, song.id, job_kind_for(song))
        if job_id is not None:
            started.append((song.id, job_id))
    return started


def retry_job(db: Database, scope: GuildScope, job_id: int) -> Job:
    """Put a failed or cancelled job of this server back in the queue (it resumes where it
    stopped) and move its song back into the studio. UserError otherwise."""
    with db.read() as s:
        if scope.job(s, job_id) is None:
            raise UserError(f"There is no job #{job_id} here. `/queue` lists the jobs in the studio.")
    try:
        return lifecycle.retry(db, job_id)
    except queue.NotRetryable as exc:
        raise UserError(str(exc)) from None


def song_counts_for(db: Database, user_id: int, now: datetime | None = None) -> tuple[int, int]:
    """(songs counted in the last 24 h, second upsamples included; songs in flight) for `/me`."""
    now = now or utcnow()
    with db.read() as s:
        day = len(counted_since(s, user_id, now - QUOTA_WINDOW))
        flying = s.execute(
            select(func.count())
            .select_from(Song)
            .where(col(Song.user_id) == user_id, col(Song.status).in_(IN_FLIGHT))
        ).scalar_one()
    return int(day), int(flying)
