"""Artist and genre names for autocomplete and for checking what a member typed.

The names and the rules come from the configured model (`engine.model.labels`, torch-free): the engine's
own `artist_id` / `genre_word_ids` decide what is valid (so a v2 model's "pop rock" bag of genres
passes, like the engine takes it), and `engine.model.labels.suggest` gives the "did you mean". Discord shows
at most 25 suggestions and leaves the final value to the member, so the command checks again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process
from unidecode import unidecode

from .errors import UserError

MAX_CHOICES = 25  # Discord's limit per autocomplete answer
CHOICE_CHARS = 100  # Discord's limit for a choice's name and value


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", unidecode(text).lower()).split())


@dataclass
class LabelIndex:
    kind: str  # "artist" | "genre"
    names: list[str]  # display names, as the engine lists them
    validate: Callable[[str], None] | None = None  # the engine's check: raises UnknownLabel
    _by_norm: dict[str, str] = field(init=False, repr=False)
    _norms: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.names = [n for n in self.names if n and len(n) <= CHOICE_CHARS]
        self._by_norm = {}
        for n in self.names:
            self._by_norm.setdefault(normalize(n), n)
        self._norms = sorted(self._by_norm)

    def complete(self, typed: str, limit: int = MAX_CHOICES) -> list[str]:
        """Up to `limit` names for what was typed so far: prefixes, then word starts, then fuzzy."""
        q = normalize(typed)
        if not q:
            return [self._by_norm[n] for n in self._norms[:limit]]
        out: list[str] = []
        seen: set[str] = set()

        def add(norm: str) -> None:
            if norm not in seen and len(out) < limit:
                seen.add(norm)
                out.append(self._by_norm[norm])

        for n in self._norms:
            if n.startswith(q):
                add(n)
        if len(out) < limit:
            for n in self._norms:
                if f" {q}" in f" {n}":
                    add(n)
        if len(out) < limit:
            for n, _score, _i in process.extract(
                q, self._norms, scorer=fuzz.WRatio, limit=limit, score_cutoff=60
            ):
                add(n)
        return out

    def resolve(self, typed: str) -> str:
        """The name to give the engine for what the member typed; UserError with suggestions."""
        from engine.model.labels import UnknownLabel, suggest

        cleaned = " ".join(typed.split())
        exact = self._by_norm.get(normalize(cleaned))
        if exact is not None:
            return exact
        if cleaned and self.validate is not None:
            try:
                self.validate(cleaned)
                return cleaned  # valid for the engine though not listed as such (a bag of genres)
            except UnknownLabel:
                pass
        shown = f"`{cleaned[:60]}`" if cleaned else "an empty name"
        guesses = suggest(cleaned, self.names, 3) if cleaned else []
        if guesses:
            options = ", ".join(f"**{g}**" for g in guesses)
            raise UserError(
                f"The model does not know the {self.kind} {shown}. Did you mean {options}? "
                "Pick one from the list that appears as you type."
            )
        raise UserError(
            f"The model does not know the {self.kind} {shown}. Start typing and pick a {self.kind} from the list."
        )


@dataclass
class Labels:
    artists: LabelIndex
    genres: LabelIndex
    sings_lyrics: bool = True  # False: the model has no lyrics conditioning (demo, 5b)


def load_labels(model: str) -> Labels:
    """The artist and genre names of the configured model (engine/model/labels.py)."""
    from engine.model import labels as engine_labels

    config = engine_labels.model_config(model)
    found = engine_labels.labels_for_model(config)

    def check_artist(name: str) -> None:
        found.artist_id(name, strict=True)

    def check_genre(name: str) -> None:
        found.genre_word_ids(name, strict=True)

    return Labels(
        LabelIndex("artist", found.artists, check_artist),
        LabelIndex("genre", found.genres, check_genre),
        sings_lyrics=config.top.lyrics != "none",
    )
