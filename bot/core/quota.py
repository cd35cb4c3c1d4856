"""A member's quota, shared by everything that makes music: new songs, continuations, rerolls and
drafts chosen again after a vote.

- Songs of the day: every song made in the last 24 hours that did not fail or get cancelled (a
  reroll is a new song, so it counts; the song it rerolled still counts too), plus every draft
  chosen again (a second upsample, its job not failed or cancelled), per server setting.
- Running slots: songs in the studio at once (queued, drafting, upsampling). A draft chosen again
  brings a finished song back into the studio, so it takes a slot unless that song is still there
  (one slot per song, however many of its drafts are being made).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlmodel import Session, col

from bot.config import GuildSettings
from bot.core.text import ts
from bot.errors import UserError
from db import lifecycle
from db.models import Job, JobKind, JobStatus, Song, SongStatus
from db.settings import Settings

IN_FLIGHT = (SongStatus.queued.value, SongStatus.drafting.value, SongStatus.upsampling.value)
NOT_COUNTED = (SongStatus.failed.value, SongStatus.cancelled.value)  # free again for the member
QUOTA_WINDOW = timedelta(hours=24)
JOB_NOT_COUNTED = (JobStatus.failed.value, JobStatus.cancelled.value)


def counted_since(s: Session, user_id: int, since: datetime) -> list[datetime]:
    """When each of the member's counted songs and second upsamples since `since` was asked for."""
    songs = s.execute(
        select(col(Song.created_at)).where(
            col(Song.user_id) == user_id,
            col(Song.created_at) >= since,
            col(Song.status).not_in(NOT_COUNTED),
        )
    ).all()
    again = s.execute(
        select(col(Job.created_at))
        .join(Song, col(Song.id) == col(Job.song_id))
        .where(
            col(Song.user_id) == user_id,
            col(Job.kind) == JobKind.upsample.value,
            col(Job.idempotency_key).like(lifecycle.AGAIN_KEYS),
            col(Job.created_at) >= since,
            col(Job.status).not_in(JOB_NOT_COUNTED),
        )
    ).all()
    return sorted(t for (t,) in [*songs, *again])


def check_quota(
    s: Session,
    settings: Settings,
    gs: GuildSettings | None,
    user_id: int,
    now: datetime,
    *,
    takes_slot: bool = True,
) -> None:
    """Refuse (UserError) a member who has used their songs for the day or, when this takes a
    running slot, has too many in flight."""
    if takes_slot:
        in_flight = s.execute(
            select(func.count())
            .select_from(Song)
            .where(col(Song.user_id) == user_id, col(Song.status).in_(IN_FLIGHT))
        ).scalar_one()
        if in_flight >= settings.limits.max_queued_per_member:
            raise UserError(
                f"You already have {in_flight} song(s) in the studio; the limit is "
                f"{settings.limits.max_queued_per_member} at a time. Your next request will be welcome as "
                "soon as one of them is finished."
            )
    per_day = gs.songs_per_day if gs is not None else settings.limits.songs_per_day
    if per_day <= 0:
        raise UserError("This server allows 0 a day right now: the moderators have paused new songs.")
    recent = counted_since(s, user_id, now - QUOTA_WINDOW)
    if len(recent) >= per_day:
        free_at = recent[len(recent) - per_day] + QUOTA_WINDOW
        raise UserError(
            f"You have made {len(recent)} songs in the last 24 hours, and this server allows {per_day} a day. "
            f"You can ask for the next one {ts(free_at)}."
        )
