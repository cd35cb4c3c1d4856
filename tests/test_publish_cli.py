"""`jukebot publish …`: the one-time logins (PKCE through the fake's /authorize and our loopback listener or
a pasted URL), `status`, `run` and `retry`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from db.database import Database
from db.settings import Settings, get_settings
from db.storage import Storage
from publisher import state
from publisher.cli import app
from publisher.scheduler import schedule_clip
from publisher.tokens import load_token
from tests.fakes.publish_http import respond
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX
from tests.publish_fixtures import login_soundcloud, make_clip, publish_settings, seed_renders
from tests.test_publish_crash import child_env

pytest_plugins = ["tests.conftest_publish"]

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s(settings: Settings, fake_x: FakeX, fake_sc: FakeSoundCloud) -> Settings:
    return publish_settings(
        settings, fake_x, fake_sc, oauth_redirect_uri=f"http://127.0.0.1:{free_port()}/callback"
    )


@pytest.fixture
def cli_env(s: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = child_env(s) | {"JUKEBOT_OAUTH_REDIRECT_URI": s.publish.oauth_redirect_uri, "PYTHONUNBUFFERED": "1"}
    for key, value in env.items():
        if key.startswith("JUKEBOT_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables to the terminal width
    monkeypatch.chdir(REPO)  # no .env here is read by the tests' Settings (JUKEBOT_ variables win anyway)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from publisher.cli import app; app()", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    lines: list[str] = []
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, f"the command ended before {marker!r}: {''.join(lines)}"
        lines.append(line)
        if marker in line:
            return lines


def test_auth_soundcloud_with_the_loopback_listener(
    cli_env: dict[str, str],
    db: Database,
    fake_sc: FakeSoundCloud,
    tmp_path: Path,
) -> None:
    proc = start(["auth", "soundcloud"], cli_env, tmp_path)
    try:
        lines = read_until(proc, "Waiting for the browser")
        url = next(line.strip() for line in lines if line.strip().startswith("http"))
        assert url.startswith(f"{fake_sc.base_url}/authorize?") and "code_challenge_method=S256" in url
        for _ in range(50):  # the browser: approve on SoundCloud, get sent to our listener
            try:
                page = httpx.get(url, follow_redirects=True, timeout=5)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert page.status_code == 200 and "authorised" in page.text
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "soundcloud: logged in" in out
    token = load_token(db, "soundcloud")
    assert (
        token is not None
        and token.refresh_token in fake_sc.refresh_tokens
        and token.access_token in fake_sc.access_tokens
    )
    assert fake_sc.violations == []


def test_auth_x_oauth2_with_a_pasted_redirect(
    cli_env: dict[str, str],
    db: Database,
    fake_x: FakeX,
    tmp_path: Path,
) -> None:
    env = cli_env | {
        "JUKEBOT_X_CLIENT_ID": fake_x.client_id,
        "JUKEBOT_X_AUTHORIZE_URL": f"{fake_x.base_url}/i/oauth2/authorize",
    }
    for key in (
        "JUKEBOT_X_CONSUMER_KEY",
        "JUKEBOT_X_CONSUMER_SECRET",
        "JUKEBOT_X_ACCESS_TOKEN",
        "JUKEBOT_X_ACCESS_TOKEN_SECRET",
    ):
        env.pop(key)
    proc = start(["auth", "x", "--oauth2", "--no-listen"], env, tmp_path)
    try:
        lines = read_until(proc, "Open this address")
        lines += read_until(proc, "http")
        url = lines[-1].strip()
        assert "scope=tweet.read+tweet.write+users.read+media.write+offline.access" in url
        redirect = httpx.get(url, follow_redirects=False, timeout=5).headers["location"]
        out, _ = proc.communicate(redirect + "\n", timeout=60)  # the person pastes where the browser landed
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "x: logged in" in out and "X: posting as @jukebot_test." in out
    token = load_token(db, "x")
    assert token is not None and token.access_token in fake_x.bearer_tokens
    assert "offline.access" in token.scope


def test_auth_with_a_forged_redirect_is_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    proc = start(["auth", "soundcloud", "--no-listen"], cli_env, tmp_path)
    out, _ = proc.communicate("http://127.0.0.1/callback?code=abc&state=someone-elses\n", timeout=60)
    assert proc.returncode == 1 and "state mismatch" in out and "Traceback" not in out


def test_auth_x_checks_the_oauth1_keys(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["auth", "x"])
    assert result.exit_code == 0, result.output
    assert "X: posting as @jukebot_test." in result.output


def test_status_run_and_retry(
    cli_env: dict[str, str],
    db: Database,
    storage: Storage,
    s: Settings,
    fake_x: FakeX,
    fake_sc: FakeSoundCloud,
    prerendered: dict[str, bytes],
) -> None:
    runner = CliRunner()
    assert "No publications yet." in runner.invoke(app, ["status"]).output
    login_soundcloud(db, fake_sc)
    clip = make_clip(db, storage)
    assert clip.id is not None
    seed_renders(storage, s, clip.id, prerendered)
    schedule_clip(db, clip.id, ["x", "soundcloud"], datetime.now(UTC), settings=s)
    fake_x.script(
        "POST", "/2/tweets", respond(403, {"title": "Forbidden", "detail": "You are not permitted."})
    )
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    assert "x: failed" in result.output and "soundcloud: published" in result.output
    table = runner.invoke(app, ["status"]).output
    assert "Harbour Rain" in table and "published" in table and "failed" in table
    x_row = next(p for p in state.publications_for_clip(db, clip.id) if p.platform == "x")
    assert runner.invoke(app, ["retry", str(x_row.id)]).exit_code == 0
    bad = runner.invoke(app, ["retry", "9999"])
    assert bad.exit_code == 1 and "not in the failed state" in bad.output
    result = runner.invoke(app, ["run", "--platform", "x"])
    assert "x: published" in result.output and len(fake_x.tweets) == 1 and len(fake_sc.tracks) == 1
    assert "Nothing was due." in runner.invoke(app, ["run"]).output


def test_run_with_an_unreachable_database_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUKEBOT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["run"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1 and "Cannot reach the database" in result.output
    assert os.environ.get("JUKEBOT_DATABASE_URL", "").startswith("postgresql://nobody")


def test_auth_when_the_redirect_port_is_taken(cli_env: dict[str, str], s: Settings, tmp_path: Path) -> None:
    port = int(s.publish.oauth_redirect_uri.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        proc = start(["auth", "soundcloud"], cli_env, tmp_path)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "--no-listen" in out and "Traceback" not in out
