"""db.audio: the limits policy against files that lie, the ffmpeg lookup, the banner probe."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from db.audio import AudioError, decode, decode_bytes, ffmpeg, probe, wav_bytes
from db.audio.streams import parse_banner
from db.audio.tools import run_bounded
from tests.audio_fixtures import lying_flac

SR = 8000


def test_a_header_that_lies_about_the_duration_does_not_get_the_file_decoded(tmp_path: Path) -> None:
    liar = lying_flac(tmp_path / "liar.flac", seconds=600, claimed=5)
    assert probe(liar).duration == pytest.approx(5.0, abs=0.01)  # the container claims 5 s
    with pytest.raises(AudioError, match=r"longer than 30 s .*header says otherwise"):
        decode(liar, 44100, max_seconds=30)
    with pytest.raises(AudioError, match="longer than 30 s"):
        decode_bytes(liar.read_bytes(), 44100, max_seconds=30, suffix=".flac")
    first = decode(liar, 44100, max_seconds=30, duration=2.0)  # asking for the start is fine
    assert len(first) == 2 * 44100


def test_a_file_within_the_limit_decodes_whole(tmp_path: Path) -> None:
    honest = lying_flac(tmp_path / "honest.flac", seconds=3, claimed=3)
    audio = decode(honest, SR, max_seconds=3)
    assert len(audio) == 3 * SR and 0.25 < np.abs(audio).max() < 0.35


def test_bounded_read_stops_the_decoder_at_the_byte_limit(tmp_path: Path) -> None:
    liar = lying_flac(tmp_path / "liar.flac", seconds=600, claimed=5)
    args = [ffmpeg(), "-nostdin", "-v", "error", "-i", str(liar), "-f", "f32le", "-"]  # no -t at all
    out = run_bounded(args, 4 * SR * 2)
    assert out.truncated and len(out.stdout) == 4 * SR * 2


def test_a_stuck_tool_times_out_with_a_sentence() -> None:
    with pytest.raises(AudioError, match="took more than 0 s"):
        run_bounded(["sleep", "5"], 100, timeout=0.3)


def test_the_system_ffmpeg_is_preferred_and_the_wheel_serves_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ffmpeg() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    bundled = ffmpeg()
    assert "imageio_ffmpeg" in bundled and os.access(bundled, os.X_OK)
    # and it works: probe (through ffmpeg's banner, as the wheel has no ffprobe) and decode
    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes(np.zeros(SR, np.float32), SR))
    assert probe(wav).duration == pytest.approx(1.0, abs=0.01)
    assert len(decode(wav, SR, max_seconds=2)) == SR


BANNER = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':
  Metadata:
    major_brand     : isom
  Duration: 00:01:02.50, start: 0.000000, bitrate: 181 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, progressive), 96x64 [SAR 1:1 DAR 3:2], 50 kb/s, 10 fps, 10 tbr, 10240 tbn (default)
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 128 kb/s (default)
At least one output file must be specified
"""


def test_the_banner_reads_like_ffprobe() -> None:
    info = parse_banner(BANNER)
    assert info["format"] == {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "62.5"}
    video, audio = info["streams"]
    assert video == {
        "codec_type": "video",
        "codec_name": "h264",
        "profile": "High",
        "pix_fmt": "yuv420p",
        "field_order": "progressive",
        "width": 96,
        "height": 64,
        "sample_aspect_ratio": "1:1",
        "avg_frame_rate": "10/1",
    }
    assert audio == {
        "codec_type": "audio",
        "codec_name": "aac",
        "profile": "LC",
        "sample_rate": "48000",
        "channels": 2,
    }
    with pytest.raises(AudioError, match="does not look like an audio file"):
        parse_banner("x.bin: Invalid data found when processing input\n")
