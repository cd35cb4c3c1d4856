"""Continuing music: `/continue clip:`, the "Continue this clip" context menu, and `/continue audio:`
with an uploaded file, checked before any byte is downloaded (the fake Discord reports a 200 MB
upload it would never serve) and after (a corrupt file is refused and not stored)."""

from __future__ import annotations

from typing import Any

import pytest

from db.models import JobKind
from tests.bot_harness import Studio, seed_clip, tone_wav
from tests.fakes.discord import custom_ids
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def studio_overrides() -> dict[str, Any]:
    return {"max_upload_bytes": 1024 * 1024, "max_queued_per_member": 10}


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
