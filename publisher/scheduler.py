"""The scheduled uploads: APScheduler 3 (AsyncIOScheduler) in the bot process only.

Jobs live in our database (SQLAlchemyJobStore, table `apscheduler_jobs`) under stable ids with
`replace_existing=True`, `coalesce=True` and a generous `misfire_grace_time`, so a restart neither
duplicates nor loses them. A fire never posts by itself: it only INSERTs publication rows with
unique (clip, platform) keys, then runs what is due through the publication state machine, whose
claim lets exactly one runner send each row. A double fire, an overlapping sweep or a restart in the
middle therefore cannot double-post.

Jobs:
- `publish:<platform>` at `settings.publish.times[platform]` (HH:MM in `settings.schedule.timezone`):
  schedule the recently featured clips not yet scheduled for that platform, then run the due ones.
- `publish:sweep` every few minutes: retries whose time has come, unconfirmed rows due a check,
  rows left `publishing` by a crash.
The bot adds its own jobs (the daily pick, voting windows) to the same scheduler.

Every path that schedules a server's clip (the Publish button, the daily pick, the featured-clips fire)
goes through `schedule_for_guild`: only the accounts the server may publish with, and the caption
gate (the bot's caption moderation, handed in with `set_caption_gate`) whenever a clip would go out on
the operator's shared account. Without a gate such a clip is not scheduled (fail closed).

APScheduler pickles the job's function reference, so the job functions are module-level coroutines
that find the database, storage, settings and notify callback in `configure()`d module state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlmodel import col, select

from db.database import Database
from db.models import Clip, DailyClip, Publication, Song, utcnow
from db.settings import Settings
from db.storage import Storage, get_storage
from publisher import state
from publisher.accounts import accounts_for_guild, caption_moderation_on, not_allowed_text
from publisher.platforms import PLATFORMS, enabled_platforms
from publisher.runner import GuildNotify, Notify, RunResult, run_due_publications

log = logging.getLogger(__name__)

JOBS_TABLE = "apscheduler_jobs"
SWEEP_MINUTES = 5.0
MISFIRE_GRACE_SECONDS = 3 * 3600  # a bot that was down at 19:00 and back by 22:00 still publishes


@dataclass
class PublisherContext:
    db: Database
    storage: Storage
    settings: Settings
    notify: Notify
    notify_guild: GuildNotify | None = None  # to one server's moderators (its clips' uploads, playlist)


_context: PublisherContext | None = None

CaptionGate = Callable[[int], Awaitable[str | None]]  # clip id -> why its caption may not go out, or None
_caption_gate: CaptionGate | None = None

NO_GATE = (
    "Clip #{clip_id} was not scheduled: its caption must be moderated (the platform account is the bot "
    "operator's shared one) and no caption check is running here."
)


def set_caption_gate(gate: CaptionGate | None) -> None:
    """The caption check for clips going out on the shared account (the bot's clips feature sets it)."""
    global _caption_gate
    _caption_gate = gate


@dataclass(frozen=True)
class Scheduled:
    ids: list[int]
    platforms: list[str]
    refused: str | None = None  # why nothing was scheduled, for the moderators
    allowed: bool = True  # False: the server may not publish to any of the platforms


async def _log_only(message: str) -> None:
    log.warning("%s", message)


def configure(
    db: Database,
    storage: Storage,
    settings: Settings,
    notify: Notify | None = None,
    notify_guild: GuildNotify | None = None,
    caption_gate: CaptionGate | None = None,
) -> None:
    """Tell the job functions what to work with (the bot calls build_scheduler, which does this)."""
    global _context
    _context = PublisherContext(db, storage, settings, notify or _log_only, notify_guild)
    set_caption_gate(caption_gate)


def parse_hhmm(text: str) -> time:
    hour, _, minute = text.strip().partition(":")
    try:
        parsed = time(int(hour), int(minute or 0))
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day like 19:30") from None
    return parsed


def next_publish_time(settings: Settings, platform: str, after: datetime | None = None) -> datetime:
    """The next configured upload time for `platform` (now, if it has none configured)."""
    after = after or utcnow()
    hhmm = settings.publish.times.get(platform)
    if not hhmm:
        return after
    tz = ZoneInfo(settings.schedule.timezone)
    at = parse_hhmm(hhmm)
    local = after.astimezone(tz)
    candidate = datetime.combine(local.date(), at, tzinfo=tz)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=tz)
    return candidate.astimezone(after.tzinfo)


def schedule_clip(
    db: Database,
    clip_id: int,
    platforms: Iterable[str] | None = None,
    when: datetime | Mapping[str, datetime] | None = None,
    *,
    settings: Settings | None = None,
) -> list[int]:
    """Schedule the clip's uploads, idempotently: one row per (clip, platform), existing rows untouched.

    `platforms`: default every platform with credentials configured. `when`: one time for all, a time
    per platform, or (default) each platform's next configured upload time. Synchronous; from the bot
    call it through `asyncio.to_thread`. Returns the publication ids.
    """
    if settings is None:
        from db.settings import get_settings

        settings = get_settings()
    names = list(platforms) if platforms is not None else enabled_platforms(settings)
    unknown = [p for p in names if p not in PLATFORMS]
    if unknown:
        raise ValueError(f"unknown platform(s) {unknown}; jukebot publishes to {', '.join(PLATFORMS)}")
    if isinstance(when, Mapping):
        times = {p: when.get(p) or next_publish_time(settings, p) for p in names}
    else:
        times = {p: when or next_publish_time(settings, p) for p in names}
    if not times:
        return []
    return state.insert_publications(db, clip_id, times, max_attempts=settings.publish.max_attempts)


