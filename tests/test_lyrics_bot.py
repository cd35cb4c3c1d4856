"""`/lyrics draft` end to end: the real bot (discord.py) against the fake Discord, the text model a
fake OpenAI-compatible server, both on loopback. Streamed edits, the card, Edit (modal),
Regenerate, a stranger's click, and Use handing the lyrics to the song queue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.bot_fixtures import Studio, sqlite_studio  # noqa: F401  (fixture)
from tests.fakes.discord import FakeInteraction, buttons
from tests.fakes.openai_server import FakeOpenAI, Reply

REPLY = (
    "Sure! Here are your lyrics:\n\n**Verse 1**\nNeon rain on the window 🌧️\nI count the cars below\n\n"
    "**Chorus**\nHold on, hold on\nThe night is young"
)
CLEAN = "[Verse 1]\nNeon rain on the window\nI count the cars below\n\n[Chorus]\nHold on, hold on\nThe night is young"


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def studio_overrides(openai_fake: FakeOpenAI) -> dict[str, Any]:
    return {"openai_base_url": openai_fake.base_url, "lyrics_model": "songwriter-7b", "lyrics_timeout": 5.0}


def card(ix: FakeInteraction) -> dict[str, Any]:
    """The draft card as the member sees it now (an ephemeral message lives on its interaction)."""
    assert ix.original is not None
    return ix.original


def description(message: dict[str, Any]) -> str:
    embeds = message.get("embeds") or []
    return str(embeds[0].get("description", "")) if embeds else ""


def button_id(message: dict[str, Any], label: str) -> str:
    return next(str(b["custom_id"]) for b in buttons(message) if b.get("label") == label)


async def test_lyrics_draft_card_edit_regenerate_use(sqlite_studio: Studio, openai_fake: FakeOpenAI) -> None:  # noqa: F811
    s = sqlite_studio
    alice, bob = s.members["alice"], s.members["bob"]
    openai_fake.chat.append(Reply.text(REPLY, chunk_delay=0.15))
    await s.start_bot()

    ix = await s.fake.command(
        alice,
        s.channel,
        "lyrics draft",
        {"prompt": "rain on the city", "artist": "the beatles", "genre": "rock", "seconds": 20},
    )
    await s.until(lambda: ix.original is not None and ix.original.get("embeds"), "the draft card", timeout=30)
    assert ix.is_ephemeral()
    assert ix.original is not None
    mid = int(ix.original["id"])
    streamed = [e.get("content") or "" for e in s.fake.edits[mid]]
    assert any(
        "Drafting lyrics" in c and "Neon rain" in c and "Hold on" not in c for c in streamed
    )  # partial text

    shown = card(ix)
    assert mid not in s.fake.messages  # ephemeral: only alice sees it
    assert description(shown) == f"```\n{CLEAN}\n```"
    embed = shown["embeds"][0]
    assert embed["title"] == "Lyrics draft: rain on the city"
    assert "removed 1 emoji" in embed["fields"][0]["value"]
    assert embed["footer"]["text"].startswith("20 s · style: The Beatles, rock")
    assert [b["label"] for b in buttons(shown)] == ["Use", "Regenerate", "Edit"]
    sent = openai_fake.chat_requests()[0].json
    assert sent["model"] == "songwriter-7b" and "rain on the city" in sent["messages"][1]["content"]

    # Someone else's click is refused and changes nothing.
    stranger = await s.fake.settled(await s.fake.click(bob, mid, button_id(shown, "Use"), seen=shown))
    assert "This draft belongs to" in stranger.text()
    assert s.songs() == []

    # Edit: a modal with the lyrics; the submitted words are fitted and shown.
    opened = await s.fake.settled(await s.fake.click(alice, mid, button_id(shown, "Edit"), seen=shown))
    modal = opened.modal
    assert modal is not None
    field_id = _text_input_id(modal)
    await s.fake.submit_modal(alice, opened, {field_id: "My own words 🎤\nsecond line"})
    await s.until(lambda: "My own words" in description(card(ix)), "the edited card")
    assert card(ix)["embeds"][0]["title"].startswith("Your lyrics (edited)")

    # Regenerate: a new draft streams into the same message.
    openai_fake.chat.append(Reply.text("[Verse]\nA second take on the rain"))
    await s.fake.click(alice, mid, button_id(card(ix), "Regenerate"), seen=card(ix))
    await s.until(lambda: "A second take" in description(card(ix)), "the regenerated card")
    assert not any(b.get("disabled") for b in buttons(card(ix)))

    # Use: the generate feature queues a song with these lyrics; the buttons are switched off.
    use = await s.fake.settled(
        await s.fake.click(alice, mid, button_id(card(ix), "Use"), seen=card(ix)), timeout=20
    )
    await s.until(lambda: s.songs(), "the queued song")
    (song,) = s.songs()
    assert song.artist.replace("_", " ") == "the beatles" and song.genre == "rock"
    assert song.lyrics == "[Verse]\nA second take on the rain"
    await s.until(lambda: all(b.get("disabled") for b in buttons(card(ix))), "the buttons switched off")
    assert "Traceback" not in use.text()


async def test_lyrics_draft_failures_are_plain(sqlite_studio: Studio, openai_fake: FakeOpenAI) -> None:  # noqa: F811
    s = sqlite_studio
    openai_fake.chat.extend([Reply.server_error()] * 3)
    await s.start_bot()
    ix = await s.run("alice", "lyrics draft", {"prompt": "rain"})
    await s.until(lambda: "server had an error" in ix.text(), "the failure message", timeout=30)
    assert "write your own lyrics" in ix.text()

    bad = await s.run("alice", "lyrics draft", {"prompt": "rain", "seconds": 5000})
    assert "between 1 and 60 seconds" in bad.text() and bad.is_ephemeral()
    assert len(openai_fake.chat_requests()) == 3


def _text_input_id(modal: dict[str, Any]) -> str:
    for row in modal["components"]:
        for c in row.get("components") or [row.get("component") or {}]:
            if c.get("type") == 4:
                return str(c["custom_id"])
    raise AssertionError(f"no text input in {modal}")
