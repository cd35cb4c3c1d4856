"""Writing mono float32 audio: WAV through soundfile, MP3 through ffmpeg (libmp3lame)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from db.audio.tools import AudioError, ffmpeg, run


def as_mono(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"expected mono audio of shape [T], got {a.shape}")
    return np.clip(np.nan_to_num(a), -1.0, 1.0)


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV (clamped to [-1, 1] like the original Jukebox's `save_wav`)."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, as_mono(audio), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _replace(path: str | os.PathLike[str], data: bytes) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int) -> None:
    _replace(path, wav_bytes(audio, sample_rate))


def mp3_bytes(audio: np.ndarray, sample_rate: int, bitrate: str = "192k") -> bytes:
    args = [ffmpeg(), "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(sample_rate), "-ac", "1"]
    args += ["-i", "-", "-codec:a", "libmp3lame", "-b:a", bitrate, "-f", "mp3", "-"]
    res = run(args, stdin=as_mono(audio).astype("<f4").tobytes(), what="write MP3")
    if res.returncode != 0 or not res.stdout:
        raise AudioError(f"ffmpeg could not write MP3: {res.stderr.decode(errors='replace')[-500:]}")
    return res.stdout


def write_mp3(
    path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int, bitrate: str = "192k"
) -> None:
    _replace(path, mp3_bytes(audio, sample_rate, bitrate))
