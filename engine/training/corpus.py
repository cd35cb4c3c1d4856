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
and FluidSynth's offline rendering is deterministic. ``pack_corpus`` (engine.training.corpus_pack) makes
a compact OGG Vorbis tar of a built corpus for carrying to a GPU machine.

This module plans and runs the build; the collections and the planned pieces are in
engine.training.sources, the rendering of one piece in engine.training.scores.

Needs the Debian packages ``fluidsynth`` and ``fluid-soundfont-gm`` and the Python packages
``music21`` and ``soundfile``. This module does not import torch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.training.scores import render_piece
from engine.training.sources import (
    COLLECTIONS,
    CORPUS_FORMAT_VERSION,
    DEFAULT_SOUNDFONT,
    HELD_OUT_EVERY,
    LABEL_COLUMNS,
    LISTERS,
    PROGRAM_NAMES,
    ClipLabel,
    Collection,
    CorpusError,
    PieceJob,
    PieceResult,
)


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
