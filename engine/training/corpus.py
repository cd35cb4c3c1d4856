"""A labelled training corpus rendered from public-domain scores in the music21 corpus.

The demo model needs audio with artist, genre and lyrics labels that we are free to use. music21 ships
encoded scores (Bach chorales, Palestrina masses, Monteverdi madrigals, Haydn/Mozart/Beethoven string
quartets, and fiddle tunes and airs from 19th-century collections); we pick a fixed, seeded selection,
give each piece instruments that suit its form (General MIDI programs), vary tempo and key a little,
render it with FluidSynth and a General MIDI SoundFont, and cut it into fixed-length mono clips.

Labels: composers are artists (the folk collections are ``traditional``), forms are genres, and the
words of pieces whose scores carry lyrics (chorales, madrigals) are stored per clip: the words whose
first syllable starts inside the clip, in order. No singing voice is synthesised: the words are
labels only. A speech synthesiser (espeak-ng) bent onto the melody one syllable at a time gives
robot speech over the choir, and a few-layer prior trained for minutes on three hours could not
learn to articulate words from it, so it would add noise to the audio without making lyrics
conditioning learnable.

Output (``out_dir``):
    audio/<artist>/<piece>_<nnn>.flac   clips, mono, 16-bit, ``sample_rate``
    labels.csv                          file, artist, genre, lyrics, seconds, offset_seconds,
                                        total_seconds, source, split (sorted by file)
    corpus.json                         counts, hours, every piece with its tempo/key/instruments,
                                        skipped pieces, and the versions of music21, FluidSynth and
                                        the SoundFont, so the build can be repeated

The same arguments give the same labels and byte-identical FLAC files: every random choice comes from
``random.Random(f"{seed}:...")`` keyed by the collection or the piece, never from processing order,
and FluidSynth's offline rendering is deterministic. ``pack_corpus`` makes a compact OGG Vorbis tar
of a built corpus for carrying to a GPU machine.

Needs the Debian packages ``fluidsynth`` and ``fluid-soundfont-gm`` and the Python packages
``music21`` and ``soundfile``. This module does not import torch.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
LABEL_COLUMNS = (
    "file",
    "artist",
    "genre",
    "lyrics",
    "seconds",
    "offset_seconds",
    "total_seconds",
    "source",
    "split",
)
CORPUS_FORMAT_VERSION = 1

# Loudness: each piece (not each clip, so dynamics inside a piece survive) is scaled to this RMS,
# then scaled down further if its peak would pass PEAK.
TARGET_RMS_DB = -20.0
PEAK = 10 ** (-1.0 / 20)  # -1 dBFS
SILENT_CLIP_DB = -50.0  # clips quieter than this carry nothing to learn from
TAIL_KEEP_SECONDS = 0.75  # reverb kept after the last note

# General MIDI programs (0-based, as music21's ``midiProgram``).
ORGAN, REED_ORGAN, ACCORDION, PIANO, HARP = 19, 20, 21, 0, 46
NYLON_GUITAR, VIOLIN, VIOLA, CELLO, STRINGS = 24, 40, 41, 42, 48
CHOIR_AAHS, VOICE_OOHS, CLARINET, BASSOON = 52, 53, 71, 70
FLUTE, RECORDER, WHISTLE, BANJO, BAGPIPE, FIDDLE = 73, 74, 78, 105, 109, 110
PROGRAM_NAMES = {
    ORGAN: "church organ",
    REED_ORGAN: "reed organ",
    ACCORDION: "accordion",
    PIANO: "piano",
    HARP: "harp",
    NYLON_GUITAR: "lute (nylon guitar)",
    VIOLIN: "violin",
    VIOLA: "viola",
    CELLO: "cello",
    STRINGS: "string ensemble",
    CHOIR_AAHS: "choir aahs",
    VOICE_OOHS: "voice oohs",
    CLARINET: "clarinet",
    BASSOON: "bassoon",
    FLUTE: "flute",
    RECORDER: "recorder",
    WHISTLE: "tin whistle",
    BANJO: "banjo",
    BAGPIPE: "bagpipe",
    FIDDLE: "fiddle",
}


@dataclass(frozen=True)
class Collection:
    """One source of pieces: who wrote them, what form they are, and how to perform them."""

    key: str
    artist: str
    genre: str
    pieces: int  # how many scores the full build takes
    max_clips: int  # clips kept per piece (evenly spread over it) so long movements do not dominate
    tempo: float  # quarter notes per minute when the score has no tempo of its own
    tempo_jitter: float  # each piece plays at tempo x U(1 - j, 1 + j)
    transpose: int  # each piece is shifted by a whole number of semitones in [-t, t]
    ensembles: tuple[tuple[tuple[int, ...], int], ...]  # (programs top part -> bottom part, weight)
    keep_score_tempo: bool  # use (scaled) tempo marks written in the score when it has any
    expand_repeats: bool  # play repeats (dance tunes); scores with lyrics keep verse 1 unrepeated
    cost: float  # rough relative processing cost, to start slow pieces first


def _corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def _files(pattern: str, regex: str | None = None) -> list[str]:
    root = _corpus_root()
    out = []
    for path in root.glob(pattern):
        rel = path.relative_to(root).as_posix()
        if regex is None or re.fullmatch(regex, rel):
            out.append(rel)
    return sorted(out)


def _abc_tunes(pattern: str) -> list[str]:
    """Every tune of multi-tune ABC books, as ``path#number`` (numbers from the ``X:`` lines)."""
    root = _corpus_root()
    out: list[str] = []
    for rel in _files(pattern):
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        numbers = re.findall(r"^X:\s*(\d+)", text, flags=re.MULTILINE)
        out.extend(f"{rel}#{n}" for n in dict.fromkeys(numbers))
    return out


