"""engine.audio (over db.audio) against the real ffmpeg binary, on files the tests make."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from db.audio import ffmpeg
from engine.audio import (
    AudioError,
    human_seconds,
    load_audio,
    load_audio_bytes,
    mp3_bytes,
    probe,
    wav_bytes,
    write_mp3,
    write_wav,
)

SR = 44100


def _sine(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _peak_hz(audio: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * sr / len(audio))


def _convert(src: Path, dst: Path) -> Path:
    subprocess.run([ffmpeg(), "-nostdin", "-v", "error", "-y", "-i", str(src), str(dst)], check=True)
    return dst


@pytest.fixture(scope="module")
def sine_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "sine.wav"
    soundfile.write(path, _sine(2.0, 22050, channels=2), 22050)  # stereo at another rate
    return path


@pytest.mark.parametrize("ext", ["wav", "mp3", "ogg", "flac"])
def test_load_any_format_resampled_to_mono(sine_wav: Path, ext: str) -> None:
    path = sine_wav if ext == "wav" else _convert(sine_wav, sine_wav.with_suffix(f".{ext}"))
    audio = load_audio(path, SR, max_seconds=10)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SR - 2.0) < 0.06  # mp3/ogg framing adds a few ms at most
    assert abs(_peak_hz(audio, SR) - 440.0) < 2.0
    assert 0.3 < np.abs(audio).max() < 0.7


def test_duration_keeps_the_first_seconds(sine_wav: Path) -> None:
    audio = load_audio(sine_wav, SR, duration=0.5)
    assert len(audio) == SR // 2


def test_probe_reads_container_facts(sine_wav: Path) -> None:
    info = probe(sine_wav)
    assert info.sample_rate == 22050 and info.channels == 2
    assert info.duration == pytest.approx(2.0, abs=0.01)


def test_corrupt_file_gets_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "song.mp3"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(AudioError, match="does not look like an audio file ffmpeg can read"):
        load_audio(bad, SR, max_seconds=10)
    text = tmp_path / "notes.wav"
    text.write_text("these are my lyrics, not audio\n" * 20)
    with pytest.raises(AudioError, match="does not look like an audio file"):
        load_audio(text, SR, max_seconds=10)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty, SR, max_seconds=10)


def test_truncated_file_is_refused_or_shorter(sine_wav: Path, tmp_path: Path) -> None:
    # A WAV cut after its header: ffmpeg reads what is there; nothing crashes.
    data = sine_wav.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:44])
    with pytest.raises(AudioError):
        load_audio(cut, SR, max_seconds=10)


def test_huge_file_refused_before_decoding(tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    soundfile.write(big, _sine(3.0, SR), SR)
    with pytest.raises(AudioError, match=r"this file is \d+ KB; the prime can be at most 100 KB"):
        load_audio(big, SR, max_bytes=100 * 1024, max_seconds=10)
    with pytest.raises(AudioError, match="at most 100 KB"):
        load_audio_bytes(big.read_bytes(), SR, max_bytes=100 * 1024, max_seconds=10)


def test_too_long_file_refused_with_durations(tmp_path: Path) -> None:
    long = tmp_path / "long.flac"
    soundfile.write(long, _sine(5.0, 8000), 8000)
    with pytest.raises(AudioError, match="this file is 5 s long; the prime can be at most 2 s"):
        load_audio(long, SR, max_seconds=2.0)
    assert len(load_audio(long, SR, max_seconds=5.0)) == pytest.approx(5 * SR, abs=2)
    assert (
        human_seconds(180) == "3 min"
        and human_seconds(192) == "3 min 12 s"
        and human_seconds(3720) == "1 h 2 min"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "nope.wav", SR, max_seconds=10)


def test_write_wav_and_mp3_round_trip(tmp_path: Path) -> None:
    x = _sine(1.0, SR, freq=1000.0)
    x[:10] = 3.0  # out of range samples are clamped, not wrapped
    write_wav(tmp_path / "a.wav", x, SR)
    back, sr = soundfile.read(tmp_path / "a.wav", dtype="float32")
    assert sr == SR and back.shape == x.shape and back[:10].max() <= 1.0
    assert np.abs(back[100:] - x[100:]).max() < 1e-3
    assert soundfile.info(io.BytesIO(wav_bytes(x, SR))).subtype == "PCM_16"

    write_mp3(tmp_path / "a.mp3", x, SR)
    info = probe(tmp_path / "a.mp3")
    assert info.codec == "mp3" and info.channels == 1
    decoded = load_audio(tmp_path / "a.mp3", SR, max_seconds=10)
    assert abs(_peak_hz(decoded, SR) - 1000.0) < 3.0
    data = mp3_bytes(x, SR)
    assert data[:3] == b"ID3" or data[0] == 0xFF  # an ID3 tag or an MPEG frame sync
