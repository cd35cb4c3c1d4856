"""What a member asks for, checked, and the chat messages that ask the text model for it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from db.settings import Settings
from lyrics.budget import LyricBudget, budget_for
from lyrics.errors import LyricsInputError
from lyrics.fit import allowed_marks, alphabet

MAX_PROMPT_CHARS = 1000
MAX_HINT_CHARS = 100


@dataclass(frozen=True)
class LyricsRequest:
    prompt: str  # the theme, in the member's words
    seconds: float  # target clip length
    artist: str | None = None  # the engine's artist (style hint only)
    genre: str | None = None
    language: str | None = None
    mood: str | None = None
    engine_model: str | None = None  # decides the alphabet and the lyric window

    @property
    def budget(self) -> LyricBudget:
        return budget_for(self.seconds, self.engine_model)


def _hint(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(value.replace("_", " ").split())
    if not value:
        return None
    if len(value) > MAX_HINT_CHARS:
        raise LyricsInputError(f"The {name} is too long ({len(value)} characters; at most {MAX_HINT_CHARS}).")
    return value


def _artist(name: str | None) -> str | None:
    # The model's lists are lowercase ("the weeknd"); a text model reads a proper name better.
    return name.title() if name and name == name.lower() else name


def make_request(
    prompt: str,
    *,
    settings: Settings,
    seconds: float | None = None,
    artist: str | None = None,
    genre: str | None = None,
    language: str | None = None,
    mood: str | None = None,
) -> LyricsRequest:
    """Check a member's input and fill defaults from settings. Raises LyricsInputError."""
    prompt = " ".join((prompt or "").split())
    if not prompt:
        raise LyricsInputError("Tell me what the song is about: the lyrics prompt is empty.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise LyricsInputError(
            f"The lyrics prompt is {len(prompt):,} characters; please keep it under {MAX_PROMPT_CHARS:,}."
        )
    if seconds is None:
        seconds = settings.limits.default_seconds
    if (
        not math.isfinite(seconds)
        or not settings.limits.min_seconds <= seconds <= settings.limits.max_seconds
    ):
        raise LyricsInputError(
            f"Length must be between {settings.limits.min_seconds:g} and {settings.limits.max_seconds:g} seconds "
            f"(you asked for {seconds:g})."
        )
    return LyricsRequest(
        prompt=prompt,
        seconds=float(seconds),
        artist=_artist(_hint("artist", artist)),
        genre=_hint("genre", genre),
        language=_hint("language", language),
        mood=_hint("mood", mood),
        engine_model=settings.engine.model,
    )


def system_prompt(request: LyricsRequest) -> str:
    budget = request.budget
    brackets = {"[", "]"} <= alphabet(request.engine_model)
    rules = [
        "You write original song lyrics. A singing model (OpenAI Jukebox) will sing them.",
        f"Length: about {request.seconds:g} seconds of singing, so about {budget.target_words} words "
        f"({budget.target_chars} characters); never more than {budget.max_chars} characters.",
        "Write short lines, one sung phrase per line. Separate sections with a blank line.",
    ]
    if brackets:
        rules.append("Start each section with its label on its own line: [Verse], [Chorus] or [Bridge].")
    else:
        rules.append("Do not label the sections.")
    if request.artist:
        rules.append(f"Style: in the manner of {request.artist}, but never quote or copy their lyrics.")
    if request.genre:
        rules.append(f"Genre: {request.genre}.")
    if request.mood:
        rules.append(f"Mood: {request.mood}.")
    language = request.language or "the language of the request"
    rules.append(
        f"Language: {language}. Use the Latin alphabet only; write other scripts in Latin transliteration."
    )
    rules.append(
        f"Characters: letters, digits, spaces and only these marks: {allowed_marks(request.engine_model)}"
    )
    rules.append(
        "Reply with the lyrics only: no title, no introduction, no explanation, no markdown, no emoji."
    )
    return "\n".join(f"- {r}" if i else r for i, r in enumerate(rules))


def user_prompt(request: LyricsRequest) -> str:
    return f"Write lyrics about: {request.prompt}"


def messages(request: LyricsRequest) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt(request)},
        {"role": "user", "content": user_prompt(request)},
    ]


def max_tokens(request: LyricsRequest) -> int:
    """Room for the budget plus labels and a stray sentence of chatter (about 3 characters a token
    for short lyric words), capped so a runaway model cannot stream pages."""
    return max(96, min(2048, math.ceil(request.budget.max_chars / 3) + 96))
