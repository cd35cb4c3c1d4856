"""Listen early (issue #16 item 6): while level 0 renders, the level-1 preview of the chosen draft is
posted under the song's status message, once (also across a restart of the bot), and replaced by the
finished clip, which carries the timed lyrics (LRC) of the lyric model (item 8).

The end-to-end test uses the fake Discord, the real bot and the real `jukebot worker` (tiny lyric
model on the CPU). To hold the song in level 0 for as long as the test needs, the worker process
is paused with SIGSTOP once it reports the preview, and resumed with SIGCONT: no mock inside."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from db.models import JobKind, JobStatus, SongStatus
from engine.sampling.pipeline import Engine
from engine.sampling.sample import Hooks, Progress
from engine.sampling.song import FolderFiles, SongRunner, preview_audio, song_request
from tests.bot_harness import Studio, real_worker_overrides
from tests.fakes.discord import custom_ids
from tests.pipeline_fixtures import write_tiny_model
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]

LYRICS = "la la la\nsing a song of sixpence"


@pytest.fixture
def studio_overrides(tiny_model: Path) -> dict[str, Any]:
    return real_worker_overrides(tiny_model)


# ---------------------------------------------------------------------------------------------
# The engine: the preview is written when level 1 is done, before level 0 has finished


def test_the_runner_writes_the_level_1_preview_before_level_0_is_done(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = write_tiny_model(tmp_path / "tiny")
    engine = Engine.load(str(model), progress=False)
    level0_done_at_preview: list[int] = []
    last: dict[str, Progress] = {}

    def hooks(primed: bool) -> Hooks:
        def on_tokens(p: Progress) -> None:
            last["p"] = p

        return Hooks(on_tokens=on_tokens, tokens_every=8)

    def on_preview(name: str) -> None:
        p = last["p"]
        level0_done_at_preview.append(p.level_done if p.level == 0 else 0)
        assert (tmp_path / "out" / name).is_file()

    runner = SongRunner(engine, FolderFiles(tmp_path / "out"), hooks=hooks, on_preview=on_preview)
    request = song_request(engine, artist="bach", genre="chorale", lyrics="", seconds=0.2, seed=3)
    runner.drafts(request, 1, max_drafts=3)
    final = runner.upsample(request, 1)
    assert final.preview == preview_audio(1)
    assert len(level0_done_at_preview) == 1, "the preview is written once"
    level0_total = final.codes[0].shape[1]
    assert level0_done_at_preview[0] < level0_total, "the preview came only after level 0"
    # It is the level-1 decode of the final song's level-1 codes (the same MP3 bytes).
    from engine.audio import mp3_bytes

    expected = mp3_bytes(engine.decode(final.codes[1], 1)[0], engine.sample_rate)
    assert (tmp_path / "out" / preview_audio(1)).read_bytes() == expected


# ---------------------------------------------------------------------------------------------
# The bot: posted once under the status message, kept across a restart, replaced by the clip


def preview_posts(studio: Studio, song_id: int) -> list[dict[str, Any]]:
    return [
        m
        for m in studio.fake.channel_messages(studio.channel)
        if f"song-{song_id}-preview.mp3" in [a["filename"] for a in m["attachments"]]
    ]


async def test_the_preview_is_posted_once_and_replaced_by_the_clip(studio: Studio) -> None:
    fake = studio.fake
    worker = studio.start_real_worker()
    await studio.start_bot()
    ix = await studio.run(
        "alice",
        "generate",
        {"artist": "bach", "genre": "chorale", "seconds": 0.6, "drafts": 2, "lyrics": LYRICS},
    )
    song_id = song_id_from(ix.text())
    status = await studio.until(lambda: studio.message_with(f"jb:cancel:{song_id}"), "the status message")
    drafts_msg = await studio.until(
        lambda: studio.message_with(f"jb:vote:{song_id}:"), "the drafts", timeout=120
    )
    votes = [c for c in custom_ids(drafts_msg) if c.startswith("jb:vote:")]
    await studio.click("bob", drafts_msg, votes[1])
    await studio.click("alice", drafts_msg, f"jb:close:{song_id}")

    def preview_reported() -> bool:
        jobs = [j for j in studio.jobs(song_id) if j.kind == JobKind.upsample]
        return bool(jobs and (jobs[-1].progress or {}).get("preview_key"))

    await studio.until_db(preview_reported, "the worker to report the level-1 preview", timeout=120)
    os.kill(worker.pid, signal.SIGSTOP)  # hold the song in level 0
    try:
        job = [j for j in studio.jobs(song_id) if j.kind == JobKind.upsample][-1]
        progress = job.progress or {}
        assert job.status == JobStatus.running and progress["done"] < progress["total"], progress
        post = await studio.until(lambda: preview_posts(studio, song_id), "the preview post", timeout=30)
        assert len(post) == 1
        # Under the status message (a reply to it), pinging nobody.
        sends = [
            c
            for c in fake.calls
            if c.method == "POST"
            and c.path.endswith(f"/channels/{studio.channel}/messages")
            and "Listen early" in str((c.json or {}).get("content", ""))
        ]
        assert len(sends) == 1
        assert str(sends[0].json["message_reference"]["message_id"]) == status["id"]
        await studio.until(
            lambda: "first listen" in fake.messages[int(status["id"])]["content"],
            "the status message to point at the preview",
        )

        # A restart while level 0 renders: the new bot does not post the preview again.
        await studio.stop_bot()
        bot = await studio.start_bot(sync=False)
        ticks = bot.watcher.ticks
        await studio.until(lambda: bot.watcher.ticks >= ticks + 5, "five watcher ticks after the restart")
        assert len(preview_posts(studio, song_id)) == 1, "the preview was posted twice"
    finally:
        os.kill(worker.pid, signal.SIGCONT)

    # The clip lands: the preview is deleted, and the clip post carries the timed lyrics.
    clip_post = await studio.until(lambda: studio.message_with("jb:continue:"), "the clip", timeout=180)
    await studio.until_db(lambda: studio.song(song_id).status == SongStatus.done, "the song to be done")
    assert preview_posts(studio, song_id) == [], "the preview was not replaced"
    assert int(post[0]["id"]) in fake.deleted
    assert studio.song(song_id).preview_message_id is None
    names = [a["filename"] for a in clip_post["attachments"]]
    clip = studio.clip(song_id)
    assert clip is not None and clip.lrc_key is not None
    assert f"song-{song_id}-clip-{clip.id}.lrc" in names, names
    lrc = studio.storage.read_bytes(clip.lrc_key).decode()
    assert lrc.splitlines()[0].endswith("la la la") and lrc.startswith("[00:")
