"""The running bot hands its caption moderation to the publisher's scheduler, so a featured clip the
upload fire catches up on is checked like a Publish press (trustgaps 1). The real bot, the fake
Discord and the fake moderation endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from db import repo
from publisher import scheduler as sched
from publisher import state
from tests.bot_harness import Studio, seed_clip
from tests.fakes.openai_server import FakeOpenAI, Reply

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def studio_overrides(openai_fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "x_client_id": "x-client",
        "soundcloud_client_id": "sc-client",
        "openai_base_url": openai_fake.base_url,
        "lyrics_model": "songwriter-7b",
        "lyrics_timeout": 5.0,
    }


async def test_the_featured_catch_up_uses_the_bots_caption_check(
    studio: Studio, openai_fake: FakeOpenAI
) -> None:
    studio.settings.publish.guilds = [studio.guild]  # the shared account: captions are moderated
    await studio.start_bot()
    sid = await studio.run_db(seed_clip, studio, "alice", artist="queen", genre="rock")
    await studio.until(lambda: studio.message_with("jb:publish:"), "the clip")
    clip = studio.clip(sid)
    assert clip is not None and clip.id is not None
    day = datetime.now(ZoneInfo(studio.settings.schedule.timezone)).date()
    assert await studio.run_db(repo.mark_featured, studio.db, clip.id, day)

    openai_fake.moderation.append(Reply.moderation(True, "harassment"))
    assert await sched.schedule_featured(studio.db, studio.settings, "x", datetime.now(UTC)) == []
    assert state.publications_for_clip(studio.db, clip.id) == []
    (sent,) = openai_fake.moderation_requests()
    assert "queen" in str(sent.json).lower()

    openai_fake.moderation.append(Reply.moderation(False))
    assert len(await sched.schedule_featured(studio.db, studio.settings, "x", datetime.now(UTC))) == 1
    assert [p.platform for p in state.publications_for_clip(studio.db, clip.id)] == ["x"]
