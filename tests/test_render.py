"""Rendering: audio under a byte limit, loudness and fades, the X video within X's limits (ffprobe),
pictures, and clear errors for empty or corrupt audio."""

from __future__ import annotations

import io
import re
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from db.audio import ffmpeg, probe_streams
from publisher import render
from publisher.render import RenderError, TitleCard
from tests.publish_fixtures import tone_wav


def ffprobe(data: bytes, tmp_path: Path, name: str = "probe.bin") -> dict:
    path = tmp_path / name
    path.write_bytes(data)
    return probe_streams(path)  # ffprobe's JSON (through ffmpeg's banner where there is no ffprobe)


def integrated_loudness(data: bytes, tmp_path: Path) -> float:
    path = tmp_path / "loud.bin"
    path.write_bytes(data)
    proc = subprocess.run(
        [ffmpeg(), "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128", "-f", "null", "-"],
        capture_output=True,
        check=True,
    )
    found = re.findall(r"I:\s+(-?[\d.]+) LUFS", proc.stderr.decode())
    return float(found[-1])


@pytest.fixture(scope="module")
def song() -> bytes:
    return tone_wav(4.0, level=0.05)  # quiet on purpose: normalisation must lift it


@pytest.mark.parametrize(
    ("fmt", "codec", "mime"),
    [("mp3", "mp3", "audio/mpeg"), ("opus", "opus", "audio/ogg"), ("flac", "flac", "audio/flac")],
)
def test_audio_formats_decode_and_are_normalised(
    song: bytes, tmp_path: Path, fmt: str, codec: str, mime: str
) -> None:
    out = render.render_audio(song, fmt)  # type: ignore[arg-type]
    info = ffprobe(out.data, tmp_path)
    stream = info["streams"][0]
    assert stream["codec_name"] == codec
    assert int(stream["sample_rate"]) == 48000 and stream["channels"] == 2
    assert abs(float(info["format"]["duration"]) - 4.0) < 0.1
    assert out.mime == mime and out.filename("clip").endswith("." + out.extension)
    before = integrated_loudness(song, tmp_path)
    after = integrated_loudness(out.data, tmp_path)
    assert before < -30  # the input really was quiet
    assert abs(after - render.LOUDNESS_TARGET_LUFS) < 1.5, after


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_bitrate_is_chosen_to_fit_the_byte_limit(song: bytes, fmt: str) -> None:
    roomy = render.render_audio(song, fmt)  # type: ignore[arg-type]
    limit = 40_000  # a 4 s clip in 40 kB: about 60 kbps
    tight = render.render_audio(song, fmt, max_bytes=limit)  # type: ignore[arg-type]
    assert len(tight.data) <= limit
    assert tight.bitrate_kbps is not None and roomy.bitrate_kbps is not None
    assert tight.bitrate_kbps < roomy.bitrate_kbps
    assert tight.bitrate_kbps >= 32  # and not needlessly low
    assert len(tight.data) > limit * 0.4


def test_a_clip_that_cannot_fit_says_so(song: bytes) -> None:
    with pytest.raises(RenderError, match=r"does not fit in 0\.0 MB even at the lowest quality"):
        render.render_audio(song, "mp3", max_bytes=20_000)


def test_discord_limit_fits_a_long_clip() -> None:
    """140 s (X's maximum clip) under Discord's default 10 MiB, picked from the limit alone."""
    assert render.choose_bitrate("mp3", 140.0, 10 * 1024 * 1024, 320) == 320
    assert render.choose_bitrate("mp3", 140.0, 3 * 1024 * 1024, 320) == 160
    assert render.choose_bitrate("opus", 140.0, 1024 * 1024, 160) == 57


def test_fades_and_cut(tmp_path: Path) -> None:
    loud = tone_wav(3.0, level=0.9)
    out = render.render_audio(
        loud, "wav", start=1.0, max_seconds=1.5, normalize=False, fade_in=0.05, fade_out=0.3
    )
    assert abs(out.duration - 1.5) < 1e-6
    with wave.open(io.BytesIO(out.data)) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 48000)
        frames = w.readframes(w.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, 2)[:, 0].astype(np.float64) / 32768
    rate = 48000
    assert abs(len(samples) / rate - 1.5) < 0.01
    assert np.abs(samples[:48]).max() < 0.05  # first millisecond: the fade starts from silence
    assert np.abs(samples[-48:]).max() < 0.02  # the cut at the end fades to silence
    assert np.abs(samples[rate // 2 : rate]).max() > 0.2  # and the middle is untouched music


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x07" * 200, "damaged or not an audio file"),
        (b"this is a text file, not music\n" * 50, "damaged or not an audio file"),
    ],
)
def test_bad_audio_gets_a_clear_error(data: bytes, message: str) -> None:
    for call in (
        lambda: render.render_audio(data),
        lambda: render.waveform_png(data),
        lambda: render.render_x_video(data, TitleCard("x"), size=(320, 180)),
    ):
        with pytest.raises(RenderError, match=message):
            call()


def test_missing_file_and_start_outside(tmp_path: Path, song: bytes) -> None:
    with pytest.raises(RenderError, match="does not exist"):
        render.render_audio(tmp_path / "nope.wav")
    with pytest.raises(RenderError, match="outside the clip"):
        render.render_audio(song, start=10.0)


