"""End to end: members on a fake Discord, the real bot (discord.py as the client), and the real
GPU worker (`jukebot worker`) as a separate process rendering on the CPU with a tiny random-weight
model; they meet only in the database and the storage.

A member runs /generate with autocomplete, follows the status message, the drafts arrive, three
members vote, the window closes, the winner is upsampled, the clip is posted, another member
continues it. Run over SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from db.models import JobStatus, SongStatus
from tests.bot_harness import Studio, real_worker_overrides
from tests.fakes.discord import buttons, custom_ids

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def studio_overrides(tiny_model: Path) -> dict[str, Any]:
    return real_worker_overrides(tiny_model)


def song_id_from(text: str) -> int:
    m = re.search(r"Song #(\d+)", text)
    assert m, text
    return int(m[1])


def attachment_names(message: dict[str, Any]) -> list[str]:
    return [a["filename"] for a in message["attachments"]]


async def configure(studio: Studio) -> None:
    """The owner sets the studio's channels, a short vote and the moderator role."""
    fake, g = studio.fake, studio.guild
    ix = await studio.run(
        "owner",
        "mod channels",
        {
            "drafts": fake.channel(g, "drafts"),
            "clips": fake.channel(g, "clips"),
            "daily": fake.channel(g, "daily"),
            "mods": fake.channel(g, "mods"),
        },
    )
    assert "Saved" in ix.text(), ix.text()
    ix = await studio.run("owner", "mod limits", {"vote_minutes": 0.25})
    assert "voting lasts 0.25 min" in ix.text(), ix.text()
    ix = await studio.run("owner", "mod role", {"role": studio.mod_role})
    assert "Saved" in ix.text(), ix.text()


