"""The engine's view of `db.audio` (the one audio module): decode at the model's rate, WAV and MP3.

Kept as a module so the engine's callers keep their imports; everything lives in `db.audio`.
"""

from __future__ import annotations

import os

import numpy as np

from db.audio import (
    FFMPEG_TIMEOUT_S,
    AudioError,
    AudioInfo,
    bytes_as_file,
    check_limits,
    decode,
    decode_bytes,
    human_bytes,
    human_seconds,
    mp3_bytes,
    probe,
    wav_bytes,
    write_mp3,
    write_wav,
)

__all__ = [
    "FFMPEG_TIMEOUT_S",
    "AudioError",
    "AudioInfo",
    "bytes_as_file",
    "check_limits",
    "human_bytes",
    "human_seconds",
    "load_audio",
    "load_audio_bytes",
    "mp3_bytes",
    "probe",
    "wav_bytes",
    "write_mp3",
    "write_wav",
]


def _limit(max_seconds: float | None, duration: float | None) -> float:
    limit = max_seconds if max_seconds is not None else duration
    if limit is None:
        raise TypeError("decoding needs max_seconds or duration: audio is never decoded without a limit")
    return limit


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int,
    *,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    duration: float | None = None,
    what: str = "the prime",
    start: float = 0.0,
) -> np.ndarray:
    """Mono float32 at `sample_rate`: `duration` seconds from `start`, or all of it up to `max_seconds`."""
    return decode(
        path,
        sample_rate,
        max_seconds=_limit(max_seconds, duration),
        max_bytes=max_bytes,
        duration=duration,
        what=what,
        start=start,
    )


def load_audio_bytes(
    data: bytes,
    sample_rate: int,
    *,
    suffix: str = "",
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    duration: float | None = None,
    what: str = "the prime",
) -> np.ndarray:
    return decode_bytes(
        data,
        sample_rate,
        max_seconds=_limit(max_seconds, duration),
        suffix=suffix,
        max_bytes=max_bytes,
        duration=duration,
        what=what,
    )
