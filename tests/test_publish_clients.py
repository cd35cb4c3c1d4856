"""The X and SoundCloud clients against local fake servers that check what the real APIs require:
OAuth 1.0a signatures (verified by the fake with the secrets), Bearer/OAuth tokens, chunk order and
sizes, multipart field names, STATUS polling after check_after_secs, rate-limit headers and 429s,
token refresh with single-use refresh tokens."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from db.audio import ffmpeg
from db.database import Database
from publisher import render
from publisher.errors import Outcome, PublishError
from publisher.oauth import OAuthClient, TokenSet
from publisher.soundcloud_client import SoundCloudClient
from publisher.tokens import TokenManager, load_token, save_token
from publisher.x_client import OAuth1UserAuth, OAuth2UserAuth, XClient
from tests.fakes.publish_http import hang, respond
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX
from tests.publish_fixtures import login_soundcloud, tone_wav

pytest_plugins = ["tests.conftest_publish"]

CHUNK = 16 * 1024


@pytest.fixture(scope="module")
def video() -> bytes:
    return render.render_x_video(tone_wav(1.0), render.TitleCard("t"), size=(96, 64), fps=10)


@pytest.fixture
def fx() -> Iterator[FakeX]:
    with FakeX(check_after_secs=1, processing_polls=1) as server:
        assert isinstance(server, FakeX)
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(3.0)) as client:
        yield client


class Sleeps:
    """Really sleeps (the fakes keep real time) and remembers how long."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(seconds)


def x_client(
    fx: FakeX,
    http: httpx.AsyncClient,
    *,
    secret: str | None = None,
    sleep: Sleeps | None = None,
    max_wait: float = 5.0,
) -> XClient:
    auth = OAuth1UserAuth(
        fx.consumer_key, secret or fx.consumer_secret, fx.access_token, fx.access_token_secret
    )
    return XClient(
        fx.base_url, auth, http, chunk_bytes=CHUNK, rate_limit_max_wait=max_wait, sleep=sleep or Sleeps()
    )


# ----------------------------------------------------------------------------------------------- X


async def test_x_chunked_upload_and_post(fx: FakeX, http: httpx.AsyncClient, video: bytes) -> None:
    sleeps = Sleeps()
    client = x_client(fx, http, sleep=sleeps)
    media_id = await client.upload_media(video)
    post = await client.create_post("Harbour Rain 🎵 #jukebot", [media_id])
    assert fx.violations == []  # signatures verified, chunks in order and in size, STATUS not polled early
    appends = [r for r in fx.requests if r.path.endswith("/append")]
    assert len(appends) == math.ceil(len(video) / CHUNK) > 1
    assert [int(r.form["segment_index"]) for r in appends] == list(range(len(appends)))
    assert all(
        r.multipart_names == ["segment_index", "media"]
        or set(r.multipart_names) == {"segment_index", "media"}
        for r in appends
    )
    assert all(len(r.files["media"].data) <= CHUNK for r in appends)
    assert fx.uploaded == video
    statuses = [r for r in fx.requests if r.path == "/2/media/upload" and r.method == "GET"]
    assert len(statuses) == 2 and sleeps.calls == [1.0, 1.0]  # check_after_secs honoured each time
    assert [t.text.split(" https://t.co/")[0] for t in fx.tweets] == ["Harbour Rain 🎵 #jukebot"]
    assert fx.tweets[0].media_ids == [media_id]
    assert post.url == f"https://x.com/jukebot_test/status/{post.id}"
    assert all(r.headers["authorization"].startswith("OAuth ") for r in fx.requests)


async def test_x_signature_with_a_wrong_secret_is_refused(fx: FakeX, http: httpx.AsyncClient) -> None:
    client = x_client(fx, http, secret="not-the-secret")
    with pytest.raises(PublishError) as err:
        await client.me()
    assert err.value.outcome is Outcome.auth and err.value.status == 401
    assert fx.violations == ["oauth1: signature does not match"]