def _quartets(composer: str) -> list[str]:
    files = _files(f"{composer}/**/*.mxl") + _files(f"{composer}/**/*.krn")
    by_stem: dict[str, str] = {}
    for rel in files:  # a movement encoded twice (.krn and .mxl): keep the MusicXML one
        stem = rel.rsplit(".", 1)[0]
        if stem not in by_stem or rel.endswith(".mxl"):
            by_stem[stem] = rel
    # K. 545 is a piano sonata, not a quartet.
    return sorted(v for v in by_stem.values() if "k545" not in v)


QUARTET = ((VIOLIN, VIOLIN, VIOLA, CELLO), 4), ((STRINGS,), 1)
COLLECTIONS: tuple[Collection, ...] = (
    Collection(
        "bach-chorales",
        "bach",
        "chorale",
        pieces=30,
        max_clips=3,
        tempo=80,
        tempo_jitter=0.12,
        transpose=2,
        keep_score_tempo=False,
        expand_repeats=False,
        cost=1,
        ensembles=(
            ((ORGAN,), 3),
            ((CHOIR_AAHS,), 2),
            ((VOICE_OOHS, VOICE_OOHS, CHOIR_AAHS, CHOIR_AAHS), 1),
            ((REED_ORGAN,), 1),
        ),
    ),
    Collection(
        "ryans-mammoth",
        "traditional",
        "fiddle tune",
        pieces=30,
        max_clips=2,
        tempo=180,
        tempo_jitter=0.1,
        transpose=3,
        keep_score_tempo=False,
        expand_repeats=True,
        cost=1,
        ensembles=(((FIDDLE,), 3), ((VIOLIN,), 2), ((BANJO,), 1), ((ACCORDION,), 1)),
    ),
    Collection(
        "monteverdi-madrigals",
        "monteverdi",
        "madrigal",
        pieces=14,
        max_clips=5,
        tempo=140,
        tempo_jitter=0.1,
        transpose=2,
        keep_score_tempo=False,
        expand_repeats=False,
        cost=3,
        ensembles=(
            ((CHOIR_AAHS,), 2),
            ((VOICE_OOHS,), 2),
            ((VOICE_OOHS, VOICE_OOHS, VOICE_OOHS, VOICE_OOHS, NYLON_GUITAR), 1),
            ((RECORDER,), 1),
        ),
    ),
    Collection(
        "palestrina-masses",
        "palestrina",
        "mass",
        pieces=18,
        max_clips=4,
        tempo=120,
        tempo_jitter=0.1,
        transpose=2,
        keep_score_tempo=False,
        expand_repeats=False,
        cost=2,
        ensembles=(
            ((CHOIR_AAHS,), 3),
            ((VOICE_OOHS,), 2),
            ((RECORDER, RECORDER, CLARINET, BASSOON), 1),
            ((ORGAN,), 1),
        ),
    ),
    Collection(
        "oneills-1850",
        "traditional",
        "irish dance tune",
        pieces=30,
        max_clips=2,
        tempo=160,
        tempo_jitter=0.1,
        transpose=3,
        keep_score_tempo=False,
        expand_repeats=True,
        cost=1,
        ensembles=(((WHISTLE,), 2), ((FLUTE,), 2), ((FIDDLE,), 2), ((BAGPIPE,), 1), ((ACCORDION,), 1)),
    ),
    Collection(
        "haydn-quartets",
        "haydn",
        "string quartet",
        pieces=9,
        max_clips=8,
        tempo=112,
        tempo_jitter=0.06,
        transpose=0,
        keep_score_tempo=True,
        expand_repeats=False,
        cost=8,
        ensembles=QUARTET,
    ),
    Collection(
        "airds-airs",
        "traditional",
        "scottish air",
        pieces=27,
        max_clips=2,
        tempo=120,
        tempo_jitter=0.1,
        transpose=3,
        keep_score_tempo=False,
        expand_repeats=True,
        cost=1,
        ensembles=(((BAGPIPE,), 1), ((FLUTE,), 2), ((HARP,), 2), ((PIANO,), 1)),
    ),
    Collection(
        "mozart-quartets",
        "mozart",
        "string quartet",
        pieces=15,
        max_clips=4,
        tempo=112,
        tempo_jitter=0.06,
        transpose=0,
        keep_score_tempo=True,
        expand_repeats=False,
        cost=8,
        ensembles=QUARTET,
    ),
    Collection(
        "beethoven-quartets",
        "beethoven",
        "string quartet",
        pieces=20,
        max_clips=3,
        tempo=112,
        tempo_jitter=0.06,
        transpose=0,
        keep_score_tempo=True,
        expand_repeats=False,
        cost=12,
        ensembles=QUARTET,
    ),
)

LISTERS: dict[str, Callable[[], list[str]]] = {
    "bach-chorales": lambda: _files("bach/*.mxl", r"bach/bwv\d+(\.\d+)?\.mxl"),
    "ryans-mammoth": lambda: _files("ryansMammoth/*.abc"),
    "monteverdi-madrigals": lambda: _files("monteverdi/*.mxl", r"monteverdi/madrigal\.\d+\.\d+\.mxl"),
    "palestrina-masses": lambda: _files("palestrina/*.krn"),
    "oneills-1850": lambda: _abc_tunes("oneills1850/*.abc"),
    "haydn-quartets": lambda: _quartets("haydn"),
    "airds-airs": lambda: _abc_tunes("airdsAirs/*.abc"),
    "mozart-quartets": lambda: _quartets("mozart"),
    "beethoven-quartets": lambda: _quartets("beethoven"),
}
HELD_OUT_EVERY = 10  # every tenth selected piece of a collection is in the "test" split


