"""The window schedule of the original Jukebox sampler, as pure arithmetic (no torch).

A level holds `total` tokens; its prior sees `n_ctx` tokens at a time. The original samples a level
window by window (`jukebox/sample.py`): windows start every `hop = int(hop_fraction * n_ctx)` tokens,
the last start is clamped so the last window ends exactly at `total`, and each window keeps the
tokens it already has as context and samples only the new ones. A level shorter than `n_ctx` is one
partial window. Everything here is plain integers so the bot, the worker and the tests agree on the
schedule without loading a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The README commands of the original use --hop_fraction=0.5,0.5,0.125 (index = level).
DEFAULT_HOP_FRACTIONS: tuple[float, ...] = (0.5, 0.5, 0.125)


def get_starts(total: int, n_ctx: int, hop: int) -> list[int]:
    """Window starts of the original (`utils/sample_utils.get_starts`): every `hop` tokens, the
    last one clamped to `total - n_ctx` so that the final window still has a full context."""
    if hop <= 0:
        raise ValueError(f"hop must be positive, got {hop}")
    starts = []
    for start in range(0, total - n_ctx + hop, hop):
        if start + n_ctx >= total:
            start = total - n_ctx
        starts.append(start)
    return starts


def hop_length(n_ctx: int, hop_fraction: float) -> int:
    hop = int(hop_fraction * n_ctx)
    if not 0 < hop <= n_ctx:
        raise ValueError(f"hop fraction {hop_fraction} gives a hop of {hop} tokens for a window of {n_ctx}")
    return hop


def round_sample_length(seconds: float, sample_rate: int, top_hop: int) -> int:
    """Raw samples for `seconds`, rounded down to a whole number of top-level tokens (every level's
    token count must be a whole number, as the original asserts), and at least one top token."""
    samples = int(seconds * sample_rate)
    return max(top_hop, samples // top_hop * top_hop)


def tokens_per_level(sample_length: int, hop_lengths: Sequence[int]) -> list[int]:
    """Token count of each level for `sample_length` raw samples (hop_lengths: raw samples per token)."""
    for hop in hop_lengths:
        if sample_length % hop:
            raise ValueError(f"sample length {sample_length} is not a multiple of the hop length {hop}")
    return [sample_length // hop for hop in hop_lengths]


def level_downsample(hop_lengths: Sequence[int], level: int) -> int:
    """How many tokens of `level` one token of `level + 1` covers (4 for Jukebox)."""
    return hop_lengths[level + 1] // hop_lengths[level]


@dataclass(frozen=True)
class Window:
    """One window of one level: tokens [start, end) are the window; the prior sees them from
    position 0 and samples those it does not have yet."""

    level: int
    index: int
    start: int
    end: int
    n_ctx: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def partial(self) -> bool:
        return self.length < self.n_ctx

    def context_tokens(self, have: int) -> int:
        """Tokens of this window already sampled when the level holds `have` tokens."""
        return max(0, min(have, self.end) - self.start)

    def new_tokens(self, have: int) -> int:
        """Tokens this window adds when the level holds `have` tokens (0: the original skips it,
        "Nothing new to sample")."""
        return max(0, self.end - max(have, self.start))

    def upper_slice(self, downsample: int) -> tuple[int, int]:
        """Range of the level-above codes that condition this window: `zs[level+1][start//4:end//4]`."""
        if self.start % downsample or self.end % downsample:
            raise ValueError(
                f"window [{self.start}, {self.end}) is not aligned to the level above ({downsample})"
            )
        return self.start // downsample, self.end // downsample

    def label_offset(self, raw_to_tokens: int, base_offset: int = 0) -> int:
        """The offset label of this window in raw samples, as `SimplePrior.get_y` sets it."""
        return base_offset + self.start * raw_to_tokens


def level_windows(level: int, total: int, n_ctx: int, hop_fraction: float) -> list[Window]:
    """All windows of a level, in sampling order.

    A level shorter than its context is one partial window [0, total) (the original's
    `sample_partial_window`, with the level's total as the end even when a prompt already fills
    part of it)."""
    if total <= 0:
        return []
    if total < n_ctx:
        return [Window(level, 0, 0, total, n_ctx)]
    hop = hop_length(n_ctx, hop_fraction)
    return [Window(level, i, s, s + n_ctx, n_ctx) for i, s in enumerate(get_starts(total, n_ctx, hop))]


def tokens_to_sample(windows: Sequence[Window], have: int) -> int:
    """New tokens the windows add to a level that already holds `have` tokens."""
    total = 0
    for w in windows:
        n = w.new_tokens(have)
        total += n
        have += n
    return total


def relevant_lyric_tokens(
    full_tokens: Sequence[int], n_tokens: int, total_length: int, offset: int, duration: int
) -> tuple[list[int], list[int]]:
    """The lyric tokens a window sees (`data/labels.get_relevant_lyric_tokens` of the original):
    short lyrics are left-padded with 0; otherwise the `n_tokens` characters centred on the linear
    alignment `len * (offset + duration/2) / total_length`, clamped to the lyrics. Returns the
    tokens and their indices in `full_tokens` (-1 for padding)."""
    full = list(full_tokens)
    if n_tokens <= 0:
        return [], []
    if len(full) < n_tokens:
        pad = n_tokens - len(full)
        return [0] * pad + full, [-1] * pad + list(range(len(full)))
    if not 0 <= offset < total_length:
        raise ValueError(f"window offset {offset} is outside the song (0..{total_length})")
    half = n_tokens // 2
    midpoint = int(len(full) * (offset + duration / 2.0) / total_length)
    midpoint = min(max(midpoint, half), len(full) - half)
    indices = list(range(midpoint - half, midpoint + half))
    return [full[i] for i in indices], indices
