"""Decoding any audio ffmpeg reads to mono float32, never past a duration limit.

The limits policy, in order: the file size (before running anything), the duration the container
states (a 2-hour upload is refused in milliseconds), then the decode itself, which is cut by ffmpeg's
`-t` at the limit plus a little and read into a buffer of exactly that size. A header that lies (a
FLAC claiming 5 s that holds 3 h) therefore costs at most the limit's worth of decoding and memory,
and is refused as too long.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from db.audio.streams import AudioInfo, probe
from db.audio.tools import AudioError, ffmpeg, run_bounded

# Decoding past the limit by this much tells "too long" from "exactly the limit" despite codec padding.
LIMIT_SLACK_S = 1.0
# What a stated duration may exceed the limit by and still count as within it (container rounding).
ROUNDING_S = 0.05


def human_seconds(seconds: float) -> str:
    """'45 s', '3 min', '3 min 12 s', '1 h 2 min'."""
    s = round(seconds)
    if s < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{m} min {sec} s" if sec else f"{m} min"


def human_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.0f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n} bytes"


def check_limits(
    info: AudioInfo,
    *,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    what: str = "the prime",
) -> None:
    if max_bytes is not None and info.size > max_bytes:
        raise AudioError(
            f"this file is {human_bytes(info.size)}; {what} can be at most {human_bytes(max_bytes)}"
        )
    if max_seconds is not None and info.duration is not None and info.duration > max_seconds + ROUNDING_S:
        raise AudioError(
            f"this file is {human_seconds(info.duration)} long; {what} can be at most {human_seconds(max_seconds)}"
        )


def decode(
    path: str | os.PathLike[str],
    sample_rate: int,
    *,
    max_seconds: float,
    max_bytes: int | None = None,
    duration: float | None = None,
    what: str = "the prime",
    start: float = 0.0,
) -> np.ndarray:
    """Mono float32 at `sample_rate` (channels averaged, as librosa's mono=True does).

    `duration` keeps only the first seconds (the rest is not decoded); `start` skips that many
    seconds first (ffmpeg seeks; nothing before it is kept). Without it, audio longer than
    `max_seconds` is refused, whether the container says so or the decode finds out."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"the file {path.name} does not exist")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:  # before even running ffprobe
        raise AudioError(f"this file is {human_bytes(size)}; {what} can be at most {human_bytes(max_bytes)}")
    info = probe(path)
    cut = duration is not None and duration <= max_seconds
    if not cut:
        check_limits(info, max_bytes=max_bytes, max_seconds=max_seconds, what=what)
    limit = duration if cut and duration is not None else max_seconds + LIMIT_SLACK_S
    # Keep the channels and average them here: ffmpeg's own downmix scales by 1/sqrt(2).
    channels = max(1, info.channels)
    seek = ["-ss", f"{start:.6f}"] if start > 0 else []
    cmd = [ffmpeg(), "-nostdin", "-v", "error", *seek, "-i", str(path), "-map", "0:a:0", "-t", f"{limit:.6f}"]
    cmd += ["-ac", str(channels), "-ar", str(sample_rate), "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    frame = 4 * channels
    out = run_bounded(cmd, (int(limit * sample_rate) + sample_rate) * frame, what="decode the audio")
    if out.returncode != 0 and not out.truncated:
        raise AudioError("ffmpeg could not decode this file; it may be damaged or not audio")
    raw = np.frombuffer(out.stdout, dtype="<f4")
    raw = raw[: raw.size // channels * channels]
    audio = raw.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    if audio.size == 0:
        raise AudioError("this file has no audio in it")
    if not cut and audio.size > (max_seconds + ROUNDING_S) * sample_rate:
        raise AudioError(
            f"this file is longer than {human_seconds(max_seconds)}"
            f"{' (though its header says otherwise)' if info.duration is not None else ''}; "
            f"{what} can be at most that long"
        )
    if not np.isfinite(audio).all():
        raise AudioError("this file decodes to invalid samples (NaN or infinity)")
    return audio


@contextmanager
def bytes_as_file(data: bytes, suffix: str = "") -> Iterator[Path]:
    """A temporary file holding `data` (the duration is read from a seekable file)."""
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="jukebot-audio-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def decode_bytes(
    data: bytes,
    sample_rate: int,
    *,
    max_seconds: float,
    suffix: str = "",
    max_bytes: int | None = None,
    duration: float | None = None,
    what: str = "the prime",
) -> np.ndarray:
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioError(
            f"this file is {human_bytes(len(data))}; {what} can be at most {human_bytes(max_bytes)}"
        )
    with bytes_as_file(data, suffix) as path:
        return decode(
            path, sample_rate, max_seconds=max_seconds, max_bytes=max_bytes, duration=duration, what=what
        )
