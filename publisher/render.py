"""Turn a clip's WAV into what each place takes: MP3/Opus/FLAC for Discord and SoundCloud, an MP4 with a
title card and a moving waveform for X (X takes no audio files), and PNG pictures (waveform,
spectrogram) for Discord posts.

Every render goes through one preparation pass with ffmpeg: cut (start, max_seconds), loudness
normalised to LOUDNESS_TARGET_LUFS (integrated loudness measured by ffmpeg's EBU R128 meter, then one
constant gain, so the music's dynamics are kept; the gain is held back when it would push the true peak
above TRUE_PEAK_DBTP, so a very dynamic clip ends a little quieter rather than clipped), short fades so
a cut never clicks. ffmpeg is found, run (with the one timeout) and probed through `db.audio`,
which also says why pydub is not used.

All functions are synchronous (they run ffmpeg); call them from asyncio via `asyncio.to_thread`.
Input is WAV bytes, or a path to any audio file ffmpeg can read.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from db import audio
from db.audio import AudioInfo
from db.audio.streams import NoAudioStream, finite
from publisher.timed_captions import Caption, captions_from_lrc

AudioSource = bytes | str | os.PathLike[str]
AudioFormat = Literal["mp3", "opus", "flac", "wav"]
VideoStyle = Literal["waves", "spectrum"]

LOUDNESS_TARGET_LUFS = -14.0  # what streaming services play at; X and SoundCloud both sit near it
TRUE_PEAK_DBTP = -1.5  # headroom for lossy encoders
FADE_IN_SECONDS = 0.05  # enough to remove the click of a cut, too short to hear as a fade
FADE_OUT_SECONDS = 0.5
SAMPLE_RATE = 48_000
PICTURE_MAX_SECONDS = 20 * 60.0  # a picture shows at most this much (decoding is bounded by it)

# X's hard limits for video (research/publish_queue.md §1.2).
X_MAX_SECONDS = 140.0
X_MIN_SECONDS = 0.5
X_MAX_BYTES = 512 * 1024 * 1024
X_MAX_FPS = 60.0
X_MIN_SIZE = (32, 32)
X_MAX_SIZE = (1280, 1024)

AUDIO_MIME = {"mp3": "audio/mpeg", "opus": "audio/ogg", "flac": "audio/flac", "wav": "audio/wav"}
AUDIO_EXTENSIONS = {"mp3": "mp3", "opus": "ogg", "flac": "flac", "wav": "wav"}
_MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)  # MPEG-1 layer III CBR
_OPUS_MIN_KBPS = 12
_CONTAINER_SLACK_BYTES = 16 * 1024  # tags, headers and Ogg page overhead on top of the bitrate budget

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu")


class RenderError(ValueError):
    """A render that cannot be done, said so a musician understands."""


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


@dataclass(frozen=True)
class TitleCard:
    """What the X video shows above the waveform."""

    title: str
    artist: str = ""
    genre: str = ""
    requester: str = ""
    footer: str = ""  # e.g. the channel tag and the licence note


# --------------------------------------------------------------------------------------------- ffmpeg


def _tool(name: str) -> str:
    try:
        return audio.ffmpeg()
    except audio.AudioError as e:
        raise RenderError(str(e)) from None


def _cmd(tool: str, *parts: str | Path | list[str]) -> list[str]:
    """A command line: plain strings are fixed options split on spaces; paths and lists stay whole
    (file names and filter graphs may hold spaces)."""
    args = [_tool(tool)]
    for part in parts:
        if isinstance(part, Path):
            args.append(str(part))
        elif isinstance(part, list):
            args.extend(part)
        else:
            args.extend(part.split())
    return args


def _run(args: list[str], *, what: str) -> subprocess.CompletedProcess[bytes]:
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
def _as_path(src: AudioSource) -> Iterator[Path]:
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


def _probe_path(path: Path) -> AudioInfo:
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


_float = finite


def probe_audio(src: AudioSource) -> AudioInfo:
    """Duration, rate, channels and codec; RenderError for empty, corrupt or silent-less files."""
    with _as_path(src) as path:
        return _probe_path(path)


def decode_mono(
    src: AudioSource, sample_rate: int = 8000, max_seconds: float = PICTURE_MAX_SECONDS
) -> np.ndarray:
    """The first `max_seconds` of the audio as one float32 channel at `sample_rate` (for pictures)."""
    with _as_path(src) as path:
        _probe_path(path)
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
    length = _probe_path(path).duration
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
    _run(
        _cmd(
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
    with _as_path(src) as path, tempfile.TemporaryDirectory(prefix="jukebot-prep-") as tmp:
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


# -------------------------------------------------------------------------------------------- audio


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
    _run(
        _cmd(
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


# -------------------------------------------------------------------------------------------- fonts


def _font(size: int, *, bold: bool = False):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in FONT_DIRS:
        path = Path(folder) / name
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)  # Pillow's own font: plainer, but never missing


def _fit_text(draw, text: str, max_width: int, size: int, *, bold: bool = False, min_size: int = 12):  # type: ignore[no-untyped-def]
    """The largest font (down to min_size) at which `text` fits; shortened on word boundaries if not."""
    while True:
        font = _font(size, bold=bold)
        if draw.textlength(text, font=font) <= max_width or size <= min_size:
            break
        size = max(min_size, int(size * 0.9))
    if draw.textlength(text, font=font) > max_width:
        words = text.split()
        while len(words) > 1 and draw.textlength(" ".join(words) + " …", font=font) > max_width:
            words.pop()
        text = " ".join(words) + " …"
    return text, font


def format_duration(seconds: float) -> str:
    total = round(seconds)
    return f"{total // 60}:{total % 60:02d}"


# ------------------------------------------------------------------------------------------ pictures

BACKGROUND = (17, 24, 39)  # slate
WAVE_PEAK = (56, 189, 248)  # sky blue
WAVE_RMS = (186, 230, 253)
TEXT = (241, 245, 249)
MUTED = (148, 163, 184)


def _png(image) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _column_envelope(samples: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Peak and RMS per picture column, each in 0..1."""
    edges = np.linspace(0, samples.size, columns + 1).astype(np.int64)
    peak = np.zeros(columns, dtype=np.float32)
    rms = np.zeros(columns, dtype=np.float32)
    for i in range(columns):
        chunk = samples[edges[i] : max(edges[i + 1], edges[i] + 1)]
        peak[i] = float(np.max(np.abs(chunk)))
        rms[i] = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
    top = max(float(peak.max()), 1e-9)
    return np.clip(peak / top, 0, 1), np.clip(rms / top, 0, 1)


