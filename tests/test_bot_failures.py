"""When things go wrong while a song is made, with the real worker (`jukebot worker`, tiny model, CPU):
a moderator deletes the status message (the song carries on; the bot stops editing it), a job
fails for good (the member is told in words, with the job to retry; a moderator retries it), and
a moderator cancels a running job (the worker stops between windows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from db.models import JobStatus, SongStatus
from tests.bot_harness import Studio, real_worker_overrides, seed_clip
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def studio_overrides(tiny_model: Path) -> dict[str, Any]:
    return real_worker_overrides(tiny_model)


SONG = {"artist": "bach", "genre": "chorale", "seconds": 0.2, "drafts": 2}


async def test_deleted_status_failed_job_and_cancel(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    studio.start_real_worker()
    await studio.start_bot()
    ix = await studio.run("owner", "mod role", {"role": studio.mod_role})
    assert "Saved" in ix.text()

    # A moderator deletes the status message while the song is made: the song carries on.
    sid = song_id_from((await studio.run("alice", "generate", SONG)).text())
    status = await studio.until(lambda: studio.message_with(f"jb:cancel:{sid}"), "the status message")
    fake.delete_message(int(status["id"]))
    await studio.until(lambda: studio.message_with(f"jb:vote:{sid}:"), "the drafts", timeout=90)
    await studio.until_db(lambda: studio.song(sid).status_message_id is None, "the bot to stop editing it")

    # A job that fails for good (the clip to continue lost its codes): told in words, with the job.
    parent = await studio.run_db(seed_clip, studio, "dave", artist="bach", genre="chorale", seconds=0.2)
    clip = await studio.until_db(lambda: (c := studio.clip(parent)) and c.message_id and c, "the clip posted")
    studio.storage.delete(clip.codes_key)
    bad = song_id_from((await studio.run("bob", "continue", {"clip": clip.id, "seconds": 0.2})).text())
    await studio.until_db(
        lambda: studio.song(bad).status == SongStatus.failed, "the song to fail", timeout=90
    )
    note = await studio.until(
        lambda: next(
            (m for m in studio.bot_messages() if f"song #{bad} could not be made" in m["content"]), None
        ),
        "the failure note",
    )
    assert f"codes of clip #{clip.id} are missing" in note["content"], note["content"]
    assert f"<@{studio.members['bob']}>" in note["content"] and "Traceback" not in note["content"]
    job_id = studio.jobs(bad)[0].id
    assert f"/mod retry job:{job_id}" in note["content"]
    refused = await studio.run("bob", "mod retry", {"job": job_id})
    assert "Only moderators" in refused.text(), refused.text()
    retried = await studio.run("mia", "mod retry", {"job": job_id})
    assert "back in the queue" in retried.text(), retried.text()
    await studio.until_db(
        lambda: (
            studio.jobs(bad)[0].attempts == 1
            and studio.jobs(bad)[0].status == JobStatus.failed
            and studio.song(bad).status == SongStatus.failed
        ),
        "the retry to run (and fail again)",
        timeout=90,
    )

    # /mod cancel on a running job: the worker stops between windows.
    long = song_id_from((await studio.run("carol", "generate", {**SONG, "seconds": 1.0})).text())
    await studio.until_db(
        lambda: (
            (j := studio.jobs(long))
            and j[0].status == JobStatus.running
            and (j[0].progress or {}).get("percent", 0) > 0
        ),
        "the job to run",
        timeout=90,
    )
    ix = await studio.run("mia", "mod cancel", {"job": studio.jobs(long)[0].id})
    assert "stopping" in ix.text() or "cancelled" in ix.text(), ix.text()
    await studio.until_db(
        lambda: studio.song(long).status == SongStatus.cancelled, "the song to be cancelled", timeout=60
    )
    assert studio.jobs(long)[0].status == JobStatus.cancelled
    await studio.until(lambda: studio.message_with(f"jb:cancel:{long}") is None, "the cancel button to go")
    assert any(f"Song #{long}" in m["content"] and "Cancelled" in m["content"] for m in studio.bot_messages())
