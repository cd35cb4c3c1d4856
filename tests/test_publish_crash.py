"""A real crash: `jukebot publish run` in a child process is SIGKILLed by the fake platform right after the
platform accepted the post (or right before), so our commit never happens. The next run must find the
row `publishing`, treat it as unconfirmed, look on the platform, and end with exactly one post."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from db.database import Database
from db.models import PublicationState
from db.settings import Settings, env_name
from db.storage import Storage
from publisher import state
from publisher.runner import run_due_publications
from publisher.scheduler import schedule_clip
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX
from tests.publish_fixtures import Notes, login_soundcloud, make_clip, publish_settings, seed_renders

pytest_plugins = ["tests.conftest_publish"]

REPO = Path(__file__).resolve().parents[1]


def child_env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKEBOT_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "JUKEBOT_DATABASE_URL": s.storage.database_url,
            "JUKEBOT_STORAGE_URL": s.storage.storage_url,
            "JUKEBOT_X_API_BASE": s.x.api_base,
            "JUKEBOT_SOUNDCLOUD_API_BASE": s.soundcloud.api_base,
            "JUKEBOT_SOUNDCLOUD_AUTH_BASE": s.soundcloud.auth_base,
            "JUKEBOT_X_VIDEO_SIZE": str(s.x.video_size),
            "JUKEBOT_X_UPLOAD_CHUNK_BYTES": str(s.x.upload_chunk_bytes),
            "JUKEBOT_PUBLISH_GUILDS": json.dumps(s.publish.guilds),
        }
    )
    for section, name in (
        ("x", "consumer_key"),
        ("x", "consumer_secret"),
        ("x", "access_token"),
        ("x", "access_token_secret"),
        ("soundcloud", "client_id"),
        ("soundcloud", "client_secret"),
    ):
        secret = getattr(getattr(s, section), name)
        env[env_name(section, name)] = secret.get_secret_value()
    return env


@pytest.fixture
def setup(
    db: Database,
    storage: Storage,
    settings: Settings,
    fake_x: FakeX,
    fake_sc: FakeSoundCloud,
    prerendered: dict[str, bytes],
    tmp_path: Path,
) -> Iterator[tuple[Settings, int]]:
    s = publish_settings(settings, fake_x, fake_sc)
    login_soundcloud(db, fake_sc)
    clip = make_clip(db, storage)
    assert clip.id is not None
    seed_renders(storage, s, clip.id, prerendered)
    yield s, clip.id


def crash_a_run(s: Settings, fake: FakeX | FakeSoundCloud, cwd: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from publisher.cli import app; app()", "run"],
        env=child_env(s),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    fake.client_pid = proc.pid
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, (out.decode(), err.decode())


@pytest.mark.parametrize("when", ["after", "before"])
async def test_x_crash_around_the_accept_leaves_one_post(
    setup: tuple[Settings, int], db: Database, storage: Storage, fake_x: FakeX, tmp_path: Path, when: str
) -> None:
    s, clip_id = setup
    (pub_id,) = schedule_clip(db, clip_id, ["x"], datetime.now(UTC), settings=s)
    fake_x.script("POST", "/2/tweets", fake_x.kill_client(), when=when)
    crash_a_run(s, fake_x, tmp_path)
    row = state.get_publication(db, pub_id)
    assert row is not None and row.state == PublicationState.publishing and row.attempts == 1
    assert len(fake_x.tweets) == (1 if when == "after" else 0)

    notes = Notes()
    restarted = datetime.now(UTC) + timedelta(seconds=s.publish.lease_seconds + 1)  # the lease ran out
    (result,) = await run_due_publications(db, storage, s, notes, now=restarted)
    row = state.get_publication(db, pub_id)
    assert row is not None and result.state == row.state == PublicationState.published
    assert len(fake_x.tweets) == 1 and row.remote_id == fake_x.tweets[0].id
    assert row.attempts == (1 if when == "after" else 2)  # found it / not found, so sent it again
    assert "interrupted" in notes.messages[0]
    looked = [r for r in fake_x.requests if r.method == "GET" and r.path.endswith("/tweets")]
    assert len(looked) == 1  # it looked on X before anything else
    assert await run_due_publications(db, storage, s, notes, now=restarted + timedelta(hours=1)) == []
    assert len(fake_x.tweets) == 1


async def test_soundcloud_crash_after_the_accept_leaves_one_track(
    setup: tuple[Settings, int],
    db: Database,
    storage: Storage,
    fake_sc: FakeSoundCloud,
    tmp_path: Path,
) -> None:
    s, clip_id = setup
    (pub_id,) = schedule_clip(db, clip_id, ["soundcloud"], datetime.now(UTC), settings=s)
    fake_sc.script("POST", "/tracks", fake_sc.kill_client(), when="after")
    crash_a_run(s, fake_sc, tmp_path)
    assert len(fake_sc.tracks) == 1
    restarted = datetime.now(UTC) + timedelta(seconds=s.publish.lease_seconds + 1)
    (result,) = await run_due_publications(db, storage, s, Notes(), now=restarted)
    row = state.get_publication(db, pub_id)
    assert row is not None and result.state == row.state == PublicationState.published
    assert len(fake_sc.tracks) == 1 and row.remote_id == str(fake_sc.tracks[0].id)
