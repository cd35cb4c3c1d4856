"""The publication state machine end to end, against the fake X and SoundCloud, on SQLite and PostgreSQL:
one post per (clip, platform) whatever happens — 429s, 5xx, timeouts after the platform accepted,
expired tokens, rejected media, two runners at once — and the moderators told of every failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from db.database import Database
from db.models import Clip, Publication, PublicationState
from db.settings import Settings
from db.storage import Storage
from publisher import state
from publisher.runner import RunResult, run_due_publications
from publisher.scheduler import schedule_clip
from publisher.tokens import load_token
from tests.fakes.publish_http import Response, hang, respond
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX, Tweet
from tests.publish_fixtures import Notes, login_soundcloud, make_clip, publish_settings, seed_renders

pytest_plugins = ["tests.conftest_publish"]

LINK = "https://discord.com/channels/5150/777/888"


@dataclass
class Env:
    db: Database
    storage: Storage
    settings: Settings
    fx: FakeX
    sc: FakeSoundCloud
    notes: Notes
    clip: Clip

    async def run(self, now: datetime | None = None, **kw: object) -> list[RunResult]:
        return await run_due_publications(self.db, self.storage, self.settings, self.notes, now=now, **kw)  # type: ignore[arg-type]

    def rows(self) -> dict[str, Publication]:
        return {p.platform: p for p in state.publications_for_clip(self.db, self.clip.id)}  # type: ignore[arg-type]

    def schedule(self, *platforms: str) -> list[int]:
        assert self.clip.id is not None
        return schedule_clip(
            self.db, self.clip.id, list(platforms) or None, datetime.now(UTC), settings=self.settings
        )


@pytest.fixture
def env(
    db: Database,
    storage: Storage,
    settings: Settings,
    fake_x: FakeX,
    fake_sc: FakeSoundCloud,
    prerendered: dict[str, bytes],
) -> Iterator[Env]:
    s = publish_settings(
        settings, fake_x, fake_sc, publish_reconcile_seconds=60.0, publish_retry_seconds=120.0
    )
    login_soundcloud(db, fake_sc)
    clip = make_clip(db, storage, featured_on="2026-11-24")
    seed_renders(storage, s, clip.id, prerendered)
    yield Env(db, storage, s, fake_x, fake_sc, Notes(), clip)
    assert fake_x.violations == [] and fake_sc.violations == []


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_full_daily_run_uploads_once_to_each_platform(env: Env) -> None:
    for key in env.storage.list("publications"):  # this one renders for real
        env.storage.delete(key)
    ids = env.schedule()
    assert len(ids) == 2 and env.schedule() == ids  # scheduling again changes nothing
    results = await env.run()
    assert sorted((r.platform, r.state) for r in results) == [("soundcloud", "published"), ("x", "published")]
    assert len(env.fx.tweets) == 1 and len(env.sc.tracks) == 1
    rows = env.rows()
    x, sc = rows["x"], rows["soundcloud"]
    assert x.state == sc.state == PublicationState.published
    assert (
        x.remote_id == env.fx.tweets[0].id
        and x.remote_url == f"https://x.com/jukebot_test/status/{x.remote_id}"
    )
    assert sc.remote_id == str(env.sc.tracks[0].id) and (sc.remote_url or "").startswith(
        "https://soundcloud.com/"
    )
    assert x.attempts == sc.attempts == 1 and x.published_at is not None
    # What went out: the X caption (fixed on the row), a video X accepts, a lossless file with the words.
    assert (
        env.fx.tweets[0].text.startswith(x.caption)
        and "Harbour Rain" in x.caption
        and "#jukebot" in x.caption
    )
    assert env.fx.uploaded is not None and env.fx.uploaded[4:8] == b"ftyp"
    track = env.sc.tracks[0]
    assert track.title == sc.caption == "Harbour Rain" and track.data[:4] == b"fLaC"
    assert "I walked along the harbour road" in track.description and "jukebot" in track.tag_list
    assert env.notes.messages == []
    # A second run (a restart, a double fire, the sweep) posts nothing more.
    assert await env.run(now=later(7200)) == []
    assert len(env.fx.tweets) == 1 and len(env.sc.tracks) == 1
    # The renders were kept: a retry would not render again.
    assert any(k.endswith(".mp4") for k in env.storage.list("publications"))


async def test_two_runners_at_once_post_once(env: Env) -> None:
    env.schedule()
    first, second = await asyncio.gather(env.run(), env.run())
    assert len(first) + len(second) == 2
    assert len(env.fx.tweets) == 1 and len(env.sc.tracks) == 1


async def test_a_429_far_from_reset_is_rescheduled_at_the_reset(env: Env) -> None:
    env.schedule("x")
    reset = int(time.time()) + 1800
    env.fx.script(
        "POST",
        "/2/tweets",
        respond(
            429,
            {"title": "Too Many Requests", "status": 429},
            {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)},
        ),
    )
    (result,) = await env.run()
    row = env.rows()["x"]
    assert result.state == row.state == PublicationState.scheduled
    assert row.scheduled_for == datetime.fromtimestamp(reset, UTC) and "429" in (row.last_error or "")
    assert env.fx.tweets == []
    (note,) = env.notes.messages
    assert (
        "too many requests" in note
        and "Trying again at" in note
        and LINK in note
        and "attempt 1 of 3" in note
    )
    assert await env.run() == []  # not due yet
    (result,) = await env.run(now=datetime.fromtimestamp(reset + 1, UTC))
    assert result.state == "published" and len(env.fx.tweets) == 1
    assert env.rows()["x"].attempts == 2


async def test_a_500_on_the_post_is_checked_before_a_retry(env: Env) -> None:
    env.schedule("x")
    env.fx.script("POST", "/2/tweets", respond(500, {"title": "Internal Server Error", "status": 500}))
    (result,) = await env.run()
    row = env.rows()["x"]
    assert result.state == row.state == PublicationState.unconfirmed and env.fx.tweets == []
    assert "500" in (row.last_error or "") and "checking" in env.notes.messages[0]
    assert await env.run() == []  # the check waits publish_reconcile_seconds
    (result,) = await env.run(now=later(61))
    assert result.state == "published" and len(env.fx.tweets) == 1  # not found on X -> sent again
    timeline = [r for r in env.fx.requests if r.path.endswith("/tweets") and r.method == "GET"]
    assert len(timeline) == 1  # it looked first
    assert env.rows()["x"].attempts == 2


async def test_a_post_accepted_then_answered_500_is_found_not_reposted(env: Env) -> None:
    env.schedule("x")
    env.fx.script(
        "POST", "/2/tweets", lambda req, resp: Response(500, {"title": "Internal Server Error"}), when="after"
    )
    (result,) = await env.run()
    assert result.state == "unconfirmed" and len(env.fx.tweets) == 1  # X did post it
    (result,) = await env.run(now=later(61))
    row = env.rows()["x"]
    assert result.state == row.state == "published" and row.remote_id == env.fx.tweets[0].id
    assert len(env.fx.tweets) == 1 and row.attempts == 1
    assert "had gone through after all" in env.notes.messages[-1]


async def test_a_timeout_after_soundcloud_accepted_is_found_not_reuploaded(env: Env) -> None:
    env.settings = env.settings.model_copy(update={"publish_http_timeout": 1.0})
    env.schedule("soundcloud")
    env.sc.script("POST", "/tracks", hang(2.5), when="after")
    (result,) = await env.run()
    assert result.state == "unconfirmed" and len(env.sc.tracks) == 1
    (result,) = await env.run(now=later(61))
    assert result.state == "published" and len(env.sc.tracks) == 1
    assert env.rows()["soundcloud"].remote_id == str(env.sc.tracks[0].id)


async def test_an_expired_soundcloud_token_is_refreshed_and_the_upload_goes_out(env: Env) -> None:
    env.schedule("soundcloud")
    before = load_token(env.db, "soundcloud")
    env.sc.expire_access_tokens()
    (result,) = await env.run()
    assert result.state == "published" and len(env.sc.tracks) == 1 and env.sc.refreshes == 1
    after = load_token(env.db, "soundcloud")
    assert before is not None and after is not None and after.refresh_token != before.refresh_token
    assert env.notes.messages == []


async def test_a_dead_soundcloud_login_fails_and_asks_for_a_new_one(env: Env) -> None:
    env.schedule("soundcloud")
    env.sc.refresh_tokens.clear()
    env.sc.expire_access_tokens()
    (result,) = await env.run()
    row = env.rows()["soundcloud"]
    assert result.state == row.state == "failed" and env.sc.tracks == []
    assert "jukebot publish auth soundcloud" in (row.last_error or "")
    (note,) = env.notes.messages
    assert note.startswith("⚠️ SoundCloud upload of clip #") and "“Harbour Rain”" in note
    assert "failed:" in note and LINK in note


async def test_rejected_media_fails_with_the_platforms_reason(env: Env) -> None:
    env.schedule()
    failed = {
        "data": {
            "id": "1",
            "processing_info": {
                "state": "failed",
                "error": {
                    "code": 1,
                    "name": "InvalidMedia",
                    "message": "Invalid or Unsupported media, Reason: UnsupportedMedia.",
                },
            },
        }
    }
    env.fx.script("GET", "/2/media/upload", respond(200, failed))
    env.sc.script(
        "POST", "/tracks", respond(422, {"code": 422, "errors": [{"error_message": "Audio file is corrupt"}]})
    )
    results = {r.platform: r for r in await env.run()}
    rows = env.rows()
    assert results["x"].state == rows["x"].state == "failed"
    assert "X could not process the video: Invalid or Unsupported media" in (rows["x"].last_error or "")
    assert results["soundcloud"].state == rows["soundcloud"].state == "failed"
    assert "(422): Audio file is corrupt" in (rows["soundcloud"].last_error or "")
    assert env.fx.tweets == [] and env.sc.tracks == []
    assert len(env.notes.messages) == 2 and all(LINK in m for m in env.notes.messages)
    # A moderator may try again once the cause is fixed.
    assert state.retry_failed(env.db, rows["x"].id)  # type: ignore[arg-type]
    assert not state.retry_failed(env.db, rows["x"].id)  # type: ignore[arg-type]
    (result,) = await env.run(platforms=["x"])
    assert result.state == "published" and len(env.fx.tweets) == 1


async def test_clear_failures_are_retried_with_backoff_then_given_up(env: Env) -> None:
    env.schedule("x")
    env.fx.script(
        "POST", "/2/media/upload/initialize", respond(503, {"title": "Service Unavailable"}), times=3
    )
    now = datetime.now(UTC)
    waits = []
    for _ in range(3):
        (result,) = await env.run(now=now)
        row = env.rows()["x"]
        waits.append((row.scheduled_for - now).total_seconds())
        now = row.scheduled_for + timedelta(seconds=1)
    assert result.state == row.state == "failed" and row.attempts == 3
    assert waits[0] == pytest.approx(120, abs=2) and waits[1] == pytest.approx(480, abs=2)
    assert "gave up after 3 attempts" in (row.last_error or "")
    assert len(env.notes.messages) == 3 and env.fx.tweets == []


async def test_missing_credentials_fail_clearly(env: Env) -> None:
    env.settings = env.settings.model_copy(update={"x_consumer_key": None, "x_client_id": None})
    env.schedule("x")
    (result,) = await env.run()
    assert result.state == "failed" and "X is not configured" in result.message


async def test_a_broken_notify_never_breaks_the_bookkeeping(env: Env) -> None:
    async def broken(message: str) -> None:
        raise RuntimeError("discord is down")

    env.schedule("x")
    env.fx.script(
        "POST", "/2/tweets", respond(403, {"title": "Forbidden", "detail": "You are not permitted."})
    )
    (result,) = await run_due_publications(env.db, env.storage, env.settings, broken)
    assert result.state == env.rows()["x"].state == "failed"
    assert "You are not permitted." in result.message


async def test_an_interrupted_upload_is_reconciled(env: Env) -> None:
    """A row left `publishing` (the process died after X accepted, before our commit) is found on X."""
    (pub_id,) = env.schedule("x")
    held = state.claim(env.db, pub_id, datetime.now(UTC))
    assert held is not None
    text = f"Harbour Rain, posted just before a crash\n{held.marker}"
    state.set_caption(env.db, held, text)
    env.fx.tweets.append(Tweet("1900", f"{text} https://t.co/abc", [], datetime.now(UTC)))
    assert await env.run() == []  # its lease has not run out: someone may still be working on it
    (result,) = await env.run(now=later(env.settings.publish.lease_seconds + 1))
    row = env.rows()["x"]
    assert result.state == row.state == "published" and row.remote_id == "1900"
    assert len(env.fx.tweets) == 1 and row.attempts == 1
    assert "interrupted" in env.notes.messages[0] and "had gone through after all" in env.notes.messages[1]


async def test_x_over_oauth2_with_a_stored_login(env: Env) -> None:
    from publisher.oauth import TokenSet
    from publisher.tokens import save_token

    access, refresh = env.fx.issue_bearer()
    save_token(env.db, "x", TokenSet(access, refresh, later(7200)))
    env.settings = env.settings.model_copy(
        update={"x_consumer_key": None, "x_client_id": SecretStr(env.fx.client_id)}
    )
    env.schedule("x")
    env.fx.expire_bearer_tokens()
    (result,) = await env.run()
    assert result.state == "published" and len(env.fx.tweets) == 1
    assert all(
        r.headers.get("authorization", "").startswith("Bearer ")
        for r in env.fx.requests
        if r.path != "/2/oauth2/token"
    )


async def test_a_broken_caption_template_fails_clearly(env: Env) -> None:
    env.settings = env.settings.model_copy(update={"caption_templates": {"x": "{title} {mood}"}})
    env.schedule("x")
    (result,) = await env.run()
    assert result.state == "failed" and "caption template" in result.message and "mood" in result.message
    assert env.fx.tweets == []


def test_a_claim_needs_the_row_still_due(env: Env) -> None:
    (pub_id,) = env.schedule("x")
    now = datetime.now(UTC)
    first = state.claim(env.db, pub_id, now)
    assert first is not None and first.publication.attempts == 1
    assert state.claim(env.db, pub_id, now) is None  # taken
    assert state.finish_retry(env.db, first, "busy", now + timedelta(hours=1))
    assert state.claim(env.db, pub_id, now) is None  # rescheduled: not due any more
    assert not state.finish_published(env.db, first, "1", "u", now)  # the old claim's token is spent
    second = state.claim(env.db, pub_id, now + timedelta(hours=2))
    # it was sent once: the platform is checked (by marker) before the second attempt is counted
    assert second is not None and second.reconcile and second.publication.attempts == 1
    assert second.token == first.token + 1 and second.marker == first.marker
    sending = state.begin_send(env.db, second, now + timedelta(hours=2))
    assert sending is not None and sending.publication.attempts == 2


async def test_x_over_oauth2_without_a_login_says_how_to_log_in(env: Env) -> None:
    env.settings = env.settings.model_copy(
        update={"x_consumer_key": None, "x_client_id": SecretStr("x-client")}
    )
    env.schedule("x")
    (result,) = await env.run()
    assert result.state == "failed" and "X is not authorised yet" in result.message
    assert "jukebot publish auth x --oauth2" in result.message and env.fx.tweets == []
