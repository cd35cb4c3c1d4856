"""The clip post offers Publish only where the server may publish (its own account, or the bot's
owner's allowance): elsewhere a press could only be refused, so the button is not shown
(trustgaps 2). The real bot against the fake Discord."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bot_harness import Studio, seed_clip
from tests.fakes.discord import custom_ids

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def studio_overrides() -> dict[str, Any]:
    return {"x_client_id": "x-client", "soundcloud_client_id": "sc-client"}


async def test_publish_is_offered_only_where_publishing_is_allowed(studio: Studio) -> None:
    await studio.start_bot()
    sid = await studio.run_db(seed_clip, studio)
    msg = await studio.until(lambda: studio.message_with("jb:clipvote:"), "the clip")
    clip = studio.clip(sid)
    assert clip is not None and clip.id is not None
    assert f"jb:continue:{clip.id}" in custom_ids(msg)
    assert not any(c.startswith("jb:publish:") for c in custom_ids(msg)), custom_ids(msg)

    # A vote redraws the buttons (the count): still no Publish.
    await studio.click("bob", msg, f"jb:clipvote:{clip.id}")
    voted = await studio.until(
        lambda: "Vote (1)" in str(studio.fake.messages[int(msg["id"])]["components"]) and msg, "the count"
    )
    assert not any(c.startswith("jb:publish:") for c in custom_ids(studio.fake.messages[int(voted["id"])]))

    # The bot's owner allows this server: the next clip post offers Publish.
    studio.settings.publish.guilds = [studio.guild]
    sid2 = await studio.run_db(seed_clip, studio, "bob")
    clip2 = await studio.until_db(lambda: (c := studio.clip(sid2)) and c.message_id and c, "the 2nd clip")
    assert f"jb:publish:{clip2.id}" in custom_ids(studio.fake.messages[clip2.message_id])
