"""The job watcher: every few seconds the bot reads the jobs table and reacts.

Processes meet only in the database: workers write progress, drafts, clips and job outcomes; the
watcher turns them into Discord messages. Everything it does is derived from the rows, so after a
restart it finds finished-but-unposted work and posts it once, closes votes whose window passed
while it was away, and carries on editing progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlmodel import col

from db import lifecycle, queue
from db.models import Job, JobKind, JobStatus, Song, SongStatus, utcnow

from . import voting
from .errors import is_database_down, new_error_id

if TYPE_CHECKING:
    from .studio import Studio

log = logging.getLogger("jukebot.bot.watcher")

WATCHED = (
    SongStatus.queued.value,
    SongStatus.drafting.value,
    SongStatus.voting.value,
    SongStatus.upsampling.value,
)


class Action(StrEnum):
    progress = "progress"
    post_drafts = "post_drafts"
    post_clip = "post_clip"
    close_vote = "close_vote"
    failed = "failed"
    cancelled = "cancelled"


@dataclass(frozen=True)
class Work:
    song_id: int
    action: Action
    job: Job | None = None
    clip_id: int | None = None


def decide(song: Song, job: Job | None, now_due: bool, unposted: int = 0) -> Action | None:
    """What the bot should do for a song, given its latest job (pure; see tests).
    `unposted`: drafts not shown yet (their post failed or was interrupted)."""
    if song.status == SongStatus.voting:
        if unposted:
            return Action.post_drafts
        return Action.close_vote if now_due else None
    if job is None:
        return Action.progress  # waiting for a slot
    if job.status == JobStatus.succeeded:
        result = job.result or {}
        if job.kind == JobKind.upsample or result.get("clip_id") is not None:
            return Action.post_clip
        return Action.post_drafts
    if job.status == JobStatus.failed:
        return Action.failed
    if job.status == JobStatus.cancelled:
        return Action.cancelled
    return Action.progress


def scan(db: object) -> list[Work]:
    """Read what moved (runs in a thread)."""
    from db.database import Database

    assert isinstance(db, Database)
    now = utcnow()
    out: list[Work] = []
    with db.read() as s:
        watched = (
            s.execute(select(Song).where(col(Song.status).in_(WATCHED)).order_by(col(Song.id)))
            .scalars()
            .all()
        )
        for song in watched:
            assert song.id is not None
            job = lifecycle.latest_job(s, song.id)
            due = song.vote_closes_at is not None and song.vote_closes_at <= now
            unposted = voting.unposted_drafts(s, song.id) if song.status == SongStatus.voting else 0
            action = decide(song, job, due, unposted)
            if action is None:
                continue
            clip_id = (job.result or {}).get("clip_id") if job is not None else None
            out.append(Work(song.id, action, job, int(clip_id) if clip_id is not None else None))
    return out


def sweep(db: object) -> int:
    """The stalled-job rescue (runs in a thread): jobs whose worker died are requeued, or ended when
    a cancel was asked or they were lost too often (`queue.reclaim_expired`, safe when several
    processes run it). Their songs then follow in `scan`."""
    from db.database import Database

    assert isinstance(db, Database)
    return queue.reclaim_expired(db)


class Watcher:
    def __init__(self, studio: Studio, interval: float) -> None:
        self.studio = studio
        self.interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._db_down = False
        self.ticks = 0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="jukebot-job-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        await self.studio.bot.wait_until_ready()
        while True:
            try:
                await self.tick()
                if self._db_down:
                    log.warning("the database is back; the job watcher carries on")
                self._db_down = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_database_down(exc):
                    if not self._db_down:
                        log.warning(
                            "the database is unavailable; the job watcher retries every %.0f s: %s",
                            self.interval,
                            exc,
                        )
                    self._db_down = True
                else:
                    log.exception("error %s in the job watcher", new_error_id())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def tick(self) -> None:
        studio = self.studio
        await studio.start_pending()
        await studio.run(sweep, studio.db)
        for work in await studio.run(scan, studio.db):
            try:
                await self.handle(work)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_database_down(exc):
                    raise
                log.exception(
                    "error %s while handling %s for song %s", new_error_id(), work.action, work.song_id
                )
        self.ticks += 1

    async def handle(self, work: Work) -> None:
        studio = self.studio
        if work.action == Action.progress:
            await studio.refresh_status(work.song_id)
        elif work.action == Action.post_drafts:
            await studio.post_drafts(work.song_id)
        elif work.action == Action.post_clip:
            await studio.post_clip(work.song_id, work.clip_id)
        elif work.action == Action.close_vote:
            await studio.close_vote(work.song_id)
        elif work.action == Action.failed:
            assert work.job is not None
            await studio.song_failed(work.song_id, work.job)
        elif work.action == Action.cancelled:
            await studio.song_cancelled(work.song_id)
