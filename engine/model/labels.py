"""Artist/genre/lyrics labels of Jukebox models, without torch (the bot imports this).

Facts from OpenAI's `jukebox/data/` (see shared/research/engine.md §1.3):
- v2 lists (5b, 5b_lyrics, and the upsamplers of every model): names normalised by `norm()`
  (lowercase, non-alphanumerics -> `_`), a genre is a bag of up to 5 words.
- v3 lists (1b_lyrics top prior): names lowercased, one genre.
- Lyric characters: v2 has 79 characters (n_vocab 80, 0 = padding), v3 the same without `+`.
- Per window the lyrics are cut to `n_tokens` characters around the window's linear position in
  the song (`get_relevant_lyric_tokens`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from unidecode import unidecode

from engine.model.config import PRESETS, CustomLabels, ModelConfig, PriorConfig, resolve_model_dir

IDS_DIR = Path(__file__).parent / "data" / "ids"
VOCAB_V2 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-+'\"()[] \t\n"
VOCAB_V3 = VOCAB_V2.replace("+", "")  # "in v3 we missed `+`"

_ACCEPTED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


class LabelsError(ValueError):
    """Labels this model cannot take, said in words."""


class UnknownLabel(LabelsError):
    """An artist or genre the model does not know, with the closest names it does know."""

    def __init__(self, kind: str, name: str, suggestions: Sequence[str]) -> None:
        self.kind, self.name, self.suggestions = kind, name, list(suggestions)
        msg = f"Unknown {kind} '{name}'."
        if self.suggestions:
            msg += " Did you mean: " + ", ".join(self.suggestions) + "?"
        super().__init__(msg)


class LyricsError(LabelsError):
    """Lyrics that cannot be used at all (e.g. nothing left after cleaning)."""


def norm(s: str) -> str:
    """The original v2 normalisation: lowercase, non-alphanumerics -> `_`, collapsed and stripped."""
    s = "".join(c if c in _ACCEPTED else "_" for c in s.lower())
    return re.sub(r"_+", "_", s).strip("_")


def _score(a: str, b: str, *, processor: object = None, score_cutoff: float | None = None) -> float:
    # QRatio alone misses "Bethoven" -> "ludwig van beethoven"; WRatio alone favours tiny names.
    from rapidfuzz import fuzz

    return 0.5 * fuzz.QRatio(a, b) + 0.5 * fuzz.WRatio(a, b)


def suggest(name: str, names: Sequence[str], n: int = 5) -> list[str]:
    """The `n` names closest to `name` (fuzzy match), best first."""
    from rapidfuzz import process, utils

    hits = process.extract(name, names, scorer=_score, processor=utils.default_process, limit=n)
    return [h[0] for h in hits if h[1] > 0]


def clean_lyrics(text: str, version_or_vocab: str = "v3") -> tuple[str, list[str]]:
    """The original `TextProcessor.clean` (unidecode, `\\` -> newline, drop characters outside the
    vocabulary), plus notes in words about what changed, for the person who wrote the lyrics."""
    vocab = {"v2": VOCAB_V2, "v3": VOCAB_V3}.get(version_or_vocab, version_or_vocab)
    allowed = set(vocab)
    ascii_text = unidecode(text).replace("\\", "\n")
    cleaned = "".join(c for c in ascii_text if c in allowed)
    notes: list[str] = []
    spelled = sorted(
        {c for c in text if ord(c) > 127 and unidecode(c).strip() and set(unidecode(c)) <= allowed}
    )
    if spelled:
        notes.append("wrote these characters in plain letters: " + " ".join(spelled[:20]))
    if "\\" in text:
        notes.append("turned backslashes into line breaks")
    removed = sorted(
        {c for c in text if c != "\\" and not (set(unidecode(c)) <= allowed and unidecode(c))} - {"\r"}
    )
    if removed:
        shown = " ".join(repr(c)[1:-1] if c.isspace() or not c.isprintable() else c for c in removed[:20])
        notes.append(f"removed characters the model cannot sing: {shown}")
    return cleaned, notes


def get_relevant_lyric_tokens(
    full_tokens: Sequence[int], n_tokens: int, total_length: int, offset: int, duration: int
) -> tuple[list[int], list[int]]:
    """The original linear-alignment window: `n_tokens` characters centred on the window's share of
    the song (left-padded with 0 when the lyrics are shorter). Returns (tokens, their indices; -1 = pad)."""
    full = list(full_tokens)
    if len(full) < n_tokens:
        pad = n_tokens - len(full)
        return [0] * pad + full, [-1] * pad + list(range(len(full)))
    if not 0 <= offset < total_length:
        raise ValueError(f"window offset {offset} is outside the song (0 to {total_length} samples)")
    midpoint = int(len(full) * (offset + duration / 2.0) / total_length)
    midpoint = min(max(midpoint, n_tokens // 2), len(full) - n_tokens // 2)
    lo = midpoint - n_tokens // 2
    return full[lo : lo + n_tokens], list(range(lo, lo + n_tokens))


@dataclass(frozen=True)
class LabelSet:
    """One model's artist and genre lists and lyric characters."""

    version: str  # v2 | v3 | custom
    artist_ids: dict[str, int] = field(repr=False)  # normalised name -> id
    genre_ids: dict[str, int] = field(repr=False)
    vocab: str = field(repr=False)
    bag_of_genres: bool = False  # v2: a genre is split into words

    @property
    def n_vocab(self) -> int:
        return len(self.vocab) + 1

    def _display(self, key: str) -> str:
        return key.replace("_", " ") if self.version == "v2" else key

    @property
    def artists(self) -> list[str]:
        """Names to show (autocomplete), one per known spelling."""
        return sorted({self._display(k) for k in self.artist_ids if k})

    @property
    def genres(self) -> list[str]:
        return sorted({self._display(k) for k in self.genre_ids if k})

    def _norm(self, name: str) -> str:
        return norm(name) if self.version == "v2" else name.strip().lower()

    def artist_id(self, name: str, *, strict: bool = True) -> int:
        key = self._norm(name)
        if key in self.artist_ids:
            return self.artist_ids[key]
        if strict:
            raise UnknownLabel("artist", name, suggest(name, self.artists))
        return 0  # the original's fallback: "unknown"

    def genre_word_ids(self, name: str, *, strict: bool = True) -> list[int]:
        words = norm(name).split("_") if self.bag_of_genres else [self._norm(name)]
        out = []
        for w in words:
            if w in self.genre_ids:
                out.append(self.genre_ids[w])
            elif strict:
                raise UnknownLabel("genre", name if len(words) == 1 else w, suggest(w, self.genres))
            else:
                out.append(0)
        return out

    def artist_name(self, artist_id: int) -> str:
        names = sorted(k for k, v in self.artist_ids.items() if v == artist_id and k)
        return self._display(names[0]) if names else "unknown"

    def clean_lyrics(self, text: str) -> tuple[str, list[str]]:
        return clean_lyrics(text, self.vocab)

    def tokenise(self, text: str) -> list[int]:
        index = {c: i + 1 for i, c in enumerate(self.vocab)}
        return [index[c] for c in text if c in index]

    def textise(self, tokens: Sequence[int]) -> str:
        return "".join(self.vocab[t - 1] for t in tokens if 0 < t <= len(self.vocab))


