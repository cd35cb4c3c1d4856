"""Where the corpus comes from: the collections of public-domain scores in music21, how each is
played (instruments, tempo, loudness), and the pieces planned from them."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


class CorpusError(RuntimeError):
    """A build cannot start: a tool or file it needs is missing."""
