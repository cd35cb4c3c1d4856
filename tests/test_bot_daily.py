"""The daily clip and publishing: a per-guild cron job (time and time zone set by a moderator) posts
the most-voted unfeatured clip of the last day once, even if it fires twice, and hands it to the
publisher (publisher/scheduler.py: `schedule_clip`, one publication per platform, never twice)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from bot.features.clips.daily import job_id, local_day, post_daily
from db import repo
from db.models import Clip, Publication, utcnow
from tests.bot_harness import Studio, seed_clip
from tests.fakes.discord import custom_ids

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def studio_overrides() -> dict[str, Any]:
    return {
        "x_client_id": "x-client",
        "soundcloud_client_id": "sc-client",
        "publish_times": {"x": "19:00", "soundcloud": "19:30"},
    }


def publications(studio: Studio, clip_id: int) -> list[Publication]:
    with studio.db.read() as s:
        return list(s.execute(select(Publication).where(col(Publication.clip_id) == clip_id)).scalars())


async def test_daily_clip_posts_the_days_best_once_and_schedules_uploads(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    studio.settings.publish.guilds = [studio.guild]  # the bot's owner allows publishing from here
    studio.settings.publish.caption_moderation = False  # the owner turned the shared-account check off
    bot = await studio.start_bot()
    daily_ch = fake.channel(studio.guild, "daily")

    # A moderator turns the daily clip on, at 07:30 Paris time.
    await studio.run("owner", "mod channels", {"daily": daily_ch, "mods": fake.channel(studio.guild, "mods")})
    ix = await studio.run("owner", "mod daily-time", {"time": "07:30", "timezone": "Europe/Paris"})
    assert "at 07:30 (Europe/Paris)" in ix.text(), ix.text()
    job = bot.scheduler.get_job(job_id(studio.guild))
    assert job is not None
    fields = {f.name: str(f) for f in job.trigger.fields}
    assert (fields["hour"], fields["minute"], str(job.trigger.timezone)) == ("7", "30", "Europe/Paris")
    bad = await studio.run("owner", "mod daily-time", {"time": "25:99"})
    assert "not a time of day" in bad.text()
    bad = await studio.run("owner", "mod daily-time", {"time": "08:00", "timezone": "Mars/Olympus"})
    assert "not a time zone I know" in bad.text()

    # Two clips of the day; the second has more votes.
    first = await studio.run_db(seed_clip, studio, "alice")
    second = await studio.run_db(seed_clip, studio, "bob", artist="queen", genre="rock")
    await studio.until_db(
        lambda: all((c := studio.clip(s)) and c.message_id for s in (first, second)), "both posted"
    )
    a, b = studio.clip(first), studio.clip(second)
    assert a is not None and b is not None
    for voter in ("carol", "dave"):
        msg = studio.message_with(f"jb:clipvote:{b.id}")
        assert msg is not None
        await studio.click(voter, msg, f"jb:clipvote:{b.id}")
    msg = studio.message_with(f"jb:clipvote:{a.id}")
    assert msg is not None
    await studio.click("carol", msg, f"jb:clipvote:{a.id}")

    # /top and /song show the votes; /help explains it all.
    top = await studio.run("dave", "top", {"period": "day"})
    lines = top.text().splitlines()
    assert lines[0] == "**Top clips today**" and f"Clip #{b.id}" in lines[1] and "2 votes" in lines[1]
    assert f"Clip #{a.id}" in lines[2] and "1 vote" in lines[2]
    details = await studio.run("dave", "song", {"id": second})
    assert (
        f"Song #{second}" in details.text() and f"Clip #{b.id}" in details.text() and "done" in details.text()
    )
    assert "There is no song #999" in (await studio.run("dave", "song", {"id": 999})).text()
    helped = await studio.run("dave", "help")
    assert "/generate artist genre" in helped.text() and helped.is_ephemeral()

    # The scheduled job fires (made due now): the day's best is posted in the daily channel.
    job.modify(next_run_time=utcnow())
    post = await studio.until(
        lambda: studio.message_with("jb:continue:", daily_ch), "the daily clip", timeout=15
    )
    assert f"jb:continue:{b.id}" in custom_ids(post) and "Clip of the day" in post["content"]
    assert any(att["filename"].startswith("daily-") for att in post["attachments"])
    today = local_day(utcnow(), "Europe/Paris")
    assert repo.featured_day(studio.db, b.id or 0) == today.isoformat()
    await studio.until_db(lambda: len(publications(studio, b.id or 0)) == 2, "the uploads to be scheduled")
    pubs = {p.platform: p for p in publications(studio, b.id or 0)}
    assert set(pubs) == {"x", "soundcloud"} and all(p.state == "scheduled" for p in pubs.values())
    upload_tz = ZoneInfo(studio.settings.schedule.timezone)  # upload times are global (publisher settings)
    assert pubs["x"].scheduled_for.astimezone(upload_tz).strftime("%H:%M") == "19:00"

    # A second fire the same day (a double fire, a restart): nothing more is posted or scheduled.
    assert await post_daily(bot, studio.guild) is None
    assert len([m for m in studio.bot_messages(daily_ch)]) == 1
    assert len(publications(studio, b.id or 0)) == 2

    # Next day: the best clip not yet featured (clip a) is picked.
    tomorrow = utcnow() + timedelta(days=1)
    with studio.db.write() as s:  # it was made "yesterday" from tomorrow's point of view
        clip_a = s.get(Clip, a.id)
        assert clip_a is not None
        clip_a.created_at = tomorrow - timedelta(hours=2)
        s.add(clip_a)
    posted = await post_daily(bot, studio.guild, now=tomorrow)
    assert posted is not None and f"jb:continue:{a.id}" in custom_ids(fake.messages[posted.id])
    assert repo.featured_clip(studio.db, studio.guild, local_day(tomorrow, "Europe/Paris")).id == a.id  # type: ignore[union-attr]


async def test_publish_button_is_for_moderators(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    studio.settings.publish.guilds = [studio.guild]  # the bot's owner allows publishing from here
    studio.settings.publish.caption_moderation = False  # the owner turned the shared-account check off
    await studio.start_bot()
    await studio.run("owner", "mod role", {"role": studio.mod_role})
    sid = await studio.run_db(seed_clip, studio)
    msg = await studio.until(lambda: studio.message_with("jb:publish:"), "the clip")
    clip = studio.clip(sid)
    assert clip is not None
    refused = await studio.click("bob", msg, f"jb:publish:{clip.id}")
    assert "Only moderators" in refused.text()
    assert publications(studio, clip.id or 0) == []
    ok = await studio.click("mia", msg, f"jb:publish:{clip.id}")  # the moderator role
    assert "scheduled for x, soundcloud" in ok.text(), ok.text()
    again = await studio.click("owner", msg, f"jb:publish:{clip.id}")  # Manage Server
    assert "scheduled" in again.text()
    assert sorted(p.platform for p in publications(studio, clip.id or 0)) == ["soundcloud", "x"]  # once each

    # Moderator commands are refused to members, in words.
    ix = await studio.run("bob", "mod limits", {"songs_per_day": 100})
    assert "Only moderators" in ix.text() and ix.is_ephemeral()
    ix = await studio.run("mia", "mod role", {"role": studio.mod_role})
    assert "needs the Manage Server permission" in ix.text()
    ix = await studio.run("mia", "mod limits", {"songs_per_day": 0})
    assert "Saved" in ix.text()
    ix = await studio.run("bob", "generate", {"artist": "abba", "genre": "pop"})
    assert "allows 0 a day" in ix.text(), ix.text()


async def test_a_clip_too_big_for_the_guild_is_posted_smaller(sqlite_studio: Studio) -> None:
    """discord.py reckons 10 MiB from the boost tier, but Discord refuses more than 100 KB here
    (413): the bot renders the clip smaller (MP3) and posts it, rather than failing."""
    studio = sqlite_studio
    studio.fake.set_upload_limit(studio.guild, 100 * 1024)
    await studio.start_bot()
    sid = await studio.run_db(seed_clip, studio, seconds=4.0)  # a 176 KB WAV
    msg = await studio.until(lambda: studio.message_with("jb:continue:"), "the clip", timeout=30)
    sizes = {a["filename"]: a["size"] for a in msg["attachments"]}
    assert any(name.endswith(".mp3") for name in sizes) and max(sizes.values()) <= 100 * 1024, sizes
    refused = [
        c
        for c in studio.fake.calls
        if c.method == "POST"
        and c.path.endswith("/messages")
        and any(len(d) > 100 * 1024 for _, d in c.files)
    ]
    assert refused  # the first try was too big and was answered 413
    await studio.until_db(
        lambda: (c := studio.clip(sid)) and c.message_id == int(msg["id"]), "the post recorded"
    )


async def test_the_daily_job_is_kept_in_the_database(sqlite_studio: Studio) -> None:
    """With the product's scheduler (publisher/scheduler.py: APScheduler, SQLAlchemy job store in our
    database) the guild's daily job survives a restart, next to the publisher's upload jobs."""
    from sqlalchemy import text

    studio = sqlite_studio
    bot = await studio.start_bot(scheduler_factory=False)
    await studio.run("owner", "mod channels", {"daily": studio.fake.channel(studio.guild, "daily")})
    await studio.run("owner", "mod daily-time", {"time": "21:15", "timezone": "America/New_York"})
    assert bot.scheduler.get_job(job_id(studio.guild)) is not None
    await studio.stop_bot()
    with studio.db.read() as s:
        stored = {row[0] for row in s.execute(text("SELECT id FROM apscheduler_jobs"))}
    assert {job_id(studio.guild), "publish:x", "publish:soundcloud", "publish:sweep"} <= stored

    bot = await studio.start_bot(sync=False, scheduler_factory=False)
    job = bot.scheduler.get_job(job_id(studio.guild))
    assert job is not None and job.func_ref == "bot.daily:daily_job"
    fields = {f.name: str(f) for f in job.trigger.fields}
    assert (fields["hour"], fields["minute"], str(job.trigger.timezone)) == ("21", "15", "America/New_York")
    await studio.run("owner", "mod channels", {"daily": studio.fake.channel(studio.guild, "daily")})
    assert len([j for j in bot.scheduler.get_jobs() if j.id == job_id(studio.guild)]) == 1
