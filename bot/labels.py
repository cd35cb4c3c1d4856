"""Artist and genre names for autocomplete and for checking what a member typed.

The names and the rules come from the configured model (`engine.model.labels`, torch-free): the engine's
own `artist_id` / `genre_word_ids` decide what is valid (so a v2 model's "pop rock" bag of genres
passes, like the engine takes it), and the index below gives the "did you mean". Discord shows
at most 25 suggestions and leaves the final value to the member, so the command checks again.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process
from unidecode import unidecode

from .errors import UserError

MAX_CHOICES = 25  # Discord's limit per autocomplete answer
CHOICE_CHARS = 100  # Discord's limit for a choice's name and value: no longer name can be valid
SUGGEST_CUTOFF = 60.0  # below this a "did you mean" is noise ("Beyonce" -> "b")


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", unidecode(text).lower()).split())


def _closeness(a: str, b: str, *, processor: object = None, score_cutoff: float | None = None) -> float:
    # WRatio alone ranks one-letter names near anything ("Beyonce" -> "b"); QRatio alone misses
    # "Bethoven" -> "ludwig van beethoven". Half of each, as the engine's own suggestions do.
    return 0.5 * fuzz.QRatio(a, b) + 0.5 * fuzz.WRatio(a, b)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def compact(text: str) -> str:
    """The name with its spaces gone too, so "hiphop" finds "hip hop" and "AC/DC" finds "acdc"."""
    return normalize(text).replace(" ", "")


@dataclass
class LabelIndex:
    kind: str  # "artist" | "genre"
    names: list[str]  # display names, as the engine lists them
    validate: Callable[[str], None] | None = None  # the engine's check: raises UnknownLabel
    _by_norm: dict[str, str] = field(init=False, repr=False)
    _by_compact: dict[str, str] = field(init=False, repr=False)
    _norms: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.names = [n for n in self.names if n and normalize(n) and len(n) <= CHOICE_CHARS]
        self._by_norm, self._by_compact = {}, {}
        for n in self.names:
            # One display name per spelling: the model's lists hold "beyonc" and "beyonc " alike.
            self._by_norm.setdefault(normalize(n), n.strip())
            self._by_compact.setdefault(compact(n), n.strip())
        self._norms = sorted(self._by_norm)

    def complete(self, typed: str, limit: int = MAX_CHOICES) -> list[str]:
        """Up to `limit` names for what was typed so far: prefixes, then word starts, then fuzzy.
        Nothing for text longer than any name (autocomplete runs on the bot's loop at each key)."""
        if len(typed) > CHOICE_CHARS:
            return []
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

    def _split_words(self, packed: str, most: int = 4) -> str | None:
        """`packed` cut into known names of 3+ letters (longest first), or None."""
        if not packed or len(packed) > CHOICE_CHARS:
            return None
        for cut in range(len(packed) - 1, 2, -1):
            head, tail = packed[:cut], packed[cut:]
            if head not in self._by_compact or len(tail) < 3:
                continue
            if tail in self._by_compact:
                return f"{self._by_compact[head]} {self._by_compact[tail]}"
            rest = self._split_words(tail, most - 1) if most > 2 else None
            if rest is not None:
                return f"{self._by_compact[head]} {rest}"
        return None

    def suggest(self, typed: str, n: int = 3) -> list[str]:
        """Up to `n` known names close to what was typed, each once, best first."""
        q = normalize(typed)
        if not q:
            return []
        hits = process.extract(q, self._norms, scorer=_closeness, limit=n * 4, score_cutoff=SUGGEST_CUTOFF)
        joined = process.extract(
            compact(typed), list(self._by_compact), scorer=fuzz.ratio, limit=n, score_cutoff=80.0
        )
        ranked = [(score, self._by_compact[c]) for c, score, _ in joined]
        ranked += [(score, self._by_norm[name]) for name, score, _ in hits]
        out: list[str] = []
        for _score, name in sorted(ranked, key=lambda r: -r[0]):
            if name not in out and len(compact(name)) >= 3:  # a one-letter genre word is no suggestion
                out.append(name)
        return out[:n]

    def resolve(self, typed: str) -> str:
        """The name to give the engine for what the member typed; UserError with suggestions.
        Cheap for any input: a name longer than any known one is refused before any search."""
        cleaned = " ".join(typed.split())
        if len(cleaned) > CHOICE_CHARS:
            raise UserError(
                f"That {self.kind} name is {len(cleaned):,} characters long; the model's names are at most "
                f"{CHOICE_CHARS}. Start typing and pick one from the list."
            )
        if not normalize(cleaned):
            shown = f"`{cleaned[:60]}`" if cleaned else "An empty name"
            raise UserError(
                f"{shown} is not {'an artist' if self.kind == 'artist' else 'a genre'} name (it has no letters or digits). "
                "Start typing and pick one from the list."
            )
        exact = self._by_norm.get(normalize(cleaned)) or self._by_compact.get(compact(cleaned))
        if exact is not None:
            return exact
        joined = self._split_words(compact(cleaned))
        if joined is not None and self.validate is not None:
            with contextlib.suppress(ValueError):
                self.validate(joined)
                return joined  # "hiphop": the words "hip hop", which the model takes as a bag
        if self.validate is not None:
            from engine.model.labels import UnknownLabel

            try:
                self.validate(cleaned)
                return cleaned  # valid for the engine though not listed as such (a bag of genres)
            except UnknownLabel:
                pass
        guesses = self.suggest(cleaned)
        shown = f"`{cleaned[:60]}`"
        if guesses:
            options = ", ".join(f"**{g}**" for g in guesses)
            raise UserError(
                f"The model does not know the {self.kind} {shown}. Did you mean {options}? "
                "Pick one from the list that appears as you type."
            )
        raise UserError(
            f"The model does not know the {self.kind} {shown}. Start typing and pick one from the list."
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
