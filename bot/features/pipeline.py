"""The song pipeline: what the job watcher (bot/core/watcher.py) does each tick.

Processes meet only in the database: workers write progress, drafts, clips and job outcomes; each
tick reads the rows, decides what each watched song needs and hands it to its feature (status,
voting, clips; requests starts waiting songs). Everything is derived from the rows, so after a
restart it finds finished-but-unposted work and posts it once, closes votes whose window passed
while it was away, and carries on editing progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlmodel import Session, col

from bot.core.bot import JukeBot
from bot.errors import is_database_down, new_error_id
from bot.features.clips import Clips
from bot.features.requests import Requests
from bot.features.status import StatusBoard
from bot.features.voting import Voting
from bot.features.voting.logic import unposted_drafts
from db import lifecycle, queue, repo
from db.database import Database
from db.models import Job, JobKind, JobStatus, Song, SongStatus, utcnow

log = logging.getLogger("jukebot.bot.watcher")

RECONCILE_SECONDS = 600.0  # how often open drafts messages are checked against the database
RECONCILE_LOOKBACK = timedelta(days=2)  # votes that ended this recently are checked

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
    settle = "settle"  # every clip of an upsampling song is posted and none is being made: done


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


def scan(db: Database) -> list[Work]:
    """Read what moved (runs in a thread)."""
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
            if song.status == SongStatus.upsampling:
                several = _clips_work(s, song.id)
                if several is not None:
                    out.append(several)
                    continue
                job = _winner_job(s, song.id) or job
            due = song.vote_closes_at is not None and song.vote_closes_at <= now
            unposted = unposted_drafts(s, song.id) if song.status == SongStatus.voting else 0
            action = decide(song, job, due, unposted)
            if action is None:
                continue
            clip_id = (job.result or {}).get("clip_id") if job is not None else None
            out.append(Work(song.id, action, job, int(clip_id) if clip_id is not None else None))
    return out


def _winner_job(s: Session, song_id: int) -> Job | None:
    """The upsample job of the vote's winner (a draft chosen again has its own job)."""
    key = lifecycle.upsample_key(song_id)
    return s.execute(select(Job).where(col(Job.idempotency_key) == key)).scalar_one_or_none()


def _clips_work(s: Session, song_id: int) -> Work | None:
    """An upsampling song may have several clips (drafts chosen again): post each finished one;
    once the first is posted, the song is done when nothing more is being made. None: no clip yet
    (the winner's job decides)."""
    clips = repo.clips_of_song(s, song_id)
    if not clips:
        return None
    unposted = next((c for c in clips if c.message_id is None), None)
    if unposted is not None:
        return Work(song_id, Action.post_clip, clip_id=unposted.id)
    active = s.execute(
        select(col(Job.id)).where(
            col(Job.song_id) == song_id,
            col(Job.kind) == JobKind.upsample.value,
            col(Job.status).in_(lifecycle.ACTIVE_JOB),
        )
    ).first()
    return Work(song_id, Action.progress if active is not None else Action.settle)


def sweep(db: Database) -> int:
    """The stalled-job rescue (runs in a thread): jobs whose worker died are requeued, or ended when
    a cancel was asked or they were lost too often (`queue.reclaim_expired`, safe when several
    processes run it). Their songs then follow in `scan`."""
    return queue.reclaim_expired(db)


class SongPipeline:
    """One tick: start waiting songs, rescue stalled jobs, then each watched song's next step."""

    def __init__(
        self, bot: JukeBot, requests: Requests, board: StatusBoard, voting: Voting, clips: Clips
    ) -> None:
        self.bot = bot
        self.requests = requests
        self.board = board
        self.voting = voting
        self.clips = clips
        self._reconciled_at: float | None = None

    async def tick(self) -> None:
        bot = self.bot
        await self.reconcile_messages()
        await self.requests.start_pending()
        await bot.to_thread(sweep, bot.db)
        for work in await bot.to_thread(scan, bot.db):
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
        await self.board.flush()  # the status edits the channels' budgets allow now

    async def reconcile_messages(self) -> None:
        """On start, then every RECONCILE_SECONDS: drafts messages of votes that ended while the bot
        was away (or between a close and its edit) get their closed form."""
        now = time.monotonic()
        if self._reconciled_at is not None and now - self._reconciled_at < RECONCILE_SECONDS:
            return
        edited, more = await self.voting.reconcile(utcnow() - RECONCILE_LOOKBACK)
        self._reconciled_at = None if more else now  # the rest on the next tick
        if edited:
            log.info("closed %d drafts message(s) left open", edited)

    async def handle(self, work: Work) -> None:
        if work.action == Action.progress:
            await self.board.refresh_status(work.song_id)
        elif work.action == Action.post_drafts:
            await self.voting.post_drafts(work.song_id)
        elif work.action == Action.post_clip:
            await self.clips.post_clip(work.song_id, work.clip_id)
        elif work.action == Action.close_vote:
            await self.voting.close_vote(work.song_id)
        elif work.action == Action.failed:
            assert work.job is not None
            await self.board.song_failed(work.song_id, work.job)
        elif work.action == Action.cancelled:
            await self.board.song_cancelled(work.song_id)
        elif work.action == Action.settle:
            await self.clips.settle(work.song_id)


async def setup(bot: JukeBot) -> None:
    pipeline = SongPipeline(bot, bot.need(Requests), bot.need(StatusBoard), bot.need(Voting), bot.need(Clips))
    bot.watcher.run_each_tick(pipeline.tick)
