"""Turn a clip's WAV into what each place takes: MP3/Opus/FLAC for Discord and SoundCloud, an MP4 with a
title card and a moving waveform for X (X takes no audio files), and PNG pictures (waveform,
spectrogram) for Discord posts.

This module encodes the audio and is the one place callers import from (`render.X`); the rest lives
beside it: `render_prepare.py` (ffmpeg, and the one preparation pass every render starts with: cut,
loudness, fades), `render_pictures.py` (waveform, spectrogram, title card), `render_video.py` (X's MP4).

All functions are synchronous (they run ffmpeg); call them from asyncio via `asyncio.to_thread`.
Input is WAV bytes, or a path to any audio file ffmpeg can read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from publisher.render_pictures import (
    BACKGROUND,
    FONT_DIRS,
    MUTED,
    TEXT,
    WAVE_PEAK,
    WAVE_RMS,
    TitleCard,
    caption_png,
    format_duration,
    spectrogram_png,
    title_card_png,
    waveform_png,
)
from publisher.render_prepare import (
    FADE_IN_SECONDS,
    FADE_OUT_SECONDS,
    LOUDNESS_TARGET_LUFS,
    PICTURE_MAX_SECONDS,
    SAMPLE_RATE,
    TRUE_PEAK_DBTP,
    AudioSource,
    RenderError,
    command,
    decode_mono,
    prepared,
    probe_audio,
    run,
)
from publisher.render_video import (
    X_MAX_BYTES,
    X_MAX_FPS,
    X_MAX_SECONDS,
    X_MAX_SIZE,
    X_MIN_SECONDS,
    X_MIN_SIZE,
    VideoStyle,
    check_x_video,
    render_x_video,
)

# The public names callers use as `render.X`, wherever they are defined.
__all__ = [
    "AUDIO_EXTENSIONS", "AUDIO_MIME", "BACKGROUND", "FADE_IN_SECONDS", "FADE_OUT_SECONDS", "FONT_DIRS",
    "LOUDNESS_TARGET_LUFS", "MUTED", "PICTURE_MAX_SECONDS", "SAMPLE_RATE", "TEXT", "TRUE_PEAK_DBTP",
    "WAVE_PEAK", "WAVE_RMS", "X_MAX_BYTES", "X_MAX_FPS", "X_MAX_SECONDS", "X_MAX_SIZE", "X_MIN_SECONDS",
    "X_MIN_SIZE", "AudioFormat", "AudioSource", "RenderError", "RenderedAudio", "TitleCard", "VideoStyle",
    "caption_png", "check_x_video", "choose_bitrate", "decode_mono", "format_duration", "prepared",
    "probe_audio", "render_audio", "render_x_video", "spectrogram_png", "title_card_png", "waveform_png",
]  # fmt: skip

AudioFormat = Literal["mp3", "opus", "flac", "wav"]

AUDIO_MIME = {"mp3": "audio/mpeg", "opus": "audio/ogg", "flac": "audio/flac", "wav": "audio/wav"}
AUDIO_EXTENSIONS = {"mp3": "mp3", "opus": "ogg", "flac": "flac", "wav": "wav"}
_MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)  # MPEG-1 layer III CBR
_OPUS_MIN_KBPS = 12
_CONTAINER_SLACK_BYTES = 16 * 1024  # tags, headers and Ogg page overhead on top of the bitrate budget


@dataclass(frozen=True)
class RenderedAudio:
    data: bytes
    fmt: AudioFormat
    duration: float
    bitrate_kbps: int | None  # None for lossless

    @property
    def mime(self) -> str:
        return AUDIO_MIME[self.fmt]

    @property
    def extension(self) -> str:
        return AUDIO_EXTENSIONS[self.fmt]

    def filename(self, stem: str) -> str:
        return f"{stem}.{self.extension}"


def choose_bitrate(fmt: AudioFormat, duration: float, max_bytes: int, ceiling_kbps: int) -> int:
    """The highest bitrate whose file for `duration` seconds fits in `max_bytes`."""
    budget = max_bytes - _CONTAINER_SLACK_BYTES
    kbps = math.floor(budget * 8 / duration / 1000 * 0.97) if budget > 0 else 0
    if fmt == "mp3":
        fitting = [b for b in _MP3_BITRATES if b <= min(kbps, ceiling_kbps)]
        if not fitting:
            raise _too_long(duration, max_bytes)
        return fitting[-1]
    if fmt == "opus":
        kbps = min(kbps, ceiling_kbps, 256)
        if kbps < _OPUS_MIN_KBPS:
            raise _too_long(duration, max_bytes)
        return kbps
    raise ValueError(f"{fmt} has no bitrate")


def _too_long(duration: float, max_bytes: int) -> RenderError:
    return RenderError(
        f"A {duration:.0f} s clip does not fit in {max_bytes / 1e6:.1f} MB even at the lowest quality; "
        "post a shorter cut."
    )


def _encode_args(fmt: AudioFormat, kbps: int | None) -> list[str]:
    if fmt == "mp3":
        return ["-c:a", "libmp3lame", "-b:a", f"{kbps}k", "-f", "mp3"]
    if fmt == "opus":  # constrained VBR keeps the size close to the budget
        return ["-c:a", "libopus", "-b:a", f"{kbps}k", "-vbr", "constrained", "-f", "ogg"]
    if fmt == "flac":
        return ["-c:a", "flac", "-compression_level", "8", "-f", "flac"]
    return ["-c:a", "pcm_s16le", "-f", "wav"]


def _encode(wav: Path, fmt: AudioFormat, kbps: int | None, tags: Mapping[str, str]) -> bytes:
    meta: list[str] = []
    for key, value in tags.items():
        meta += ["-metadata", f"{key}={value}"]
    # To a file, not a pipe: FLAC and MP3 write their length into the header at the end (seek back).
    out = wav.with_name(f"encoded.{AUDIO_EXTENSIONS[fmt]}")
    run(
        command(
            "ffmpeg", "-v error -nostdin -y -i", wav, "-map_metadata -1", meta, _encode_args(fmt, kbps), out
        ),
        what=f"encode {fmt}",
    )
    try:
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def render_audio(
    src: AudioSource,
    fmt: AudioFormat = "mp3",
    *,
    max_bytes: int | None = None,
    max_bitrate_kbps: int | None = None,
    start: float = 0.0,
    max_seconds: float | None = None,
    normalize: bool = True,
    fade_in: float = FADE_IN_SECONDS,
    fade_out: float = FADE_OUT_SECONDS,
    tags: Mapping[str, str] | None = None,
) -> RenderedAudio:
    """Encode the clip, normalised and faded, at the best bitrate that fits `max_bytes`.

    `max_bytes` is e.g. the guild's upload limit (`guild.filesize_limit`). MP3 is CBR from the standard
    bitrates (≤ 256 kbps by default); Opus is constrained VBR (≤ 160 kbps by default). If an encode
    still comes out too big it is redone a step lower. Lossless formats that do not fit raise.
    """
    with prepared(
        src, start=start, max_seconds=max_seconds, normalize=normalize, fade_in=fade_in, fade_out=fade_out
    ) as (wav, duration):
        return _render_prepared(
            wav, duration, fmt, max_bytes=max_bytes, max_bitrate_kbps=max_bitrate_kbps, tags=tags or {}
        )


def _render_prepared(
    wav: Path,
    duration: float,
    fmt: AudioFormat,
    *,
    max_bytes: int | None,
    max_bitrate_kbps: int | None,
    tags: Mapping[str, str],
) -> RenderedAudio:
    if fmt in ("flac", "wav"):
        data = _encode(wav, fmt, None, tags)
        if max_bytes is not None and len(data) > max_bytes:
            raise RenderError(
                f"The {fmt.upper()} file ({len(data) / 1e6:.1f} MB) is over the {max_bytes / 1e6:.1f} MB limit."
            )
        return RenderedAudio(data=data, fmt=fmt, duration=duration, bitrate_kbps=None)
    if fmt not in ("mp3", "opus"):
        raise ValueError(f"unknown audio format {fmt!r}")
    ceiling = max_bitrate_kbps or (256 if fmt == "mp3" else 160)
    limit = max_bytes if max_bytes is not None else 1 << 40
    kbps = choose_bitrate(fmt, duration, limit, ceiling)
    for _ in range(4):
        data = _encode(wav, fmt, kbps, tags)
        if len(data) <= limit:
            return RenderedAudio(data=data, fmt=fmt, duration=duration, bitrate_kbps=kbps)
        kbps = choose_bitrate(fmt, duration, limit, int(kbps * 0.85))  # raises when nothing smaller fits
    raise _too_long(duration, limit)