@dataclass(frozen=True)
class PieceJob:
    """Everything needed to render one piece; all random choices are made before it is sent out."""

    index: int
    collection: str
    source: str  # music21 corpus path, ``#n`` for a tune of a multi-tune ABC book
    artist: str
    genre: str
    split: str
    tempo_factor: float
    transpose: int
    programs: tuple[int, ...]
    out_dir: str
    sample_rate: int
    seconds_per_clip: float
    max_clips: int
    soundfont: str
    audio_format: str


@dataclass
class ClipLabel:
    file: str
    artist: str
    genre: str
    lyrics: str
    seconds: float
    offset_seconds: float
    total_seconds: float
    source: str
    split: str


@dataclass
class PieceResult:
    job: PieceJob
    clips: list[ClipLabel] = field(default_factory=list)
    seconds: float = 0.0  # length of the whole rendered piece
    quarter_bpm: float = 0.0
    has_lyrics: bool = False
    error: str | None = None


@dataclass
class CorpusSummary:
    """What a build made; also written as ``corpus.json``."""

    out_dir: str
    sample_rate: int
    seconds_per_clip: float
    seed: int
    clips: int
    pieces: int
    seconds: float
    artists: dict[str, dict[str, float]]
    genres: dict[str, dict[str, float]]
    skipped: list[dict[str, str]]
    build_seconds: float
    versions: dict[str, Any]

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def describe(self) -> str:
        lines = [
            f"{self.clips} clips from {self.pieces} pieces, {self.hours:.2f} h at {self.sample_rate} Hz "
            f"in {self.out_dir} (built in {self.build_seconds:.0f} s)"
        ]
        for title, table in (("artists", self.artists), ("genres", self.genres)):
            parts = [f"{k} {v['clips']:.0f} clips/{v['seconds'] / 60:.1f} min" for k, v in table.items()]
            lines.append(f"{title}: " + ", ".join(parts))
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} pieces (see corpus.json)")
        return "\n".join(lines)


class CorpusError(RuntimeError):
    """A build cannot start: a tool or file it needs is missing."""


# ---------------------------------------------------------------------------------------------
# Planning: which pieces, in what form. Runs in the parent; deterministic in the seed.


def plan_pieces(
    out_dir: Path,
    *,
    sample_rate: int,
    seconds_per_clip: float,
    seed: int,
    max_pieces: int | None,
    max_clips_per_piece: int | None,
    soundfont: Path,
    audio_format: str,
    collections: Sequence[Collection] = COLLECTIONS,
) -> list[PieceJob]:
    """The pieces a build renders, in a fixed order.

    Each collection's candidate scores are sorted, shuffled with ``Random(f"{seed}:{key}")`` and the
    first ``pieces`` kept. With ``max_pieces``, pieces are taken round-robin over the collections (so
    a 3-piece test build has a chorale, a fiddle tune and a madrigal) and the rest dropped; a piece's
    tempo, key, instruments and split do not depend on ``max_pieces``.
    """
    per_collection: list[list[PieceJob]] = []
    for col in collections:
        candidates = LISTERS[col.key]()
        random.Random(f"{seed}:{col.key}").shuffle(candidates)
        chosen = candidates[: col.pieces]
        jobs = []
        for position, source in enumerate(chosen):
            rng = random.Random(f"{seed}:{col.key}:{source}")
            factor = round(1 + rng.uniform(-col.tempo_jitter, col.tempo_jitter), 3)
            shift = rng.randint(-col.transpose, col.transpose)
            programs = rng.choices([e for e, _ in col.ensembles], weights=[w for _, w in col.ensembles])[0]
            split = "test" if position % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"
            jobs.append(
                PieceJob(
                    index=0,
                    collection=col.key,
                    source=source,
                    artist=col.artist,
                    genre=col.genre,
                    split=split,
                    tempo_factor=factor,
                    transpose=shift,
                    programs=tuple(programs),
                    out_dir=str(out_dir),
                    sample_rate=sample_rate,
                    seconds_per_clip=seconds_per_clip,
                    max_clips=max_clips_per_piece or col.max_clips,
                    soundfont=str(soundfont),
                    audio_format=audio_format,
                )
            )
        per_collection.append(jobs)
    ordered: list[PieceJob] = []
    for round_ in range(max((len(j) for j in per_collection), default=0)):
        ordered.extend(jobs[round_] for jobs in per_collection if round_ < len(jobs))
    if max_pieces is not None:
        ordered = ordered[:max_pieces]
    return [PieceJob(**{**asdict(job), "index": i}) for i, job in enumerate(ordered)]


# ---------------------------------------------------------------------------------------------
# Rendering one piece. Runs in a worker process.


def _load_score(source: str) -> Any:
    from music21 import corpus, stream

    path, _, number = source.partition("#")
    score = corpus.parse(path, number=int(number)) if number else corpus.parse(path)
    if isinstance(score, stream.Opus):  # a book parsed whole: take its first tune
        score = score.scores[0]
    return score


