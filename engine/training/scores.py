"""Rendering one piece of the corpus: score -> notes -> MIDI -> FluidSynth audio -> labelled clips.
Runs in a worker process of the build."""

from __future__ import annotations

import contextlib
import io
import math
import random
import re
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.training.sources import (
    COLLECTIONS,
    PEAK,
    SILENT_CLIP_DB,
    TAIL_KEEP_SECONDS,
    TARGET_RMS_DB,
    ClipLabel,
    Collection,
    PieceJob,
    PieceResult,
)

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
        write_ogg(path, audio, sample_rate)
    else:
        raise ValueError(f"unknown audio format {audio_format!r} (flac, wav or ogg)")


def write_ogg(target: Path | io.BytesIO, audio: np.ndarray, sample_rate: int, quality: float = 0.15) -> None:
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
