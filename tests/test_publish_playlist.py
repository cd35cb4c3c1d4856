"""Each server's SoundCloud playlist (issue #16, item 4): every clip a server publishes to SoundCloud
is added to its playlist, made on first use; never twice, even when the publisher dies between the
add and our record; a playlist deleted on SoundCloud is made again with every clip and the
moderators are told; the moderators' title is applied. Real database (SQLite and PostgreSQL), real
HTTP to the fake SoundCloud (its playlist endpoints as the real API has them)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import col, select

from db.database import Database
from db.models import Clip, Publication
from db.settings import Settings
from db.storage import Storage
from publisher.oauth import TokenSet
from publisher.playlists import playlist_info, remember_guild_name, set_title, sync_now
from publisher.runner import run_due_publications
from publisher.scheduler import schedule_clip
from publisher.tokens import save_token
from tests.fakes.publish_http import Request, drop
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

pytest_plugins = ["tests.conftest_publish"]

OTHER = 6000  # a second server, with its own SoundCloud account


@pytest.fixture
def s(settings: Settings, fake_x: FakeX, fake_sc: FakeSoundCloud) -> Settings:
    return publish_settings(settings, fake_x, fake_sc)


class Shop:
    def __init__(
        self, db: Database, storage: Storage, s: Settings, fake: FakeSoundCloud, renders: dict[str, bytes]
    ) -> None:
        self.db, self.storage, self.s, self.fake, self.renders = db, storage, s, fake, renders
        self.notes = Notes()
        self.count = 0

    def clip(self, guild_id: int = CLIP_GUILD) -> Clip:
        self.count += 1
        clip = make_clip(
            self.db, self.storage, title=f"Tune {self.count}", guild_id=guild_id, seed=self.count
        )
        seed_renders(self.storage, self.s, clip.id, self.renders)
        schedule_clip(self.db, clip.id or 0, ["soundcloud"], datetime.now(UTC), settings=self.s)
        return clip

    async def run(self) -> None:
        await run_due_publications(self.db, self.storage, self.s, self.notes, platforms=["soundcloud"])

    def track_id(self, clip: Clip) -> int:
        with self.db.read() as s:
            pub = s.execute(select(Publication).where(col(Publication.clip_id) == clip.id)).scalar_one()
        assert pub.state == "published" and pub.remote_id is not None
        return int(pub.remote_id)

    def requests(self, method: str, prefix: str) -> list[Request]:
        return [r for r in self.fake.requests if r.method == method and r.path.startswith(prefix)]


@pytest.fixture
def shop(
    db: Database, storage: Storage, s: Settings, fake_sc: FakeSoundCloud, prerendered: dict[str, bytes]
) -> Shop:
    login_soundcloud(db, fake_sc)
    return Shop(db, storage, s, fake_sc, prerendered)


async def test_every_clip_goes_into_its_servers_playlist_once(shop: Shop) -> None:
    fake = shop.fake
    remember_guild_name(shop.db, CLIP_GUILD, "Harbour Club")
    save_token(
        shop.db,
        "soundcloud",
        TokenSet.from_response(fake.issue_tokens(account="other-studio")),
        guild_id=OTHER,
    )
    first = shop.clip()
    await shop.run()
    (playlist,) = fake.playlists.values()  # made on first use, with the clip in it
    assert playlist.title == "Harbour Club - jukebot" and playlist.account == "jukebot-test"
    assert playlist.track_ids == [shop.track_id(first)]

    second, elsewhere = shop.clip(), shop.clip(OTHER)
    await shop.run()
    await shop.run()  # a sweep with nothing new: no writes
    assert fake.playlist_track_ids(playlist.id) == [shop.track_id(first), shop.track_id(second)]
    (theirs,) = [p for p in fake.playlists.values() if p.id != playlist.id]
    assert theirs.account == "other-studio" and theirs.track_ids == [shop.track_id(elsewhere)]
    assert theirs.title == f"Discord server {OTHER} - jukebot"
    assert len(shop.requests("POST", "/playlists")) == 2 and len(shop.requests("PUT", "/playlists/")) == 1
    info = playlist_info(shop.db, CLIP_GUILD)
    assert info.playlist_id == str(playlist.id) and info.clips == 2 and info.url and "/sets/" in info.url
    assert fake.violations == [] and shop.notes.messages == []


async def test_a_crash_between_the_add_and_our_record_adds_nothing_twice(shop: Shop) -> None:
    """SoundCloud acts, then the answer is lost (the connection dies, or we do): nothing is recorded
    by that call. The catch-up that follows (the same run's, or the next sweep's) finds the playlist
    by its marker and the track in it, and only records them."""
    fake = shop.fake
    first = shop.clip()
    fake.script("POST", "/playlists", drop(), when="after")
    await shop.run()
    (playlist,) = fake.playlists.values()
    assert len(shop.requests("POST", "/playlists")) == 1  # found again, not made twice
    assert playlist_info(shop.db, CLIP_GUILD).playlist_id == str(playlist.id)

    second = shop.clip()
    fake.script("PUT", r"/playlists/\d+", drop(), when="after")
    await shop.run()
    await shop.run()
    assert playlist.track_ids == [shop.track_id(first), shop.track_id(second)]
    assert len(shop.requests("PUT", "/playlists/")) == 1  # the catch-up saw it there: no second add
    assert playlist_info(shop.db, CLIP_GUILD).clips == 2
    assert fake.pending_rules() == 0 and fake.violations == []


async def test_a_playlist_deleted_on_soundcloud_is_made_again_and_moderators_are_told(shop: Shop) -> None:
    fake = shop.fake
    clips = [shop.clip(), shop.clip()]
    await shop.run()
    (old,) = fake.playlists.values()
    fake.delete_playlist(old.id)  # someone deletes it on soundcloud.com
    clips.append(shop.clip())
    await shop.run()
    (new,) = fake.playlists.values()
    assert new.id != old.id and new.track_ids == [shop.track_id(c) for c in clips]  # nothing lost
    (note,) = shop.notes.messages
    assert "was deleted on SoundCloud" in note and "all 3" in note and new.json({})["permalink_url"] in note
    assert playlist_info(shop.db, CLIP_GUILD).playlist_id == str(new.id)


async def test_the_moderators_title_is_given_to_the_playlist(shop: Shop) -> None:
    fake = shop.fake
    assert await sync_now(shop.db, shop.s, CLIP_GUILD, _no_tell) is not None  # nothing published: no playlist
    assert fake.playlists == {}
    set_title(shop.db, CLIP_GUILD, "  Night   shift\nsessions ")
    shop.clip()
    await shop.run()
    (playlist,) = fake.playlists.values()
    assert playlist.title == "Night shift sessions"
    set_title(shop.db, CLIP_GUILD, "x" * 300)
    info = await sync_now(shop.db, shop.s, CLIP_GUILD, _no_tell)
    assert info is not None and playlist.title == info.title and len(info.title) == 100
    assert len(playlist.track_ids) == 1


async def test_a_server_that_may_not_publish_to_soundcloud_gets_no_playlist(shop: Shop) -> None:
    assert await sync_now(shop.db, shop.s, OTHER, _no_tell) is None
    assert shop.fake.playlists == {}


async def _no_tell(guild_id: int | None, text: str) -> None:
    raise AssertionError(f"nothing to tell, but: {text}")
