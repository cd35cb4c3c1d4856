"""Counter-based noise and token picking: the randomness of the sampler, with no state.

The noise of a token is a hash of (seed, stream, level, sample row, absolute token position,
vocabulary index), so it does not depend on how the work was cut into windows, batches or
processes (see engine.sampling.sample). Tokens are picked on the device with no host sync:
temperature, then top-k or top-p filtering, then the Gumbel-max trick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32), in int64 without overflow (16-bit halves)."""
    return ((x & 0xFFFF) * c + (((x >> 16) * c) & 0xFFFF) * 65536) & _M32


def mix32(x: Tensor) -> Tensor:
    """A 32-bit avalanche hash (Wellons' lowbias32) of int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def mix32_int(x: int) -> int:
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


@dataclass(frozen=True)
class NoiseKey:
    """Names one independent stream of sampling noise: a job's seed and a stream number (e.g. which
    draft an upsample belongs to)."""

    seed: int
    stream: int = 0

    def level_key(self, level: int) -> int:
        k = mix32_int(0x5EED0000 ^ level)
        k = mix32_int(k ^ (self.stream & _M32))
        k = mix32_int(k ^ ((self.seed >> 32) & _M32))
        return mix32_int(k ^ (self.seed & _M32))

    def row_bin_hash(self, level: int, rows: Sequence[int], bins: int, device: torch.device) -> Tensor:
        """The per-(row, vocabulary index) part of the hash, [B, bins] int64; fixed per level."""
        key = self.level_key(level)
        row_keys = torch.tensor([mix32_int(key ^ mix32_int(0x0F0F0000 + r)) for r in rows], dtype=torch.int64)
        bin_keys = mix32(torch.arange(bins, dtype=torch.int64) + 0x9E3779B9)
        return mix32(row_keys[:, None] ^ bin_keys[None, :]).to(device)


def position_hash(position: int) -> int:
    return mix32_int(mix32_int(position ^ 0x2545F491) + 0x68E31DA4)


def gumbel(row_bin: Tensor, position: int | Tensor) -> Tensor:
    """Standard Gumbel noise [B, bins] for one absolute token position (int, or int64 tensor [B])."""
    if isinstance(position, Tensor):
        pos = mix32((mix32(position.to(torch.int64) ^ 0x2545F491) + 0x68E31DA4) & _M32)[:, None]
    else:
        pos = position_hash(position)  # type: ignore[assignment]
    h = mix32(row_bin ^ pos)
    u = ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))  # in (0, 1), never 0 or 1
    return -torch.log(-torch.log(u))


# ---------------------------------------------------------------------------------------------
# Picking a token


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 0.0) -> Tensor:
    """Top-k or nucleus filtering (the original's `filter_logits`), on the device, no host sync."""
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p > 0.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cum = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > top_p
        # keep the first token above the threshold too
        remove = torch.cat([torch.zeros_like(remove[..., :1]), remove[..., :-1]], dim=-1)
        remove = torch.zeros_like(remove).scatter(-1, sorted_idx, remove)
        logits = logits.masked_fill(remove, -math.inf)
    return logits


def pick_tokens(
    logits: Tensor, noise: Tensor, temperature: float, top_k: int = 0, top_p: float = 0.0
) -> Tensor:
    """Sample one token per row from `logits` [B, bins] given Gumbel `noise` [B, bins]."""
    scores = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.argmax(scores + noise, dim=-1)


# ---------------------------------------------------------------------------------------------
# Settings and progress
