"""Training batches and the loss of one prior level, on codes the VQ-VAE made from the corpus.

Each clip of the corpus is encoded once at every level (`ClipCodes`). A batch is `batch_size`
random windows of `n_ctx` tokens of the level being trained, each with:
- the label vector y the sampler builds too (`engine.model.labels.Labeller.window_y`): the piece's total
  length, the window's offset in the piece and its length in raw samples, the artist and genre ids
  and, for lyrics models, the window's lyric characters by the original's linear alignment;
- for an upsampler, the codes of the level above that cover the same audio (windows start on a
  multiple of the level-above downsampling so the two line up exactly).

The windows come from a `torch.Generator` whose state is saved with the run, so a resumed run
draws exactly the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.model.labels import get_relevant_lyric_tokens
from engine.model.prior import JukeboxPrior


@dataclass
class ClipCodes:
    """One corpus clip: its codes at every level and its labels (ids already resolved)."""

    name: str
    codes: list[np.ndarray]  # index = level; int16/int32 [T_level]
    artist_id: int
    genre_ids: tuple[int, ...]
    lyric_tokens: tuple[int, ...]  # all characters sung in this clip (empty without lyrics)
    offset_samples: int  # where the clip starts in its piece
    total_samples: int  # length of the whole piece


@dataclass
class PriorBatch:
    tokens: Tensor  # [B, n_ctx]
    y: Tensor | None  # [B, y_len]
    upper: Tensor | None  # [B, n_ctx // downsample]


class PriorBatcher:
    """Random training windows of one level."""

    def __init__(
        self,
        clips: list[ClipCodes],
        prior: JukeboxPrior,
        *,
        label_dropout: float = 0.0,
        timing_jitter: float = 0.0,
    ) -> None:
        self.prior = prior
        c = prior.config
        self.level, self.n_ctx = c.level, c.n_ctx
        self.align = 1 if prior.is_top else int(prior.cond_downsample or 1)
        self.hop = prior.raw_to_tokens
        self.label_dropout = label_dropout
        # A small corpus lets the top prior recognise each piece by its exact length and learn it by
        # heart; songs asked for later have lengths it never saw. Jittered windows get a random
        # song length (from the window's end to max_duration), so the length is no key to a piece.
        self.timing_jitter = timing_jitter if prior.is_top and prior.config.labels else 0.0
        self.clips = [clip for clip in clips if len(clip.codes[self.level]) >= self.n_ctx]
        if not self.clips:
            raise ValueError(
                f"no clip is long enough for one level-{self.level} training window "
                f"({self.n_ctx * self.hop / prior.sample_rate:.1f} s)"
            )
        # Windows are drawn uniformly over all start positions of all clips.
        self.starts = np.array(
            [(len(clip.codes[self.level]) - self.n_ctx) // self.align + 1 for clip in self.clips]
        )
        self.cum = np.cumsum(self.starts)

    def windows(self) -> int:
        return int(self.cum[-1])

    def sample(self, batch_size: int, gen: torch.Generator) -> list[tuple[int, int]]:
        """(clip index, token start) of each row."""
        picks = torch.randint(0, int(self.cum[-1]), (batch_size,), generator=gen).numpy()
        out = []
        for p in picks:
            i = int(np.searchsorted(self.cum, p, side="right"))
            before = int(self.cum[i - 1]) if i else 0
            out.append((i, (int(p) - before) * self.align))
        return out

    def make(self, rows: list[tuple[int, int]], gen: torch.Generator, device: torch.device) -> PriorBatch:
        c = self.prior.config
        tokens = np.stack([self.clips[i].codes[self.level][s : s + self.n_ctx] for i, s in rows]).astype(
            np.int64
        )
        upper = None
        if not self.prior.is_top:
            up = self.level + 1
            n_up = self.n_ctx // self.align
            upper_np = np.stack(
                [self.clips[i].codes[up][s // self.align : s // self.align + n_up] for i, s in rows]
            )
            upper = torch.from_numpy(upper_np.astype(np.int64)).to(device)
        y = None
        if c.labels:
            drop = torch.rand(len(rows), 2, generator=gen).numpy() < self.label_dropout
            jitter = torch.rand(len(rows), 2, generator=gen, dtype=torch.float64).numpy()
            y = torch.tensor(
                [
                    self._y(
                        self.clips[i],
                        s,
                        bool(d[0]),
                        bool(d[1]),
                        float(j[1]) if j[0] < self.timing_jitter else None,
                    )
                    for (i, s), d, j in zip(rows, drop, jitter, strict=True)
                ],
                dtype=torch.long,
                device=device,
            )
        return PriorBatch(torch.from_numpy(tokens).to(device), y, upper)

    def _y(
        self, clip: ClipCodes, start: int, drop_artist: bool, drop_genre: bool, jitter: float | None = None
    ) -> list[int]:
        c = self.prior.config
        sr = self.prior.sample_rate
        length = self.n_ctx * self.hop
        offset = clip.offset_samples + start * self.hop
        total = max(clip.total_samples, offset + length)
        if jitter is not None:
            hi = int((c.max_duration or 2 * total / sr) * sr) - 1
            total = int(min(offset + length, hi) + jitter * max(0, hi - offset - length))
        if c.max_duration is not None:
            # The timing embedding knows songs shorter than max_duration: a window of a longer
            # piece is labelled as the last window of a song just under that length.
            limit = int(c.max_duration * sr) - 1
            total = min(total, limit)
            offset = min(offset, limit - length)
        if c.min_duration is not None:
            total = max(total, int(np.ceil(c.min_duration * sr)))
        genres = [0] if drop_genre else list(clip.genre_ids)[: c.max_bow_genre_size]
        genres += [-1] * (c.max_bow_genre_size - len(genres))
        tokens: list[int] = []
        if c.n_tokens:
            # Linear alignment inside the clip (its lyrics are the words sung in it).
            clip_len = len(clip.codes[self.level]) * self.hop
            tokens, _ = get_relevant_lyric_tokens(
                list(clip.lyric_tokens), c.n_tokens, clip_len, min(start * self.hop, clip_len - 1), length
            )
        return [total, offset, length, 0 if drop_artist else clip.artist_id, *genres, *tokens]


def prior_loss(prior: JukeboxPrior, batch: PriorBatch) -> tuple[Tensor, dict[str, Tensor]]:
    cond = prior.get_cond(batch.y, batch.upper)
    return prior.loss(batch.tokens, cond)
