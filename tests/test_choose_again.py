"""Choose again (issue #16 item 3): after the vote, the requester or a moderator presses a U-button
on the closed drafts post and the real worker (`jukebot worker`, tiny model on the CPU) makes a
second clip of the same song from that draft; each draft once. Fake Discord, the real bot, SQLite
and PostgreSQL, a restart of the bot in the middle."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from db.models import Clip, SongStatus
from tests.bot_harness import Studio, real_worker_overrides
from tests.fakes.discord import FakeInteraction, custom_ids

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def studio_overrides(tiny_model: Path) -> dict[str, Any]:
    return real_worker_overrides(tiny_model)


def clips_of(studio: Studio, song_id: int) -> list[Clip]:
    with studio.db.read() as s:
        return list(
            s.execute(select(Clip).where(col(Clip.song_id) == song_id).order_by(col(Clip.id))).scalars()
        )


async def stale_click(
    studio: Studio, member: str, message: dict[str, Any], custom_id: str
) -> FakeInteraction:
    """A press from a client still showing `message` as it was (before an edit took the button off)."""
    ix = await studio.fake.click(studio.members[member], int(message["id"]), custom_id, seen=message)
    return await studio.fake.settled(ix, timeout=20)


async def forged_click(
    studio: Studio, member: str, message: dict[str, Any], custom_id: str
) -> FakeInteraction:
    """A press of a button the message does not show (a forged or very old client): the bot must
    still answer from the database."""
    row = {"type": 1, "components": [{"type": 2, "custom_id": custom_id, "style": 2}]}
    return await stale_click(studio, member, {**message, "components": [row]}, custom_id)


async def test_a_second_clip_from_another_draft(studio: Studio) -> None:
    fake = studio.fake
    studio.start_real_worker()
    await studio.start_bot()
    ix = await studio.run("owner", "mod limits", {"songs_per_day": 2})
    ix = await studio.run(
        "alice", "generate", {"artist": "bach", "genre": "chorale", "seconds": 0.2, "drafts": 2}
    )
    m = re.search(r"Song #(\d+)", ix.text())
    assert m, ix.text()
    song_id = int(m[1])
    drafts_msg = await studio.until(
        lambda: studio.message_with(f"jb:vote:{song_id}:"), "the drafts", timeout=120
    )
    d1, d2 = (d.id for d in studio.drafts(song_id))

    # Before the vote is over, a U press (a forged or stale one) is refused with a clear answer.
    early = await forged_click(studio, "alice", drafts_msg, f"jb:again:{song_id}:{d2}")
    assert "once the vote is over" in early.text(), early.text()

    closed = await studio.click("alice", drafts_msg, f"jb:close:{song_id}")
    assert "draft 1 won" in closed.text(), closed.text()
    await studio.until_db(
        lambda: studio.song(song_id).status == SongStatus.done, "the winner's clip", timeout=180
    )
    closed_msg = await studio.until(
        lambda: (
            fake.messages[int(drafts_msg["id"])]
            if f"jb:again:{song_id}:{d2}" in custom_ids(fake.messages[int(drafts_msg["id"])])
            else None
        ),
        "a U-button for draft 2 on the closed drafts post",
    )
    assert f"jb:again:{song_id}:{d1}" not in custom_ids(closed_msg)  # the winner is made already

    # Only the requester or a moderator; a stranger's press queues nothing.
    stranger = await studio.click("bob", closed_msg, f"jb:again:{song_id}:{d2}")
    assert "Only the member who asked for this song" in stranger.text(), stranger.text()
    assert len(studio.jobs(song_id)) == 2

    # A restart: the button on the old message still works (DynamicItem).
    await studio.stop_bot()
    await studio.start_bot(sync=False)
    chosen = await studio.click("alice", closed_msg, f"jb:again:{song_id}:{d2}")
    assert "Draft 2 of song" in chosen.text() and "being made in full quality too" in chosen.text(), (
        chosen.text()
    )
    twice = await stale_click(studio, "alice", closed_msg, f"jb:again:{song_id}:{d2}")
    assert "already being made in full quality" in twice.text(), twice.text()
    winner = await forged_click(studio, "alice", closed_msg, f"jb:again:{song_id}:{d1}")
    assert "already made in full quality: it is clip #" in winner.text(), winner.text()

    # The worker makes draft 2's clip beside the winner's; both are posted; the song is done again.
    await studio.until_db(lambda: len(clips_of(studio, song_id)) == 2, "the second clip", timeout=180)
    await studio.until_db(
        lambda: studio.song(song_id).status == SongStatus.done, "the song done again", timeout=60
    )
    first, second = clips_of(studio, song_id)
    assert (first.draft_id, second.draft_id) == (d1, d2)
    assert first.audio_key != second.audio_key and second.audio_key.endswith("draft-2-final.wav")
    assert studio.storage.read_bytes(first.audio_key) != studio.storage.read_bytes(second.audio_key)
    assert first.message_id and second.message_id and first.message_id != second.message_id
    assert "draft 2, chosen again" in fake.messages[second.message_id]["content"]

    # Each draft once: now made, the press says which clip it is; and the quota counted it (2 a day:
    # the song and the second upsample), so a new request is refused.
    done = await stale_click(studio, "alice", closed_msg, f"jb:again:{song_id}:{d2}")
    assert f"already made in full quality: it is clip #{second.id}" in done.text(), done.text()
    over = await studio.run("alice", "generate", {"artist": "bach", "genre": "chorale", "seconds": 0.2})
    assert "this server allows 2 a day" in over.text(), over.text()