async def test_x_signed_query_and_find_post(fx: FakeX, http: httpx.AsyncClient) -> None:
    client = x_client(fx, http)
    start = datetime.now(UTC)
    assert await client.find_post("jb-0123456789", start) is None  # X omits "data" when there are no posts
    other = await client.create_post("Harbour Rain &amp; friends\njb-ffffffffff")  # same words, not ours
    post = await client.create_post("Harbour Rain &amp; friends\njb-0123456789")
    fx.tweets[1].text += " https://t.co/zzz"  # X appends links and escapes entities
    found = await client.find_post("jb-0123456789", start)
    assert found is not None and found.id == post.id != other.id
    assert await client.find_post("jb-0123456788", start) is None
    assert fx.violations == []  # the query string (start_time, max_results, …) was signed right


async def test_x_429_waits_for_the_reset_then_posts(fx: FakeX, http: httpx.AsyncClient) -> None:
    reset = time.time() + 1.2
    fx.script(
        "POST",
        "/2/tweets",
        respond(
            429,
            {"title": "Too Many Requests", "status": 429},
            {
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": f"{reset:.0f}",
                "x-rate-limit-limit": "100",
            },
        ),
    )
    sleeps = Sleeps()
    client = x_client(fx, http, sleep=sleeps)
    await client.create_post("after a pause")
    assert len(fx.tweets) == 1 and time.time() >= int(reset)
    assert len(sleeps.calls) == 1 and 0 < sleeps.calls[0] <= 2.5


async def test_x_429_with_a_far_reset_is_rescheduled(fx: FakeX, http: httpx.AsyncClient) -> None:
    reset = int(time.time()) + 3600
    fx.script(
        "POST",
        "/2/tweets",
        respond(
            429,
            {"title": "Too Many Requests"},
            {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)},
        ),
    )
    with pytest.raises(PublishError) as err:
        await x_client(fx, http).create_post("later")
    assert err.value.outcome is Outcome.retry and err.value.retry_at == datetime.fromtimestamp(reset, UTC)
    assert "429" in err.value.message and fx.tweets == []


async def test_x_429_with_a_malformed_retry_after_is_rescheduled_not_unexpected(
    fx: FakeX, http: httpx.AsyncClient
) -> None:
    # A Retry-After that is neither seconds nor an HTTP date: the default wait (60 s) applies, which
    # is longer than max_wait, so the publication is rescheduled (it used to escape as ValueError).
    fx.script("POST", "/2/tweets", respond(429, {"title": "Too Many Requests"}, {"retry-after": "soon-ish"}))
    before = time.time()
    with pytest.raises(PublishError) as err:
        await x_client(fx, http).create_post("later")
    assert err.value.outcome is Outcome.retry and err.value.retry_at is not None
    assert 55 <= err.value.retry_at.timestamp() - before <= 65
    assert fx.tweets == []


async def test_x_empty_bucket_waits_before_calling(fx: FakeX, http: httpx.AsyncClient) -> None:
    fx.set_rate_limit("GET /2/users/me", 75, 1, reset_in=1.0)
    client = x_client(fx, http)
    await client.me()  # uses the last request; the answer says remaining 0 until the reset
    client._me = None
    await client.me()  # must wait for the reset instead of drawing a 429
    assert fx.violations == []


