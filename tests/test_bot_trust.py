"""Trust on a bot shared by several servers (issue #14, the bot's side): publishing only where the
bot's owner allowed it (2), no commands in DMs and budgets for the text model (3), a double click
makes one song (9), a song whose channels were deleted ends instead of retrying forever (10),
drafts messages left open by a crash are closed on start (11), and a long upload says which part is
used and lets the member choose it with `at:` (15). The real bot against the fake Discord."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import col, select

from bot.config import update_guild
from db import lifecycle
from db.audio import probe
from db.audio.decoding import bytes_as_file
from db.models import Publication, SongStatus
from tests.bot_harness import Studio, finish_drafts, seed_clip, tone_wav
from tests.fakes.discord import buttons, custom_ids
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]

LYRICS = "[Verse]\nNeon rain on the window\nI count the cars below"


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def studio_overrides(openai_fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "x_client_id": "x-client",
        "soundcloud_client_id": "sc-client",
        "openai_base_url": openai_fake.base_url,
        "lyrics_model": "songwriter-7b",
        "lyrics_timeout": 5.0,
        "lyrics_drafts_per_member_hour": 2,
        "lyrics_drafts_per_guild_day": 3,
        "max_upload_bytes": 8 * 1024 * 1024,
        "max_queued_per_member": 5,
        "post_retry_seconds": 0.1,
        "post_max_attempts": 3,
    }


def publications(studio: Studio, clip_id: int) -> list[Publication]:
    with studio.db.read() as s:
        return list(s.execute(select(Publication).where(col(Publication.clip_id) == clip_id)).scalars())


# ---------------------------------------------------------------- 2: publishing belongs to the operator


async def test_publish_only_from_servers_the_owner_allowed(studio: Studio, openai_fake: FakeOpenAI) -> None:
    await studio.start_bot()
    await studio.run("owner", "mod role", {"role": studio.mod_role})
    sid = await studio.run_db(seed_clip, studio)
    msg = await studio.until(lambda: studio.message_with("jb:clipvote:"), "the clip")
    clip = studio.clip(sid)
    assert clip is not None and clip.id is not None
    # Nothing allowed (the default): the post does not offer Publish at all.
    assert not any(c.startswith("jb:publish:") for c in custom_ids(msg)), custom_ids(msg)
    # A post made while publishing was allowed keeps its button (as a member's client shows it).
    from bot.features.clips.buttons import clip_view

    clip_id = clip.id
    shown = {**msg, "components": clip_view(clip_id).to_components()}

    async def press(member: str) -> Any:
        ix = await studio.fake.click(
            studio.members[member], int(msg["id"]), f"jb:publish:{clip_id}", seen=shown
        )
        return await studio.fake.settled(ix, timeout=20)

    # Its press is refused in words, nothing scheduled.
    refused = await press("mia")
    assert "the bot's owner has not allowed publishing from this server" in refused.text(), refused.text()
    assert publications(studio, clip.id) == []
    # The daily clip's upload scheduling asks the same question.
    from bot.features.clips import Clips

    assert studio.bot is not None
    note = await studio.bot.need(Clips).publish(clip.id, guild_id=studio.guild)
    assert "has not allowed publishing" in note and publications(studio, clip.id) == []
    assert studio.settings.publish.caption_moderation is None  # default: on for the shared account

    # /owner publish is for the application's owner only, not a server's owner or moderators.
    for member in ("owner", "mia"):
        ix = await studio.run(member, "owner publish", {"action": "allow"})
        assert "Only the bot's owner" in ix.text(), ix.text()
    # The application's owner (in the fake Discord: the bot's own user) allows this server.
    app_owner = studio.fake.app_id
    studio.fake.add_member(studio.guild, app_owner)
    studio.members["app-owner"] = app_owner
    ix = await studio.run("app-owner", "owner publish", {"action": "allow"})
    assert "Publishing is allowed from this server" in ix.text(), ix.text()
    openai_fake.moderation.append(Reply.moderation(False))  # the shared account: captions are checked
    ok = await press("mia")
    assert "scheduled for x, soundcloud" in ok.text(), ok.text()
    assert sorted(p.platform for p in publications(studio, clip.id)) == ["soundcloud", "x"]

    # The setting lists servers too (JUKEBOT_PUBLISH_GUILDS); the owner's deny wins over it.
    studio.settings.publish.guilds = [studio.guild]
    await studio.run("app-owner", "owner publish", {"action": "deny"})
    again = await press("mia")
    assert "has not allowed publishing" in again.text(), again.text()
    # Even one server on the operator's shared account has its captions moderated (the default).
    assert len(openai_fake.moderation_requests()) == 1


async def test_captions_are_moderated_when_servers_share_the_account(
    sqlite_studio: Studio, openai_fake: FakeOpenAI
) -> None:
    studio = sqlite_studio
    studio.settings.publish.guilds = [studio.guild]
    await studio.start_bot()
    await studio.run("owner", "mod role", {"role": studio.mod_role})
    sid = await studio.run_db(seed_clip, studio, "alice", artist="queen", genre="rock")
    msg = await studio.until(lambda: studio.message_with("jb:publish:"), "the clip")
    clip = studio.clip(sid)
    assert clip is not None and clip.id is not None

    # Two servers share the operator's account: a caption is moderated before it is scheduled.
    studio.settings.publish.guilds = [studio.guild, studio.guild + 1]
    openai_fake.moderation.append(Reply.moderation(True, "harassment"))
    flagged = await studio.click("mia", msg, f"jb:publish:{clip.id}")
    assert "did not pass moderation (harassment)" in flagged.text(), flagged.text()
    assert publications(studio, clip.id) == []
    (sent,) = openai_fake.moderation_requests()
    assert "queen" in str(sent.json).lower()

    openai_fake.moderation.append(Reply.moderation(False))
    ok = await studio.click("mia", msg, f"jb:publish:{clip.id}")
    assert "scheduled for x, soundcloud" in ok.text(), ok.text()

    # The operator may switch it off explicitly.
    studio.settings.publish.caption_moderation = False
    assert "scheduled" in (await studio.click("mia", msg, f"jb:publish:{clip.id}")).text()
    assert len(openai_fake.moderation_requests()) == 2


# ---------------------------------------------------------------- 3: DMs and the text model's bill


async def test_every_command_is_for_servers_only(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    await studio.start_bot()
    registered = studio.fake.global_commands
    assert {"generate", "continue", "mod", "lyrics", "Continue this clip", "help"} <= {
        c["name"] for c in registered
    }
    for command in registered:
        assert command.get("dm_permission") is False, command["name"]
        assert command.get("contexts") in (None, [0]), command["name"]  # 0: guild only


async def test_lyric_drafts_have_member_and_server_budgets(
    sqlite_studio: Studio, openai_fake: FakeOpenAI
) -> None:
    studio = sqlite_studio
    for _ in range(4):
        openai_fake.chat.append(Reply.text(LYRICS))
    await studio.start_bot()

    async def draft(member: str) -> str:
        ix = await studio.fake.command(
            studio.members[member], studio.channel, "lyrics draft", {"prompt": "rain"}
        )
        await studio.until(
            lambda: ix.original is not None and (ix.original.get("embeds") or "next" in ix.text()),
            "an answer",
            30,
        )
        return ix.text() if not (ix.original or {}).get("embeds") else "drafted"

    assert await draft("alice") == "drafted"
    assert await draft("alice") == "drafted"
    refused = await draft("alice")  # 2 per member per hour
    assert "2 lyric drafts an hour" in refused and "next one" in refused, refused
    assert await draft("bob") == "drafted"  # the server's third of the day
    refused = await draft("carol")
    assert "3 lyric drafts a day" in refused and "next one" in refused, refused
    # /generate lyrics_prompt: draws on the same budget.
    ix = await studio.run("carol", "generate", {"artist": "abba", "genre": "pop", "lyrics_prompt": "rain"})
    assert "3 lyric drafts a day" in ix.text(), ix.text()
    assert len(openai_fake.chat_requests()) == 3


# ---------------------------------------------------------------- 9: a double click makes one song


async def test_double_click_on_continue_makes_one_song(studio: Studio) -> None:
    fake = studio.fake
    await studio.start_bot()
    parent = await studio.run_db(seed_clip, studio, "alice")
    msg = await studio.until(lambda: studio.message_with("jb:continue:"), "the clip")
    clip = studio.clip(parent)
    assert clip is not None
    before = len(studio.songs())
    bob = studio.members["bob"]
    offer = (await studio.click("bob", msg, f"jb:continue:{clip.id}")).followups[-1]  # from the end
    first, second = await asyncio.gather(
        fake.click(bob, int(offer["id"]), f"jb:continue-end:{clip.id}", seen=offer),
        fake.click(bob, int(offer["id"]), f"jb:continue-end:{clip.id}", seen=offer),
    )
    await fake.settled(first, timeout=20)
    await fake.settled(second, timeout=20)
    songs = studio.songs()
    assert len(songs) == before + 1, [(s.id, s.request_key) for s in songs]
    child = songs[-1]
    assert song_id_from(first.text()) == song_id_from(second.text()) == child.id
    assert child.request_key in (str(first.id), str(second.id))  # the interaction that made it
    assert [s.id for s in songs if s.user_id == child.user_id] == [child.id]  # one of bob's slots


# ---------------------------------------------------------------- 10: deleted channels


async def test_song_whose_channels_were_deleted_falls_back_then_ends(studio: Studio) -> None:
    fake = studio.fake
    await studio.start_bot()
    drafts_ch, clips_ch, mods_ch = (fake.channel(studio.guild, n) for n in ("drafts", "clips", "mods"))
    await studio.run_db(
        update_guild,
        studio.db,
        studio.settings,
        studio.guild,
        drafts_channel_id=drafts_ch,
        clips_channel_id=clips_ch,
        mod_channel_id=mods_ch,
    )
    # The drafts channel is deleted: the drafts go to the song's channel, the moderators are told.
    fake.channel_guild.pop(drafts_ch)
    sid = song_id_from((await studio.run("alice", "generate", {"artist": "abba", "genre": "pop"})).text())
    await studio.run_db(finish_drafts, studio, sid)
    await studio.until(lambda: studio.message_with(f"jb:vote:{sid}:"), "the drafts, in the song's channel")
    await studio.until(
        lambda: any(f"<#{drafts_ch}>" in m["content"] for m in studio.bot_messages(mods_ch)),
        "a note to the mods",
    )

    # The song's channel is gone too: the clips channel takes them.
    third = song_id_from((await studio.run("carol", "generate", {"artist": "abba", "genre": "pop"})).text())
    fake.channel_guild.pop(studio.channel)
    await studio.run_db(finish_drafts, studio, third)
    await studio.until(
        lambda: studio.message_with(f"jb:vote:{third}:", clips_ch), "the drafts, in the clips channel"
    )
    fake.channel_guild[studio.channel] = studio.guild  # (back, for the next request)

    # Every channel gone: a bounded number of tries, then the song ends, free for the member.
    other = song_id_from((await studio.run("bob", "generate", {"artist": "abba", "genre": "pop"})).text())
    for ch in (clips_ch, studio.channel):
        fake.channel_guild.pop(ch)
    await studio.run_db(finish_drafts, studio, other)
    await studio.until_db(
        lambda: studio.song(other).status == SongStatus.failed, "the song to end", timeout=20
    )
    song = studio.song(other)
    assert song.error is not None and "does not count against" in song.error, song.error
    await studio.until(
        lambda: any(f"song #{other}" in m["content"].lower() for m in studio.bot_messages(mods_ch)),
        "the moderators told",
    )
    # The same for a finished clip with nowhere to go.
    lost = await studio.run_db(seed_clip, studio, "carol")
    await studio.until_db(lambda: studio.song(lost).status == SongStatus.failed, "the clip's song to end")
    assert "does not count against" in (studio.song(lost).error or "")


# ---------------------------------------------------------------- 11: a crash between close and edit


async def test_open_drafts_message_of_a_closed_vote_is_closed_on_start(studio: Studio) -> None:
    await studio.start_bot()
    sid = song_id_from((await studio.run("alice", "generate", {"artist": "abba", "genre": "pop"})).text())
    await studio.run_db(finish_drafts, studio, sid)
    msg = await studio.until(lambda: studio.message_with(f"jb:vote:{sid}:"), "the drafts message")
    await studio.until_db(lambda: studio.drafts(sid)[0].message_id, "the drafts message recorded")
    await studio.stop_bot()
    # The vote closed in the database, then the bot died before editing the message.
    closed = await studio.run_db(lifecycle.close_vote, studio.db, sid, force=True)
    assert closed is not None
    assert not any(b.get("disabled") for b in buttons(studio.fake.messages[int(msg["id"])]))

    await studio.start_bot()

    def closed_form() -> bool:
        now = studio.fake.messages[int(msg["id"])]
        return (
            "Voting closed" in now["content"]
            and all(
                b.get("disabled") for b in buttons(now) if str(b.get("custom_id", "")).startswith("jb:vote:")
            )
            and not any(c.startswith("jb:close:") for c in custom_ids(now))
        )

    await studio.until(closed_form, "the drafts message in its closed form")


# ---------------------------------------------------------------- 15: which part of an upload is used


async def test_long_upload_says_which_part_is_used_and_takes_at(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    fake = studio.fake
    await studio.start_bot()
    style = {"artist": "abba", "genre": "pop"}
    long = fake.host_file("long.wav", tone_wav(440.0, 60.0), content_type="audio/x-wav")

    ix = await studio.run("alice", "continue", {"audio": long, **style})
    assert "Using 0:00–0:30 of `long.wav`: the new music starts at 0:30" in ix.text(), ix.text()

    # at: is where the new music starts: the 30 s before it are used (JUKEBOT_MAX_PRIME_SECONDS).
    ix = await studio.run("alice", "continue", {"audio": long, "at": "0:42", **style})
    assert "Using 0:12–0:42 of `long.wav`: the new music starts at 0:42" in ix.text(), ix.text()
    song = studio.song(song_id_from(ix.text()))
    assert song.prime_seconds == pytest.approx(30.0, abs=0.1) and song.prime_at == pytest.approx(42.0)
    assert song.prime_key is not None
    with bytes_as_file(studio.storage.read_bytes(song.prime_key), ".wav") as path:
        assert probe(path).duration == pytest.approx(30.0, abs=0.1)  # the chosen part, stored

    ix = await studio.run("alice", "continue", {"audio": long, "at": "2:00", **style})
    assert "`2:00` is past the end of `long.wav` (1:00 long)" in ix.text(), ix.text()
    ix = await studio.run("alice", "continue", {"audio": long, "at": "-0:10", **style})
    assert "`-0:10` is before the start of `long.wav`" in ix.text(), ix.text()
    ix = await studio.run("alice", "continue", {"audio": long, "at": "0", **style})
    assert "`0` is the very start of `long.wav`" in ix.text(), ix.text()
    ix = await studio.run("alice", "continue", {"audio": long, "at": "soon", **style})
    assert "`soon` is not a moment in `long.wav`" in ix.text(), ix.text()
