"""Moderation of drafted and written lyrics: the server's blocklist and the moderation endpoint (a
local fake OpenAI-compatible server, the real `openai` client)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from db.settings import Settings
from lyrics.draft import draft_lyrics
from lyrics.errors import LyricsInputError, LyricsRejected, ModerationUnavailable
from lyrics.moderation import blocklist_hits, mask, moderate
from lyrics.request import make_request
from lyrics.written import prepare_lyrics
from tests.fakes.openai_server import FakeOpenAI, Reply

SONG = "[Verse]\nNeon rain on the window\nI count the cars below"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def make_settings(server: FakeOpenAI | None = None, **kw: Any) -> Settings:
    values: dict[str, Any] = dict(
        openai_base_url=server.base_url if server else None,
        openai_api_key=SecretStr("sk-test-key") if server else None,
        lyrics_model="songwriter-7b" if server else None,
        lyrics_timeout=2.0,
        model="1b_lyrics",
    )
    values.update(kw)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def no_sleep(seconds: float) -> None:
    pass


# ------------------------------------------------------------------------------------------------
# Blocklist


def test_blocklist_matches_whole_words_in_any_case() -> None:
    text = "I said Darn it\nthe darning needle\nDARN!"
    hits = blocklist_hits(text, ["darn"])
    assert [(h.entry, h.line) for h in hits] == [("darn", 1)]  # first place, whole word only
    assert blocklist_hits("the darning needle", ["darn"]) == []
    assert blocklist_hits("DARN!", ["darn"])[0].line == 1


def test_blocklist_phrases_and_punctuation() -> None:
    assert blocklist_hits("we love\nrock  music", ["rock music"])[0].line == 2
    assert blocklist_hits("rockmusic", ["rock music"]) == []
    assert blocklist_hits("a c++ song", ["c++"])[0].entry == "c++"
    assert blocklist_hits("anything", ["", "  "]) == []


def test_mask() -> None:
    assert mask("darn") == "d**n"
    assert mask("ok") == "o*"
    assert mask("x") == "x"


async def test_blocklist_reason_is_clear_and_masked() -> None:
    cfg = make_settings(lyrics_blocklist=["darn", "heck"])
    result = await moderate("oh heck\nwhat the DARN", settings=cfg)
    assert not result.allowed and result.source == "blocklist"
    assert result.reason == (
        'These lyrics contain words this server does not allow ("h**k" on line 1, "d**n" on line 2); '
        "please change them."
    )
    assert "darn" not in (result.reason or "").lower()


async def test_clean_lyrics_pass_without_any_server() -> None:
    result = await moderate(SONG, settings=make_settings(lyrics_blocklist=["darn"]))
    assert result.allowed and result.source == "none"


# ------------------------------------------------------------------------------------------------
# Moderation endpoint


async def test_endpoint_flags_with_categories(server: FakeOpenAI) -> None:
    cfg = make_settings(server, moderation=True)
    server.moderation.append(Reply.moderation(True, "violence", "harassment/threatening"))
    result = await moderate("some words", settings=cfg)
    assert not result.allowed and result.source == "endpoint"
    assert result.categories == ("harassment (threatening)", "violence")
    assert result.reason == (
        "These lyrics were flagged by the moderation service (harassment (threatening), violence); "
        "please change them."
    )
    (sent,) = server.moderation_requests()
    assert sent.json["input"] == "some words"
    assert sent.headers["authorization"] == "Bearer sk-test-key"


async def test_endpoint_allows(server: FakeOpenAI) -> None:
    cfg = make_settings(server, moderation=True)
    server.moderation.append(Reply.moderation(False))
    result = await moderate(SONG, settings=cfg)
    assert result.allowed and result.source == "endpoint"


async def test_endpoint_off_means_no_request(server: FakeOpenAI) -> None:
    result = await moderate(SONG, settings=make_settings(server, moderation=False))
    assert result.allowed and server.moderation_requests() == []


async def test_blocklist_applies_before_the_endpoint(server: FakeOpenAI) -> None:
    cfg = make_settings(server, moderation=True, lyrics_blocklist=["neon"])
    result = await moderate(SONG, settings=cfg)
    assert result.source == "blocklist" and server.moderation_requests() == []


async def test_endpoint_errors_are_retried(server: FakeOpenAI) -> None:
    cfg = make_settings(server, moderation=True)
    server.moderation.extend(
        [Reply.server_error(), Reply.malformed('{"results": []}'), Reply.moderation(False)]
    )
    result = await moderate(SONG, settings=cfg, sleep=no_sleep)
    assert result.allowed and len(server.moderation_requests()) == 3


async def test_endpoint_down_holds_the_lyrics_back(server: FakeOpenAI) -> None:
    cfg = make_settings(server, moderation=True)
    server.moderation.extend([Reply.server_error()] * 3)
    with pytest.raises(ModerationUnavailable, match="moderation service did not answer"):
        await moderate(SONG, settings=cfg, sleep=no_sleep)


async def test_endpoint_on_but_not_configured() -> None:
    with pytest.raises(ModerationUnavailable, match="no moderation service is configured"):
        await moderate(SONG, settings=make_settings(moderation=True))


async def test_unknown_endpoint_path_is_unavailable(server: FakeOpenAI) -> None:
    # e.g. Ollama has chat completions but no /v1/moderations
    cfg = make_settings(server, moderation=True, openai_base_url=server.base_url.replace("/v1", "/nothing"))
    with pytest.raises(ModerationUnavailable, match="no usable moderation endpoint"):
        await moderate(SONG, settings=cfg, sleep=no_sleep)
    assert len(server.requests) == 1  # a missing endpoint is not retried


# ------------------------------------------------------------------------------------------------
# Drafted and written lyrics go through it


async def test_drafted_lyrics_are_moderated(server: FakeOpenAI) -> None:
    cfg = make_settings(server, moderation=True)
    server.chat.append(Reply.text(SONG))
    server.moderation.append(Reply.moderation(True, "hate"))
    request = make_request("rain", settings=cfg, seconds=20)
    with pytest.raises(LyricsRejected) as err:
        await draft_lyrics(request, settings=cfg)
    assert str(err.value) == (
        "The drafted lyrics were flagged by the moderation service (hate); press Regenerate or change the prompt."
    )
    # what was checked is what would be sung
    assert server.moderation_requests()[0].json["input"] == SONG


async def test_drafted_lyrics_against_the_blocklist(server: FakeOpenAI) -> None:
    cfg = make_settings(server, lyrics_blocklist=["cars"])
    server.chat.append(Reply.text(SONG))
    with pytest.raises(LyricsRejected, match=r'"c\*\*s" on line 3'):
        await draft_lyrics(make_request("rain", settings=cfg, seconds=20), settings=cfg)


async def test_written_lyrics_work_without_a_text_model() -> None:
    cfg = make_settings()  # no server, no model, no key
    fitted = await prepare_lyrics("Rain on the window 🌧️\nI count the cars", 10, settings=cfg)
    assert fitted.lyrics == "Rain on the window\nI count the cars"
    assert "removed 1 emoji" in fitted.notes


async def test_written_lyrics_are_moderated(server: FakeOpenAI) -> None:
    cfg = make_settings(server, moderation=True)
    server.moderation.append(Reply.moderation(True, "sexual"))
    with pytest.raises(
        LyricsRejected, match=r"^These lyrics were flagged .*\(sexual\); please change them\.$"
    ):
        await prepare_lyrics(SONG, 10, settings=cfg)


async def test_written_lyrics_blocklist() -> None:
    cfg = make_settings(lyrics_blocklist=["Window"])
    with pytest.raises(LyricsRejected, match="does not allow"):
        await prepare_lyrics(SONG, 10, settings=cfg)


async def test_written_lyrics_too_long_to_read() -> None:
    cfg = make_settings()
    with pytest.raises(LyricsInputError, match="10,000 characters; the most I take is 4,000"):
        await prepare_lyrics("la " * 3333 + "x", 10, settings=cfg)


async def test_written_lyrics_longer_than_the_clip_are_fitted() -> None:
    cfg = make_settings()
    text = "\n\n".join(f"[Verse {i}]\nline {i} a\nline {i} b" for i in range(1, 30))
    fitted = await prepare_lyrics(text, 5, settings=cfg)
    assert len(fitted.lyrics) <= 107
    assert any(n.startswith("shortened from") and "to fit 5 s" in n for n in fitted.notes)
