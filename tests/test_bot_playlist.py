"""`/mod playlist` (issue #16, item 4) through the real bot and the fake Discord: moderators only; before
the first upload it says what the playlist will be called; after a clip is published to the fake
SoundCloud it shows the link; `title:` renames it there at once; bad titles get a one-line answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from publisher.runner import run_due_publications
from publisher.scheduler import schedule_clip
from tests.bot_harness import Studio, seed_clip
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.publish_fixtures import Notes, login_soundcloud

pytest_plugins = ["tests.bot_fixtures", "tests.conftest_publish"]


@pytest.fixture
def studio_overrides(fake_sc: FakeSoundCloud) -> dict[str, Any]:
    return {
        "soundcloud_api_base": fake_sc.base_url,
        "soundcloud_auth_base": fake_sc.base_url,
        "soundcloud_client_id": SecretStr(fake_sc.client_id),
        "soundcloud_client_secret": SecretStr(fake_sc.client_secret),
        "publish_http_timeout": 5.0,
    }


async def test_mod_playlist_shows_and_renames_the_servers_playlist(
    sqlite_studio: Studio, fake_sc: FakeSoundCloud
) -> None:
    studio = sqlite_studio
    studio.settings.publish.guilds = [studio.guild]
    await studio.start_bot()
    await studio.run("owner", "mod role", {"role": studio.mod_role})

    refused = await studio.run("bob", "mod playlist")
    assert "Only moderators" in refused.text(), refused.text()
    before = await studio.run("mia", "mod playlist")
    assert "no SoundCloud playlist yet" in before.text() and "Studio - jukebot" in before.text(), (
        before.text()
    )

    # A clip of this server is published to SoundCloud: the playlist is made with it.
    sid = await studio.run_db(seed_clip, studio)
    await studio.until(lambda: studio.message_with("jb:publish:"), "the clip")
    clip = studio.clip(sid)
    assert clip is not None and clip.id is not None
    await studio.run_db(login_soundcloud, studio.db, fake_sc)
    await studio.run_db(
        schedule_clip, studio.db, clip.id, ["soundcloud"], datetime.now(UTC), settings=studio.settings
    )
    (result,) = await run_due_publications(studio.db, studio.storage, studio.settings, Notes())
    assert result.state == "published", result.message
    (playlist,) = fake_sc.playlists.values()
    assert playlist.title == "Studio - jukebot" and len(playlist.track_ids) == 1

    shown = await studio.run("mia", "mod playlist")
    url = playlist.json({})["permalink_url"]
    assert "Studio - jukebot" in shown.text() and "(1 clip)" in shown.text() and url in shown.text(), (
        shown.text()
    )

    renamed = await studio.run("mia", "mod playlist", {"title": "  Late   Night Tapes "})
    assert "Renamed" in renamed.text() and "Late Night Tapes" in renamed.text(), renamed.text()
    assert playlist.title == "Late Night Tapes" and len(playlist.track_ids) == 1

    too_long = await studio.run("mia", "mod playlist", {"title": "la " * 50})
    assert "SoundCloud allows 100" in too_long.text() and "Traceback" not in too_long.text(), too_long.text()
    assert playlist.title == "Late Night Tapes" and fake_sc.violations == []
