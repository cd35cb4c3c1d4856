"""Issue #14, defect 16: songs sharing a channel must share Discord's edit budget.

Four songs run at once in one channel (the guild's cap) with the product's default edit interval
(`status_edit_seconds` = 3 s per song). An in-process worker heartbeats progress for each every
0.25 s. Discord allows 5 message edits per 5 s per channel; the bot should keep its status edits to
the pacer's budget (bot/edit_pacing.py: 3 per 5 s per channel) so its other messages still fit, and
show every song's last state.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from bot.edit_pacing import PacingRules
from db import queue
from db.models import JobKind
from tests.bot_harness import Studio

pytest_plugins = ["tests.bot_fixtures"]

SONGS = 4  # max_running_per_guild


@pytest.fixture
def studio_overrides() -> dict[str, Any]:
    # Heartbeats every 30 s: the songs' "worker" (this test) is alive between its progress reports.
    return {
        "status_edit_seconds": 3.0,
        "bot_watch_seconds": 0.1,
        "max_running_per_guild": SONGS,
        "heartbeat_seconds": 30.0,
    }


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


async def test_songs_in_one_channel_share_the_edit_budget(sqlite_studio: Studio) -> None:
    studio, fake = sqlite_studio, sqlite_studio.fake
    await studio.start_bot()
    song_ids = []
    for member in ("alice", "bob", "carol", "dave"):
        ix = await studio.run(member, "generate", {"artist": "abba", "genre": "pop", "seconds": 2})
        m = re.search(r"Song #(\d+)", ix.text())
        assert m, ix.text()
        song_ids.append(int(m[1]))
    statuses = {}
    for sid in song_ids:
        msg = await studio.until(lambda sid=sid: studio.message_with(f"jb:cancel:{sid}"), "a status message")
        statuses[sid] = int(msg["id"])

    leases = []
    for _ in song_ids:
        lease = await studio.run_db(queue.claim, studio.db, [JobKind.draft], "in-test", 60)
        assert lease is not None
        leases.append(lease)
    began = fake.calls[-1].at
    for step in range(1, 41):  # 10 s of progress, every song changing every 0.25 s
        for lease in leases:
            progress = {"stage": "drafting", "percent": step * 2.5}
            await studio.run_db(queue.heartbeat, studio.db, lease, progress)
        await asyncio.sleep(0.25)
    # Every song's message ends on its last state (100%) ...
    for mid in statuses.values():
        await studio.until(
            lambda mid=mid: "100%" in fake.messages[mid]["content"], "the last state", timeout=30
        )
    # ... and the status edits never took more than the pacer's share of the channel.
    edit_times = [
        c.at
        for c in fake.calls
        if c.method == "PATCH"
        and c.at >= began
        and c not in fake.rate_limited_calls
        and any(c.path.endswith(f"/messages/{mid}") for mid in statuses.values())
    ]
    budget = PacingRules()
    assert fake.rate_limited == 0
    assert max_in_any_window(edit_times, budget.channel_window) <= budget.channel_edits, (
        f"{len(edit_times)} status edits, {fake.buckets_exhausted} used-up buckets"
    )


async def test_the_status_says_waiting_for_a_worker_as_soon_as_heartbeats_stop(sqlite_studio: Studio) -> None:
    """Defect 16: after a worker died, the status kept its last percent and ETA until the lease ran
    out (up to 5 minutes). Three missed heartbeats are enough to say so."""
    from datetime import timedelta

    from sqlalchemy import update

    from db.models import Job, utcnow

    studio = sqlite_studio
    await studio.start_bot()
    ix = await studio.run("alice", "generate", {"artist": "abba", "genre": "pop", "seconds": 2})
    m = re.search(r"Song #(\d+)", ix.text())
    assert m, ix.text()
    sid = int(m[1])
    status = await studio.until(lambda: studio.message_with(f"jb:cancel:{sid}"), "a status message")
    lease = await studio.run_db(queue.claim, studio.db, [JobKind.draft], "in-test", 300)
    assert lease is not None
    await studio.run_db(queue.heartbeat, studio.db, lease, {"stage": "drafting", "percent": 40})
    await studio.until(lambda: "40%" in studio.fake.messages[int(status["id"])]["content"], "the progress")

    def worker_dies() -> None:  # no more heartbeats; the lease itself still has minutes to run
        with studio.db.write() as s:
            s.execute(update(Job).values(heartbeat_at=utcnow() - timedelta(minutes=2)))

    await studio.run_db(worker_dies)
    await studio.until(
        lambda: "Waiting for a worker" in studio.fake.messages[int(status["id"])]["content"],
        "the status to say the worker is gone",
        timeout=20,
    )