# Quarter-note speeds for tempo words, when a score has words but no metronome mark; checked in
# this order, so "allegretto" wins over "allegro" and "allegro moderato" counts as allegro.
TEMPO_WORDS = (
    ("prestissimo", 184), ("presto", 168), ("vivace", 144), ("allegretto", 108), ("allegro", 132),
    ("andantino", 88), ("andante", 76), ("larghetto", 66), ("largo", 48), ("adagio", 58), ("lento", 54),
    ("grave", 42), ("scherzo", 150), ("menuetto", 120), ("minuetto", 120), ("moderato", 100),
)  # fmt: skip
# A beat longer than a quarter (alla breve, 6/8) moves the quarters faster than the word's number.
BEAT_SCALE = {0.5: 0.6, 1.0: 1.0, 1.5: 1.35, 2.0: 1.5, 3.0: 2.0}
ONSETS_PER_SECOND = (1.0, 8.0)  # a tempo guess giving fewer or more note starts than this is clamped


def tempo_from_words(words: str, beat: float) -> float | None:
    """Quarter notes per minute for a tempo direction such as "Allegro ma non troppo"."""
    text = words.lower()
    for word, bpm in TEMPO_WORDS:
        if word in text:
            scale = BEAT_SCALE.get(beat, 1.0)
            if any(m in text for m in ("molto", "assai", "con brio")):
                scale *= 1.08
            if any(m in text for m in ("non troppo", "ma non", "moderato")) and word != "moderato":
                scale *= 0.92
            return round(bpm * scale, 2)
    return None


def _opening_tempo_words(score: Any) -> float | None:
    from music21 import expressions, meter, tempo

    sig = score.recurse().getElementsByClass(meter.TimeSignature).first()
    beat = float(sig.beatDuration.quarterLength) if sig is not None else 1.0
    for part in score.parts[:1]:
        for el in part.flatten().getElementsByClass((expressions.TextExpression, tempo.TempoText)):
            if float(el.offset) > 8:
                break
            bpm = tempo_from_words(str(getattr(el, "content", None) or getattr(el, "text", "")), beat)
            if bpm:
                return bpm
    return None


def _clamp_to_onsets(score: Any, bpm: float) -> float:
    """Keep a guessed tempo where the music moves at a believable rate of note starts."""
    onsets = {float(n.offset) for part in score.parts for n in part.flatten().notes}
    length = float(score.highestTime)
    if not onsets or length <= 0:
        return bpm
    per_quarter = len(onsets) / length
    low, high = (r * 60 / per_quarter for r in ONSETS_PER_SECOND)
    return max(low, min(high, bpm))


def _set_tempo(score: Any, col: Collection, factor: float) -> None:
    """Scale the score's own metronome marks; else take its tempo words (quartets) or the
    collection's tempo, and set that one tempo for the whole piece."""
    from music21 import tempo

    marks = list(score.recurse().getElementsByClass(tempo.TempoIndication))
    written = [m for m in marks if isinstance(m, tempo.MetronomeMark) and m.number is not None]
    if col.keep_score_tempo and written:
        for mark in written:
            mark.number = max(20.0, min(320.0, round(mark.number * factor, 2)))
        return
    base = (_opening_tempo_words(score) if col.keep_score_tempo else None) or col.tempo
    if col.keep_score_tempo:
        base = _clamp_to_onsets(score, base)
    for mark in marks:
        site = mark.activeSite
        if site is not None:
            site.remove(mark)
    bpm = max(20.0, min(320.0, round(base * factor, 2)))
    score.insert(0, tempo.MetronomeMark(number=bpm, referent=1.0))


def _seconds_at(score: Any) -> tuple[Callable[[float], float], float]:
    """Map a score offset (quarter lengths) to seconds, and the first section's quarter tempo."""
    bounds = [(float(a), float(b), float(m.getQuarterBPM())) for a, b, m in score.metronomeMarkBoundaries()]
    bounds = [b for b in bounds if b[1] > b[0]] or [(0.0, float(score.highestTime) or 1.0, 120.0)]

    def at(offset: float) -> float:
        seconds = 0.0
        for start, end, bpm in bounds:
            if offset <= start:
                break
            seconds += (min(offset, end) - start) * 60.0 / bpm
        if offset > bounds[-1][1]:
            seconds += (offset - bounds[-1][1]) * 60.0 / bounds[-1][2]
        return seconds

    return at, bounds[0][2]


def _clean_syllable(text: str) -> str:
    # Some MusicXML exports mark syllables with soft hyphens, music21 marks elisions with "~".
    return re.sub(r"\s+", " ", text.replace("\xad", "").replace("~", " ")).strip(" -")


def lyric_words(score: Any, seconds_at: Callable[[float], float]) -> list[tuple[float, str]]:
    """(start second, word) of verse 1 in the part that has the most sung words."""
    best: list[tuple[float, str]] = []
    for part in score.parts:
        words: list[tuple[float, str]] = []
        current, start = "", 0.0
        for note in part.flatten().notes:
            if not note.lyrics:
                continue
            lyric = next((ly for ly in note.lyrics if ly.number == 1), note.lyrics[0])
            raw = lyric.text or ""
            text = _clean_syllable(raw)
            if not text:
                continue
            if not current:
                start = seconds_at(float(note.offset))
            current += text
            # The word goes on after this syllable (some encodings say so only with a hyphen).
            if lyric.syllabic in ("begin", "middle") or raw.rstrip().endswith(("\xad", "-")):
                continue
            words.append((start, current))
            current = ""
        if current:
            words.append((start, current))
        if len(words) > len(best):
            best = words
    return best


@dataclass(frozen=True)
class MidiNote:
    start: float  # seconds
    end: float
    pitch: int
    velocity: int
    channel: int
    program: int


def _dynamic_levels(part: Any) -> tuple[list[float], list[float]]:
    """Offsets and loudness (music21's volume scalar, 0..1) of the part's dynamic marks."""
    from music21 import dynamics

    marks = sorted(
        (float(d.offset), float(d.volumeScalar))
        for d in part.flatten().getElementsByClass(dynamics.Dynamic)
        if d.volumeScalar is not None
    )
    return [m[0] for m in marks], [m[1] for m in marks]


