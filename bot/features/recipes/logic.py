"""The Remix form's values: what the member typed, checked (pure functions, no Discord), and where
a remix starts from (the clip of this server, its song's recipe)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import UserError
from db.database import Database
from db.models import Clip, Song
from db.scope import MAX_ID, GuildScope

from .card import Recipe, recipe_of

FORM_ID = re.compile(r"^jb:remixform:(?P<clip_id>\d+)$")
FIELDS = ("artist", "genre", "lyrics", "seed", "seconds")
MAX_SEED = MAX_ID  # the seeds /generate draws (31 bits)


@dataclass(frozen=True)
class RemixSource:
    clip: Clip
    song: Song
    recipe: Recipe


def remix_source(db: Database, scope: GuildScope, clip_id: int) -> RemixSource:
    """The clip of this server to remix, its song and recipe; UserError when there is none here."""
    with db.read() as s:
        found = scope.clip_with_song(s, clip_id)
        if found is None:
            raise UserError(f"There is no clip #{clip_id} here to remix.")
        clip, song = found
        return RemixSource(clip, song, recipe_of(s, song))


def form_values(data: Mapping[str, Any]) -> dict[str, str]:
    """The submitted text inputs of a modal (`interaction.data`), by custom id. Discord sends them in
    action rows (`components`) or in labels (`component`)."""
    out: dict[str, str] = {}
    for row in data.get("components") or []:
        inner = row.get("components") or ([row["component"]] if row.get("component") else [])
        for c in inner:
            if isinstance(c, Mapping) and isinstance(c.get("custom_id"), str):
                out[c["custom_id"]] = str(c.get("value") or "")
    return out


def parse_seed(text: str) -> int | None:
    """The seed typed in the form; None (blank) for a new one."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    if not cleaned:
        return None
    if not re.fullmatch(r"\d{1,12}", cleaned):
        raise UserError(
            f"The seed must be a whole number from 0 to {MAX_SEED} (or blank for a new one); "
            f"you typed `{text.strip()[:40]}`."
        )
    seed = int(cleaned)
    if seed > MAX_SEED:
        raise UserError(f"The seed must be a whole number from 0 to {MAX_SEED}; {seed} is too large.")
    return seed


def parse_seconds(text: str, default: float) -> float:
    """The length typed in the form ("20", "20 s", "20.5"); blank keeps the recipe's."""
    cleaned = text.strip().lower().removesuffix("seconds").removesuffix("s").strip()
    if not cleaned:
        return default
    try:
        value = float(cleaned)
    except ValueError:
        raise UserError(
            f"The length must be a number of seconds, like `20`; you typed `{text.strip()[:40]}`."
        ) from None
    if not math.isfinite(value):
        raise UserError("The length must be a number of seconds, like `20`.")
    return value


def same_lyrics(a: str, b: str) -> bool:
    """Discord's form hands back `\\r\\n` and trailing spaces; the words are what count."""

    def norm(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").strip().split("\n"))

    return norm(a) == norm(b)


def changes(
    recipe: Recipe, artist: str, genre: str, lyrics: str, seed: int | None, seconds: float
) -> list[str]:
    """What the remix changes, for the answer ("seed, lyrics")."""
    out = []
    if artist != recipe.artist:
        out.append("artist")
    if genre != recipe.genre:
        out.append("genre")
    if not same_lyrics(lyrics, recipe.lyrics):
        out.append("lyrics")
    if seed != recipe.seed:
        out.append("seed")
    if seconds != recipe.seconds:
        out.append("length")
    return out
