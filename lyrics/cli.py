"""`jukebot lyrics "prompt" [--artist A --genre G --seconds S --language L --mood M]`.

The draft streams to stderr as the model writes it; the cleaned lyrics go to stdout (so
`jukebot lyrics "rain" > song.txt` keeps only the lyrics) and what was changed to stderr.
`--written FILE` (or `-` for stdin) checks lyrics you wrote instead: same cleaning and moderation,
no text model needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("lyrics", help="Draft song lyrics with the text model, or check lyrics you wrote.")(
        lyrics_command
    )


def lyrics_command(
    prompt: str = typer.Argument("", help="What the song is about.", show_default=False),
    artist: str | None = typer.Option(None, "--artist", "-a", help="An artist whose style to lean on."),
    genre: str | None = typer.Option(None, "--genre", "-g", help="A genre for the words."),
    seconds: float | None = typer.Option(
        None, "--seconds", "-s", help="Clip length; the lyrics are cut to fit. [default: the server's]"
    ),
    language: str | None = typer.Option(None, "--language", "-l", help="Language to write in."),
    mood: str | None = typer.Option(None, "--mood", "-m", help="The mood, e.g. wistful."),
    written: Path | None = typer.Option(
        None, "--written", "-w", help="Check lyrics you wrote (a file, or - for stdin) instead of drafting."
    ),
    no_stream: bool = typer.Option(False, "--no-stream", help="Ask for the whole reply at once."),
) -> None:
    import asyncio

    from db.settings import get_settings
    from lyrics.errors import LyricsError, LyricsInputError

    settings = get_settings()
    try:
        if written is not None:
            asyncio.run(
                _check_written(written, seconds if seconds is not None else settings.limits.default_seconds)
            )
        else:
            asyncio.run(
                _draft(
                    prompt,
                    artist=artist,
                    genre=genre,
                    seconds=seconds,
                    language=language,
                    mood=mood,
                    stream=not no_stream,
                )
            )
    except LyricsInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except LyricsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _report(lyrics: str, notes: tuple[str, ...], *, seconds: float, max_chars: int) -> None:
    from lyrics.present import notes_text

    typer.echo(f"--- lyrics for {seconds:g} s ({len(lyrics):,} of {max_chars:,} characters) ---", err=True)
    typer.echo(lyrics)
    typer.echo(notes_text(notes) or "Changes: none", err=True)


async def _check_written(path: Path, seconds: float) -> None:
    from lyrics.errors import LyricsInputError
    from lyrics.written import prepare_lyrics

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LyricsInputError(f"Could not read {path}: {exc.__class__.__name__}") from None
    fitted = await prepare_lyrics(text, seconds)
    _report(fitted.lyrics, fitted.notes, seconds=seconds, max_chars=fitted.budget.max_chars)


async def _draft(
    prompt: str,
    *,
    artist: str | None,
    genre: str | None,
    seconds: float | None,
    language: str | None,
    mood: str | None,
    stream: bool,
) -> None:
    from db.settings import get_settings
    from lyrics.draft import DraftStream
    from lyrics.present import retry_note
    from lyrics.request import make_request

    settings = get_settings()
    request = make_request(
        prompt, settings=settings, seconds=seconds, artist=artist, genre=genre, language=language, mood=mood
    )
    drafting = DraftStream(request, settings=settings, stream=stream)
    shown = ""
    attempt = 1
    async for text in drafting:
        if drafting.attempt != attempt:  # a retry starts over
            attempt = drafting.attempt
            newline = "\n" if shown else ""
            note = retry_note(attempt, drafting.policy.attempts, drafting.retry_reason)
            typer.echo(f"{newline}[{note}]", err=True)
            shown = ""
        sys.stderr.write(text[len(shown) :])
        sys.stderr.flush()
        shown = text
    if shown:
        typer.echo("", err=True)
    assert drafting.draft is not None
    draft = drafting.draft
    _report(draft.lyrics, draft.notes, seconds=request.seconds, max_chars=request.budget.max_chars)
