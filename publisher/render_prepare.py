"""The ffmpeg side of every render: running it (one timeout, errors a musician understands), reading
what a file holds, and the one preparation pass every render starts with.

The pass: cut (start, max_seconds), loudness normalised to LOUDNESS_TARGET_LUFS (integrated loudness
measured by ffmpeg's EBU R128 meter, then one constant gain, so the music's dynamics are kept; the gain
is held back when it would push the true peak above TRUE_PEAK_DBTP, so a very dynamic clip ends a
little quieter rather than clipped), short fades so a cut never clicks. ffmpeg is found, run and
probed through `db.audio`, which also says why pydub is not used.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from db import audio
from db.audio import AudioInfo
from db.audio.streams import NoAudioStream

AudioSource = bytes | str | os.PathLike[str]

LOUDNESS_TARGET_LUFS = -14.0  # what streaming services play at; X and SoundCloud both sit near it
TRUE_PEAK_DBTP = -1.5  # headroom for lossy encoders
FADE_IN_SECONDS = 0.05  # enough to remove the click of a cut, too short to hear as a fade
FADE_OUT_SECONDS = 0.5
SAMPLE_RATE = 48_000
PICTURE_MAX_SECONDS = 20 * 60.0  # a picture shows at most this much (decoding is bounded by it)


class RenderError(ValueError):
    """A render that cannot be done, said so a musician understands."""


# --------------------------------------------------------------------------------------------- ffmpeg


def ffmpeg_tool(name: str) -> str:
    try:
        return audio.ffmpeg()
    except audio.AudioError as e:
        raise RenderError(str(e)) from None


def command(tool: str, *parts: str | Path | list[str]) -> list[str]:
    """A command line: plain strings are fixed options split on spaces; paths and lists stay whole
    (file names and filter graphs may hold spaces)."""
    args = [ffmpeg_tool(tool)]
    for part in parts:
        if isinstance(part, Path):
            args.append(str(part))
        elif isinstance(part, list):
            args.extend(part)
        else:
            args.extend(part.split())
    return args


def run(args: list[str], *, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = audio.run(args, what=what)
    except audio.AudioError as e:
        raise RenderError(str(e)) from None
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = detail[-1] if detail else f"exit status {proc.returncode}"
        raise RenderError(f"Could not {what}: {last}")
    return proc


@contextmanager
def as_path(src: AudioSource) -> Iterator[Path]:
    """A readable file for ffmpeg: the given path, or the bytes written to a temporary file."""
    if isinstance(src, bytes | bytearray | memoryview):
        data = bytes(src)
        if not data:
            raise RenderError("The audio is empty (0 bytes).")
        with tempfile.TemporaryDirectory(prefix="jukebot-render-") as tmp:
            path = Path(tmp) / "input"
            path.write_bytes(data)
            yield path
        return
    path = Path(src)
    if not path.is_file():
        raise RenderError(f"The audio file {path.name!r} does not exist.")
    if path.stat().st_size == 0:
        raise RenderError(f"The audio file {path.name!r} is empty (0 bytes).")
    yield path


def probe_path(path: Path) -> AudioInfo:
    """db.audio's probe, with a duration (a file that states none has no use here)."""
    try:
        info = audio.probe(path)
    except NoAudioStream:
        raise RenderError("The file has no audio in it.") from None
    except audio.AudioError:
        raise RenderError(
            "The audio could not be read: it is damaged or not an audio file ffmpeg knows."
        ) from None
    if not info.duration or info.duration <= 0:
        raise RenderError("The audio has no length (it holds no samples).")
    return info


def probe_audio(src: AudioSource) -> AudioInfo:
    """Duration, rate, channels and codec; RenderError for empty, corrupt or silent-less files."""
    with as_path(src) as path:
        return probe_path(path)


def decode_mono(
    src: AudioSource, sample_rate: int = 8000, max_seconds: float = PICTURE_MAX_SECONDS
) -> np.ndarray:
    """The first `max_seconds` of the audio as one float32 channel at `sample_rate` (for pictures)."""
    with as_path(src) as path:
        probe_path(path)
        try:
            return audio.decode(
                path, sample_rate, max_seconds=max_seconds, duration=max_seconds, what="the picture"
            )
        except audio.AudioError as e:
            raise RenderError(f"Could not decode the audio: {e}") from None


# --------------------------------------------------------------------------------------- preparation


def _normalising_gain(path: Path, pre: str) -> float | None:
    """The gain (dB) that brings the clip to LOUDNESS_TARGET_LUFS without its true peak passing
    TRUE_PEAK_DBTP; None for silence (nothing to lift)."""
    try:
        level = audio.measure(path, pre)
    except audio.AudioError as e:
        raise RenderError(str(e)) from None
    return audio.normalising_gain(level, LOUDNESS_TARGET_LUFS, TRUE_PEAK_DBTP)


def _prepare(
    path: Path,
    out: Path,
    *,
    start: float,
    max_seconds: float | None,
    normalize: bool,
    fade_in: float,
    fade_out: float,
) -> float:
    """Cut, normalise and fade `path` into a 48 kHz stereo WAV at `out`; returns its duration."""
    length = probe_path(path).duration
    assert length is not None  # _probe_path refuses files that do not state one
    if start < 0 or start >= length:
        raise RenderError(f"The start ({start:.1f} s) is outside the clip ({length:.1f} s long).")
    duration = length - start
    if max_seconds is not None:
        if max_seconds <= 0:
            raise RenderError("The length to render must be more than 0 seconds.")
        duration = min(duration, max_seconds)
    pre = f"atrim=start={start:.6f}:duration={duration:.6f},asetpts=PTS-STARTPTS"
    filters = [pre]
    if normalize:
        gain = _normalising_gain(path, pre)
        if gain is not None:
            filters.append(f"volume={gain:.2f}dB")
    filters.append(f"aresample={SAMPLE_RATE}")
    fade_in = min(fade_in, duration / 4)
    fade_out = min(fade_out, duration / 4)
    if fade_in > 0:
        filters.append(f"afade=t=in:st=0:d={fade_in:.4f}")
    if fade_out > 0:
        filters.append(f"afade=t=out:st={duration - fade_out:.4f}:d={fade_out:.4f}")
    run(
        command(
            "ffmpeg",
            "-v error -nostdin -y -i",
            path,
            "-vn -af",
            [",".join(filters)],
            f"-ac 2 -ar {SAMPLE_RATE} -c:a pcm_s16le",
            out,
        ),
        what="prepare the audio",
    )
    return duration


@contextmanager
def prepared(
    src: AudioSource,
    *,
    start: float = 0.0,
    max_seconds: float | None = None,
    normalize: bool = True,
    fade_in: float = FADE_IN_SECONDS,
    fade_out: float = FADE_OUT_SECONDS,
) -> Iterator[tuple[Path, float]]:
    """A temporary normalised, faded 48 kHz WAV and its duration, for several encodes of one clip."""
    with as_path(src) as path, tempfile.TemporaryDirectory(prefix="jukebot-prep-") as tmp:
        out = Path(tmp) / "prepared.wav"
        duration = _prepare(
            path,
            out,
            start=start,
            max_seconds=max_seconds,
            normalize=normalize,
            fade_in=fade_in,
            fade_out=fade_out,
        )
        yield out, duration
