"""Issue #16's studio features end to end (the "Must show" audit): the fake Discord, the real bot and
the real worker (`jukebot worker`, the tiny random-weight model on the CPU), with a restart of the bot
in the middle of each, SQLite and PostgreSQL. The feature files hold the details of each feature
(tests/test_reroll.py, test_choose_again.py, test_bot_playlist.py, test_recipe.py, test_family_tree.py,
test_listen_early.py, test_timed_lyrics.py); here the parts meet the real worker:

- reroll across a restart (the worker makes the new drafts while the bot is down), then choose again
  and the family tree those make, with the member-facing answers to a reroll of a song already
  upsampled and to the quota counting both;
- the server's SoundCloud playlist filled from a clip the worker made, across a restart, and a
  playlist deleted on SoundCloud answered and made again with nothing lost;
- `/help` and the README naming every new command and button.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr
from sqlmodel import col, select

from bot.features.info.answers import HELP
from db.models import Clip, JobKind, JobStatus, SongStatus
from publisher.runner import run_due_publications
from tests.bot_harness import ROOT, Studio, real_worker_overrides
from tests.fakes.discord import FakeInteraction, custom_ids
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.publish_fixtures import Notes, login_soundcloud

pytest_plugins = ["tests.bot_fixtures", "tests.conftest_publish"]


@pytest.fixture
def studio_overrides(tiny_model: Path, fake_sc: FakeSoundCloud) -> dict[str, Any]:
    return real_worker_overrides(
        tiny_model,
        soundcloud_api_base=fake_sc.base_url,
        soundcloud_auth_base=fake_sc.base_url,
        soundcloud_client_id=SecretStr(fake_sc.client_id),
        soundcloud_client_secret=SecretStr(fake_sc.client_secret),
        publish_http_timeout=5.0,
    )


def song_id_from(text: str) -> int:
    m = re.search(r"Song #(\d+)", text)
    assert m, text
    return int(m[1])


async def stale_click(
    studio: Studio, member: str, message: dict[str, Any], custom_id: str
) -> FakeInteraction:
    """A press from a client still showing `message` as it was (before an edit took the button off)."""
    ix = await studio.fake.click(studio.members[member], int(message["id"]), custom_id, seen=message)
    return await studio.fake.settled(ix, timeout=20)


def draft_codes(studio: Studio, song_id: int) -> list[np.ndarray]:
    return [np.load(io.BytesIO(studio.storage.read_bytes(d.codes_key))) for d in studio.drafts(song_id)]


def drafts_job_done(studio: Studio, song_id: int) -> bool:
    return any(j.kind == JobKind.draft and j.status == JobStatus.succeeded for j in studio.jobs(song_id))


async def song_with_drafts(studio: Studio, member: str = "alice") -> tuple[int, dict[str, Any]]:
    """A 0.2 s song of the tiny model, its drafts made by the real worker and posted for the vote."""
    ix = await studio.run(
        member, "generate", {"artist": "bach", "genre": "chorale", "seconds": 0.2, "drafts": 2}
    )
    song_id = song_id_from(ix.text())
    msg = await studio.until(lambda: studio.message_with(f"jb:vote:{song_id}:"), "the drafts", timeout=120)
    return song_id, msg


async def clip_posted(studio: Studio, song_id: int) -> Any:
    return await studio.until_db(
        lambda: (c := studio.clip(song_id)) is not None and c.message_id is not None and c,
        f"song {song_id}'s clip posted",
        timeout=180,
    )


# ---------------------------------------------------------------------------------------------
# Reroll (item 2), choose again (item 3) and the family tree (item 7) with the real worker


async def test_reroll_across_a_restart_then_choose_again_and_the_family_tree(studio: Studio) -> None:
    fake = studio.fake
    studio.start_real_worker()
    await studio.start_bot()
    await studio.run("owner", "mod limits", {"songs_per_day": 3})
    old_id, old_msg = await song_with_drafts(studio)

    # 🎲; once the bot has queued the new song's job it goes down: the worker makes the drafts
    # meanwhile (a song waits for its server's slot in the bot, so the job must be queued first).
    pressed = await studio.click("alice", old_msg, f"jb:reroll:{old_id}")
    assert f"Rerolling song #{old_id}" in pressed.text(), pressed.text()
    new_id = int(re.findall(r"song #(\d+)", pressed.text())[1])
    await studio.until_db(lambda: studio.jobs(new_id), "the reroll's job")
    await studio.stop_bot()
    await studio.until_db(lambda: drafts_job_done(studio, new_id), "the reroll's drafts", timeout=180)
    assert studio.song(old_id).status == SongStatus.voting  # nobody has posted them yet

    # The new bot posts them, ends the old vote and says where it went; the old buttons answer.
    await studio.start_bot(sync=False)
    new_msg = await studio.until(
        lambda: studio.message_with(f"jb:vote:{new_id}:"), "the reroll's drafts posted", timeout=60
    )
    assert f"A reroll of song #{old_id}" in new_msg["content"], new_msg["content"]
    await studio.until_db(lambda: studio.song(old_id).status == SongStatus.rerolled, "the old vote to end")
    await studio.until(
        lambda: f"Rerolled → song #{new_id}" in fake.messages[int(old_msg["id"])]["content"],
        "the old drafts message to say it was rerolled",
    )
    again = await stale_click(studio, "alice", old_msg, f"jb:reroll:{old_id}")
    assert f"already rerolled: its new drafts are song #{new_id}" in again.text(), again.text()
    old_song, new_song = studio.song(old_id), studio.song(new_id)
    assert new_song.seed != old_song.seed and new_song.rerolled_from_song_id == old_id
    old_codes, new_codes = (
        await studio.run_db(draft_codes, studio, old_id),
        await studio.run_db(draft_codes, studio, new_id),
    )
    assert len(new_codes) == 2 and not np.array_equal(old_codes[0], new_codes[0])  # the new seed was used

    # The vote on the new drafts; its winner is made in full quality by the worker.
    closed = await studio.click("alice", new_msg, f"jb:close:{new_id}")
    assert "draft 1 won" in closed.text(), closed.text()
    first_clip = await clip_posted(studio, new_id)
    await studio.until_db(lambda: studio.song(new_id).status == SongStatus.done, "the song done")

    # Bad input: a reroll of a song already upsampled (a client still showing the open vote).
    late = await stale_click(studio, "alice", new_msg, f"jb:reroll:{new_id}")
    assert (
        f"Song #{new_id} can't be rerolled: its vote is over and draft 1 is made in full quality"
        in late.text()
    ), late.text()
    assert len(studio.songs()) == 2

    # Another restart; the U-button on the closed post still works: draft 2 becomes a second clip.
    d1, d2 = (d.id for d in studio.drafts(new_id))
    closed_msg = await studio.until(
        lambda: (
            fake.messages[int(new_msg["id"])]
            if f"jb:again:{new_id}:{d2}" in custom_ids(fake.messages[int(new_msg["id"])])
            else None
        ),
        "a U-button for draft 2",
    )
    await studio.stop_bot()
    await studio.start_bot(sync=False)
    chosen = await studio.click("alice", closed_msg, f"jb:again:{new_id}:{d2}")
    assert "being made in full quality too" in chosen.text(), chosen.text()
    assert f"jb:again:{new_id}:{d1}" not in custom_ids(closed_msg)  # the winner is made already

    def second_clip() -> Any:
        with studio.db.read() as s:
            rows = list(s.execute(select(Clip).where(col(Clip.song_id) == new_id)).scalars())
        return len(rows) == 2 and all(c.message_id for c in rows) and rows

    clips = await studio.until_db(second_clip, "the second clip posted", timeout=180)
    second = next(c for c in clips if c.id != first_clip.id)
    assert second.draft_id == d2

    # The family: /song on the first song shows the reroll under it with both its clips, linked.
    shown = await studio.run("bob", "song", {"id": old_id})
    text = shown.text()
    assert f"**Song #{old_id}** (this song)" in text, text
    assert f"🎲 [Song #{new_id}]" in text or f"🎲 Song #{new_id}" in text, text
    assert f"[clip #{first_clip.id}](" in text and f"[clip #{second.id}](" in text, text
    top = await studio.run("dave", "top", {"by": "family"})
    assert re.search(rf"1\. Song #{old_id} · bach · chorale — 0 votes, 2 clips, 2 songs", top.text()), (
        top.text()
    )

    # Quotas: the song, its reroll and the draft chosen again are the member's 3 of the day.
    over = await studio.run("alice", "generate", {"artist": "bach", "genre": "chorale", "seconds": 0.2})
    assert "this server allows 3 a day" in over.text(), over.text()


# ---------------------------------------------------------------------------------------------
# The server's SoundCloud playlist (item 4) with a clip made by the real worker


async def test_a_worker_made_clip_goes_into_the_playlist_which_survives_a_deletion(
    sqlite_studio: Studio, fake_sc: FakeSoundCloud
) -> None:
    studio = sqlite_studio
    fake = studio.fake
    studio.settings.publish.guilds = [studio.guild]
    studio.settings.publish.caption_moderation = False
    studio.start_real_worker()
    await studio.start_bot()
    await studio.run("owner", "mod role", {"role": studio.mod_role})
    mods = fake.channel(studio.guild, "mods")
    await studio.run("owner", "mod channels", {"mods": mods})
    await studio.run_db(login_soundcloud, studio.db, fake_sc)

    song_id, drafts_msg = await song_with_drafts(studio)
    await studio.click("alice", drafts_msg, f"jb:close:{song_id}")
    clip = await clip_posted(studio, song_id)
    post = fake.messages[clip.message_id]

    # A restart, then the moderator's Publish button on the old post still schedules it.
    await studio.stop_bot()
    bot = await studio.start_bot(sync=False)
    ok = await studio.click("mia", post, f"jb:publish:{clip.id}")
    assert "scheduled for" in ok.text() and "soundcloud" in ok.text(), ok.text()
    results = await run_due_publications(
        studio.db,
        studio.storage,
        studio.settings,
        Notes(),
        platforms=["soundcloud"],
        now=datetime.now(UTC) + timedelta(days=2),  # the next upload time has come
        notify_guild=bot.poster.notify_moderators,
    )
    assert [r.state for r in results] == ["published"], [r.message for r in results]
    (playlist,) = fake_sc.playlists.values()
    assert playlist.title == "Studio - jukebot" and len(playlist.track_ids) == 1
    track = playlist.track_ids[0]
    shown = await studio.run("mia", "mod playlist")
    assert "(1 clip)" in shown.text() and playlist.json({})["permalink_url"] in shown.text(), shown.text()

    # Bad input: the playlist is deleted on soundcloud.com. /mod playlist does not hand out a dead
    # link: it is made again with the clip, and the moderators are told.
    fake_sc.delete_playlist(playlist.id)
    after = await studio.run("mia", "mod playlist")
    (remade,) = fake_sc.playlists.values()
    assert remade.id != playlist.id and remade.track_ids == [track]  # nothing lost
    url = remade.json({})["permalink_url"]
    assert url in after.text() and playlist.json({})["permalink_url"] not in after.text(), after.text()
    note = await studio.until(
        lambda: next(
            (m for m in fake.channel_messages(mods) if "was deleted on SoundCloud" in m["content"]), None
        ),
        "the moderators told",
    )
    assert url in note["content"]

    # Deleted again, then renamed: the rename makes it again too, with the new title and the clip.
    fake_sc.delete_playlist(remade.id)
    renamed = await studio.run("mia", "mod playlist", {"title": "Late Night Tapes"})
    (third,) = fake_sc.playlists.values()
    assert third.title == "Late Night Tapes" and third.track_ids == [track]
    assert "Renamed" in renamed.text() and third.json({})["permalink_url"] in renamed.text(), renamed.text()
    assert fake_sc.violations == []


# ---------------------------------------------------------------------------------------------
# /help and the README name every new command and button


STUDIO_WORDS = {
    "🎲 Reroll": ("Reroll",),
    "U-buttons (choose again)": ("**U",),
    "Remix": ("**Remix**",),
    "/mod playlist": ("/mod playlist",),
    "/top by:family": ("by:family",),
    "/song family tree": ("family",),
    "the preview post (listen early)": ("Listen early",),
    "the LRC attachment (timed lyrics)": (".lrc",),
}


@pytest.mark.parametrize("feature", sorted(STUDIO_WORDS))
def test_help_and_readme_describe_every_new_command_and_button(feature: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(HELP) <= 2000, "Discord refuses a message longer than 2,000 characters"
    for words in STUDIO_WORDS[feature]:
        assert words in HELP, f"/help does not mention {feature} ({words!r})"
        assert words in readme, f"the README does not mention {feature} ({words!r})"
