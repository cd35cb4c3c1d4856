"""`/generate ... lyrics_prompt:` — the text model drafts the lyrics first (the lyrics feature's card,
against the fake OpenAI-compatible server); nothing is queued until the member presses Use, and
then the song is queued with those lyrics and the artist and genre of the command."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.bot_harness import Studio
from tests.fakes.discord import buttons
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.test_bot_e2e import song_id_from

pytest_plugins = ["tests.bot_fixtures"]


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def studio_overrides(openai_fake: FakeOpenAI) -> dict[str, Any]:
    return {"openai_base_url": openai_fake.base_url, "lyrics_model": "songwriter-7b", "lyrics_timeout": 5.0}


async def test_generate_with_a_lyrics_prompt_queues_on_use(
    sqlite_studio: Studio, openai_fake: FakeOpenAI
) -> None:
    studio = sqlite_studio
    fake = studio.fake
    openai_fake.chat.append(Reply.text("[Verse]\nSalt on the wind\nWe sail at dawn"))
    await studio.start_bot()

    # A wrong artist is caught before the text model is asked.
    bad = await studio.run(
        "alice", "generate", {"artist": "abbba x", "genre": "pop", "lyrics_prompt": "the sea"}
    )
    assert "Did you mean" in bad.text() and openai_fake.chat_requests() == []

    ix = await fake.command(
        studio.members["alice"],
        studio.channel,
        "generate",
        {"artist": "abba", "genre": "pop", "seconds": 8, "lyrics_prompt": "sailing at dawn"},
    )
    await studio.until(
        lambda: ix.original is not None and ix.original.get("embeds"), "the lyrics card", timeout=30
    )
    assert ix.is_ephemeral() and studio.songs() == []  # nothing queued yet
    card = ix.original
    assert card is not None
    sent = openai_fake.chat_requests()[0].json
    assert "sailing at dawn" in sent["messages"][1]["content"]
    use_id = next(b["custom_id"] for b in buttons(card) if b.get("label") == "Use")

    use = await fake.settled(
        await fake.click(studio.members["alice"], int(card["id"]), use_id, seen=card), timeout=20
    )
    assert "is in the studio" in use.text(), use.text()
    song = studio.song(song_id_from(use.text()))
    assert (song.artist, song.genre, song.seconds) == ("abba", "pop", 8.0)
    assert song.lyrics == "[Verse]\nSalt on the wind\nWe sail at dawn"
    await studio.until(lambda: studio.message_with(f"jb:cancel:{song.id}"), "the song's status message")


async def test_lyrics_prompt_without_a_text_model_says_so(sqlite_studio: Studio) -> None:
    studio = sqlite_studio
    studio.settings.lyrics.model = None
    await studio.start_bot()
    ix = await studio.run("alice", "generate", {"artist": "abba", "genre": "pop", "lyrics_prompt": "the sea"})
    assert "no text model is configured" in ix.text() and studio.songs() == []
    # Written lyrics still work without one.
    ix = await studio.run("alice", "generate", {"artist": "abba", "genre": "pop", "lyrics": "la la la"})
    assert "is in the studio" in ix.text()
