"""Lyric drafting against a local fake OpenAI-compatible server, through the real `openai` client."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from db.settings import Settings
from lyrics.draft import DraftStream, draft_lyrics
from lyrics.errors import LyricsModelError, LyricsUnavailable
from lyrics.fit import alphabet
from lyrics.request import LyricsRequest, make_request, max_tokens
from tests.fakes.openai_server import FakeOpenAI, Reply

SONG = "[Verse]\nNeon rain on the window\nI count the cars below\n\n[Chorus]\nHold on, hold on\nThe night is young"


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
        lyrics_attempts=3,
        lyrics_max_retry_after=30.0,
        model="1b_lyrics",
    )
    values.update(kw)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def cfg(server: FakeOpenAI) -> Settings:
    return make_settings(server)


def request_for(
    settings: Settings, prompt: str = "rain in a neon city", seconds: float = 20, **kw: Any
) -> LyricsRequest:
    return make_request(
        prompt, settings=settings, seconds=seconds, artist="the_weeknd", genre="synthpop", **kw
    )


class Sleeps:
    """Records the pauses between attempts instead of waiting them out."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


# ------------------------------------------------------------------------------------------------
# The request


async def test_request_carries_prompt_model_and_limits(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.append(Reply.text(SONG))
    request = request_for(cfg, mood="restless", language="English")
    draft = await draft_lyrics(request, settings=cfg)

    assert draft.lyrics == SONG
    assert draft.notes == ()
    (sent,) = server.chat_requests()
    body = sent.json
    assert sent.headers["authorization"] == "Bearer sk-test-key"
    assert body["model"] == "songwriter-7b"
    assert body["stream"] is True
    assert body["max_tokens"] == max_tokens(request)
    assert 96 <= body["max_tokens"] <= 2048
    system, user = body["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    assert "rain in a neon city" in user["content"]
    assert "20 seconds" in system["content"]
    assert "430 characters" in system["content"]  # the hard budget for 20 s
    assert "The Weeknd" in system["content"]
    assert "synthpop" in system["content"]
    assert "restless" in system["content"]
    assert "English" in system["content"]
    assert "[Chorus]" in system["content"]  # 1b_lyrics has brackets: ask for labels


async def test_budget_follows_seconds(server: FakeOpenAI, cfg: Settings) -> None:
    short = request_for(cfg, seconds=5)
    long = request_for(cfg, seconds=60)
    assert short.budget.max_chars == 107 and long.budget.max_chars == 1291
    assert max_tokens(short) < max_tokens(long)


async def test_local_server_without_key_uses_placeholder(server: FakeOpenAI) -> None:
    cfg = make_settings(server, openai_api_key=None)
    server.chat.append(Reply.text(SONG))
    await draft_lyrics(request_for(cfg), settings=cfg)
    assert server.chat_requests()[0].headers["authorization"] == "Bearer not-needed"


# ------------------------------------------------------------------------------------------------
# Streaming


async def test_streaming_yields_growing_text(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.append(Reply.text(SONG, chunk_delay=0.01))
    drafting = DraftStream(request_for(cfg), settings=cfg)
    seen = [text async for text in drafting]
    assert len(seen) >= 10  # one per word
    assert all(b.startswith(a) for a, b in itertools.pairwise(seen))
    assert seen[-1] == SONG
    assert drafting.draft is not None and drafting.draft.lyrics == SONG
    assert drafting.draft.attempts == 1


async def test_on_partial_accepts_sync_and_async_callbacks(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.extend([Reply.text(SONG), Reply.text(SONG)])
    got: list[str] = []
    await draft_lyrics(request_for(cfg), settings=cfg, on_partial=got.append)

    async def record(text: str) -> None:
        got.append(text)

    before = len(got)
    await draft_lyrics(request_for(cfg), settings=cfg, on_partial=record)
    assert before > 1 and len(got) > before + 1


async def test_non_streaming_mode(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.append(Reply.text(SONG))
    draft = await draft_lyrics(request_for(cfg), settings=cfg, stream=False)
    assert draft.lyrics == SONG
    assert "stream" not in server.chat_requests()[0].json


# ------------------------------------------------------------------------------------------------
# Retries within bounds, then a clear message


async def test_timeouts_are_retried_then_explained(server: FakeOpenAI) -> None:
    cfg = make_settings(server, lyrics_timeout=0.3)
    server.chat.extend([Reply.slow(3), Reply.slow(3), Reply.slow(3), Reply.text(SONG)])
    sleeps = Sleeps()
    with pytest.raises(LyricsModelError) as err:
        await draft_lyrics(request_for(cfg), settings=cfg, sleep=sleeps)
    assert str(err.value) == "The lyrics model did not answer in time; try again or write your own lyrics."
    assert err.value.kind == "timeout" and err.value.attempts == 3
    assert len(server.chat_requests()) == 3  # the bound holds: the 4th reply was never asked for
    assert len(sleeps.pauses) == 2 and all(0 < p <= 8 for p in sleeps.pauses)


async def test_a_slow_first_answer_then_success(server: FakeOpenAI) -> None:
    cfg = make_settings(server, lyrics_timeout=0.3)
    server.chat.extend([Reply.slow(3), Reply.text(SONG)])
    draft = await draft_lyrics(request_for(cfg), settings=cfg, sleep=Sleeps())
    assert draft.lyrics == SONG and draft.attempts == 2


async def test_a_stream_that_stalls_times_out(server: FakeOpenAI) -> None:
    cfg = make_settings(server, lyrics_timeout=0.4, lyrics_attempts=2)
    server.chat.extend([Reply.text(SONG, stall_after=3), Reply.text(SONG, stall_after=3)])
    seen: list[str] = []
    with pytest.raises(LyricsModelError) as err:
        await draft_lyrics(request_for(cfg), settings=cfg, sleep=Sleeps(), on_partial=seen.append)
    assert err.value.kind == "timeout"
    assert "" in seen[1:]  # the front end was told to clear the first attempt's text


async def test_time_spent_showing_text_does_not_count_as_waiting(server: FakeOpenAI) -> None:
    cfg = make_settings(server, lyrics_timeout=0.5)
    server.chat.append(Reply.text(SONG))

    async def slow_front_end(text: str) -> None:
        await asyncio.sleep(0.1)  # e.g. a Discord edit; 11 words * 0.1 s > the 0.5 s timeout

    draft = await draft_lyrics(request_for(cfg), settings=cfg, on_partial=slow_front_end)
    assert draft.attempts == 1


async def test_429_waits_as_long_as_retry_after_says(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.extend(
        [Reply.rate_limited(retry_after=7), Reply.rate_limited(retry_after="2.5"), Reply.text(SONG)]
    )
    sleeps = Sleeps()
    draft = await draft_lyrics(request_for(cfg), settings=cfg, sleep=sleeps)
    assert draft.attempts == 3
    assert sleeps.pauses == [7.0, 2.5]


async def test_retry_reason_is_told(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.extend([Reply.rate_limited(retry_after=1), Reply.text(SONG)])
    drafting = DraftStream(request_for(cfg), settings=cfg, sleep=Sleeps())
    reasons = [(drafting.attempt, drafting.retry_reason) async for _ in drafting]
    assert reasons[0] == (2, "the model was busy")


async def test_429_retry_after_really_waits(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.extend([Reply.rate_limited(retry_after=1), Reply.text(SONG)])
    await draft_lyrics(request_for(cfg), settings=cfg)
    first, second = server.chat_requests()
    assert second.at - first.at >= 0.95


async def test_429_retry_after_beyond_the_cap_gives_up_at_once(server: FakeOpenAI) -> None:
    cfg = make_settings(server, lyrics_max_retry_after=10)
    server.chat.extend([Reply.rate_limited(retry_after=600), Reply.text(SONG)])
    sleeps = Sleeps()
    with pytest.raises(LyricsModelError) as err:
        await draft_lyrics(request_for(cfg), settings=cfg, sleep=sleeps)
    assert err.value.kind == "rate_limited"
    assert "wait 10 minutes" in str(err.value) and "write your own lyrics" in str(err.value)
    assert len(server.chat_requests()) == 1 and sleeps.pauses == []


async def test_429_every_time_ends_in_busy_message(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.extend([Reply.rate_limited(retry_after=None)] * 3)
    with pytest.raises(LyricsModelError) as err:
        await draft_lyrics(request_for(cfg), settings=cfg, sleep=Sleeps())
    assert err.value.kind == "rate_limited" and err.value.attempts == 3
    assert str(err.value).startswith("The lyrics model is busy")


async def test_out_of_credit_429_is_not_retried(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.append(Reply.error(429, "You exceeded your current quota", code="insufficient_quota"))
    with pytest.raises(LyricsModelError) as err:
        await draft_lyrics(request_for(cfg), settings=cfg, sleep=Sleeps())
    assert err.value.kind == "quota" and len(server.chat_requests()) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried(server: FakeOpenAI, cfg: Settings, status: int) -> None:
    server.chat.extend([Reply.server_error(status), Reply.text(SONG)])
    sleeps = Sleeps()
    draft = await draft_lyrics(request_for(cfg), settings=cfg, sleep=sleeps)
    assert draft.attempts == 2 and len(sleeps.pauses) == 1


async def test_server_errors_every_time_end_in_a_clear_message(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.extend([Reply.server_error()] * 3)
    sleeps = Sleeps()
    with pytest.raises(LyricsModelError) as err:
        await draft_lyrics(request_for(cfg), settings=cfg, sleep=sleeps)
    assert str(err.value) == "The lyrics model's server had an error; try again or write your own lyrics."
    assert len(server.chat_requests()) == 3
    assert sleeps.pauses[1] > sleeps.pauses[0] * 1.4  # backoff grows


MALFORMED = {
    "not json": Reply.malformed(),
    "no choices": Reply.malformed('{"id": "x", "object": "chat.completion", "choices": []}'),
    "empty content": Reply.text(""),
    "only whitespace": Reply.text("  \n \n"),
    "nothing singable": Reply.text("🎵🎶 ✨"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("kind", list(MALFORMED))
async def test_malformed_replies_are_retried(
    server: FakeOpenAI, cfg: Settings, kind: str, stream: bool
) -> None:
    server.chat.extend([MALFORMED[kind], Reply.text(SONG)])
    draft = await draft_lyrics(request_for(cfg), settings=cfg, stream=stream, sleep=Sleeps())
    assert draft.lyrics == SONG and draft.attempts == 2


@pytest.mark.parametrize(
    "events",
    [
        ["this is not json"],
        ['{"id": "chunk-without-choices"}', "[DONE]"],
        ['{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}', "[DONE]"],
        ['{"error": {"message": "model crashed", "type": "server_error"}}'],
    ],
    ids=["non-json", "no-choices", "no-text", "error-event"],
)
async def test_malformed_streams_are_retried_then_explained(
    server: FakeOpenAI, cfg: Settings, events: list[str]
) -> None:
    server.chat.extend([Reply(raw_events=events)] * 3)
    with pytest.raises(LyricsModelError) as err:
        await draft_lyrics(request_for(cfg), settings=cfg, sleep=Sleeps())
    assert err.value.attempts == 3 and len(server.chat_requests()) == 3
    assert str(err.value).endswith("try again or write your own lyrics.")


@pytest.mark.parametrize(
    ("status", "kind", "words"),
    [
        (401, "refused", "API key"),
        (403, "refused", "API key"),
        (404, "not_found", '"songwriter-7b"'),
        (400, "refused", "HTTP 400"),
    ],
)
async def test_permanent_errors_are_not_retried(
    server: FakeOpenAI, cfg: Settings, status: int, kind: str, words: str
) -> None:
    server.chat.extend([Reply.error(status), Reply.text(SONG)])
    with pytest.raises(LyricsModelError) as err:
        await draft_lyrics(request_for(cfg), settings=cfg, sleep=Sleeps())
    assert err.value.kind == kind and words in str(err.value)
    assert "sk-test-key" not in str(err.value)
    assert len(server.chat_requests()) == 1


async def test_unreachable_server(server: FakeOpenAI) -> None:
    cfg = make_settings(server, openai_base_url="http://127.0.0.1:9/v1", lyrics_attempts=2)
    with pytest.raises(LyricsModelError) as err:
        await draft_lyrics(request_for(cfg), settings=cfg, sleep=Sleeps())
    assert err.value.kind == "connection" and "Could not reach the lyrics model" in str(err.value)


# ------------------------------------------------------------------------------------------------
# Cleaning what comes back


async def test_overlong_reply_is_cut_at_section_boundaries(server: FakeOpenAI, cfg: Settings) -> None:
    verse = "[Verse {n}]\n" + "\n".join(f"Line {{n}}.{i}: the city hums a tune tonight" for i in range(1, 5))
    sections = [verse.format(n=n) for n in range(1, 8)]
    reply = "\n\n".join(sections)
    assert len(reply) > 1000
    server.chat.append(Reply.text(reply))
    draft = await draft_lyrics(request_for(cfg, seconds=20), settings=cfg)

    assert len(draft.lyrics) <= 430
    kept = draft.lyrics.split("\n\n")
    whole, last = kept[:-1], kept[-1]
    assert len(whole) >= 1 and whole == sections[: len(whole)]  # whole sections, in order, unchanged
    next_lines = sections[len(whole)].split("\n")
    assert last.split("\n") == next_lines[: len(last.split("\n"))]  # then whole lines of the next one
    assert len(draft.lyrics) + len(next_lines[len(last.split("\n"))]) + 1 > 430  # and no room for more
    assert any(
        f"shortened from {len(reply):,} to {len(draft.lyrics):,} characters to fit 20 s" in n
        for n in draft.notes
    )
    assert draft.raw == reply


async def test_non_vocabulary_reply_is_cleaned(server: FakeOpenAI, cfg: Settings) -> None:
    reply = (
        "Sure! Here are your lyrics:\n\n```\n**Verse 1:**\nCafé lights — “golden” 🌆\nWe dance & we sing ✨\n\n"
        "**Chorus**\nNaïve hearts, 100% alive 🎉\n```\n\nI hope you like it! Let me know if you want changes."
    )
    server.chat.append(Reply.text(reply))
    draft = await draft_lyrics(request_for(cfg), settings=cfg)

    assert set(draft.lyrics) <= alphabet("1b_lyrics")
    assert draft.lyrics == (
        '[Verse 1]\nCafe lights -- "golden"\nWe dance and we sing\n\n[Chorus]\nNaive hearts, 100 alive'
    )
    notes = " | ".join(draft.notes)
    assert "removed 3 emoji" in notes
    assert "introduction" in notes and "closing remark" in notes
    assert "code fences" in notes
    assert "é → e" in notes
    assert "%" in notes  # removed characters are named


async def test_reasoning_blocks_are_removed(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.append(Reply.text("<think>The user wants rain. Keep it short.</think>\n" + SONG))
    draft = await draft_lyrics(request_for(cfg), settings=cfg)
    assert draft.lyrics == SONG
    assert any("reasoning" in n for n in draft.notes)


async def test_reply_cut_by_max_tokens_loses_its_unfinished_line(server: FakeOpenAI, cfg: Settings) -> None:
    server.chat.append(Reply.text(SONG + "\nAnd the morn", finish_reason="length"))
    draft = await draft_lyrics(request_for(cfg), settings=cfg)
    assert draft.lyrics == SONG
    assert any("unfinished last line" in n for n in draft.notes)


# ------------------------------------------------------------------------------------------------
# Not configured


async def test_no_text_model_says_so_plainly(server: FakeOpenAI) -> None:
    cfg = make_settings(server, lyrics_model=None)
    with pytest.raises(LyricsUnavailable) as err:
        await draft_lyrics(request_for(cfg), settings=cfg)
    assert str(err.value) == (
        "Lyric drafting is not set up on this server: no text model is configured. "
        "You can still write your own lyrics."
    )
    assert server.requests == []


async def test_openai_without_key_says_so_plainly(server: FakeOpenAI) -> None:
    cfg = make_settings(server, openai_base_url=None, openai_api_key=None)
    with pytest.raises(LyricsUnavailable, match="needs an API key"):
        await draft_lyrics(request_for(cfg), settings=cfg)
