"""Reroll (issue #16 item 2): 🎲 on an open drafts post makes a new set of drafts for the same
request with a new seed. Fake Discord, the real bot, SQLite and PostgreSQL. The reroll's draft job is
done in-process the way a worker does it (`finish_drafts`: claim, files, one fenced transaction);
the real worker's draft path is the same job kind as any song's (tests/test_bot_e2e.py)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from db.models import Song, SongStatus, utcnow
from tests.bot_harness import Studio, finish_drafts
from tests.fakes.discord import FakeInteraction, buttons, custom_ids

pytest_plugins = ["tests.bot_fixtures"]


def song_id_from(text: str, word: str = "Song") -> int:
    m = re.search(rf"{word} #(\d+)", text)
    assert m, text
    return int(m[1])


async def _drafts_message(studio: Studio, song_id: int) -> dict[str, Any]:
    return await studio.until(lambda: studio.message_with(f"jb:vote:{song_id}:"), f"song {song_id}'s drafts")


async def stale_click(
    studio: Studio, member: str, message: dict[str, Any], custom_id: str
) -> FakeInteraction:
    """A press from a client still showing `message` as it was (before an edit took the button off)."""
    ix = await studio.fake.click(studio.members[member], int(message["id"]), custom_id, seen=message)
    return await studio.fake.settled(ix, timeout=20)


def _expire_vote(studio: Studio, song_id: int) -> None:
    with studio.db.write() as s:
        s.execute(
            update(Song).where(col(Song.id) == song_id).values(vote_closes_at=utcnow() - timedelta(seconds=1))
        )


async def test_reroll_replaces_the_vote_once_its_drafts_are_posted(studio: Studio) -> None:
    fake = studio.fake
    await studio.start_bot()
    ix = await studio.run("owner", "mod limits", {"songs_per_day": 2})
    assert "Saved" in ix.text(), ix.text()
    ix = await studio.run("alice", "generate", {"artist": "abba", "genre": "pop", "seconds": 2, "drafts": 2})
    old_id = song_id_from(ix.text())
    await studio.run_db(finish_drafts, studio, old_id)
    old_msg = await _drafts_message(studio, old_id)
    assert f"jb:reroll:{old_id}" in custom_ids(old_msg)

    # Only the requester (or a moderator) may reroll; a stranger's press changes nothing.
    refused = await studio.click("bob", old_msg, f"jb:reroll:{old_id}")
    assert "Only the member who asked for this song" in refused.text(), refused.text()
    assert len(studio.songs()) == 1

    # The press: a new song, same recipe, new seed, lineage kept. A double press: one reroll.
    first = await studio.click("alice", old_msg, f"jb:reroll:{old_id}")
    assert f"Rerolling song #{old_id}" in first.text(), first.text()
    new_id = int(re.findall(r"song #(\d+)", first.text())[1])
    second = await studio.click("alice", old_msg, f"jb:reroll:{old_id}")
    assert f"already being rerolled: its new drafts are song #{new_id}" in second.text(), second.text()
    songs = studio.songs()
    assert [s.id for s in songs] == [old_id, new_id]
    old, new = songs
    assert new.rerolled_from_song_id == old_id and new.seed != old.seed
    assert (new.artist, new.genre, new.seconds, new.lyrics, new.n_drafts, new.user_id) == (
        old.artist,
        old.genre,
        old.seconds,
        old.lyrics,
        old.n_drafts,
        old.user_id,
    )

    # The old drafts stay votable, even past their window, while the reroll is on its way; and a
    # restart in the middle loses nothing (the buttons are DynamicItems).
    await studio.stop_bot()
    await studio.run_db(_expire_vote, studio, old_id)
    await studio.start_bot(sync=False)
    voted = await studio.click(
        "bob", old_msg, [c for c in custom_ids(old_msg) if c.startswith("jb:vote:")][1]
    )
    assert "Your vote for draft 2 is in" in voted.text(), voted.text()
    await studio.run_db(lambda: studio.jobs(new_id))  # the watcher runs a few ticks meanwhile
    assert studio.song(old_id).status == SongStatus.voting  # not closed by the clock

    # The reroll's drafts arrive: they replace the old vote; the old message says where it went.
    await studio.until_db(lambda: studio.jobs(new_id), "the reroll's job")
    await studio.run_db(finish_drafts, studio, new_id)
    new_msg = await _drafts_message(studio, new_id)
    assert f"A reroll of song #{old_id}" in new_msg["content"]
    await studio.until_db(lambda: studio.song(old_id).status == SongStatus.rerolled, "the old vote to end")
    await studio.until(
        lambda: f"Rerolled → song #{new_id}" in fake.messages[int(old_msg["id"])]["content"],
        "the old drafts message to say it was rerolled",
    )
    assert all(b.get("disabled") for b in buttons(fake.messages[int(old_msg["id"])]))
    late = await stale_click(
        studio, "carol", old_msg, next(c for c in custom_ids(old_msg) if c.startswith("jb:vote:"))
    )
    assert f"Song #{old_id} was rerolled" in late.text(), late.text()
    again = await stale_click(studio, "alice", old_msg, f"jb:reroll:{old_id}")
    assert f"already rerolled: its new drafts are song #{new_id}" in again.text(), again.text()

    # Quota: the reroll counted (2 songs of 2 today), so rerolling again is refused, nothing made.
    over = await studio.click("alice", new_msg, f"jb:reroll:{new_id}")
    assert "this server allows 2 a day" in over.text(), over.text()
    assert len(studio.songs()) == 2

    # A song whose vote is over cannot be rerolled (a stale button): a clear answer.
    closed = await studio.click("alice", new_msg, f"jb:close:{new_id}")
    assert "Vote closed" in closed.text(), closed.text()
    ix = await studio.run("owner", "mod limits", {"songs_per_day": 10})
    stale = await stale_click(studio, "alice", new_msg, f"jb:reroll:{new_id}")
    assert f"Song #{new_id} can't be rerolled: its vote is over" in stale.text(), stale.text()
    assert len(studio.songs()) == 2