def score_notes(
    score: Any,
    seconds_at: Callable[[float], float],
    *,
    programs: Sequence[int],
    transpose: int,
    rng: random.Random,
) -> list[MidiNote]:
    """Every sounding note of the score, in seconds, one MIDI channel per part; part i plays
    General MIDI program ``programs[i]`` (the last one repeats for further parts).

    We write our own MIDI rather than use music21's: its export can put a chord's note-offs before
    their note-ons, which leaves notes hanging (and FluidSynth then renders forever).
    """
    import bisect

    from music21 import chord

    channels = [c for c in range(16) if c != 9]  # channel 10 is drums in General MIDI
    notes: list[MidiNote] = []
    for index, part in enumerate(score.parts):
        channel = channels[index % len(channels)]
        program = programs[min(index, len(programs) - 1)]
        offsets, levels = _dynamic_levels(part)
        # Tied notes are joined here (music21's stripTies takes ~20 s on a long movement).
        open_ties: dict[int, tuple[float, float, int]] = {}  # pitch -> (start, end, velocity) offsets

        def emit(
            start_ql: float,
            end_ql: float,
            pitch: int,
            velocity: int,
            channel: int = channel,
            program: int = program,
        ) -> None:
            start, end = seconds_at(start_ql), seconds_at(end_ql)
            if end - start >= 0.02 and 0 <= pitch + transpose <= 127:
                notes.append(MidiNote(start, end, pitch + transpose, velocity, channel, program))

        for element in part.flatten().notes:
            ql = float(element.quarterLength)
            if ql <= 0 or element.duration.isGrace:
                continue
            offset = float(element.offset)
            at = bisect.bisect_right(offsets, offset) - 1
            level = levels[at] if at >= 0 else 0.55  # mezzo-forte where the score says nothing
            velocity = int(max(25, min(120, 30 + 100 * level + rng.randint(-5, 5))))
            is_chord = isinstance(element, chord.Chord)
            for p in element.pitches:
                pitch = round(p.ps)
                tie = (element.getTie(p) or element.tie) if is_chord else element.tie
                kind = tie.type if tie is not None else None
                held = open_ties.pop(pitch, None)
                if held is not None and kind in ("stop", "continue"):
                    start, vel = held[0], held[2]
                else:
                    if held is not None:  # a tie that never stopped: end it where it was
                        emit(held[0], held[1], pitch, held[2])
                    start, vel = offset, velocity
                if kind in ("start", "continue"):
                    open_ties[pitch] = (start, offset + ql, vel)
                else:
                    emit(start, offset + ql, pitch, vel)
        for pitch, (start, end, vel) in open_ties.items():
            emit(start, end, pitch, vel)
    notes.sort(key=lambda n: (n.start, n.channel, n.pitch))
    return notes


