"""Reroll and choose again, in the database (synchronous: run in threads).

- Reroll (🎲 on an open drafts post): a new song with the same recipe and a new seed, lineage in
  `rerolled_from_song_id`. It counts against the requester's quota (it is the requester's song, even
  when a moderator presses). The old drafts stay votable until the reroll's drafts are posted and
  replace the vote (`lifecycle.replace_vote`, in `drafts_posted`). One reroll per song at a time: a
  second press, or a retried delivery of the first (its `request_key`), finds the one on its way.
- Choose again (a U-button on the closed drafts post): the upsample of another draft of the song, a
  second clip. Each draft once. Counts as one song of the day; a finished song comes back into the
  studio for it (a running slot), a song still upsampling takes no new slot (bot/core/quota.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session, col

from bot.config import GuildSettings
from bot.core.quota import check_quota
from bot.errors import UserError
from db import lifecycle
from db.database import Database
from db.models import Clip, Draft, Job, Song, SongStatus, User, utcnow
from db.scope import GuildScope
from db.settings import Settings

# A reroll starts afresh: these are the old song's run, not its recipe.
NOT_RECIPE = frozenset(
    {
        "id",
        "status",
        "status_message_id",
        "seed",
        "vote_closes_at",
        "winner_draft_id",
        "error",
        "request_key",
        "created_at",
        "updated_at",
        "rerolled_from_song_id",
    }
)


@dataclass(frozen=True)
class Rerolled:
    song: Song
    new: bool  # False: the reroll this press asked for was already on its way


def _lock_user(s: Session, user_id: int) -> None:
    # Serialise the member's requests (PostgreSQL row lock; SQLite's BEGIN IMMEDIATE already does).
    s.execute(select(User).where(col(User.id) == user_id).with_for_update()).scalar_one()


def reroll(
    db: Database,
    settings: Settings,
    gs: GuildSettings | None,
    scope: GuildScope,
    song_id: int,
    request_key: str,
) -> Rerolled:
    """Write the reroll of a song whose drafts are up for the vote. UserError when it cannot be."""
    now = utcnow()
    with db.write() as s:
        old = scope.song(s, song_id, for_update=True)
        if old is None:
            raise UserError(f"There is no song #{song_id} here.")
        earlier = s.execute(select(Song).where(col(Song.request_key) == request_key)).scalar_one_or_none()
        if earlier is not None:
            return Rerolled(earlier, False)
        if old.status != SongStatus.voting:
            raise UserError(_not_rerollable(s, old))
        live = lifecycle.live_reroll(s, song_id)
        if live is not None:
            return Rerolled(live, False)
        _lock_user(s, old.user_id)
        check_quota(s, settings, gs, old.user_id, now)
        recipe = {k: v for k, v in old.model_dump().items() if k not in NOT_RECIPE}
        song = Song(
            **recipe,
            seed=_new_seed(old.seed),
            rerolled_from_song_id=old.id,
            request_key=request_key,
            created_at=now,
            updated_at=now,
        )
        s.add(song)
        s.flush()
        return Rerolled(song, True)


def _new_seed(old: int) -> int:
    seed = secrets.randbits(31)
    return seed if seed != old else (seed + 1) % 2**31


def _not_rerollable(s: Session, song: Song) -> str:
    if song.status in (SongStatus.upsampling, SongStatus.done):
        winner = s.get(Draft, song.winner_draft_id) if song.winner_draft_id else None
        which = f"draft {winner.index + 1}" if winner is not None else "its winner"
        return (
            f"Song #{song.id} can't be rerolled: its vote is over and {which} is made in full quality. "
            "Press a **U** button on its drafts to make another draft too, or ask for a new song with `/generate`."
        )
    if song.status == SongStatus.rerolled:
        child = latest_reroll(s, song.id or 0)
        return f"Song #{song.id} was already rerolled: its new drafts are song #{child.id if child else '?'}."
    if song.status in (SongStatus.queued, SongStatus.drafting):
        return f"Song #{song.id} has no drafts yet; it can be rerolled once they are posted."
    return f"Song #{song.id} is {song.status}, so it can't be rerolled. Ask for a new song with `/generate`."


def latest_reroll(s: Session, song_id: int) -> Song | None:
    stmt = select(Song).where(col(Song.rerolled_from_song_id) == song_id).order_by(col(Song.id).desc())
    return s.execute(stmt.limit(1)).scalars().first()


def replaced_by(db: Database, song_id: int) -> int | None:
    """The reroll whose drafts replaced this song's vote."""
    with db.read() as s:
        song = s.get(Song, song_id)
        if song is None or song.status != SongStatus.rerolled:
            return None
        child = latest_reroll(s, song_id)
        return child.id if child is not None else None


# --- choose again ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Again:
    song_id: int
    draft_index: int
    job_id: int


def choose_again(
    db: Database,
    settings: Settings,
    gs: GuildSettings | None,
    scope: GuildScope,
    song_id: int,
    draft_id: int,
) -> Again:
    """Queue the upsample of another draft of a song whose vote closed. UserError when it cannot be."""
    now = utcnow()
    with db.write() as s:
        song = scope.song(s, song_id, for_update=True)
        if song is None:
            raise UserError(f"There is no song #{song_id} here.")
        draft = scope.draft(s, song_id, draft_id)
        if draft is None:
            raise UserError("That draft is not part of this song.")
        label = f"Draft {draft.index + 1} of song #{song_id}"
        if song.status not in lifecycle.UPSAMPLED:
            raise UserError(_not_choosable(song, label))
        made = s.execute(
            select(Clip).where(col(Clip.song_id) == song_id, col(Clip.draft_id) == draft_id)
        ).scalar_one_or_none()
        if made is not None:
            raise UserError(f"{label} is already made in full quality: it is clip #{made.id}.")
        if draft_id == song.winner_draft_id or _has_job(s, song_id, draft_id):
            raise UserError(f"{label} is already being made in full quality; its clip will be posted here.")
        _lock_user(s, song.user_id)
        check_quota(s, settings, gs, song.user_id, now, takes_slot=song.status == SongStatus.done)
        job_id = lifecycle.choose_again(db, s, song_id, draft_id, now=now)
        return Again(song_id, draft.index, job_id)


def _has_job(s: Session, song_id: int, draft_id: int) -> bool:
    key = lifecycle.again_key(song_id, draft_id)
    return s.execute(select(col(Job.id)).where(col(Job.idempotency_key) == key)).first() is not None


def _not_choosable(song: Song, label: str) -> str:
    if song.status == SongStatus.voting:
        return f"{label} can be made in full quality once the vote is over; for now, vote for it."
    if song.status == SongStatus.rerolled:
        return f"Song #{song.id} was rerolled; choose from its new drafts instead."
    return f"Song #{song.id} is {song.status}, so none of its drafts can be made in full quality now."


def upsampled_drafts(db: Database, song_id: int) -> set[int]:
    """Drafts of the song made or being made in full quality (their U-button is off)."""
    with db.read() as s:
        song = s.get(Song, song_id)
        done = {
            int(d) for (d,) in s.execute(select(col(Clip.draft_id)).where(col(Clip.song_id) == song_id)) if d
        }
        keys = s.execute(select(col(Job.idempotency_key)).where(col(Job.song_id) == song_id)).all()
        prefix = f"song:{song_id}:upsample:"
        done |= {int(k[len(prefix) :]) for (k,) in keys if k and k.startswith(prefix)}
        if song is not None and song.winner_draft_id is not None:
            done.add(song.winner_draft_id)
        return done