def _read_ids(path: Path) -> dict[str, int]:
    ids: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, idx = line.rpartition(";")
        ids[name.lower()] = int(idx)
    return ids


@lru_cache(maxsize=4)
def released_labels(version: str) -> LabelSet:
    if version not in ("v2", "v3"):
        raise ValueError(f"unknown label version {version!r} (v2 or v3)")
    return LabelSet(
        version=version,
        artist_ids=_read_ids(IDS_DIR / f"{version}_artist_ids.txt"),
        genre_ids=_read_ids(IDS_DIR / f"{version}_genre_ids.txt"),
        vocab=VOCAB_V2 if version == "v2" else VOCAB_V3,
        bag_of_genres=version == "v2",
    )


def custom_labels(c: CustomLabels) -> LabelSet:
    return LabelSet(
        version="custom",
        artist_ids={a.strip().lower(): i for i, a in enumerate(c.artists)},
        genre_ids={g.strip().lower(): i for i, g in enumerate(c.genres)},
        vocab=c.vocab,
    )


def labels_for_prior(config: ModelConfig, level: int) -> LabelSet:
    p: PriorConfig = config.priors[level]
    if p.labels_version == "custom":
        assert config.custom_labels is not None
        return custom_labels(config.custom_labels)
    return released_labels(p.labels_version)


def model_config(config_or_name: ModelConfig | str | Path) -> ModelConfig:
    """A model's config without torch: a released name, `demo`, or a model folder / its model.json."""
    if isinstance(config_or_name, ModelConfig):
        return config_or_name
    if isinstance(config_or_name, str) and config_or_name in PRESETS:
        return PRESETS[config_or_name]
    folder = resolve_model_dir(config_or_name)
    path = folder if folder.suffix == ".json" else folder / "model.json"
    if not path.exists():
        raise FileNotFoundError(f"no model config at {path} (a custom model folder needs model.json)")
    return ModelConfig.load(path)


def labels_for_model(config_or_name: ModelConfig | str | Path) -> LabelSet:
    """The labels the person chooses from: those of the model's top-level prior."""
    return labels_for_prior(model_config(config_or_name), 2)