def play_again(notes: list[MidiNote], length: float, at_least: float, most: int = 3) -> list[MidiNote]:
    """Repeat a short tune (``length`` seconds) until it lasts ``at_least`` seconds, ``most`` plays."""
    if length <= 0 or length >= at_least:
        return notes
    plays = min(most, math.ceil(at_least / length))
    return [
        MidiNote(n.start + k * length, n.end + k * length, n.pitch, n.velocity, n.channel, n.program)
        for k in range(plays)
        for n in notes
    ]


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, notes: Sequence[MidiNote]) -> None:
    """A type-1 standard MIDI file at 120 bpm, 480 ticks per quarter (960 ticks per second).

    Notes on the same channel and key never overlap (an earlier note ends where the next one
    starts), and at any tick note-offs come before note-ons, so every note is released.
    """
    tps = 960
    by_channel: dict[int, list[MidiNote]] = {}
    for n in notes:
        by_channel.setdefault(n.channel, []).append(n)
    tracks = [b"\x00\xff\x51\x03\x07\xa1\x20" + b"\x00\xff\x2f\x00"]  # tempo 500000 us/quarter
    for channel in sorted(by_channel):
        events: list[tuple[int, int, bytes]] = []
        per_key: dict[int, list[MidiNote]] = {}
        for n in by_channel[channel]:
            per_key.setdefault(n.pitch, []).append(n)
        for pitch, key_notes in per_key.items():
            key_notes.sort(key=lambda n: (n.start, n.end))
            for i, n in enumerate(key_notes):
                on = round(n.start * tps)
                off = round(n.end * tps)
                if i + 1 < len(key_notes):
                    off = min(off, round(key_notes[i + 1].start * tps))
                if off <= on:
                    continue
                events.append((on, 1, bytes([0x90 | channel, pitch, n.velocity])))
                events.append((off, 0, bytes([0x80 | channel, pitch, 0])))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        program = by_channel[channel][0].program
        data = bytearray(b"\x00" + bytes([0xC0 | channel, program]))
        data += b"\x00" + bytes([0xB0 | channel, 7, 100])
        tick = 0
        for at, _, message in events:
            data += _vlq(at - tick) + message
            tick = at
        data += b"\x00\xff\x2f\x00"
        tracks.append(bytes(data))
    blob = bytearray(b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big"))
    blob += len(tracks).to_bytes(2, "big") + (480).to_bytes(2, "big")
    for track in tracks:
        blob += b"MTrk" + len(track).to_bytes(4, "big") + track
    path.write_bytes(bytes(blob))


def render_midi(midi_path: Path, sample_rate: int, soundfont: Path, timeout: float = 600) -> np.ndarray:
    """Render a MIDI file with the FluidSynth binary; returns mono float32 audio.

    FluidSynth renders until every voice has died away, so a note that is never released would
    render forever: ``timeout`` (seconds) turns that into an error.
    """
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="jukebot-fs-") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [
            "fluidsynth", "-ni", "-q", "-F", str(wav), "-r", str(sample_rate), "-O", "float",
            "-o", "synth.cpu-cores=1", str(soundfont), str(midi_path),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not wav.exists():
            raise RuntimeError(f"fluidsynth failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz, asked for {sample_rate} Hz")
    return np.ascontiguousarray(audio.mean(axis=1, dtype=np.float32))


def _db(x: float) -> float:
    return 20 * math.log10(max(x, 1e-12))


def normalise(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Trim the silent tail (keeping a little reverb) and set the piece's loudness."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak <= 0:
        return audio
    loud = np.nonzero(np.abs(audio) > peak * 10 ** (-60 / 20))[0]
    end = min(len(audio), int(loud[-1]) + int(TAIL_KEEP_SECONDS * sample_rate)) if loud.size else 0
    audio = audio[:end]
    frame = max(1, sample_rate // 20)
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    if frames.size == 0:
        return audio
    energy = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    active = energy[energy > peak * 10 ** (-40 / 20)]
    rms = float(np.sqrt((active**2).mean())) if active.size else float(energy.mean())
    gain = 10 ** (TARGET_RMS_DB / 20) / max(rms, 1e-9)
    gain = min(gain, PEAK / peak)
    return (audio * gain).astype(np.float32)


def clip_starts(n_samples: int, clip: int, max_clips: int) -> list[int]:
    """Where clips start in a piece of ``n_samples``: back to back, plus one clip aligned to the end
    when a quarter clip or more is left over (so endings are heard); then at most ``max_clips`` of
    them, evenly spread. A piece shorter than a clip gives one (padded) clip if at least half a clip.
    """
    if n_samples < clip:
        return [0] if n_samples >= clip // 2 else []
    starts = list(range(0, n_samples - clip + 1, clip))
    if n_samples - (starts[-1] + clip) >= clip // 4:
        starts.append(n_samples - clip)
    if len(starts) > max_clips:
        picks = np.linspace(0, len(starts) - 1, max_clips).round().astype(int)
        starts = [starts[i] for i in sorted(set(picks.tolist()))]
    return starts


def _slug(source: str) -> str:
    return re.sub(
        r"[^A-Za-z0-9]+", "-", source.replace(".mxl", "").replace(".krn", "").replace(".abc", "")
    ).strip("-")


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, audio_format: str) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    if audio_format == "flac":
        sf.write(str(path), audio, sample_rate, format="FLAC", subtype="PCM_16")
    elif audio_format == "wav":
        sf.write(str(path), audio, sample_rate, format="WAV", subtype="PCM_16")
    elif audio_format == "ogg":
        _write_ogg(path, audio, sample_rate)
    else:
        raise ValueError(f"unknown audio format {audio_format!r} (flac, wav or ogg)")


def _write_ogg(target: Path | io.BytesIO, audio: np.ndarray, sample_rate: int, quality: float = 0.15) -> None:
    import soundfile as sf

    # libsndfile 1.2 crashes when handed long buffers for Vorbis: feed it in blocks.
    with sf.SoundFile(
        target if isinstance(target, io.BytesIO) else str(target), "w", sample_rate, 1,
        format="OGG", subtype="VORBIS", compression_level=1.0 - quality,
    ) as f:  # fmt: skip
        for i in range(0, len(audio), 8192):
            f.write(audio[i : i + 8192])


def render_piece(job: PieceJob) -> PieceResult:
    """Parse, arrange, render and cut one piece. Errors become ``PieceResult.error``."""
    warnings.filterwarnings("ignore")
    result = PieceResult(job=job)
    try:
        col = next(c for c in COLLECTIONS if c.key == job.collection)
        score = _load_score(job.source)
        if col.expand_repeats:
            with contextlib.suppress(Exception):  # malformed repeat marks: play it as written
                score = score.expandRepeats()
        _set_tempo(score, col, job.tempo_factor)
        seconds_at, bpm = _seconds_at(score)
        result.quarter_bpm = bpm
        words = lyric_words(score, seconds_at)
        result.has_lyrics = bool(words)
        with tempfile.TemporaryDirectory(prefix="jukebot-midi-") as tmp:
            mid = Path(tmp) / "piece.mid"
            rng = random.Random(f"{job.source}:velocity")
            notes = score_notes(score, seconds_at, programs=job.programs, transpose=job.transpose, rng=rng)
            if col.expand_repeats:  # dance tunes are played round again, as players do
                notes = play_again(notes, seconds_at(float(score.highestTime)), 1.25 * job.seconds_per_clip)
            write_midi(mid, notes)
            length = max((n.end for n in notes), default=0.0)
            # Offline rendering runs at 50x real time or more even on a busy machine.
            audio = render_midi(mid, job.sample_rate, Path(job.soundfont), timeout=60 + length / 5)
        audio = normalise(audio, job.sample_rate)
        sr = job.sample_rate
        result.seconds = round(len(audio) / sr, 3)
        clip = round(job.seconds_per_clip * sr)
        starts = clip_starts(len(audio), clip, job.max_clips)
        if not starts:
            result.error = f"too short ({result.seconds:.1f} s; a clip is {job.seconds_per_clip:g} s)"
            return result
        out = Path(job.out_dir)
        for start in starts:
            piece = audio[start : start + clip]
            if _db(float(np.sqrt(np.mean(piece.astype(np.float64) ** 2)))) < SILENT_CLIP_DB:
                continue
            if len(piece) < clip:
                piece = np.concatenate([piece, np.zeros(clip - len(piece), np.float32)])
            rel = f"audio/{_slug(job.artist)}/{_slug(job.source)}_{start // clip:03d}.{job.audio_format}"
            if start % clip:  # the end-aligned clip
                rel = rel.replace(f".{job.audio_format}", f"e.{job.audio_format}")
            write_audio(out / rel, piece, sr, job.audio_format)
            t0, t1 = start / sr, (start + clip) / sr
            text = " ".join(w for t, w in words if t0 <= t < t1)
            result.clips.append(
                ClipLabel(
                    file=rel,
                    artist=job.artist,
                    genre=job.genre,
                    lyrics=text,
                    seconds=round(clip / sr, 3),
                    offset_seconds=round(t0, 3),
                    total_seconds=result.seconds,
                    source=job.source,
                    split=job.split,
                )
            )
    except Exception as exc:  # one bad score must not stop a build of hundreds
        result.error = f"{type(exc).__name__}: {exc}"[:500]
    return result


# ---------------------------------------------------------------------------------------------
# The build.


def _tool_versions(soundfont: Path) -> dict[str, Any]:
    import music21
    import soundfile as sf

    fs = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True, check=False)
    sha = hashlib.sha256()
    with soundfont.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    debs = {}
    if shutil.which("dpkg-query"):
        for pkg in ("fluidsynth", "fluid-soundfont-gm"):
            q = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False
            )
            debs[pkg] = q.stdout.strip() or None
    return {
        "corpus_format": CORPUS_FORMAT_VERSION,
        "music21": music21.__version__,
        "fluidsynth": (fs.stdout.splitlines() or ["?"])[0].strip(),
        "soundfont": {"path": str(soundfont), "bytes": soundfont.stat().st_size, "sha256": sha.hexdigest()},
        "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__,
        "python": platform.python_version(),
        "debian_packages": debs,
    }


