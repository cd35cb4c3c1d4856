"""Timed lyrics as captions of the X video: an LRC file (the engine's `final.lrc`, one line per
lyric line at the time its first character is sung) read into the captions `render_x_video` burns
into its frames, each shown from its time until the next line (at most `MAX_SHOWN` seconds)."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SHOWN = 8.0  # seconds a line stays on screen when the next one is far away
LRC_LINE = re.compile(r"^\[(\d+):(\d+(?:\.\d+)?)\](.*)$")


@dataclass(frozen=True)
class Caption:
    start: float  # seconds into the clip
    end: float
    text: str


def parse_lrc(text: str) -> list[tuple[float, str]]:
    """(time, line) of every timed, non-empty line, in time order; anything else is skipped."""
    out = []
    for raw in text.splitlines():
        m = LRC_LINE.match(raw.strip())
        if m and m[3].strip():
            out.append((int(m[1]) * 60 + float(m[2]), m[3].strip()))
    return sorted(out, key=lambda t: t[0])


def captions_from_lrc(text: str, *, start: float = 0.0, duration: float | None = None) -> list[Caption]:
    """The captions of a video that shows the clip from `start` for `duration` seconds (times in the
    video's clock). Lines sung at the same moment are shown together."""
    lines = parse_lrc(text)
    merged: list[tuple[float, str]] = []
    for t, line in lines:
        if merged and abs(merged[-1][0] - t) < 1e-6:
            merged[-1] = (t, f"{merged[-1][1]} / {line}")
        else:
            merged.append((t, line))
    out = []
    for i, (t, line) in enumerate(merged):
        end = merged[i + 1][0] if i + 1 < len(merged) else t + MAX_SHOWN
        a, b = t - start, min(end, t + MAX_SHOWN) - start
        if duration is not None:
            b = min(b, duration)
        if b > max(a, 0.0):
            out.append(Caption(max(a, 0.0), b, line))
    return out
