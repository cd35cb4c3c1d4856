"""`jukebot lyrics` against a local fake OpenAI-compatible server (typer's CliRunner, the real
`openai` client over loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from db.settings import get_settings
from lyrics.cli import register
from tests.fakes.openai_server import FakeOpenAI, Reply

SONG = "Sure! Here are your lyrics:\n\n[Verse]\nNeon rain on the window 🌧️\nI count the cars below"
CLEAN = "[Verse]\nNeon rain on the window\nI count the cars below"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("other")  # a second command, so `lyrics` is a subcommand as in `jukebot`
    def other() -> None:
        pass

    return app


def run(app: typer.Typer, args: list[str], env: dict[str, str | None], stdin: str | None = None):  # type: ignore[no-untyped-def]
    base: dict[str, str | None] = {
        "JUKEBOT_OPENAI_BASE_URL": None,
        "JUKEBOT_OPENAI_API_KEY": None,
        "JUKEBOT_LYRICS_MODEL": None,
        "JUKEBOT_MODEL": "1b_lyrics",
        "JUKEBOT_LYRICS_TIMEOUT": "2",
        "JUKEBOT_LYRICS_BLOCKLIST": None,
        "JUKEBOT_MODERATION": None,
    }
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args, env={**base, **env}, input=stdin)
    finally:
        get_settings.cache_clear()


def server_env(server: FakeOpenAI) -> dict[str, str | None]:
    return {"JUKEBOT_OPENAI_BASE_URL": server.base_url, "JUKEBOT_LYRICS_MODEL": "songwriter-7b"}


def test_draft_streams_then_prints_clean_lyrics_and_notes(app: typer.Typer, server: FakeOpenAI) -> None:
    server.chat.append(Reply.text(SONG))
    result = run(
        app,
        [
            "lyrics",
            "rain in a neon city",
            "--artist",
            "the weeknd",
            "--genre",
            "synthpop",
            "--seconds",
            "20",
            "--language",
            "English",
            "--mood",
            "restless",
        ],
        server_env(server),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == CLEAN  # stdout: only the lyrics
    assert SONG in result.stderr  # the raw draft as it streamed
    assert "--- lyrics for 20 s (" in result.stderr and "of 430 characters) ---" in result.stderr
    assert "• removed 1 emoji" in result.stderr
    assert "introduction" in result.stderr
    body = server.chat_requests()[0].json
    assert body["model"] == "songwriter-7b" and body["stream"] is True
    system = body["messages"][0]["content"]
    for words in ("20 seconds", "The Weeknd", "synthpop", "restless", "English"):
        assert words in system
    assert "rain in a neon city" in body["messages"][1]["content"]


def test_retry_is_shown(app: typer.Typer, server: FakeOpenAI) -> None:
    server.chat.extend([Reply.server_error(), Reply.text(CLEAN)])
    result = run(app, ["lyrics", "rain"], server_env(server))
    assert result.exit_code == 0, result.output
    assert "[trying again after a server error, attempt 2 of 3]" in result.stderr
    assert result.stdout.strip() == CLEAN


def test_no_stream(app: typer.Typer, server: FakeOpenAI) -> None:
    server.chat.append(Reply.text(CLEAN))
    result = run(app, ["lyrics", "rain", "--no-stream"], server_env(server))
    assert result.exit_code == 0, result.output
    assert "stream" not in server.chat_requests()[0].json


def test_model_failure_is_one_clear_line(app: typer.Typer, server: FakeOpenAI) -> None:
    server.chat.extend([Reply.server_error()] * 3)
    result = run(app, ["lyrics", "rain"], {**server_env(server), "JUKEBOT_LYRICS_ATTEMPTS": "2"})
    assert result.exit_code == 1
    assert result.stderr.strip().endswith(
        "error: The lyrics model's server had an error; try again or write your own lyrics."
    )
    assert "Traceback" not in result.output
    assert len(server.chat_requests()) == 2


def test_no_text_model_configured(app: typer.Typer) -> None:
    result = run(app, ["lyrics", "rain"], {})
    assert result.exit_code == 1
    assert "no text model is configured" in result.stderr and "write your own lyrics" in result.stderr


def test_empty_prompt_and_bad_seconds(app: typer.Typer, server: FakeOpenAI) -> None:
    result = run(app, ["lyrics", "  "], server_env(server))
    assert result.exit_code == 2 and "lyrics prompt is empty" in result.stderr
    result = run(app, ["lyrics", "rain", "--seconds", "9999"], server_env(server))
    assert result.exit_code == 2 and "between 1 and 60 seconds" in result.stderr
    assert server.requests == []


def test_written_lyrics_from_a_file(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "song.txt"
    path.write_text("**Chorus:**\nHold on, hold on ✨\n", encoding="utf-8")
    result = run(app, ["lyrics", "--written", str(path), "--seconds", "10"], {})  # no text model needed
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "[Chorus]\nHold on, hold on"
    assert "removed 1 emoji" in result.stderr


def test_written_lyrics_from_stdin_with_blocklist(app: typer.Typer) -> None:
    result = run(
        app, ["lyrics", "--written", "-"], {"JUKEBOT_LYRICS_BLOCKLIST": '["darn"]'}, stdin="oh DARN it\n"
    )
    assert result.exit_code == 1
    assert '"d**n" on line 1' in result.stderr


def test_written_lyrics_missing_file(app: typer.Typer, tmp_path: Path) -> None:
    result = run(app, ["lyrics", "--written", str(tmp_path / "nope.txt")], {})
    assert result.exit_code == 2 and "Could not read" in result.stderr