def check_tools(soundfont: Path) -> None:
    if shutil.which("fluidsynth") is None:
        raise CorpusError(
            "FluidSynth is not installed. Install it with: apt-get install -y fluidsynth fluid-soundfont-gm"
        )
    if not soundfont.is_file():
        raise CorpusError(
            f"SoundFont {soundfont} not found. Install it with: apt-get install -y fluid-soundfont-gm "
            "(or pass another General MIDI .sf2 file)"
        )
    try:
        import music21  # noqa: F401
    except ImportError as exc:
        raise CorpusError("music21 is not installed: pip install 'jukebot[corpus]'") from exc


def _tally(clips: Sequence[ClipLabel], key: str) -> dict[str, dict[str, float]]:
    counts: Counter[str] = Counter()
    seconds: dict[str, float] = {}
    for c in clips:
        counts[getattr(c, key)] += 1
        seconds[getattr(c, key)] = seconds.get(getattr(c, key), 0.0) + c.seconds
    return {k: {"clips": counts[k], "seconds": round(seconds[k], 3)} for k in sorted(counts)}


def write_labels(path: Path, clips: Sequence[ClipLabel]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for clip in sorted(clips, key=lambda c: c.file):
            writer.writerow(asdict(clip))


def build_corpus(
    out_dir: str | Path,
    *,
    sample_rate: int = 22050,
    max_pieces: int | None = None,
    seconds_per_clip: float = 20.0,
    max_clips_per_piece: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    audio_format: str = "flac",
    soundfont: str | Path | None = None,
    progress: bool = True,
) -> CorpusSummary:
    """Render the labelled corpus into ``out_dir`` (``jukebot corpus build``).

    Args:
        out_dir: folder to write ``audio/``, ``labels.csv`` and ``corpus.json`` into. Created if
            missing; an earlier build there is replaced (its ``audio/`` folder is removed first).
        sample_rate: audio rate of the clips in Hz (the demo model's rate; 22050 or 44100).
        max_pieces: render only this many pieces, taken round-robin over the collections (for quick
            test builds); ``None`` renders the full selection (193 pieces, about 3 hours of audio).
        seconds_per_clip: length of every clip file in seconds. Dataset crops must not be longer.
        max_clips_per_piece: override each collection's cap on clips per piece.
        seed: selects the pieces and each piece's tempo, key and instruments.
        workers: processes rendering in parallel (default: 2, or 1 on a one-core machine).
        audio_format: ``flac`` (lossless, byte-reproducible), ``wav`` or ``ogg`` (Vorbis, small).
        soundfont: General MIDI SoundFont; default ``$JUKEBOT_SOUNDFONT`` or Debian's FluidR3_GM.
        progress: print one line per piece to stderr.

    Returns the summary also written to ``corpus.json``. Raises ``CorpusError`` when FluidSynth,
    the SoundFont or music21 is missing. A score that fails to parse or render is skipped and
    listed under ``skipped`` in the summary; the build goes on.
    """
    started = time.monotonic()
    out = Path(out_dir)
    sf2 = Path(soundfont or os.environ.get("JUKEBOT_SOUNDFONT") or DEFAULT_SOUNDFONT)
    check_tools(sf2)
    if audio_format not in ("flac", "wav", "ogg"):
        raise ValueError(f"audio_format must be flac, wav or ogg, not {audio_format!r}")
    if seconds_per_clip <= 0:
        raise ValueError("seconds_per_clip must be positive")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "audio").exists():
        shutil.rmtree(out / "audio")
    jobs = plan_pieces(
        out,
        sample_rate=sample_rate,
        seconds_per_clip=seconds_per_clip,
        seed=seed,
        max_pieces=max_pieces,
        max_clips_per_piece=max_clips_per_piece,
        soundfont=sf2,
        audio_format=audio_format,
    )
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    results = _run_jobs(jobs, workers, progress)

    clips = [c for r in results for c in r.clips]
    write_labels(out / "labels.csv", clips)
    skipped = [{"source": r.job.source, "reason": r.error} for r in results if r.error]
    summary = CorpusSummary(
        out_dir=str(out),
        sample_rate=sample_rate,
        seconds_per_clip=seconds_per_clip,
        seed=seed,
        clips=len(clips),
        pieces=sum(1 for r in results if r.clips),
        seconds=round(sum(c.seconds for c in clips), 3),
        artists=_tally(clips, "artist"),
        genres=_tally(clips, "genre"),
        skipped=skipped,
        build_seconds=round(time.monotonic() - started, 1),
        versions=_tool_versions(sf2),
    )
    doc = {
        **asdict(summary),
        "hours": round(summary.hours, 4),
        "build": {
            "max_pieces": max_pieces,
            "max_clips_per_piece": max_clips_per_piece,
            "audio_format": audio_format,
            "workers": workers,
            "command": _command_line(sample_rate, max_pieces, seconds_per_clip, seed, audio_format),
        },
        "labels": "labels.csv",
        "pieces_used": [
            {
                "source": r.job.source,
                "collection": r.job.collection,
                "artist": r.job.artist,
                "genre": r.job.genre,
                "split": r.job.split,
                "tempo_factor": r.job.tempo_factor,
                "quarter_bpm": r.quarter_bpm,
                "transpose": r.job.transpose,
                "instruments": [PROGRAM_NAMES.get(p, str(p)) for p in r.job.programs],
                "gm_programs": list(r.job.programs),
                "seconds": r.seconds,
                "clips": len(r.clips),
                "lyrics": r.has_lyrics,
            }
            for r in results
            if r.clips
        ],
    }
    (out / "corpus.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if progress:
        print(summary.describe(), file=sys.stderr)
    return summary


def _command_line(sample_rate: int, max_pieces: int | None, seconds: float, seed: int, fmt: str) -> str:
    cmd = f"jukebot corpus build --out DIR --sample-rate {sample_rate} --seconds-per-clip {seconds:g} --seed {seed}"
    if max_pieces is not None:
        cmd += f" --max-pieces {max_pieces}"
    if fmt != "flac":
        cmd += f" --format {fmt}"
    return cmd


def _run_jobs(jobs: list[PieceJob], workers: int, progress: bool) -> list[PieceResult]:
    results: list[PieceResult | None] = [None] * len(jobs)
    done = 0

    def report(r: PieceResult) -> None:
        nonlocal done
        done += 1
        if progress:
            what = r.error or f"{len(r.clips)} clips, {r.seconds:.0f} s"
            print(f"[{done:>3}/{len(jobs)}] {r.job.source}: {what}", file=sys.stderr, flush=True)

    if workers <= 1:
        for job in jobs:
            results[job.index] = render_piece(job)
            report(results[job.index])  # type: ignore[arg-type]
    else:
        cost = {c.key: c.cost for c in COLLECTIONS}
        # Slow pieces first, so the pool does not end waiting on one long quartet.
        order = sorted(jobs, key=lambda j: (-cost[j.collection], j.index))
        # spawn: workers start clean (no inherited threads or locks from the caller).
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures: list[Future[PieceResult]] = [pool.submit(render_piece, j) for j in order]
            for fut in as_completed(futures):
                r = fut.result()
                results[r.job.index] = r
                report(r)
    return [r for r in results if r is not None]


# ---------------------------------------------------------------------------------------------
# Packing for the GPU machine.


def pack_corpus(corpus_dir: str | Path, tar_path: str | Path, *, quality: float = 0.0) -> dict[str, Any]:
    """Write ``corpus_dir`` as an uncompressed tar of OGG Vorbis clips (``corpus/`` inside).

    ``quality`` is Vorbis quality in [0, 1]: 0.0 is about 28 kbit/s for 22.05 kHz mono, 0.1 about 31
    (the spectrum keeps its shape; 3 hours fit in about 37 MiB at 0.0). The tar
    holds ``corpus/labels.csv`` (file names changed to ``.ogg``), ``corpus/corpus.json`` and
    ``corpus/audio/...``; soundfile reads the clips on any machine, no ffmpeg needed. Returns
    the tar's size in bytes and the number of clips.
    """
    import soundfile as sf

    if not 0.0 <= quality <= 1.0:
        raise CorpusError(f"Vorbis quality must be between 0 and 1, not {quality}")
    src = Path(corpus_dir)
    if not (src / "labels.csv").is_file():
        raise CorpusError(f"{src} is not a built corpus (no labels.csv): run jukebot corpus build first")
    tar_path = Path(tar_path)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with (src / "labels.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    tmp = tar_path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for row in rows:
            audio, rate = sf.read(str(src / row["file"]), dtype="float32")
            buf = io.BytesIO()
            _write_ogg(buf, audio, rate, quality)
            row["file"] = str(Path(row["file"]).with_suffix(".ogg").as_posix())
            _add_bytes(tar, f"corpus/{row['file']}", buf.getvalue())
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _add_bytes(tar, "corpus/labels.csv", text.getvalue().encode())
        meta = json.loads((src / "corpus.json").read_text(encoding="utf-8"))
        meta["packed"] = {"audio_format": "ogg", "vorbis_quality": quality}
        _add_bytes(tar, "corpus/corpus.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
    tmp.replace(tar_path)
    return {"bytes": tar_path.stat().st_size, "clips": len(rows)}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
