"""The pictures: a waveform and a spectrogram for Discord posts, the X video's title card and its
caption strips. Drawn with Pillow (imported when used, as the bot loads this module)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from publisher.render_prepare import AudioSource, decode_mono

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu")


@dataclass(frozen=True)
class TitleCard:
    """What the X video shows above the waveform."""

    title: str
    artist: str = ""
    genre: str = ""
    requester: str = ""
    footer: str = ""  # e.g. the channel tag and the licence note


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