def waveform_png(src: AudioSource, width: int = 1000, height: int = 240, title: str | None = None) -> bytes:
    """A mirrored bar waveform (peaks light, loudness strong) with the duration, as PNG bytes."""
    from PIL import Image, ImageDraw

    if width < 64 or height < 48:
        raise ValueError("waveform pictures must be at least 64x48")
    rate = 8000
    samples = decode_mono(src, rate)
    duration = samples.size / rate
    scale = 2  # draw at twice the size, then downsample: smooth edges without antialiasing code
    w, h = width * scale, height * scale
    image = Image.new("RGB", (w, h), BACKGROUND)
    draw = ImageDraw.Draw(image)
    pad = 12 * scale
    label_h = int(h * 0.16) if title else 0
    top, bottom = pad + label_h, h - pad - int(h * 0.1)
    mid, half = (top + bottom) / 2, (bottom - top) / 2
    bar, gap = 3 * scale, 1 * scale
    columns = max(1, (w - 2 * pad) // (bar + gap))
    peak, rms = _column_envelope(samples, columns)
    for i in range(columns):
        x0 = pad + i * (bar + gap)
        p = max(float(peak[i]) * half, scale)
        r = max(float(rms[i]) * half, scale / 2)
        draw.rounded_rectangle((x0, mid - p, x0 + bar - 1, mid + p), radius=bar // 2, fill=WAVE_PEAK)
        draw.rounded_rectangle((x0, mid - r, x0 + bar - 1, mid + r), radius=bar // 2, fill=WAVE_RMS)
    small = _font(int(h * 0.075))
    length = format_duration(duration)
    draw.text((w - pad, h - pad // 2), length, font=small, fill=MUTED, anchor="rd")
    if title:
        text, font = _fit_text(draw, title, w - 2 * pad, int(h * 0.11), bold=True)
        draw.text((pad, pad), text, font=font, fill=TEXT, anchor="lt")
    return _png(image.resize((width, height), Image.Resampling.LANCZOS))


# A perceptual dark-to-bright palette (anchor colours of "magma"), interpolated to 256 steps.
_PALETTE_ANCHORS = np.array(
    [
        (0, 0, 4),
        (40, 11, 84),
        (101, 21, 110),
        (159, 42, 99),
        (212, 72, 66),
        (245, 125, 21),
        (250, 193, 39),
        (252, 253, 191),
    ],
    dtype=np.float32,
)


def _palette() -> np.ndarray:
    x = np.linspace(0, len(_PALETTE_ANCHORS) - 1, 256)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, len(_PALETTE_ANCHORS) - 1)
    t = (x - lo)[:, None]
    return (_PALETTE_ANCHORS[lo] * (1 - t) + _PALETTE_ANCHORS[hi] * t).astype(np.uint8)


def spectrogram_png(
    src: AudioSource, width: int = 1000, height: int = 320, title: str | None = None
) -> bytes:
    """A log-frequency spectrogram (60 Hz–11 kHz, 80 dB range) with the duration, as PNG bytes."""
    from PIL import Image, ImageDraw

    if width < 64 or height < 48:
        raise ValueError("spectrogram pictures must be at least 64x48")
    rate, n_fft = 22050, 2048
    samples = decode_mono(src, rate)
    duration = samples.size / rate
    if samples.size < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.size))
    hop = max(1, (samples.size - n_fft) // max(1, width - 1))
    frames = 1 + (samples.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(samples[idx] * np.hanning(n_fft)[None, :], axis=1))  # (frames, bins)
    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    rows = height
    wanted = np.geomspace(60.0, 11000.0, rows)[::-1]  # top row = high frequencies
    bins = np.clip(np.searchsorted(freqs, wanted), 1, len(freqs) - 1)
    db = 20 * np.log10(spec[:, bins].T + 1e-9)  # (rows, frames)
    db = np.clip((db - (db.max() - 80.0)) / 80.0, 0, 1)
    pixels = _palette()[(db * 255).astype(np.uint8)]
    image = Image.fromarray(pixels, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    pad = 8
    small = _font(max(10, int(height * 0.06)))
    draw.text((width - pad, height - pad), format_duration(duration), font=small, fill=TEXT, anchor="rd")
    if title:
        text, font = _fit_text(draw, title, width - 2 * pad, max(12, int(height * 0.08)), bold=True)
        draw.text((pad, pad), text, font=font, fill=TEXT, anchor="lt")
    return _png(image)


def title_card_png(card: TitleCard, size: tuple[int, int] = (1280, 720)) -> bytes:
    """The still background of the X video: title, style, requester; the lower half is left for the
    animated waveform."""
    from PIL import Image, ImageDraw

    w, h = size
    image = Image.new("RGB", (w, h), BACKGROUND)
    draw = ImageDraw.Draw(image)
    # A soft vertical gradient so the card is not a flat slab.
    for y in range(h):
        t = y / max(1, h - 1)
        color = tuple(int(c * (1 - 0.45 * t) + 6 * t) for c in (30, 41, 59))
        draw.line([(0, y), (w, y)], fill=color)
    pad = max(8, w // 24)
    y = int(h * 0.08)
    title, font = _fit_text(draw, card.title or "Untitled", w - 2 * pad, max(14, h // 9), bold=True)
    draw.text((pad, y), title, font=font, fill=TEXT, anchor="lt")
    y += int(font.size * 1.35)
    style = " · ".join(
        part for part in (card.artist and f"in the style of {card.artist}", card.genre) if part
    )
    if style:
        text, font = _fit_text(draw, style, w - 2 * pad, max(10, h // 20))
        draw.text((pad, y), text, font=font, fill=WAVE_RMS, anchor="lt")
        y += int(font.size * 1.4)
    if card.requester:
        text, font = _fit_text(draw, f"requested by {card.requester}", w - 2 * pad, max(10, h // 26))
        draw.text((pad, y), text, font=font, fill=MUTED, anchor="lt")
    if card.footer:
        text, font = _fit_text(draw, card.footer, w - 2 * pad, max(8, h // 34), min_size=8)
        draw.text((pad, h - pad // 2), text, font=font, fill=MUTED, anchor="lb")
    return _png(image)


# -------------------------------------------------------------------------------------------- video


def caption_png(text: str, size: tuple[int, int]) -> bytes:
    """One line of timed lyrics: white text on a translucent dark strip (RGBA), for the video."""
    from PIL import Image, ImageDraw

    w, h = size
    image = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=max(2, h // 5), fill=(15, 23, 42, 190))
    line, font = _fit_text(draw, text, w - max(8, h // 2), max(10, int(h * 0.6)), bold=True, min_size=8)
    draw.text((w // 2, h // 2), line, font=font, fill=TEXT, anchor="mm")
    return _png(image)


def _caption_graph(
    captions: Sequence[Caption], first_input: int, size: tuple[int, int], fps: int, tmp: Path
) -> tuple[list[str], str]:
    """Inputs and filter steps that overlay each caption on `[v0]` while its line is sung; the
    result is `[v]`."""
    w, h = size
    cap_w, cap_h = _even(w - 2 * max(8, w // 24)), _even(max(16, int(h * 0.075)))
    x, y = (w - cap_w) // 2, _even(int(h * 0.885))
    inputs: list[str] = []
    steps = []
    for i, cap in enumerate(captions):
        path = tmp / f"caption-{i}.png"
        path.write_bytes(caption_png(cap.text, (cap_w, cap_h)))
        inputs += ["-i", str(path)]
        steps.append(
            f"[{first_input + i}:v]format=yuva420p,loop=loop=-1:size=1:start=0,setpts=N/({fps}*TB)[c{i}];"
            f"[v{i}][c{i}]overlay={x}:{y}:shortest=1:format=yuv420"
            f":enable='between(t,{cap.start:.3f},{cap.end:.3f})'[v{i + 1}]"
        )
    steps.append(f"[v{len(captions)}]null[v]")
    return inputs, ";".join(steps)


def _even(n: int) -> int:
    return n - (n % 2)


def render_x_video(
    src: AudioSource,
    card: TitleCard,
    *,
    style: VideoStyle = "waves",
    size: tuple[int, int] = (1280, 720),
    fps: int = 30,
    start: float = 0.0,
    max_seconds: float = X_MAX_SECONDS,
    normalize: bool = True,
    lrc: str | None = None,
) -> bytes:
    """An MP4 that X accepts: H.264 High yuv420p (closed GOP, progressive), AAC-LC 128 kbps 48 kHz
    stereo, ≤ 140 s, title card on top and a moving waveform or spectrum below, with a progress bar.
    With `lrc` (the clip's timed lyrics), each line is burned in at the bottom while it is sung.

    Clips longer than `max_seconds` are cut there (with a fade out); clips shorter than X's 0.5 s raise.
    """
    w, h = _even(size[0]), _even(size[1])
    if not (X_MIN_SIZE[0] <= w <= X_MAX_SIZE[0] and X_MIN_SIZE[1] <= h <= X_MAX_SIZE[1]):
        raise ValueError(f"X takes videos between 32x32 and 1280x1024, not {w}x{h}")
    if not 1 <= fps <= X_MAX_FPS:
        raise ValueError("X takes at most 60 frames per second")
    max_seconds = min(max_seconds, X_MAX_SECONDS)
    with (
        prepared(src, start=start, max_seconds=max_seconds, normalize=normalize) as (wav, duration),
        tempfile.TemporaryDirectory(prefix="jukebot-video-") as tmp,
    ):
        if duration < X_MIN_SECONDS:
            raise RenderError(f"X needs at least {X_MIN_SECONDS} s of video; this clip is {duration:.2f} s.")
        card_path = Path(tmp) / "card.png"
        card_path.write_bytes(title_card_png(card, (w, h)))
        out = Path(tmp) / "x.mp4"
        band_w, band_h = _even(w - 2 * max(8, w // 24)), _even(int(h * 0.42))
        band_x, band_y = (w - band_w) // 2, _even(int(h * 0.46))
        if style == "spectrum":
            anim = (
                f"showspectrum=s={band_w}x{band_h}:slide=scroll:mode=combined:color=magma"
                f":scale=log:legend=0,fps={fps}"
            )
        else:
            # draw=full: newer ffmpeg (the imageio-ffmpeg wheel's) shades the waves by alpha, which the
            # yuva420p conversion turns purple; 5.x draws the same either way.
            anim = (
                f"aformat=channel_layouts=mono,showwaves=s={band_w}x{band_h}:mode=cline:rate={fps}"
                ":scale=sqrt:draw=full:colors=0x38bdf8"
            )
        bar_h = max(2, _even(h // 120))
        graph = (
            # The card is decoded once and repeated (re-reading the PNG for every frame doubles the cost);
            # blending happens in yuv420p, the encoder's own format.
            f"[0:v]format=yuv420p,loop=loop=-1:size=1:start=0,setpts=N/({fps}*TB)[card];"
            f"[1:a]{anim},format=yuva420p[anim];"
            f"[card][anim]overlay={band_x}:{band_y}:shortest=1:format=yuv420[base];"
            f"color=c=0x38bdf8:s={w}x{bar_h}:r={fps},format=yuv420p[bar];"
            f"[base][bar]overlay=x='-{w}+{w}*t/{duration:.4f}':y={h - bar_h}:shortest=1:format=yuv420,"
            f"setsar=1[v0];"
        )
        captions = captions_from_lrc(lrc, start=start, duration=duration) if lrc else []
        caption_inputs, caption_steps = _caption_graph(captions, 2, (w, h), fps, Path(tmp))
        graph += caption_steps
        video_args = (
            f"-c:v libx264 -profile:v high -pix_fmt yuv420p -preset veryfast -crf 23 -r {fps} -g {2 * fps} "
            f"-keyint_min {fps} -x264-params open-gop=0"
        )
        audio_args = f"-c:a aac -profile:a aac_low -b:a 128k -ar {SAMPLE_RATE} -ac 2"
        _run(
            _cmd(
                "ffmpeg",
                "-v error -nostdin -y -i",
                card_path,
                "-i",
                wav,
                caption_inputs,
                "-filter_complex",
                [graph],
                "-map [v] -map 1:a",
                video_args,
                audio_args,
                f"-t {duration:.4f} -movflags +faststart",
                out,
            ),
            what="render the video for X",
        )
        data = out.read_bytes()
    problems = check_x_video(data)
    if problems:
        raise RenderError("The video does not meet X's limits: " + "; ".join(problems))
    return data


def check_x_video(video: bytes | str | os.PathLike[str]) -> list[str]:
    """Everything about `video` that X's hard limits forbid (empty list = acceptable), read by ffprobe."""
    with _as_path(video) as path:
        size = path.stat().st_size
        try:
            info = audio.probe_streams(path)
        except audio.AudioError:
            return ["the file is not a readable video"]
    problems: list[str] = []
    video_streams = [s for s in info.get("streams", []) if s.get("codec_type") == "video"]
    audio_streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if "mp4" not in str(info.get("format", {}).get("format_name", "")):
        problems.append("the container is not MP4")
    if size > X_MAX_BYTES:
        problems.append(f"{size} bytes is over 512 MB")
    duration = _float(info.get("format", {}).get("duration")) or 0.0
    if not X_MIN_SECONDS <= duration <= X_MAX_SECONDS:
        problems.append(f"duration {duration:.2f} s is outside 0.5-140 s")
    if len(video_streams) != 1:
        problems.append("there must be exactly one video stream")
    for v in video_streams[:1]:
        if v.get("codec_name") != "h264" or v.get("profile") != "High":
            problems.append(f"video is {v.get('codec_name')} {v.get('profile')}, not H.264 High")
        if v.get("pix_fmt") != "yuv420p":
            problems.append(f"pixel format {v.get('pix_fmt')} is not yuv420p")
        width, height = int(v.get("width", 0)), int(v.get("height", 0))
        if not (X_MIN_SIZE[0] <= width <= X_MAX_SIZE[0] and X_MIN_SIZE[1] <= height <= X_MAX_SIZE[1]):
            problems.append(f"{width}x{height} is outside 32x32-1280x1024")
        if width % 2 or height % 2:
            problems.append(f"{width}x{height} has an odd side")
        if height and not 1 / 3 <= width / height <= 3:
            problems.append("aspect ratio is outside 1:3-3:1")
        num, _, den = str(v.get("avg_frame_rate", "0/1")).partition("/")
        fps = float(num) / float(den or 1) if float(den or 1) else 0.0
        if fps > X_MAX_FPS:
            problems.append(f"{fps:.1f} fps is over 60")
        if v.get("sample_aspect_ratio") not in (None, "1:1", "0:1"):
            problems.append(f"pixel aspect ratio {v.get('sample_aspect_ratio')} is not 1:1")
        if v.get("field_order") not in (None, "progressive", "unknown"):
            problems.append("video is interlaced")
    if len(audio_streams) != 1:
        problems.append("there must be exactly one audio stream")
    for a in audio_streams[:1]:
        if a.get("codec_name") != "aac" or a.get("profile") != "LC":
            problems.append(f"audio is {a.get('codec_name')} {a.get('profile')}, not AAC-LC")
        if int(a.get("channels", 0)) not in (1, 2):
            problems.append("audio must be mono or stereo")
    return problems
