"""What members ask for, and what they are told when it cannot be done: unknown names, too long
lyrics, impossible lengths, quotas and rate limits, the guild's concurrency cap, cancelling.
Against the fake Discord with the real bot (no worker runs: nothing here needs one)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from db.models import JobStatus, SongStatus
from tests.bot_harness import Studio, finish_drafts
from tests.fakes.discord import buttons, custom_ids
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]


GOOD = {"artist": "abba", "genre": "pop", "seconds": 2, "drafts": 2}


async def test_bad_requests_get_clear_answers_and_queue_nothing(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    await studio.start_bot()

    ix = await studio.run("alice", "generate", {**GOOD, "artist": "the beatlez"})
    assert "does not know the artist `the beatlez`" in ix.text() and "**the beatles**" in ix.text(), ix.text()
    assert ix.is_ephemeral()
    ix = await studio.run("alice", "generate", {**GOOD, "genre": "jazzz"})
    assert "does not know the genre" in ix.text() and "**jazz**" in ix.text(), ix.text()
    ix = await studio.run("alice", "generate", {**GOOD, "artist": "zzqqxxjj"})
    assert "does not know the artist" in ix.text(), ix.text()

    ix = await studio.run("alice", "generate", {**GOOD, "lyrics": "la " * 3334})
    assert "10,002 characters" in ix.text() and "4,000" in ix.text(), ix.text()

    for seconds in (0, -5, 100000):
        ix = await studio.run("alice", "generate", {**GOOD, "seconds": seconds})
        assert "1 to 60 seconds" in ix.text(), ix.text()
    for drafts in (0, 99):
        ix = await studio.run("alice", "generate", {**GOOD, "drafts": drafts})
        assert "1 to 4 drafts" in ix.text(), ix.text()
    ix = await studio.run("alice", "generate", {**GOOD, "lyrics": "hi", "lyrics_prompt": "a sea song"})
    assert "either `lyrics`" in ix.text(), ix.text()

    assert studio.songs() == []  # nothing was queued
    for ix_text in (ix.text(),):
        assert "Traceback" not in ix_text and "error id" not in ix_text

    # Written lyrics the model cannot sing exactly are fitted, and the member is told.
    ix = await studio.run("alice", "generate", {**GOOD, "lyrics": "Café ☕ au lait, déjà vu"})
    assert "is in the studio" in ix.text() and "adjusted your lyrics" in ix.text(), ix.text()
    song = studio.song(song_id_from(ix.text()))
    assert "☕" not in song.lyrics and "Cafe" in song.lyrics


@pytest.fixture
def studio_overrides() -> dict[str, Any]:
    return {"max_queued_per_member": 2, "request_rate_count": 3, "request_rate_seconds": 3600}


async def test_quotas_rate_limits_and_the_guild_cap(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    await studio.start_bot()
    ix = await studio.run("owner", "mod limits", {"songs_per_day": 3, "at_once": 1})
    assert "Songs per member per day: 3" in ix.text(), ix.text()

    # The guild may have one song in the studio: the second waits for a slot (no worker runs).
    a = song_id_from((await studio.run("alice", "generate", GOOD)).text())
    b = song_id_from((await studio.run("alice", "generate", GOOD)).text())
    await studio.until(
        lambda: (m := studio.message_with(f"jb:cancel:{b}")) and "Waiting for a free slot" in m["content"],
        "the second song to wait for a slot",
    )
    assert [j.kind for j in studio.jobs(a)] == ["draft"] and studio.jobs(b) == []

    # /queue shows what the studio is doing, including the song waiting for a slot.
    q = await studio.run("bob", "queue")
    assert (
        f"Song #{a}" in q.text()
        and "position 1" in q.text()
        and "1 song(s) waiting for a free slot" in q.text()
    )
    assert q.is_ephemeral()

    # Two in flight is this member's limit.
    ix = await studio.run("alice", "generate", GOOD)
    assert "already have 2 song(s) in the studio" in ix.text(), ix.text()

    # Cancelling the first frees the guild's slot: the second starts (its status shows a position).
    first_status = studio.message_with(f"jb:cancel:{a}")
    assert first_status is not None
    refused = await studio.click("bob", first_status, f"jb:cancel:{a}")
    assert "Only the member who asked" in refused.text()
    done = await studio.click("alice", first_status, f"jb:cancel:{a}")
    assert "is cancelled" in done.text(), done.text()
    assert studio.song(a).status == SongStatus.cancelled and studio.jobs(a)[0].status == JobStatus.cancelled
    await studio.until(
        lambda: "Cancelled" in fake.messages[int(first_status["id"])]["content"], "the status to say so"
    )
    await studio.until(
        lambda: (m := studio.message_with(f"jb:cancel:{b}")) and "position **1**" in m["content"],
        "the waiting song to start",
    )

    # Cancelled songs do not count for the day; the rate limit (3 an hour here) does.
    c = song_id_from((await studio.run("alice", "generate", GOOD)).text())
    ix = await studio.run("alice", "generate", GOOD)
    assert "Easy there" in ix.text(), ix.text()
    assert c and len(studio.songs()) == 3

    # Songs per day: bob makes 3 (cancelling as he goes, which frees them)...
    for _ in range(3):
        sid = song_id_from((await studio.run("bob", "generate", GOOD)).text())
        status = await studio.until(partial(studio.message_with, f"jb:cancel:{sid}"), "bob's status")
        await studio.click("bob", status, f"jb:cancel:{sid}")
    # ... and carol reaches the daily limit with songs that count.
    with studio.db.write() as s:  # two of carol's songs finished earlier today
        from db import repo

        user = repo.get_or_create_user(s, studio.members["carol"], "carol")
        for _ in range(3):
            song = repo.create_song(
                s,
                user_id=user.id,
                artist="abba",
                genre="pop",
                seconds=2,
                seed=1,  # type: ignore[arg-type]
                guild_id=studio.guild,
                channel_id=studio.channel,
            )
            song.status = SongStatus.done.value
            s.add(song)
    ix = await studio.run("carol", "generate", GOOD)
    assert "3 songs in the last 24 hours" in ix.text() and "allows 3 a day" in ix.text(), ix.text()
    me = await studio.run("carol", "me")
    assert "3 of 3" in me.text(), me.text()


async def test_cancelling_a_song_in_its_vote(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    await studio.start_bot()
    sid = song_id_from((await studio.run("alice", "generate", GOOD)).text())
    await studio.run_db(finish_drafts, studio, sid)
    drafts = await studio.until(lambda: studio.message_with(f"jb:vote:{sid}:"), "the drafts")
    assert "voting" in (await studio.run("alice", "song", {"id": sid})).text()

    # /mod cancel names a job; this one is done (the song is being voted on), so nothing is cancelled.
    ix = await studio.run("owner", "mod cancel", {"job": studio.jobs(sid)[0].id})
    assert "had already finished" in ix.text(), ix.text()
    assert studio.song(sid).status == SongStatus.voting

    # The requester cancels from the status message, which keeps its button while the vote runs.
    status = await studio.until(lambda: studio.message_with(f"jb:cancel:{sid}"), "the status message")
    ix = await studio.click("alice", status, f"jb:cancel:{sid}")
    assert "is cancelled" in ix.text(), ix.text()
    assert studio.song(sid).status == SongStatus.cancelled
    await studio.until(
        lambda: all(b.get("disabled") for b in buttons(fake.messages[int(drafts["id"])])),
        "the vote buttons to be switched off",
    )
    late = await fake.settled(
        await fake.click(studio.members["bob"], int(drafts["id"]), custom_ids(drafts)[0], seen=drafts)
    )
    assert "was cancelled, so its vote is over" in late.text(), late.text()
