"""Restarts and crashes: the bot restarted mid-vote (its buttons still work, nothing is lost, nothing
is posted twice), and a worker killed mid-job (another worker takes the job over after its lease
expires, and the song still finishes). The workers are the real `jukebot worker` on the CPU with a
tiny random-weight model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from db.models import JobStatus, SongStatus
from tests.bot_harness import Studio, real_worker_overrides
from tests.fakes.discord import custom_ids
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def studio_overrides(tiny_model: Path) -> dict[str, Any]:
    return real_worker_overrides(tiny_model, lease_seconds=3.0)


async def generate(studio: Studio, member: str = "alice", **options: Any) -> int:
    opts = {"artist": "bach", "genre": "chorale", "seconds": 0.2, "drafts": 2, **options}
    ix = await studio.run(member, "generate", opts)
    assert "is in the studio" in ix.text(), ix.text()
    return song_id_from(ix.text())


async def test_restart_mid_vote_keeps_the_buttons_working(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    studio.start_real_worker()
    await studio.start_bot()
    song_id = await generate(studio)
    drafts_msg = await studio.until(
        lambda: studio.message_with(f"jb:vote:{song_id}:"), "the drafts", timeout=90
    )
    votes = [c for c in custom_ids(drafts_msg) if c.startswith("jb:vote:")]
    await studio.click("bob", drafts_msg, votes[1])

    # A second song finishes its drafts while the bot is down: posted once after the restart.
    other = await generate(studio, "carol")
    await studio.stop_bot()
    await studio.until_db(
        lambda: any(j.status == JobStatus.succeeded for j in studio.jobs(other)),
        "the second song's drafts to be rendered while the bot is down",
        timeout=90,
    )
    assert studio.message_with(f"jb:vote:{other}:") is None

    await studio.start_bot(sync=False)  # a restart: commands stay registered with Discord
    # The old message's buttons still work (DynamicItem: the ids are in the custom id).
    again = await studio.click("carol", drafts_msg, votes[1])
    assert "Your vote for draft 2 is in (2 votes" in again.text(), again.text()
    await studio.until(
        lambda: studio.message_with(f"jb:vote:{other}:"), "the second song's drafts after restart"
    )

    # Only the requester (or a moderator) may close early.
    refused = await studio.click("dave", drafts_msg, f"jb:close:{song_id}")
    assert "Only the member who asked" in refused.text()
    closing = await studio.click("alice", drafts_msg, f"jb:close:{song_id}")
    await fake.wait_for(lambda: closing.followups, 10, "the close confirmation")
    assert "draft 2 won" in closing.text(), closing.text()
    await studio.until(lambda: studio.message_with("jb:continue:"), "the clip after the restart", timeout=90)
    await studio.until_db(lambda: studio.song(song_id).status == SongStatus.done, "the song to be done")
    # Posted once: one drafts message per song, one clip post.
    for sid in (song_id, other):
        assert sum(1 for m in studio.bot_messages() if f"jb:vote:{sid}:" in " ".join(custom_ids(m))) == 1
    clip = studio.clip(song_id)
    assert clip is not None
    assert sum(1 for m in studio.bot_messages() if f"jb:continue:{clip.id}" in custom_ids(m)) == 1


async def test_a_killed_worker_does_not_lose_the_song(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    first = studio.start_real_worker()
    await studio.start_bot()
    song_id = await generate(studio, seconds=1.0)  # about ten seconds of sampling on this CPU
    status = await studio.until(lambda: studio.message_with(f"jb:cancel:{song_id}"), "the status message")
    await studio.until_db(
        lambda: (
            (j := studio.jobs(song_id))
            and j[0].checkpoint_key is not None
            and (j[0].progress or {}).get("percent", 0) >= 10
        ),
        "the first worker to be under way",
        timeout=90,
    )
    studio.kill_worker(first)  # SIGKILL: no goodbye, the lease just stops being renewed
    studio.start_real_worker()
    drafts_msg = await studio.until(
        lambda: studio.message_with(f"jb:vote:{song_id}:"), "the drafts", timeout=120
    )
    job = studio.jobs(song_id)[0]
    assert job.status == JobStatus.succeeded and job.reclaims >= 1 and job.lease_token >= 2
    assert len(studio.drafts(song_id)) == 2 and len(drafts_msg["attachments"]) == 3
    # Members saw it carry on in the status message.
    versions = [v["content"] for v in fake.edits[int(status["id"])]]
    assert any("Restarted after a worker problem" in v for v in versions), versions
    # ... and the song goes on to the end: the vote (closed early by the requester), the clip.
    closing = await studio.click("alice", drafts_msg, f"jb:close:{song_id}")
    await fake.wait_for(lambda: closing.followups, 10, "the close")
    await studio.until_db(
        lambda: studio.song(song_id).status == SongStatus.done, "the song to finish", timeout=120
    )
    assert studio.message_with("jb:continue:") is not None
