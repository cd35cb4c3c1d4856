"""Issue #14, defects 7 and 8, against the fake X and SoundCloud on SQLite and PostgreSQL.

7. Two clips with the same words (a continuation copies its parent's title, artist, genre and lyrics):
   a crashed upload must never be marked published on the other clip's post, and X must not refuse
   the second as duplicate text. Each publication sends a unique marker; only the marker matches.
8. A slow upload is not a crash: a second runner (a real thread with its own event loop) must not
   upload the clip again while the first still holds its lease (heartbeat), even after the old
   "stale" age has passed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from db.database import Database
from db.models import Clip, Publication, PublicationState
from db.settings import Settings
from db.storage import Storage
from publisher import state
from publisher.runner import RunResult, run_due_publications
from publisher.scheduler import schedule_clip
from tests.fakes.publish_http import Request, Response
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX
from tests.publish_fixtures import Notes, login_soundcloud, make_clip, publish_settings, seed_renders

pytest_plugins = ["tests.conftest_publish"]

A_DAY_LATER = timedelta(days=1)  # past any lease (and the old age-based "stale" limit)


@dataclass
class Twins:
    db: Database
    storage: Storage
    settings: Settings
    fx: FakeX
    sc: FakeSoundCloud
    parent: Clip
    child: Clip

    async def run(self, now: datetime | None = None) -> list[RunResult]:
        return await run_due_publications(self.db, self.storage, self.settings, Notes(), now=now)

    def schedule(self, clip: Clip, platform: str) -> int:
        assert clip.id is not None
        (pub_id,) = schedule_clip(self.db, clip.id, [platform], datetime.now(UTC), settings=self.settings)
        return pub_id

    def row(self, pub_id: int) -> Publication:
        row = state.get_publication(self.db, pub_id)
        assert row is not None
        return row


@pytest.fixture
def twins(
    db: Database,
    storage: Storage,
    settings: Settings,
    fake_x: FakeX,
    fake_sc: FakeSoundCloud,
    prerendered: dict[str, bytes],
) -> Iterator[Twins]:
    s = publish_settings(settings, fake_x, fake_sc)
    login_soundcloud(db, fake_sc)
    parent = make_clip(db, storage)
    child = make_clip(db, storage)  # the same title, artist, genre, lyrics and requester
    for clip in (parent, child):
        seed_renders(storage, s, clip.id, prerendered)
    yield Twins(db, storage, s, fake_x, fake_sc, parent, child)
    assert fake_x.violations == [] and fake_sc.violations == []


def crash_while_publishing(t: Twins, pub_id: int) -> None:
    """The runner claimed the row and died before any outcome was written."""
    assert state.claim(t.db, pub_id, datetime.now(UTC)) is not None


@pytest.mark.parametrize("platform", ["soundcloud", "x"])
async def test_a_crashed_upload_is_never_matched_to_its_twins_post(twins: Twins, platform: str) -> None:
    parent_pub = twins.schedule(twins.parent, platform)
    (done,) = await twins.run()
    assert done.state == "published"
    child_pub = twins.schedule(twins.child, platform)
    crash_while_publishing(twins, child_pub)  # died before sending anything
    (result,) = await twins.run(now=datetime.now(UTC) + A_DAY_LATER)
    parent, child = twins.row(parent_pub), twins.row(child_pub)
    posts = twins.sc.tracks if platform == "soundcloud" else twins.fx.tweets
    assert result.state == child.state == PublicationState.published
    assert len(posts) == 2, "the child was not uploaded: it was matched to its parent's post"
    assert child.remote_id != parent.remote_id
    assert {child.remote_id, parent.remote_id} == {str(p.id) for p in posts}


async def test_x_takes_a_twin_caption_because_each_carries_its_marker(twins: Twins) -> None:
    first, second = twins.schedule(twins.parent, "x"), twins.schedule(twins.child, "x")
    results = await twins.run()
    assert [r.state for r in results] == ["published", "published"]
    assert len(twins.fx.tweets) == 2
    for pub_id in (first, second):
        row = twins.row(pub_id)
        (tweet,) = [t for t in twins.fx.tweets if str(t.id) == row.remote_id]
        assert row.marker and row.marker in tweet.text.split()
    assert twins.row(first).marker != twins.row(second).marker


async def test_soundcloud_description_carries_the_marker(twins: Twins) -> None:
    pub_id = twins.schedule(twins.parent, "soundcloud")
    await twins.run()
    (track,) = twins.sc.tracks
    marker = twins.row(pub_id).marker
    assert marker and track.description.rstrip().endswith(marker) and marker not in track.title


async def test_a_row_sent_before_markers_is_not_matched_by_its_text(twins: Twins) -> None:
    """An unconfirmed row from an older jukebot has no marker: it fails for a person to check,
    rather than being marked published on any post that happens to read the same."""
    await twins.run()
    pub_id = twins.schedule(twins.parent, "soundcloud")
    with twins.db.write() as s:
        row = s.get(Publication, pub_id)
        assert row is not None
        row.marker, row.state, row.attempts = None, PublicationState.unconfirmed.value, 1
        s.add(row)
    (result,) = await twins.run()
    assert result.state == twins.row(pub_id).state == "failed" and "look on the platform" in result.message
    assert twins.sc.tracks == []


def _run_in_thread(t: Twins, results: list[Any], now: datetime | None = None) -> None:
    results.extend(asyncio.run(run_due_publications(t.db, t.storage, t.settings, Notes(), now=now)))


async def test_a_second_runner_leaves_a_slow_upload_alone(twins: Twins) -> None:
    twins.settings = twins.settings.model_copy(
        update={
            "publish_lease_seconds": 1.0,
            "publish_heartbeat_seconds": 0.2,
            "publish_stale_seconds": 1.0,  # the old age limit, for the run before the fix
            "publish_reconcile_seconds": 0.0,
        }
    )
    uploading = threading.Event()

    def slow_upload(_req: Request, _resp: Response | None) -> None:
        uploading.set()
        time.sleep(3.0)  # three leases long; the first runner's heartbeat keeps its lease
        return None

    twins.sc.script("POST", "/tracks", slow_upload)
    pub_id = twins.schedule(twins.parent, "soundcloud")
    first: list[RunResult] = []
    runner_a = threading.Thread(target=_run_in_thread, args=(twins, first))
    runner_a.start()
    assert uploading.wait(30)
    second: list[RunResult] = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # the scheduler's sweep, again and again, while A uploads
        runner_b = threading.Thread(target=_run_in_thread, args=(twins, second))
        runner_b.start()
        runner_b.join(30)
        await asyncio.sleep(0.3)
    runner_a.join(60)
    row = twins.row(pub_id)
    assert len(twins.sc.tracks) == 1, "the clip was uploaded twice"
    assert second == [] and [r.state for r in first] == ["published"]
    assert row.state == PublicationState.published and row.remote_id == str(twins.sc.tracks[0].id)
    assert row.attempts == 1 and row.lease_expires_at is None
