"""How many lyric characters fit in a clip of a given length.

Facts (shared/research/engine.md §1.3, §2.1; the numbers are read from `engine.model.config.PRESETS`):
the top-level prior sees a window of n_tokens lyric characters while it samples one window of
audio, and the lyrics are aligned linearly with the whole song (the window centre is
len(lyrics) * position / total_length).

    1b_lyrics: 384 characters per 6144 codes * 128 samples / 44100 Hz = 17.83 s
    5b_lyrics: 512 characters per 8192 codes * 128 samples / 44100 Hz = 23.78 s

Both give the same ceiling: 384 / 17.83 = 512 / 23.78 = 21.5 characters per second. With more
characters per second than that, the words the singer should be singing slide out of the window
the model can see, so `max_chars` is a hard cut. We ask the text model for 60 % of it (about 13
characters, 2.5 words, per second: a brisk pop vocal) so a well-behaved draft is never cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.model.config import PRESETS

TARGET_FRACTION = 0.6
CHARS_PER_WORD = 5.5  # average English word plus its space, used only to phrase the prompt


@dataclass(frozen=True)
class LyricWindow:
    n_tokens: int  # lyric characters the prior sees at once
    seconds: float  # audio one top-level window covers

    @property
    def chars_per_second(self) -> float:
        return self.n_tokens / self.seconds


def _preset_window(name: str) -> LyricWindow:
    config = PRESETS[name]
    return LyricWindow(n_tokens=config.top.n_tokens, seconds=config.window_samples(2) / config.sample_rate)


WINDOWS: dict[str, LyricWindow] = {name: _preset_window(name) for name in ("1b_lyrics", "5b_lyrics")}
# The demo model, custom models and the lyric-less 5b get the 1b_lyrics rate: it is the rate the
# released lyric models were trained at (the same 21.5 characters per second for both). A tiny
# demo model's own window would give a meaningless rate.
DEFAULT_WINDOW = WINDOWS["1b_lyrics"]


def window_for(engine_model: str | None) -> LyricWindow:
    return WINDOWS.get((engine_model or "").strip().lower(), DEFAULT_WINDOW)


@dataclass(frozen=True)
class LyricBudget:
    seconds: float
    max_chars: int  # hard cut
    target_chars: int  # what we ask the text model for

    @property
    def target_words(self) -> int:
        return max(1, round(self.target_chars / CHARS_PER_WORD))


def budget_for(seconds: float, engine_model: str | None = None) -> LyricBudget:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a positive number, not {seconds!r}")
    window = window_for(engine_model)
    max_chars = max(1, math.floor(seconds * window.chars_per_second))
    return LyricBudget(
        seconds=seconds,
        max_chars=max_chars,
        target_chars=max(1, math.floor(max_chars * TARGET_FRACTION)),
    )
