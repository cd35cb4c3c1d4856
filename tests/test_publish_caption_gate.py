"""Every way a clip gets scheduled for the operator's shared account passes the same caption check
(publisher/scheduler.py `schedule_for_guild`): the Publish button, the daily pick, and the upload
fire's catch-up of recently featured clips, which once inserted rows for them unchecked (trustgaps 1).
Real database (SQLite and PostgreSQL), real HTTP to the fake X."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from db.database import Database
from db.settings import Settings
from db.storage import Storage
from publisher import scheduler as sched
from publisher import state
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX
from tests.publish_fixtures import CLIP_GUILD, Notes, make_clip, publish_settings, seed_renders

pytest_plugins = ["tests.conftest_publish"]


@pytest.fixture
def pub_settings(settings: Settings, fake_x: FakeX, fake_sc: FakeSoundCloud) -> Iterator[Settings]:
    yield publish_settings(
        settings, fake_x, fake_sc, timezone="Europe/Paris", publish_times={"x": "19:00"}
    )  # CLIP_GUILD may use the shared account; caption moderation is on by default there


class Gate:
    """The bot's caption check as the scheduler sees it (the bot hands in bot/features/clips/captions.py)."""

    def __init__(self, refusal: str | None) -> None:
        self.refusal = refusal
        self.asked: list[int] = []

    async def __call__(self, clip_id: int) -> str | None:
        self.asked.append(clip_id)
        return self.refusal


def today() -> str:
    return datetime.now(ZoneInfo("Europe/Paris")).date().isoformat()


async def test_a_featured_clip_whose_caption_is_refused_is_not_scheduled(
    db: Database, storage: Storage, pub_settings: Settings, fake_x: FakeX, prerendered: dict[str, bytes]
) -> None:
    clip = make_clip(db, storage, featured_on=today())
    assert clip.id is not None
    seed_renders(storage, pub_settings, clip.id, prerendered)
    refuse = Gate("did not pass moderation (harassment)")
    sched.configure(db, storage, pub_settings, Notes(), caption_gate=refuse)
    await sched.fire_publications("x")
    assert refuse.asked == [clip.id]
    assert state.publications_for_clip(db, clip.id) == [] and fake_x.tweets == []

    allow = Gate(None)  # the same clip once its caption passes: scheduled and sent once
    sched.configure(db, storage, pub_settings, Notes(), caption_gate=allow)
    await sched.fire_publications("x")
    assert allow.asked == [clip.id] and len(fake_x.tweets) == 1
    assert [p.platform for p in state.publications_for_clip(db, clip.id)] == ["x"]


async def test_without_a_caption_check_the_shared_account_gets_nothing(
    db: Database, storage: Storage, pub_settings: Settings, fake_x: FakeX
) -> None:
    clip = make_clip(db, storage, featured_on=today())
    assert clip.id is not None
    sched.configure(db, storage, pub_settings, Notes())  # no gate: fail closed
    assert await sched.schedule_featured(db, pub_settings, "x") == []
    done = await sched.schedule_for_guild(db, pub_settings, clip.id, CLIP_GUILD)
    assert done.ids == [] and done.refused is not None and "must be moderated" in done.refused
    # The operator switched caption moderation off on purpose: no check needed.
    off = pub_settings.model_copy(update={"publish_caption_moderation": False})
    assert len(await sched.schedule_featured(db, off, "x")) == 1


async def test_a_featured_clip_from_a_server_not_allowed_is_not_scheduled(
    db: Database, storage: Storage, pub_settings: Settings
) -> None:
    clip = make_clip(db, storage, featured_on=today(), guild_id=CLIP_GUILD + 1)
    assert clip.id is not None
    gate = Gate(None)
    sched.configure(db, storage, pub_settings, Notes(), caption_gate=gate)
    assert await sched.schedule_featured(db, pub_settings, "x") == []
    assert state.publications_for_clip(db, clip.id) == [] and gate.asked == []
    done = await sched.schedule_for_guild(db, pub_settings, clip.id, CLIP_GUILD + 1)
    assert not done.allowed and done.ids == []
