"""Per-server publishing accounts (issue #14, item 2): a server with its own SoundCloud/X login
publishes there; others use the operator's shared account only where the bot's owner allowed it;
the owner's deny stops both; logins stay encrypted; captions bound for the shared account are
moderated by default; `jukebot publish auth … --guild ID` logs a server's account in.
Real database (SQLite and PostgreSQL), real HTTP to the fake SoundCloud, the real CLI in a subprocess."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from bot.config import update_guild
from db.database import Database
from db.models import Publication
from db.secrets import PREFIX
from db.settings import Settings
from db.storage import Storage
from publisher.accounts import Account, accounts_for_guild, caption_moderation_on
from publisher.oauth import TokenSet
from publisher.runner import run_due_publications
from publisher.scheduler import schedule_clip
from publisher.tokens import SHARED, load_token, save_token
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX
from tests.publish_fixtures import (
    CLIP_GUILD,
    Notes,
    login_soundcloud,
    make_clip,
    publish_settings,
    seed_renders,
)
from tests.test_publish_cli import cli_env, read_until, start  # noqa: F401  (cli_env is a fixture)

pytest_plugins = ["tests.conftest_publish"]

OWN = 6000  # a server with its own SoundCloud account, not allowed on the shared one
NEITHER = 7000  # a server with no account and no allowance


@pytest.fixture
def s(settings: Settings, fake_x: FakeX, fake_sc: FakeSoundCloud) -> Settings:
    return publish_settings(settings, fake_x, fake_sc)


def login_own(db: Database, fake_sc: FakeSoundCloud, guild_id: int, account: str) -> None:
    save_token(
        db, "soundcloud", TokenSet.from_response(fake_sc.issue_tokens(account=account)), guild_id=guild_id
    )


def soundcloud_row(db: Database, clip_id: int | None) -> Publication:
    with db.read() as s:
        return s.execute(
            select(Publication).where(
                col(Publication.clip_id) == clip_id, col(Publication.platform) == "soundcloud"
            )
        ).scalar_one()


async def test_each_server_publishes_with_its_own_account_or_the_shared_one(
    db: Database, storage: Storage, s: Settings, fake_sc: FakeSoundCloud, prerendered: dict[str, bytes]
) -> None:
    login_soundcloud(db, fake_sc)  # the operator's shared account ("jukebot-test")
    login_own(db, fake_sc, OWN, "studio-own")
    clips = {
        guild: make_clip(db, storage, title=f"Song of {guild}", guild_id=guild, discord_id=guild + 1)
        for guild in (CLIP_GUILD, OWN, NEITHER)
    }
    for clip in clips.values():
        seed_renders(storage, s, clip.id, prerendered)
        schedule_clip(db, clip.id or 0, ["soundcloud"], datetime.now(UTC), settings=s)
    fake_sc.expire_access_tokens()  # each account refreshes its own single-use token

    notes = Notes()
    results = {r.clip_id: r for r in await run_due_publications(db, storage, s, notes)}

    by_title = {t.title: t for t in fake_sc.tracks}
    assert by_title["Song of 5150"].account == "jukebot-test"  # allowed: the shared account
    assert by_title["Song of 6000"].account == "studio-own"  # its own account, no allowance needed
    assert "Song of 7000" not in by_title and len(fake_sc.tracks) == 2
    assert soundcloud_row(db, clips[CLIP_GUILD].id).account_guild_id == SHARED
    assert soundcloud_row(db, clips[OWN].id).account_guild_id == OWN
    refused = results[clips[NEITHER].id or 0]
    assert refused.state == "failed" and "no account of its own" in refused.message
    assert "--guild 7000" in refused.message
    assert fake_sc.refreshes == 2 and fake_sc.violations == []
    # Both logins were refreshed and stored again, each under its own server, encrypted at rest.
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT guild_id, access_token, refresh_token FROM oauth_tokens")).all()
    assert sorted(r[0] for r in rows) == [SHARED, OWN]
    assert all(r[1].startswith(PREFIX) and r[2].startswith(PREFIX) for r in rows)
    own = load_token(db, "soundcloud", OWN)
    assert own is not None and fake_sc.accounts[own.access_token] == "studio-own"


async def test_the_owners_deny_stops_a_servers_own_account_too(
    db: Database, storage: Storage, s: Settings, fake_sc: FakeSoundCloud, prerendered: dict[str, bytes]
) -> None:
    login_own(db, fake_sc, OWN, "studio-own")
    clip = make_clip(db, storage, guild_id=OWN)
    seed_renders(storage, s, clip.id, prerendered)
    schedule_clip(db, clip.id or 0, ["soundcloud"], datetime.now(UTC), settings=s)
    update_guild(db, s, OWN, publish_allowed=False)
    (result,) = await run_due_publications(db, storage, s, Notes())
    assert result.state == "failed" and "publishing from this server is off" in result.message
    assert fake_sc.tracks == []


async def test_a_clip_from_a_server_that_lost_its_allowance_is_not_sent(
    db: Database, storage: Storage, s: Settings, fake_sc: FakeSoundCloud, prerendered: dict[str, bytes]
) -> None:
    """Scheduled while allowed, the allowance withdrawn before the upload time: nothing goes out."""
    login_soundcloud(db, fake_sc)
    clip = make_clip(db, storage)
    seed_renders(storage, s, clip.id, prerendered)
    schedule_clip(db, clip.id or 0, ["soundcloud"], datetime.now(UTC), settings=s)
    update_guild(db, s, CLIP_GUILD, publish_allowed=False)
    (result,) = await run_due_publications(db, storage, s, Notes())
    assert result.state == "failed" and fake_sc.tracks == []


def test_captions_are_moderated_by_default_when_the_account_is_shared(
    db: Database, s: Settings, fake_sc: FakeSoundCloud
) -> None:
    login_own(db, fake_sc, OWN, "studio-own")
    shared = accounts_for_guild(db, s, CLIP_GUILD, ["x", "soundcloud"])
    assert shared == {"x": Account("x", SHARED), "soundcloud": Account("soundcloud", SHARED)}
    own = accounts_for_guild(db, s, OWN, ["x", "soundcloud"])
    assert own == {"soundcloud": Account("soundcloud", OWN)}  # no X of its own, not allowed on the shared
    assert s.publish.caption_moderation is None
    assert caption_moderation_on(s, shared.values()) is True  # the default for the shared account
    assert caption_moderation_on(s, own.values()) is False  # its own page: its own business
    # Allowed on the shared account too: X goes there, so its captions are moderated again.
    update_guild(db, s, OWN, publish_allowed=True)
    mixed = accounts_for_guild(db, s, OWN, ["x", "soundcloud"])
    assert mixed["soundcloud"].guild_id == OWN and mixed["x"].shared
    assert caption_moderation_on(s, mixed.values()) is True
    # The operator's explicit setting wins either way.
    off = s.model_copy(update={"publish_caption_moderation": False})
    on = s.model_copy(update={"publish_caption_moderation": True})
    assert caption_moderation_on(off, shared.values()) is False
    assert caption_moderation_on(on, own.values()) is True


def test_auth_soundcloud_for_one_server_and_logout(
    cli_env: dict[str, str],  # noqa: F811
    db: Database,
    fake_sc: FakeSoundCloud,
    tmp_path: Path,
) -> None:
    proc = start(["auth", "soundcloud", "--guild", str(OWN), "--no-listen"], cli_env, tmp_path)
    try:
        lines = read_until(proc, "Open this address")
        lines += read_until(proc, "http")
        url = lines[-1].strip()
        redirect = httpx.get(url, follow_redirects=False, timeout=5).headers["location"]
        out, _ = proc.communicate(redirect + "\n", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert f"server {OWN}'s own account" in out
    assert load_token(db, "soundcloud") is None  # the shared login is untouched
    own = load_token(db, "soundcloud", OWN)
    assert own is not None and own.access_token in fake_sc.access_tokens

    bad = start(["auth", "soundcloud", "--guild", "-3", "--no-listen"], cli_env, tmp_path)
    out, _ = bad.communicate(timeout=60)
    assert bad.returncode == 1 and "not a Discord server id" in out and "Traceback" not in out

    for expected_rc, expected in ((0, "own login is forgotten"), (1, "has no soundcloud account of its own")):
        proc = start(["logout", "soundcloud", "--guild", str(OWN)], cli_env, tmp_path)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == expected_rc and expected in out, out
    assert load_token(db, "soundcloud", OWN) is None
