"""Audio in and out: anything ffmpeg reads becomes mono float32 at the model's rate; results are
written as WAV (soundfile) and MP3 (ffmpeg).

The `ffmpeg`/`ffprobe` binaries are called as subprocesses (Debian package `ffmpeg`). Limits are
checked before anything is decoded: the file size first, then the duration ffprobe reads from the
container, so a 2-hour upload is refused in milliseconds. Errors are `AudioError` with a sentence a
musician can act on.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FFMPEG_TIMEOUT_S = 300.0


class AudioError(ValueError):
    """Bad audio input, with a message meant for the person who gave it."""


@dataclass(frozen=True)
class AudioInfo:
    duration: float | None  # seconds; None when the container does not say
    sample_rate: int
    channels: int
    codec: str
    format: str
    size: int  # bytes


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


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"`{name}` was not found on PATH; install ffmpeg (Debian: apt-get install -y ffmpeg)"
        )
    return path


def _run(cmd: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """What ffprobe says about the first audio stream of a file."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise AudioError("this file is empty")
    res = _run(
        [
            _binary("ffprobe"),
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            "-select_streams",
            "a:0",
            str(path),
        ]
    )
    not_audio = AudioError("this does not look like an audio file ffmpeg can read")
    if res.returncode != 0:
        raise not_audio
    try:
        data = json.loads(res.stdout or b"{}")
    except json.JSONDecodeError:
        raise not_audio from None
    streams = data.get("streams") or []
    if not streams:
        raise AudioError("this file has no audio in it")
    stream, fmt = streams[0], data.get("format") or {}
    duration = None
    for raw in (stream.get("duration"), fmt.get("duration")):
        if raw is None:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            duration = value
            break
    return AudioInfo(
        duration=duration,
        sample_rate=int(stream.get("sample_rate") or 0),
        channels=int(stream.get("channels") or 0),
        codec=str(stream.get("codec_name") or "?"),
        format=str(fmt.get("format_name") or "?"),
        size=size,
    )


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
    if max_seconds is not None and info.duration is not None and info.duration > max_seconds + 0.05:
        raise AudioError(
            f"this file is {human_seconds(info.duration)} long; {what} can be at most {human_seconds(max_seconds)}"
        )


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int,
    *,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    duration: float | None = None,
    what: str = "the prime",
) -> np.ndarray:
    """Decode a file to mono float32 at `sample_rate`; `duration` keeps only the first seconds.

    `max_bytes` and `max_seconds` are checked before decoding (size, then ffprobe's duration); a
    file whose container does not state a duration is decoded at most to `max_seconds` + 1 s and
    refused if it is longer."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"the file {path.name} does not exist")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:  # before even running ffprobe
        raise AudioError(f"this file is {human_bytes(size)}; {what} can be at most {human_bytes(max_bytes)}")
    info = probe(path)
    check_limits(info, max_bytes=max_bytes, max_seconds=max_seconds, what=what)
    limit = duration
    if max_seconds is not None and info.duration is None:
        limit = min(limit, max_seconds + 1.0) if limit is not None else max_seconds + 1.0
    cmd = [_binary("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0"]
    if limit is not None:
        cmd += ["-t", f"{limit:.6f}"]
    # Keep the channels and average them here: the original (librosa, mono=True) takes the mean,
    # while ffmpeg's own downmix scales by 1/sqrt(2).
    channels = max(1, info.channels)
    cmd += ["-ac", str(channels), "-ar", str(sample_rate), "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    res = _run(cmd)
    if res.returncode != 0:
        raise AudioError("ffmpeg could not decode this file; it may be damaged or not audio")
    raw = np.frombuffer(res.stdout, dtype="<f4")
    raw = raw[: raw.size // channels * channels]
    audio = raw.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    if audio.size == 0:
        raise AudioError("this file has no audio in it")
    if max_seconds is not None and info.duration is None and audio.size > (max_seconds + 0.05) * sample_rate:
        raise AudioError(
            f"this file is longer than {human_seconds(max_seconds)}; {what} can be at most that long"
        )
    if not np.isfinite(audio).all():
        raise AudioError("this file decodes to invalid samples (NaN or infinity)")
    return audio


@contextmanager
def bytes_as_file(data: bytes, suffix: str = "") -> Iterator[Path]:
    """A temporary file holding `data` (ffprobe needs a seekable file to read the duration)."""
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="jukebot-audio-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


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
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioError(
            f"this file is {human_bytes(len(data))}; {what} can be at most {human_bytes(max_bytes)}"
        )
    with bytes_as_file(data, suffix) as path:
        return load_audio(
            path, sample_rate, max_bytes=max_bytes, max_seconds=max_seconds, duration=duration, what=what
        )


def _as_mono(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"expected mono audio of shape [T], got {a.shape}")
    return np.clip(np.nan_to_num(a), -1.0, 1.0)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV (clamped to [-1, 1] like the original's `save_wav`)."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, _as_mono(audio), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int) -> None:
    data = wav_bytes(audio, sample_rate)
    tmp = Path(f"{path}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def mp3_bytes(audio: np.ndarray, sample_rate: int, bitrate: str = "192k") -> bytes:
    res = _run(
        [
            _binary("ffmpeg"),
            "-nostdin",
            "-v",
            "error",
            "-f",
            "f32le",
            "-ar",
            str(sample_rate),
            "-ac",
            "1",
            "-i",
            "-",
            "-codec:a",
            "libmp3lame",
            "-b:a",
            bitrate,
            "-f",
            "mp3",
            "-",
        ],
        stdin=_as_mono(audio).astype("<f4").tobytes(),
    )
    if res.returncode != 0 or not res.stdout:
        raise RuntimeError(f"ffmpeg could not write MP3: {res.stderr.decode(errors='replace')[-500:]}")
    return res.stdout


def write_mp3(
    path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int, bitrate: str = "192k"
) -> None:
    data = mp3_bytes(audio, sample_rate, bitrate)
    tmp = Path(f"{path}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