async def test_a_song_from_request_to_continuation(studio: Studio) -> None:
    fake = studio.fake
    studio.start_real_worker()
    await studio.start_bot()
    await configure(studio)
    drafts_ch, clips_ch = fake.channel(studio.guild, "drafts"), fake.channel(studio.guild, "clips")

    # Autocomplete offers the model's own names (this tiny model knows few; see test_bot_units).
    artists = await fake.autocomplete(
        studio.members["alice"], studio.channel, "generate", {"artist": "ba", "genre": ""}, focused="artist"
    )
    assert artists[0]["value"] == "bach"
    genres = await fake.autocomplete(
        studio.members["alice"],
        studio.channel,
        "generate",
        {"artist": "bach", "genre": "chroale"},
        focused="genre",
    )
    assert "chorale" in [c["value"] for c in genres]

    # The request: answered at once (deferred, ephemeral), then one status message in the channel.
    ix = await studio.run(
        "alice", "generate", {"artist": "bach", "genre": "chorale", "seconds": 0.2, "drafts": 3}
    )
    assert ix.callback_types[0] == 5 and ix.is_ephemeral()
    assert "is in the studio" in ix.text(), ix.text()
    song_id = song_id_from(ix.text())
    status = await studio.until(lambda: studio.message_with(f"jb:cancel:{song_id}"), "the status message")
    assert f"Song #{song_id}" in status["content"] and "bach" in status["content"]
    status_id = int(status["id"])

    # The drafts: audio for each, one waveform picture, a vote button each and a close button.
    drafts_msg = await studio.until(
        lambda: studio.message_with(f"jb:vote:{song_id}:", drafts_ch), "the drafts", timeout=90
    )
    names = attachment_names(drafts_msg)
    assert sum(n.endswith(".wav") for n in names) == 3 and sum(n.endswith(".png") for n in names) == 1
    vote_ids = [c for c in custom_ids(drafts_msg) if c.startswith("jb:vote:")]
    assert len(vote_ids) == 3 and f"jb:close:{song_id}" in custom_ids(drafts_msg)
    assert all(a["size"] <= 10 * 1024 * 1024 for a in drafts_msg["attachments"])
    await studio.until_db(lambda: studio.song(song_id).status == SongStatus.voting, "the vote to open")

    # Three members vote; a double click counts once; a changed vote moves.
    first = await studio.click("bob", drafts_msg, vote_ids[1])
    assert "Your vote for draft 2 is in" in first.text() and first.is_ephemeral()
    again = await studio.click("bob", drafts_msg, vote_ids[1])
    assert "already voted for draft 2" in again.text()
    await studio.click("carol", drafts_msg, vote_ids[0])
    changed = await studio.click("carol", drafts_msg, vote_ids[1])
    assert "changed your vote to draft 2" in changed.text()
    await studio.click("alice", drafts_msg, vote_ids[0])
    labels = await studio.until(
        lambda: [
            b["label"] for b in buttons(fake.messages[int(drafts_msg["id"])]) if b["custom_id"] in vote_ids
        ],
        "the vote counts on the buttons",
    )
    await studio.until(
        lambda: "2 votes" in " ".join(b["label"] for b in buttons(fake.messages[int(drafts_msg["id"])])),
        f"two votes for draft 2 on the buttons ({labels})",
    )

    # The window closes by itself (0.25 min: room for the votes on a busy machine); draft 2 wins
    # and is upsampled by the worker.
    closed = await studio.until(
        lambda: "Voting closed" in fake.messages[int(drafts_msg["id"])]["content"],
        "the vote to close",
        timeout=30,
    )
    assert closed
    closed_msg = fake.messages[int(drafts_msg["id"])]
    assert "draft 2" in closed_msg["content"]
    # The vote's buttons are off; what is left are the U-buttons that upsample another draft.
    live = [b["custom_id"] for b in buttons(closed_msg) if not b.get("disabled")]
    assert live and all(c.startswith(f"jb:again:{song_id}:") for c in live), live
    song = studio.song(song_id)
    assert song.winner_draft_id == studio.drafts(song_id)[1].id

    # A vote from a client still showing the open buttons is refused, politely.
    late = await fake.settled(
        await fake.click(studio.members["dave"], int(drafts_msg["id"]), vote_ids[0], seen=drafts_msg)
    )
    assert "closed" in late.text() and "Draft 2 won" in late.text()

    # The clip: audio under the guild's limit, a waveform, Continue / Vote / Publish.
    clip_msg = await studio.until(
        lambda: studio.message_with("jb:continue:", clips_ch), "the clip", timeout=90
    )
    clip = await studio.until_db(
        lambda: (c := studio.clip(song_id)) and c.message_id and c, "the clip posted"
    )
    assert clip.message_id == int(clip_msg["id"])
    assert any(n.endswith((".wav", ".mp3")) for n in attachment_names(clip_msg))
    assert any(n.endswith(".png") for n in attachment_names(clip_msg))
    assert all(a["size"] <= 10 * 1024 * 1024 for a in clip_msg["attachments"])
    assert custom_ids(clip_msg) == [  # no Publish: the owner has not allowed this server
        f"jb:continue:{clip.id}",
        f"jb:clipvote:{clip.id}",
        f"jb:remix:{clip.id}",
    ]
    await studio.until(
        lambda: "Finished" in fake.messages[status_id]["content"], "the status to say finished"
    )
    assert not custom_ids(fake.messages[status_id])  # no cancel button any more
    # Progress was edited into that one message (bot token: PATCH /channels/.../messages/...). Checked
    # here, not before the drafts: the tiny model may draft before the paced status shows a percent,
    # and waiting for one there would let the short vote window run out unseen.
    assert any("%" in v["content"] for v in fake.edits[status_id]), "no progress edit"
    patches = [c for c in fake.calls if c.method == "PATCH" and c.path.endswith(f"/messages/{status_id}")]
    assert patches and all(c.auth == f"Bot {fake.token}" for c in patches)
    assert studio.song(song_id).status == SongStatus.done

    # Members vote on the clip for the daily pick (once each).
    v = await studio.click("dave", clip_msg, f"jb:clipvote:{clip.id}")
    assert "1 vote" in v.text()
    v = await studio.click("dave", clip_msg, f"jb:clipvote:{clip.id}")
    assert "already voted" in v.text()

    # Another member continues it with the button (from the end): a new song primed on the clip.
    offer = (await studio.click("dave", clip_msg, f"jb:continue:{clip.id}")).followups[-1]
    cont = await fake.settled(
        await fake.click(studio.members["dave"], int(offer["id"]), f"jb:continue-end:{clip.id}", seen=offer),
        timeout=20,
    )
    new_id = song_id_from(cont.text())
    assert new_id != song_id
    child = studio.song(new_id)
    assert child.parent_clip_id == clip.id and child.artist == "bach"
    await studio.until(
        lambda: studio.message_with(f"jb:vote:{new_id}:", drafts_ch), "the continuation's drafts", timeout=90
    )
    assert [j.kind for j in studio.jobs(new_id)] == ["continue"]
    assert all(j.status == JobStatus.succeeded for j in studio.jobs(song_id))