@dataclass(frozen=True)
class SongLabels:
    """One song's labels, resolved to ids for one prior."""

    artist_id: int
    genre_ids: tuple[int, ...]
    lyrics: str  # cleaned
    tokens: tuple[int, ...]  # all lyric characters of the song
    notes: tuple[str, ...] = ()  # what changed, in words


class Labeller:
    """Builds the y vector of each window: [total_length, offset, sample_length, artist_id,
    *genre_ids (padded with -1), *lyric_tokens (n_tokens)], as the original `Labeller` and
    `SimplePrior.get_y` do (lengths and offsets in raw audio samples)."""

    def __init__(
        self,
        labels: LabelSet,
        max_bow_genre_size: int,
        n_tokens: int,
        sample_length: int,
        total_range: tuple[int, int] | None = None,
    ) -> None:
        self.labels = labels
        self.max_bow_genre_size = max_bow_genre_size
        self.n_tokens = n_tokens
        self.sample_length = sample_length
        self.total_range = total_range  # [min, max) song length in samples the timing signal takes

    @classmethod
    def for_prior(cls, config: ModelConfig, level: int) -> Labeller:
        p = config.priors[level]
        rng = None
        if p.min_duration is not None and p.max_duration is not None:
            sr = config.sample_rate
            rng = (math.ceil(p.min_duration * sr), math.ceil(p.max_duration * sr))
        return cls(
            labels_for_prior(config, level),
            p.max_bow_genre_size,
            p.n_tokens,
            config.window_samples(level),
            rng,
        )

    def label_total_length(self, total_samples: int) -> int:
        """The song length to put in the labels. The top-level timing signal only knows songs of
        [min_duration, max_duration) (60 s to 600 s for 5b, 17.84 s for 1b_lyrics); a shorter song
        is labelled as the shortest length the model knows (sampling still stops at the real
        length). The original code asserts instead."""
        if self.total_range is None:
            return total_samples
        lo, hi = self.total_range
        return min(max(total_samples, lo), hi - 64)  # the check runs in float32: stay clear of the end

    def encode(self, artist: str, genre: str, lyrics: str = "", *, strict: bool = True) -> SongLabels:
        """Resolve names (UnknownLabel with suggestions when strict; id 0 "unknown" otherwise, as
        the original does) and clean the lyrics."""
        notes: list[str] = []
        artist_id = self.labels.artist_id(artist, strict=strict)
        if artist_id == 0 and not strict and self.labels._norm(artist) not in self.labels.artist_ids:
            notes.append(f"artist '{artist}' is not in this level's list; using 'unknown'")
        genre_ids = self.labels.genre_word_ids(genre, strict=strict)
        if len(genre_ids) > self.max_bow_genre_size:
            if strict:
                raise LabelsError(
                    f"genre '{genre}' has {len(genre_ids)} words; this model takes at most "
                    f"{self.max_bow_genre_size}"
                )
            genre_ids = genre_ids[: self.max_bow_genre_size]
            notes.append(f"kept the first {self.max_bow_genre_size} words of the genre")
        cleaned, lyric_notes = self.labels.clean_lyrics(lyrics)
        notes += lyric_notes
        if lyrics.strip() and not cleaned.strip() and self.n_tokens:
            raise LyricsError("none of the lyrics' characters can be sung by this model")
        return SongLabels(
            artist_id, tuple(genre_ids), cleaned, tuple(self.labels.tokenise(cleaned)), tuple(notes)
        )

    def window_y(self, song: SongLabels, total_length: int, offset: int) -> list[int]:
        """y for the window starting `offset` raw samples into a song of `total_length` samples."""
        genres = list(song.genre_ids) + [-1] * (self.max_bow_genre_size - len(song.genre_ids))
        tokens: list[int] = []
        if self.n_tokens:
            tokens, _ = get_relevant_lyric_tokens(
                song.tokens, self.n_tokens, total_length, offset, self.sample_length
            )
        return [total_length, offset, self.sample_length, song.artist_id, *genres, *tokens]

    def window_lyric_indices(self, song: SongLabels, total_length: int, offset: int) -> list[int]:
        """Which song characters the window's lyric tokens are (-1 = padding), for alignment."""
        if not self.n_tokens:
            return []
        return get_relevant_lyric_tokens(
            song.tokens, self.n_tokens, total_length, offset, self.sample_length
        )[1]


def read_custom_labels(path: str | Path) -> CustomLabels:
    """labels.json: {"artists": [...], "genres": [...], "vocab": "..."} (index = id)."""
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    if "vocab" in d:
        return CustomLabels(tuple(d["artists"]), tuple(d["genres"]), str(d["vocab"]))
    return CustomLabels(tuple(d["artists"]), tuple(d["genres"]))
