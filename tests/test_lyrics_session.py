"""The logic behind the lyrics draft view (who may press, regenerate cap, edit, use), the streamed
previews and the wording, tested without Discord. The text model is the local fake server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from db.settings import Settings
from lyrics.draft import LyricsDraft, draft_lyrics
from lyrics.errors import LyricsInputError, LyricsRejected
from lyrics.present import (
    DRAFTING,
    EditThrottle,
    draft_card,
    fit_for_message,
    generate_hint,
    notes_text,
    one_line,
    partial_preview,
)
from lyrics.request import make_request
from lyrics.session import DraftSession, stream_with_previews
from tests.fakes.openai_server import FakeOpenAI, Reply

SONG = "[Verse]\nNeon rain on the window\nI count the cars below\n\n[Chorus]\nHold on, hold on"
AUTHOR, OTHER = 1001, 2002


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def make_settings(server: FakeOpenAI, **kw: Any) -> Settings:
    values: dict[str, Any] = dict(
        openai_base_url=server.base_url,
        openai_api_key=SecretStr("sk-test-key"),
        lyrics_model="songwriter-7b",
        lyrics_timeout=5.0,
        model="1b_lyrics",
    )
    values.update(kw)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def a_draft(server: FakeOpenAI, cfg: Settings, text: str = SONG) -> LyricsDraft:
    server.chat.append(Reply.text(text))
    request = make_request("rain", settings=cfg, seconds=20, artist="the weeknd", genre="synthpop")
    return await draft_lyrics(request, settings=cfg)


class Clock:
    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


# ------------------------------------------------------------------------------------------------
# Wording


def test_edit_throttle() -> None:
    clock = Clock(0.25)
    throttle = EditThrottle(1.0, clock=clock)
    pattern = [throttle.due() for _ in range(9)]
    assert pattern == [True, False, False, False, True, False, False, False, True]


def test_partial_preview() -> None:
    assert partial_preview("") == DRAFTING
    assert partial_preview("", attempt=2, attempts=3) == f"{DRAFTING} (trying again, attempt 2 of 3)"
    shown = partial_preview("la la\nla")
    assert shown == f"{DRAFTING}\n```\nla la\nla\n```"
    long = partial_preview("word " * 1000 + "THE END", limit=500)
    assert len(long) <= 500 and long.rstrip("`\n").endswith("THE END") and "…" in long
    assert partial_preview("```python\nx\n```").count("```") == 2  # the model's fences cannot break ours


def test_notes_text() -> None:
    assert notes_text(()) == ""
    assert notes_text(("removed 3 emoji", "shortened")) == "Changes:\n• removed 3 emoji\n• shortened"
    many = notes_text([f"note {i} " + "x" * 80 for i in range(40)], limit=1000)
    assert len(many) <= 1000 and many.endswith("• …")


def test_generate_hint_fits_a_message_and_a_slash_option() -> None:
    lyrics = "\n".join(f"line {i} of the song goes here" for i in range(45))  # ~1,300 chars: 60 s worth
    hint = fit_for_message(generate_hint(lyrics, artist="the weeknd", genre="synthpop", seconds=60))
    assert len(hint) <= 2000
    assert "/generate artist:the weeknd genre:synthpop seconds:60 lyrics:" in hint
    assert one_line("a\nb\n\nc") == "a \\ b \\ c"
    # what the member pastes back reads as the same lyrics
    from lyrics.fit import fit_lyrics

    assert fit_lyrics(one_line("a b\nc d"), 10).lyrics == "a b\nc d"


def test_fit_for_message_closes_code_blocks() -> None:
    text = "head\n```\n" + "x" * 3000 + "\n```"
    out = fit_for_message(text)
    assert len(out) <= 2000 and out.count("```") == 2


async def test_draft_card(server: FakeOpenAI) -> None:
    cfg = make_settings(server)
    draft = await a_draft(server, cfg, "Sure! Here is a song about rain:\n" + SONG + " 🌧️")
    card = draft_card(draft)
    assert card.title == "Lyrics draft: rain"
    assert card.body == f"```\n{SONG}\n```"
    assert card.changes.startswith("Changes:\n• ") and "removed 1 emoji" in card.changes
    assert card.footer == f"20 s · style: The Weeknd, synthpop · {len(SONG)} of 430 characters"


# ------------------------------------------------------------------------------------------------
# The session behind the buttons


async def test_only_the_author_may_press(server: FakeOpenAI) -> None:
    session = DraftSession(await a_draft(server, make_settings(server)), author_id=AUTHOR)
    assert session.refuse(AUTHOR) is None
    assert session.refuse(OTHER) == f"This draft belongs to <@{AUTHOR}>; run `/lyrics draft` for your own."
    session.start()
    assert "still working" in (session.refuse(AUTHOR) or "")
    session.regenerated(None)
    assert session.refuse(AUTHOR) is None
    assert session.use() == SONG
    assert session.refuse(AUTHOR) == "These lyrics were already used."


async def test_regenerations_are_capped_and_a_failure_keeps_the_draft(server: FakeOpenAI) -> None:
    cfg = make_settings(server)
    first = await a_draft(server, cfg)
    session = DraftSession(first, author_id=AUTHOR, max_regenerations=2)
    session.start()
    session.regenerated(None)  # the text model failed
    assert session.draft is first and session.regenerations == 0
    for _ in range(2):
        assert session.refuse_regenerate() is None
        session.start()
        session.regenerated(await a_draft(server, cfg, "[Verse]\nanother take"))
    assert session.draft.lyrics == "[Verse]\nanother take"
    assert "2 new drafts already" in (session.refuse_regenerate() or "")


async def test_edit_fits_and_marks_the_draft(server: FakeOpenAI) -> None:
    cfg = make_settings(server)
    session = DraftSession(await a_draft(server, cfg), author_id=AUTHOR)
    edited = await session.edit("My own words 🎤\nsecond line", settings=cfg)
    assert edited.edited and edited.lyrics == "My own words\nsecond line"
    assert edited.notes == ("removed 1 emoji",)
    assert edited.request.prompt == "rain"  # the request (artist, genre, seconds) stays
    assert draft_card(edited).title.startswith("Your lyrics (edited)")
    assert session.use() == "My own words\nsecond line"


async def test_a_rejected_edit_changes_nothing(server: FakeOpenAI) -> None:
    cfg = make_settings(server, lyrics_blocklist=["darn"])
    session = DraftSession(await a_draft(server, cfg), author_id=AUTHOR)
    with pytest.raises(LyricsRejected):
        await session.edit("darn it", settings=cfg)
    with pytest.raises(LyricsInputError):
        await session.edit("🎤🎤", settings=cfg)
    assert session.draft.lyrics == SONG and not session.draft.edited and not session.busy


# ------------------------------------------------------------------------------------------------
# Streamed previews


async def test_previews_are_throttled(server: FakeOpenAI) -> None:
    cfg = make_settings(server)
    words = " ".join(f"w{i}" for i in range(40))
    server.chat.append(Reply.text(words))
    shown: list[str] = []

    async def show(text: str) -> None:
        shown.append(text)

    request = make_request("rain", settings=cfg, seconds=20)
    draft = await stream_with_previews(
        request, settings=cfg, show=show, throttle=EditThrottle(1.0, clock=Clock(0.25))
    )
    assert draft.lyrics == words
    assert len(shown) == 10  # 40 partial texts, one edit per simulated second
    assert all(s.startswith(DRAFTING) for s in shown)


async def test_a_retry_is_shown_at_once(server: FakeOpenAI) -> None:
    cfg = make_settings(server)
    server.chat.extend([Reply.server_error(), Reply.text(SONG)])
    shown: list[str] = []

    async def show(text: str) -> None:
        shown.append(text)

    async def no_sleep(seconds: float) -> None:
        pass

    request = make_request("rain", settings=cfg, seconds=20)
    clock = Clock(0.0)  # time stands still: only the first preview and the retry notice get through
    await stream_with_previews(
        request, settings=cfg, show=show, throttle=EditThrottle(1.0, clock=clock), sleep=no_sleep
    )
    notice = f"{DRAFTING} (trying again after a server error, attempt 2 of 3)"
    assert len(shown) == 2
    assert shown[0] == notice
    assert shown[1].startswith(notice + "\n```\n[Verse]")  # the first words of the new attempt