async def schedule_for_guild(
    db: Database,
    settings: Settings,
    clip_id: int,
    guild_id: int | None,
    platforms: Iterable[str] | None = None,
    when: datetime | Mapping[str, datetime] | None = None,
) -> Scheduled:
    """Schedule a server's clip on the platforms (default: every configured one) it may publish to,
    after the caption gate when one of its accounts is the operator's shared one. The one way the bot
    and the scheduler schedule a clip."""
    names = list(platforms) if platforms is not None else enabled_platforms(settings)
    accounts = await asyncio.to_thread(accounts_for_guild, db, settings, guild_id, names)
    if not accounts:
        return Scheduled([], [], f"Clip #{clip_id}: {not_allowed_text(guild_id)}", allowed=False)
    if caption_moderation_on(settings, accounts.values()):
        gate = _caption_gate
        refused = await gate(clip_id) if gate is not None else NO_GATE.format(clip_id=clip_id)
        if refused:
            return Scheduled([], [], refused)
    chosen = [p for p in names if p in accounts]
    ids = await asyncio.to_thread(schedule_clip, db, clip_id, chosen, when, settings=settings)
    return Scheduled(ids, chosen)


def featured_unscheduled(
    db: Database, settings: Settings, platform: str, now: datetime | None = None
) -> list[tuple[int, int | None]]:
    """(clip, server) of the clips featured in the last `publish_featured_days` days that have no row
    yet for `platform`: belt and braces for a daily pick whose scheduling was lost."""
    now = now or utcnow()
    first_day = now.astimezone(ZoneInfo(settings.schedule.timezone)).date() - timedelta(
        days=max(0, settings.publish.featured_days - 1)
    )
    already = select(col(Publication.clip_id)).where(col(Publication.platform) == platform)
    with db.read() as s:
        rows = s.execute(
            select(col(DailyClip.clip_id), col(Song.guild_id))
            .join(Clip, col(Clip.id) == col(DailyClip.clip_id))
            .join(Song, col(Song.id) == col(Clip.song_id))
            .where(
                col(DailyClip.day) >= date.isoformat(first_day),
                col(DailyClip.clip_id).not_in(already),
            )
            .order_by(col(DailyClip.clip_id))
        ).all()
    return [(int(clip_id), guild_id) for clip_id, guild_id in rows]


async def schedule_featured(
    db: Database, settings: Settings, platform: str, now: datetime | None = None
) -> list[int]:
    """Rows (due now) for the recently featured clips without one for `platform`, each through
    `schedule_for_guild` (the server's accounts, the caption gate)."""
    now = now or utcnow()
    ids: list[int] = []
    for clip_id, guild_id in await asyncio.to_thread(featured_unscheduled, db, settings, platform, now):
        done = await schedule_for_guild(db, settings, clip_id, guild_id, [platform], now)
        if done.refused:
            log.info("featured clip %s not scheduled for %s: %s", clip_id, platform, done.refused)
        ids += done.ids
    return ids


async def fire_publications(platform: str) -> list[RunResult]:
    """The daily upload job for one platform (APScheduler target: keep its name and module)."""
    ctx = _context
    if ctx is None:
        log.error("publish job for %s fired before publisher.scheduler.configure()", platform)
        return []
    if platform not in enabled_platforms(ctx.settings) or platform not in ctx.settings.publish.times:
        log.info("publish job for %s skipped: not configured any more", platform)
        return []
    await schedule_featured(ctx.db, ctx.settings, platform)
    return await run_due_publications(
        ctx.db, ctx.storage, ctx.settings, ctx.notify, platforms=[platform], notify_guild=ctx.notify_guild
    )


async def sweep_publications() -> list[RunResult]:
    """Retries, reconciles and crash recovery for every platform (APScheduler target)."""
    ctx = _context
    if ctx is None:
        log.error("publish sweep fired before publisher.scheduler.configure()")
        return []
    return await run_due_publications(
        ctx.db, ctx.storage, ctx.settings, ctx.notify, notify_guild=ctx.notify_guild
    )


def build_scheduler(
    settings: Settings,
    db: Database,
    *,
    storage: Storage | None = None,
    notify: Notify | None = None,
    notify_guild: GuildNotify | None = None,
    caption_gate: CaptionGate | None = None,
) -> AsyncIOScheduler:
    """An AsyncIOScheduler with the upload jobs, its job store in our database. Start it inside the
    running event loop (e.g. discord.py's `setup_hook`): `scheduler.start()`."""
    configure(db, storage or get_storage(settings), settings, notify, notify_guild, caption_gate)
    tz = ZoneInfo(settings.schedule.timezone)
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=db.engine, tablename=JOBS_TABLE)},
        job_defaults={"coalesce": True, "misfire_grace_time": MISFIRE_GRACE_SECONDS, "max_instances": 1},
        timezone=tz,
    )
    for platform, hhmm in sorted(settings.publish.times.items()):
        if platform not in PLATFORMS:
            log.warning("publish_times names %r, which jukebot does not publish to", platform)
            continue
        at = parse_hhmm(hhmm)
        scheduler.add_job(
            fire_publications,
            CronTrigger(hour=at.hour, minute=at.minute, timezone=tz),
            args=[platform],
            id=f"publish:{platform}",
            name=f"upload to {platform} at {hhmm}",
            replace_existing=True,
            coalesce=True,
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
            max_instances=1,
        )
    scheduler.add_job(
        sweep_publications,
        IntervalTrigger(minutes=SWEEP_MINUTES, timezone=tz),
        id="publish:sweep",
        name="publication retries and checks",
        replace_existing=True,
        coalesce=True,
        misfire_grace_time=int(SWEEP_MINUTES * 60),
        max_instances=1,
    )
    return scheduler
