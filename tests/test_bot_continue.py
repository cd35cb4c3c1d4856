"""Continuing music: `/continue clip:`, the "Continue this clip" context menu, and `/continue audio:`
with an uploaded file, checked before any byte is downloaded (the fake Discord reports a 200 MB
upload it would never serve) and after (a corrupt file is refused and not stored).

Continuing from a moment (`at:`, the button's "From a moment…" modal) runs with the real worker
(`jukebot worker`, the tiny random-weight model): the new clip's codes up to the moment are the
parent clip's at every level, and a bot restart between opening the modal and submitting it
loses nothing."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from db.models import JobKind
from tests.bot_harness import Studio, real_worker_overrides, seed_clip, tone_wav
from tests.fakes.discord import custom_ids
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def studio_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    base = {"max_upload_bytes": 1024 * 1024, "max_queued_per_member": 10}
    if "real_worker" in request.node.name:
        return {**real_worker_overrides(request.getfixturevalue("tiny_model")), **base}
    return base


async def test_continue_a_clip_three_ways(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    await studio.start_bot()
    parent = await studio.run_db(seed_clip, studio, "alice", artist="queen", genre="rock")
    clip_msg = await studio.until(lambda: studio.message_with("jb:continue:"), "the seeded clip's post")
    clip = studio.clip(parent)
    assert clip is not None and f"jb:continue:{clip.id}" in str(clip_msg["components"])

    # /continue clip: — the style is the clip's unless the member changes it.
    ix = await studio.run("bob", "continue", {"clip": clip.id, "seconds": 4, "genre": "pop"})
    child = studio.song(song_id_from(ix.text()))
    assert (child.parent_clip_id, child.artist, child.genre, child.seconds) == (clip.id, "queen", "pop", 4.0)
    assert [j.kind for j in studio.jobs(child.id or 0)] == [JobKind.continue_]

    # The message context menu on the clip's post: from the end, or from a moment.
    menu = await fake.settled(
        await fake.message_command(studio.members["carol"], int(clip_msg["id"]), "Continue this clip")
    )
    assert "from its end, or from a moment" in menu.text() and menu.is_ephemeral(), menu.text()
    offer = menu.followups[-1]
    assert custom_ids(offer) == [f"jb:continue-end:{clip.id}", f"jb:continue-at:{clip.id}"]
    end = await fake.settled(
        await fake.click(studio.members["carol"], int(offer["id"]), f"jb:continue-end:{clip.id}", seen=offer),
        timeout=20,
    )
    grandchild = studio.song(song_id_from(end.text()))
    assert grandchild.prime_at is None  # from the end
    assert grandchild.parent_clip_id == clip.id and grandchild.user_id != child.user_id
    # ... and on a message that is not a clip.
    status = studio.message_with(f"jb:cancel:{grandchild.id}")
    assert status is not None
    wrong = await fake.settled(
        await fake.message_command(studio.members["carol"], int(status["id"]), "Continue this clip")
    )
    assert "not a clip I posted" in wrong.text(), wrong.text()

    # Mistakes.
    assert "There is no clip #999" in (await studio.run("bob", "continue", {"clip": 999})).text()
    assert "Tell me what to continue" in (await studio.run("bob", "continue", {})).text()
    assert (
        "does not know the artist"
        in (await studio.run("bob", "continue", {"clip": clip.id, "artist": "qeeen x"})).text()
    )


async def test_continue_an_upload_checked_before_and_after_download(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    await studio.start_bot()
    style = {"artist": "abba", "genre": "pop"}

    # A good WAV: downloaded once, stored, the song primed on it.
    good = fake.host_file("my riff.wav", tone_wav(440.0, 1.5), content_type="audio/x-wav")
    ix = await studio.run("alice", "continue", {"audio": good, "seconds": 3, **style})
    song = studio.song(song_id_from(ix.text()))
    assert fake.downloads(good) == 1 and song.prime_key is not None and song.parent_clip_id is None
    assert studio.storage.read_bytes(song.prime_key) == fake.attachment_bytes(good)
    assert song.prime_seconds == pytest.approx(1.5, abs=0.05)
    assert [j.kind for j in studio.jobs(song.id or 0)] == [JobKind.continue_]
    before = len(studio.songs())

    # 200 MB reported by Discord: refused without a single byte fetched.
    huge = fake.host_file("album.wav", None, content_type="audio/x-wav", size=200 * 1024 * 1024)
    ix = await studio.run("alice", "continue", {"audio": huge, **style})
    assert "200 MB" in ix.text() and "1 MB" in ix.text(), ix.text()
    assert fake.downloads(huge) == 0

    # A size that lies: the download stops at the limit.
    liar = fake.host_file("small.wav", tone_wav(440.0, 60.0), content_type="audio/x-wav", size=1000)
    ix = await studio.run("alice", "continue", {"audio": liar, **style})
    assert "bigger than 1 MB" in ix.text(), ix.text()

    # Not audio, or damaged.
    corrupt = fake.host_file("song.wav", b"\x00garbage" * 500, content_type="audio/x-wav")
    ix = await studio.run("alice", "continue", {"audio": corrupt, **style})
    assert "not an audio file I can read" in ix.text(), ix.text()
    truncated = fake.host_file(
        "cut.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff" * 40, content_type="audio/mpeg"
    )
    ix = await studio.run("alice", "continue", {"audio": truncated, **style})
    assert "damaged" in ix.text() or "no audio" in ix.text(), ix.text()
    text = fake.host_file("notes.txt", b"hello", content_type="text/plain")
    ix = await studio.run("alice", "continue", {"audio": text, **style})
    assert "does not look like an audio file" in ix.text() and fake.downloads(text) == 0

    # An upload without a style to continue in.
    ix = await studio.run("alice", "continue", {"audio": good})
    assert "also tell me the `artist` and `genre`" in ix.text(), ix.text()

    assert len(studio.songs()) == before  # nothing queued by the bad ones
    assert len(studio.storage.list("uploads")) == 1  # only the good upload was stored
    assert "Traceback" not in "".join(i.text() for i in fake.interactions.values())


# ---------------------------------------------------------------- from a moment, with the real worker

TINY_HOPS = (4, 8, 16)  # the tiny model's hop lengths per level (tests/pipeline_fixtures.py)
RATE = 22050


def _tiny_codes_npz(seconds: float, seed: int) -> bytes:
    """A clip's codes.npz that fits the tiny model (all three levels, codebook of 64)."""
    rng = np.random.default_rng(seed)
    top = int(seconds * RATE) // TINY_HOPS[-1]
    levels = {
        f"level_{i}": rng.integers(0, 64, size=(1, top * TINY_HOPS[-1] // h)) for i, h in enumerate(TINY_HOPS)
    }
    buf = io.BytesIO()
    np.savez(
        buf, **{k: v.astype(np.int32) for k, v in levels.items()}, meta=np.frombuffer(b"{}", dtype=np.uint8)
    )
    return buf.getvalue()


def _levels(data: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(data)) as z:
        return [z[f"level_{i}"].reshape(1, -1).astype(np.int64) for i in range(3)]


def _seed_tiny_clip(studio: Studio, seconds: float) -> int:
    song_id = seed_clip(studio, "alice", artist="bach", genre="chorale", seconds=seconds)
    clip = studio.clip(song_id)
    assert clip is not None
    studio.storage.write_bytes(clip.codes_key, _tiny_codes_npz(seconds, song_id))
    return song_id


async def _finished_clip(studio: Studio, member: str, song_id: int) -> Any:
    """Close the song's vote as its requester; wait for its clip to be posted."""
    drafts_msg = await studio.until(
        lambda: studio.message_with(f"jb:close:{song_id}"), f"song {song_id}'s drafts", timeout=120
    )
    await studio.click(member, drafts_msg, f"jb:close:{song_id}")
    return await studio.until(
        lambda: (c := studio.clip(song_id)) and c.message_id and c, f"song {song_id}'s clip", timeout=120
    )


def _kept_up_to(parent: list[np.ndarray], child: list[np.ndarray], at: float, new_seconds: float) -> None:
    """The child is the parent up to `at` (exactly, every level), then `new_seconds` of new music."""
    top = int(at * RATE) // TINY_HOPS[-1]
    assert abs(child[2].shape[1] - (top + new_seconds * RATE / TINY_HOPS[-1])) <= 2, child[2].shape
    for level, hop in enumerate(TINY_HOPS):
        n = top * TINY_HOPS[-1] // hop
        assert np.array_equal(child[level][:, :n], parent[level][:, :n]), f"level {level}"
    assert not np.array_equal(child[2][:, top : top + 16], parent[2][:, top : top + 16])  # new from there


async def test_continue_at_a_moment_with_the_real_worker(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    studio.start_real_worker()
    await studio.start_bot()
    parent_song = await studio.run_db(_seed_tiny_clip, studio, 0.5)
    parent = studio.clip(parent_song)
    assert parent is not None
    await studio.until(lambda: studio.message_with(f"jb:continue:{parent.id}"), "the seeded clip's post")

    ix = await studio.run("bob", "continue", {"clip": parent.id, "at": "0:00.3", "seconds": 0.2})
    assert f"continuing clip #{parent.id} from 0:00.3" in ix.text(), ix.text()
    child_id = song_id_from(ix.text())
    assert studio.song(child_id).prime_at == pytest.approx(0.3)
    status = await studio.until(lambda: studio.message_with(f"jb:cancel:{child_id}"), "the status message")
    assert f"continuing clip #{parent.id} from 0:00.3" in status["content"], status["content"]
    child = await _finished_clip(studio, "bob", child_id)
    # The worker kept the parent's music up to 0.3 s exactly, at every level, then went on.
    _kept_up_to(
        _levels(studio.storage.read_bytes(parent.codes_key)),
        _levels(studio.storage.read_bytes(child.codes_key)),
        0.3,
        0.2,
    )
    post = studio.fake.messages[int(child.message_id)]
    assert f"continuing clip #{parent.id} from 0:00.3" in post["content"], post["content"]
    info = await studio.run("carol", "song", {"id": child_id})
    assert f"continuing clip #{parent.id} from 0:00.3" in info.text(), info.text()
    assert "from 0:00.3" in info.text().split("Made from:")[1], info.text()  # the recipe card too


async def test_continue_button_from_a_moment_survives_a_restart_real_worker(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    studio.start_real_worker()
    await studio.start_bot()
    parent_song = await studio.run_db(_seed_tiny_clip, studio, 0.5)
    parent = studio.clip(parent_song)
    assert parent is not None
    post = await studio.until(lambda: studio.message_with(f"jb:continue:{parent.id}"), "the clip's post")
    dave = studio.members["dave"]

    # Continue → "From a moment…" → the modal opens; the bot restarts before dave submits it.
    offer = (await studio.click("dave", post, f"jb:continue:{parent.id}")).followups[-1]
    assert "(0:00.5 long) from its end, or from a moment" in offer["content"], offer["content"]
    opened = await fake.settled(
        await fake.click(dave, int(offer["id"]), f"jb:continue-at:{parent.id}", seen=offer)
    )
    assert opened.modal is not None and opened.modal["custom_id"] == f"jb:continue-at-modal:{parent.id}"
    await studio.stop_bot()
    await studio.start_bot(sync=False)

    # Bad moments are answered in a sentence and queue nothing; the offer's buttons still work.
    before = len(studio.songs())
    said = {
        "soon": f"`soon` is not a moment in clip #{parent.id}",
        "-0:01": f"`-0:01` is before the start of clip #{parent.id}",
        "0": f"`0` is the very start of clip #{parent.id}",
        "0:05": f"`0:05` is past the end of clip #{parent.id} (0:00.5 long)",
    }
    for moment, words in said.items():
        again = await fake.settled(
            await fake.click(dave, int(offer["id"]), f"jb:continue-at:{parent.id}", seen=offer)
        )
        answer = await fake.settled(await fake.submit_modal(dave, again, {"moment": moment}), timeout=20)
        assert words in answer.text() and answer.is_ephemeral(), (moment, answer.text())
    assert len(studio.songs()) == before

    # The modal opened before the restart is submitted now: the song continues from 0.25 s.
    done = await fake.settled(await fake.submit_modal(dave, opened, {"moment": "0.25"}), timeout=20)
    child_id = song_id_from(done.text())
    song = studio.song(child_id)
    assert (song.parent_clip_id, song.prime_at) == (parent.id, pytest.approx(0.25))
    assert "Traceback" not in "".join(i.text() for i in fake.interactions.values())
    child = await _finished_clip(studio, "dave", child_id)
    _kept_up_to(
        _levels(studio.storage.read_bytes(parent.codes_key)),
        _levels(studio.storage.read_bytes(child.codes_key)),
        0.25,
        0.2,
    )


async def test_continue_at_bad_input_on_a_clip(studio: Studio) -> None:
    await studio.start_bot()
    parent = await studio.run_db(seed_clip, studio, "alice", seconds=2.0)
    clip = studio.clip(parent)
    assert clip is not None
    before = len(studio.songs())
    said = {
        "later": f"`later` is not a moment in clip #{clip.id}",
        "1:75": f"`1:75` is not a moment in clip #{clip.id}",
        "-5": f"`-5` is before the start of clip #{clip.id}",
        "0:00": f"`0:00` is the very start of clip #{clip.id}",
        "0:03": f"`0:03` is past the end of clip #{clip.id} (0:02 long)",
    }
    for at, words in said.items():
        ix = await studio.run("bob", "continue", {"clip": clip.id, "at": at})
        assert words in ix.text(), (at, ix.text())
    assert len(studio.songs()) == before
    ok = await studio.run("bob", "continue", {"clip": clip.id, "at": "1.5"})
    at_song = studio.song(song_id_from(ok.text()))
    assert at_song.prime_at == pytest.approx(1.5)
    # Right after it, the same clip from its end is another request, not a double click.
    end = await studio.run("bob", "continue", {"clip": clip.id})
    end_song = studio.song(song_id_from(end.text()))
    assert end_song.id != at_song.id and end_song.prime_at is None
    helped = (await studio.run("bob", "help")).text()
    assert "*from a moment*" in helped and "`at:0:42`: the new music starts at 0:42" in helped, helped