async def test_x_rejected_media_is_a_permanent_failure_with_xs_reason(
    fx: FakeX, http: httpx.AsyncClient, tmp_path: object
) -> None:
    import subprocess
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.mp4"
    subprocess.run(
        [
            ffmpeg(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=64x64:d=1:r=10",
            "-pix_fmt",
            "yuv444p",
            "-c:v",
            "libx264",
            str(bad),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(PublishError) as err:
        await x_client(fx, http).upload_media(bad.read_bytes())
    assert err.value.outcome is Outcome.permanent
    assert "X could not process the video: Invalid or Unsupported media" in err.value.message


async def test_x_server_errors(fx: FakeX, http: httpx.AsyncClient, video: bytes) -> None:
    client = x_client(fx, http)
    fx.script("POST", r"/2/media/upload/\d+/append", respond(503, {"title": "Service Unavailable"}))
    with pytest.raises(PublishError) as err:
        await client.upload_media(video)
    assert err.value.outcome is Outcome.retry  # an upload step is safe to repeat
    fx.script("POST", "/2/tweets", respond(500, {"title": "Internal Server Error"}))
    with pytest.raises(PublishError) as err:
        await client.create_post("maybe")
    assert err.value.outcome is Outcome.unclear  # the post may exist: look before retrying
    fx.script("POST", "/2/tweets", hang(4.0))
    short = httpx.AsyncClient(timeout=httpx.Timeout(0.5))
    try:
        with pytest.raises(PublishError) as err:
            await x_client(fx, short).create_post("slow")
    finally:
        await short.aclose()
    assert err.value.outcome is Outcome.unclear and "may have gone through" in err.value.message


async def test_x_duplicate_text_is_unclear(fx: FakeX, http: httpx.AsyncClient) -> None:
    client = x_client(fx, http)
    await client.create_post("same words")
    with pytest.raises(PublishError) as err:
        await client.create_post("same words")
    assert err.value.outcome is Outcome.unclear and err.value.status == 403


async def test_x_oauth2_bearer_is_refreshed_and_stored(
    fx: FakeX, http: httpx.AsyncClient, db: Database
) -> None:
    access, refresh = fx.issue_bearer()
    save_token(db, "x", TokenSet(access, refresh, datetime.now(UTC) + timedelta(hours=2)))
    manager = TokenManager(
        db, "x", OAuthClient(f"{fx.base_url}/2/oauth2/token", fx.client_id), http, label="X"
    )
    client = XClient(fx.base_url, OAuth2UserAuth(manager), http)
    assert (await client.me()).username == "jukebot_test"
    fx.expire_bearer_tokens()
    client._me = None
    assert (await client.me()).username == "jukebot_test"  # 401 -> refresh -> retry
    stored = load_token(db, "x")
    assert (
        stored is not None and stored.refresh_token != refresh and stored.refresh_token in fx.refresh_tokens
    )
    assert refresh not in fx.refresh_tokens  # single use: the old one is dead, the new one is saved


# -------------------------------------------------------------------------------------- SoundCloud


def sc_client(fake: FakeSoundCloud, db: Database, http: httpx.AsyncClient) -> SoundCloudClient:
    oauth = OAuthClient(f"{fake.base_url}/oauth/token", fake.client_id, fake.client_secret)
    return SoundCloudClient(
        fake.base_url, TokenManager(db, "soundcloud", oauth, http, label="SoundCloud"), http
    )


async def test_soundcloud_upload_sends_the_documented_fields(
    fake_sc: FakeSoundCloud,
    db: Database,
    http: httpx.AsyncClient,
) -> None:
    login_soundcloud(db, fake_sc)
    audio = render.render_audio(tone_wav(1.0), "flac")
    track = await sc_client(fake_sc, db, http).upload_track(
        audio=audio.data,
        filename="clip.flac",
        mime=audio.mime,
        title="Harbour Rain",
        description="words\njb-0123456789",
        tag_list='jukebot "Frank Sinatra"',
        sharing="private",
    )
    assert fake_sc.violations == []
    (stored,) = fake_sc.tracks
    assert (stored.title, stored.description, stored.tag_list, stored.sharing) == (
        "Harbour Rain",
        "words\njb-0123456789",
        'jukebot "Frank Sinatra"',
        "private",
    )
    assert stored.data == audio.data and stored.filename == "clip.flac"
    upload = next(r for r in fake_sc.requests if r.path == "/tracks")
    assert upload.headers["authorization"].startswith("OAuth ")
    assert set(upload.multipart_names) == {
        "track[title]",
        "track[description]",
        "track[tag_list]",
        "track[sharing]",
        "track[asset_data]",
    }
    assert track.id == str(stored.id) and track.url.startswith("https://soundcloud.com/")
    found = await sc_client(fake_sc, db, http).find_track(
        "jb-0123456789", datetime.now(UTC) - timedelta(minutes=1)
    )
    assert found is not None and found.id == track.id


async def test_soundcloud_expired_token_is_refreshed_once_and_the_new_refresh_token_stored(
    fake_sc: FakeSoundCloud, db: Database, http: httpx.AsyncClient
) -> None:
    first = login_soundcloud(db, fake_sc)
    fake_sc.expire_access_tokens()  # the platform ended it; we still think it is valid
    client = sc_client(fake_sc, db, http)
    await client.me()
    assert fake_sc.refreshes == 1
    stored = load_token(db, "soundcloud")
    assert stored is not None and stored.refresh_token != first.refresh_token
    assert (
        stored.refresh_token in fake_sc.refresh_tokens and first.refresh_token not in fake_sc.refresh_tokens
    )
    await sc_client(fake_sc, db, http).me()  # a new client (another run) uses the stored token as is
    assert fake_sc.refreshes == 1 and fake_sc.violations == []


async def test_soundcloud_refreshes_ahead_of_the_stated_expiry(
    fake_sc: FakeSoundCloud,
    db: Database,
    http: httpx.AsyncClient,
) -> None:
    tokens = TokenSet.from_response(fake_sc.issue_tokens())
    save_token(
        db,
        "soundcloud",
        TokenSet(tokens.access_token, tokens.refresh_token, datetime.now(UTC) + timedelta(seconds=30)),
    )
    await sc_client(fake_sc, db, http).me()
    assert fake_sc.refreshes == 1
    assert not any(
        r.path == "/me" and r.headers.get("authorization") == f"OAuth {tokens.access_token}"
        for r in fake_sc.requests
    )  # never sent the nearly-expired token


async def test_soundcloud_dead_refresh_token_asks_for_a_new_login(
    fake_sc: FakeSoundCloud,
    db: Database,
    http: httpx.AsyncClient,
) -> None:
    tokens = login_soundcloud(db, fake_sc)
    fake_sc.refresh_tokens.discard(tokens.refresh_token or "")  # revoked (or used elsewhere and lost)
    fake_sc.expire_access_tokens()
    with pytest.raises(PublishError) as err:
        await sc_client(fake_sc, db, http).me()
    assert err.value.outcome is Outcome.auth
    assert "jukebot publish auth soundcloud" in err.value.message and "invalid" in err.value.message


async def test_soundcloud_two_processes_refreshing_at_once_both_go_on(
    fake_sc: FakeSoundCloud,
    db: Database,
    http: httpx.AsyncClient,
) -> None:
    login_soundcloud(db, fake_sc)
    fake_sc.expire_access_tokens()
    a, b = (
        sc_client(fake_sc, db, http),
        sc_client(fake_sc, db, http),
    )  # separate managers, as in two processes
    await asyncio.gather(a.me(), b.me())
    stored = load_token(db, "soundcloud")
    assert stored is not None and stored.refresh_token in fake_sc.refresh_tokens  # the saved one still works


async def test_soundcloud_rejected_file_and_server_errors(
    fake_sc: FakeSoundCloud,
    db: Database,
    http: httpx.AsyncClient,
) -> None:
    login_soundcloud(db, fake_sc)
    client = sc_client(fake_sc, db, http)
    with pytest.raises(PublishError) as err:
        await client.upload_track(
            audio=b"not audio at all" * 100, filename="x.flac", mime="audio/flac", title="t"
        )
    assert err.value.outcome is Outcome.permanent and "Unsupported audio format" in err.value.message
    fake_sc.script(
        "POST",
        "/tracks",
        respond(503, b"<html>unable to process your request in time</html>", {"Content-Type": "text/html"}),
    )
    with pytest.raises(PublishError) as err:
        await client.upload_track(
            audio=render.render_audio(tone_wav(1.0), "mp3").data,
            filename="x.mp3",
            mime="audio/mpeg",
            title="t",
        )
    assert err.value.outcome is Outcome.unclear and "unable to process" in err.value.message
    assert fake_sc.tracks == []


async def test_soundcloud_find_tells_apart_tracks_that_share_a_title(
    fake_sc: FakeSoundCloud, db: Database, http: httpx.AsyncClient
) -> None:
    login_soundcloud(db, fake_sc)
    client = sc_client(fake_sc, db, http)
    audio = render.render_audio(tone_wav(0.6), "mp3").data
    first = await client.upload_track(
        audio=audio,
        filename="a.mp3",
        mime="audio/mpeg",
        title="Untitled",
        description="by alice\njb-00000000aa",
    )
    await client.upload_track(  # a continuation: same title and words, its own marker
        audio=audio,
        filename="b.mp3",
        mime="audio/mpeg",
        title="Untitled",
        description="by alice\njb-00000000bb",
    )
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert await client.find_track("jb-00000000cc", since) is None
    found = await client.find_track("jb-00000000aa", since)
    assert found is not None and found.id == first.id
    assert await client.find_track("jb-00000000aa", datetime.now(UTC) + timedelta(hours=1)) is None  # too old