def test_x_video_passes_x_limits_by_ffprobe(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(tone_wav(3.0))
    card = TitleCard("Harbour Rain", "Frank Sinatra", "jazz", "alice", "#jukebot")
    video = render.render_x_video(clip, card, size=(1280, 720), fps=30)
    info = ffprobe(video, tmp_path, "x.mp4")
    v = next(s for s in info["streams"] if s["codec_type"] == "video")
    a = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert "mp4" in info["format"]["format_name"]
    assert v["codec_name"] == "h264" and v["profile"] == "High" and v["pix_fmt"] == "yuv420p"
    assert (v["width"], v["height"]) == (1280, 720) and v["width"] % 2 == 0 and v["height"] % 2 == 0
    num, den = (int(x) for x in v["avg_frame_rate"].split("/"))
    assert 0 < num / den <= 60
    assert v.get("sample_aspect_ratio", "1:1") in ("1:1", "0:1")
    assert v.get("field_order", "progressive") == "progressive"
    assert a["codec_name"] == "aac" and a["profile"] == "LC" and a["channels"] in (1, 2)
    assert (
        0.5 <= float(info["format"]["duration"]) <= 140
        and abs(float(info["format"]["duration"]) - 3.0) < 0.15
    )
    assert len(video) <= 512 * 1024 * 1024
    assert render.check_x_video(video) == []
    # The title card is really in the picture: the top band is not flat background.
    frame = subprocess.run(
        [
            ffmpeg(),
            "-v",
            "error",
            "-ss",
            "1.5",
            "-i",
            str(tmp_path / "x.mp4"),
            "-frames:v",
            "1",
            "-f",
            "image2pipe",
            "-c:v",
            "png",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    picture = np.asarray(Image.open(io.BytesIO(frame)).convert("L"), dtype=np.float64)
    assert picture[40:160].std() > 20  # text
    assert picture[350:650].std() > 10  # the waveform band


def test_x_video_is_cut_at_140_seconds_and_too_short_is_refused(tmp_path: Path) -> None:
    long_clip = tmp_path / "long.wav"
    long_clip.write_bytes(tone_wav(2.0))
    video = render.render_x_video(long_clip, TitleCard("t"), size=(64, 64), fps=10, max_seconds=1.0)
    assert abs(float(ffprobe(video, tmp_path)["format"]["duration"]) - 1.0) < 0.15
    with pytest.raises(RenderError, match=r"at least 0\.5 s"):
        render.render_x_video(tone_wav(0.3), TitleCard("t"), size=(64, 64))
    with pytest.raises(ValueError, match="between 32x32 and 1280x1024"):
        render.render_x_video(long_clip, TitleCard("t"), size=(1920, 1080))


def test_spectrum_style_video(tmp_path: Path) -> None:
    video = render.render_x_video(tone_wav(1.0), TitleCard("t"), style="spectrum", size=(320, 180), fps=15)
    assert render.check_x_video(video) == []


def test_check_x_video_finds_what_x_refuses(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    subprocess.run(
        [
            ffmpeg(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=1300x400:d=0.6:r=10",
            "-f",
            "lavfi",
            "-i",
            "sine=d=1",
            "-c:v",
            "libx264",
            "-profile:v",
            "high444",
            "-pix_fmt",
            "yuv444p",
            "-c:a",
            "libmp3lame",
            "-shortest",
            str(bad),
        ],
        check=True,
        capture_output=True,
    )
    problems = " | ".join(render.check_x_video(bad))
    assert "yuv444p is not yuv420p" in problems
    assert "outside 32x32-1280x1024" in problems
    assert "not AAC-LC" in problems
    assert "not H.264 High" in problems


def test_waveform_png(song: bytes) -> None:
    png = render.waveform_png(song, 600, 160, title="Harbour Rain")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (600, 160)
    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    blue = (pixels[:, :, 2] > 200) & (pixels[:, :, 0] < 120)
    assert blue.sum() > 500  # the coloured peaks are drawn
    middle = blue[:, 50:550].any(axis=0)
    assert middle.mean() > 0.6  # across the width
    rows = np.where(blue.any(axis=1))[0]
    centre = (rows.min() + rows.max()) / 2
    upper, lower = blue[: int(centre)].sum(), blue[int(centre) + 1 :].sum()
    assert abs(upper - lower) / max(upper, lower) < 0.2  # mirrored about the middle
    with pytest.raises(ValueError):
        render.waveform_png(song, 10, 10)


def test_spectrogram_png_shows_the_notes(song: bytes) -> None:
    png = render.spectrogram_png(song, 400, 200, title="t")
    image = Image.open(io.BytesIO(png))
    assert image.size == (400, 200)
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels[30:190].std() > 15  # harmonics stand out from the background


def test_title_card_is_a_png_of_the_right_size() -> None:
    png = render.title_card_png(TitleCard("A " * 80, "Artist", "genre", "bob", "footer"), (640, 360))
    image = Image.open(io.BytesIO(png))
    assert image.size == (640, 360)
