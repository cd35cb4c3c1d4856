"""Scheduling: APScheduler 3 with its job store in our database, stable job ids across restarts, a fire that
only inserts unique rows, and a double fire (or a fire next to a sweep) that posts once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import inspect

from db.database import Database
from db.settings import Settings
from db.storage import Storage
from publisher import scheduler as sched
from publisher import state
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX
from tests.publish_fixtures import Notes, login_soundcloud, make_clip, publish_settings, seed_renders

pytest_plugins = ["tests.conftest_publish"]


@pytest.fixture
def pub_settings(
    db: Database, settings: Settings, fake_x: FakeX, fake_sc: FakeSoundCloud
) -> Iterator[Settings]:
    login_soundcloud(db, fake_sc)
    yield publish_settings(
        settings,
        fake_x,
        fake_sc,
        timezone="Europe/Paris",
        publish_times={"x": "19:00", "soundcloud": "19:30"},
    )


async def passes(clip_id: int) -> None:
    """The caption check the bot hands in (the shared account's captions are moderated): passes."""
    return None


def test_next_publish_time_in_the_configured_zone(settings: Settings) -> None:
    s = settings.model_copy(update={"timezone": "Europe/Paris", "publish_times": {"x": "19:00"}})
    paris = ZoneInfo("Europe/Paris")
    morning = datetime(2026, 7, 1, 8, 0, tzinfo=paris)
    assert sched.next_publish_time(s, "x", morning) == datetime(2026, 7, 1, 19, 0, tzinfo=paris)
    evening = datetime(2026, 7, 1, 20, 0, tzinfo=paris)
    assert sched.next_publish_time(s, "x", evening) == datetime(2026, 7, 2, 19, 0, tzinfo=paris)
    assert sched.next_publish_time(s, "soundcloud", evening) == evening  # no time configured: now
    with pytest.raises(ValueError, match="not a time of day"):
        sched.parse_hhmm("7pm")


def test_schedule_clip_is_idempotent_on_both_dialects(
    db: Database, storage: Storage, pub_settings: Settings
) -> None:
    clip = make_clip(db, storage)
    assert clip.id is not None
    ids = sched.schedule_clip(db, clip.id, settings=pub_settings)  # default: every configured platform
    rows = state.publications_for_clip(db, clip.id)
    assert [r.platform for r in rows] == ["soundcloud", "x"] and len(ids) == 2
    x_row = next(r for r in rows if r.platform == "x")
    assert x_row.scheduled_for.astimezone(ZoneInfo("Europe/Paris")).strftime("%H:%M") == "19:00"
    again = sched.schedule_clip(
        db, clip.id, ["x", "soundcloud"], datetime(2030, 1, 1, tzinfo=UTC), settings=pub_settings
    )
    assert sorted(again) == sorted(ids)
    assert state.publications_for_clip(db, clip.id)[1].scheduled_for == x_row.scheduled_for  # untouched
    with pytest.raises(ValueError, match="unknown platform"):
        sched.schedule_clip(db, clip.id, ["myspace"], settings=pub_settings)


async def test_build_scheduler_jobs_survive_a_restart(
    db: Database, storage: Storage, pub_settings: Settings
) -> None:
    for _ in range(2):  # start, stop, start again (a restart): same three jobs, no duplicates
        scheduler = sched.build_scheduler(pub_settings, db, storage=storage, notify=Notes())
        scheduler.start(paused=True)
        jobs = {job.id: job for job in scheduler.get_jobs()}
        scheduler.shutdown(wait=False)
    assert set(jobs) == {"publish:x", "publish:soundcloud", "publish:sweep"}
    x_job = jobs["publish:x"]
    assert isinstance(x_job.trigger, CronTrigger) and x_job.args == ("x",)
    assert x_job.coalesce is True and x_job.misfire_grace_time == sched.MISFIRE_GRACE_SECONDS
    fields = {f.name: str(f) for f in x_job.trigger.fields}
    assert (fields["hour"], fields["minute"]) == ("19", "0") and str(x_job.trigger.timezone) == "Europe/Paris"
    assert sched.JOBS_TABLE in inspect(db.engine).get_table_names()  # the job store is in our database


async def test_a_double_fire_posts_once(
    db: Database,
    storage: Storage,
    pub_settings: Settings,
    fake_x: FakeX,
    fake_sc: FakeSoundCloud,
    prerendered: dict[str, bytes],
) -> None:
    today = datetime.now(ZoneInfo("Europe/Paris")).date().isoformat()
    clip = make_clip(
        db, storage, featured_on=today
    )  # the daily pick featured it; its schedule_clip call was lost
    old = make_clip(db, storage, featured_on="2020-01-01", title="Old", discord_id=222, seed=1)
    seed_renders(storage, pub_settings, clip.id, prerendered)
    sched.configure(db, storage, pub_settings, Notes(), caption_gate=passes)
    await asyncio.gather(
        sched.fire_publications("x"),
        sched.fire_publications("x"),
        sched.sweep_publications(),
        sched.fire_publications("soundcloud"),
        sched.fire_publications("soundcloud"),
    )
    assert len(fake_x.tweets) == 1 and len(fake_sc.tracks) == 1
    assert {r.platform: r.state for r in state.publications_for_clip(db, clip.id)} == {  # type: ignore[arg-type]
        "x": "published",
        "soundcloud": "published",
    }
    assert state.publications_for_clip(db, old.id) == []  # type: ignore[arg-type]  # old featured clips stay put
    await sched.fire_publications("x")  # the next day's fire, same clip: nothing more
    assert len(fake_x.tweets) == 1


async def test_the_scheduler_really_fires_the_job(
    db: Database, storage: Storage, pub_settings: Settings, fake_x: FakeX, prerendered: dict[str, bytes]
) -> None:
    clip = make_clip(db, storage, featured_on=datetime.now(ZoneInfo("Europe/Paris")).date().isoformat())
    seed_renders(storage, pub_settings, clip.id, prerendered)
    scheduler = sched.build_scheduler(pub_settings, db, storage=storage, notify=Notes(), caption_gate=passes)
    scheduler.start()
    try:
        soon = datetime.now(UTC) + timedelta(milliseconds=200)
        scheduler.modify_job("publish:x", next_run_time=soon)  # the 19:00 fire, now
        scheduler.modify_job("publish:sweep", next_run_time=soon)  # and a sweep at the same moment
        for _ in range(200):
            rows = state.publications_for_clip(db, clip.id)  # type: ignore[arg-type]
            if fake_x.tweets and not any(p.state == "publishing" for p in rows):
                break
            await asyncio.sleep(0.1)
    finally:
        scheduler.shutdown(wait=False)
    assert len(fake_x.tweets) == 1
    (row,) = state.publications_for_clip(db, clip.id)  # type: ignore[arg-type]
    assert row.platform == "x" and row.state == "published"
