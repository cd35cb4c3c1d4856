"""Moments in a piece of music, as people write them: `0:42`, `1:02.5`, `1:02:03` or `42` seconds.

One parser for `/continue at:` (bot) and `jukebot generate --prime-at` (engine), so both read
the same text the same way. Errors are `MomentError` (a ValueError) with a sentence to show.
"""

from __future__ import annotations

import re

_MOMENT = re.compile(r"^(?:(?:(\d+):)?(\d{1,2}):)?(\d+(?:\.\d+)?)$")


class MomentError(ValueError):
    """A moment that cannot be read, said in words."""


def clock(seconds: float) -> str:
    """0:42, 1:02.5, 1:05:00: how a moment is written back to a person (tenths only when there are)."""
    tenths = round(seconds * 10)
    whole, frac = divmod(tenths, 10)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    text = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    return f"{text}.{frac}" if frac else text


def parse_moment(text: str, *, what: str = "the file") -> float:
    """Seconds from the start; MomentError for junk or a moment before the start."""
    t = text.strip()
    if t.startswith("-"):
        raise MomentError(f"`{text}` is before the start of {what}: moments count from 0:00.")
    m = _MOMENT.match(t)
    if m is None or (m[1] is not None and int(m[2]) >= 60) or (m[2] is not None and float(m[3]) >= 60):
        raise MomentError(
            f"`{text}` is not a moment in {what}: write it as minutes:seconds (`0:42`, `1:02.5`), "
            "hours:minutes:seconds (`1:02:03`) or seconds (`42`)."
        )
    return int(m[1] or 0) * 3600 + int(m[2] or 0) * 60 + float(m[3])
