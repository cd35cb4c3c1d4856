"""Factored attention (Child et al. 2019, as used by Jukebox), with static per-kind KV caches.

A window of `L` positions is seen as `blocks` rows of `block_ctx = L // blocks` positions. Each
layer has one attention kind (the original's `attn_func`), picked per layer by `attn_order`:

    0 dense      every earlier position                  cache: all L keys
    1 block      earlier positions of its own row        cache: one row (block_ctx keys)
    2 transpose  same column in every earlier row        cache: all keys, laid out [column, row]
    3 previous   the whole previous row (not its own)    cache: two rows, used as a ring
    4 summary    the last position of every earlier row  cache: one key per row
    5 summary    the last `spread` positions of every    cache: `spread` keys per row
      (spread)   earlier row
    6 cross      the lyric encoder's keys/values         cache: encoder keys, computed at prefill
    7 prime      the first `prime_len` positions (lyric  cache: prime_len keys
                 prefix), causally

`forward` runs a whole window prefix in one pass through `F.scaled_dot_product_attention` (the
exact slow path and the prefill, which also fills the cache); `step` runs one position per batch
row. Both give the original's numbers; `step` has static shapes and no host syncs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.model.config import ConfigError

DENSE, BLOCK, TRANSPOSE, PREV, SUMMARY, SUMMARY_SPREAD, CROSS, PRIME = range(8)
KIND_NAMES = {
    DENSE: "dense",
    BLOCK: "block",
    TRANSPOSE: "transpose",
    PREV: "previous",
    SUMMARY: "summary",
    SUMMARY_SPREAD: "summary-spread",
    CROSS: "cross",
    PRIME: "prime",
}

# The original `Transformer.__init__` mapping from attn_order to the kind of layer d.
ATTN_ORDERS: dict[int, Callable[[int], int]] = {
    0: lambda d: 0,
    1: lambda d: [1, 2][d % 2],
    2: lambda d: [1, 2, 3][d % 3],
    3: lambda d: [1, 4][d % 2],
    4: lambda d: [1, 5][d % 2],
    5: lambda d: [1, 4, 1, 1][d % 4],
    6: lambda d: [1, 2, 3, 6][d % 4],
    7: lambda d: [*[1, 2, 3] * 5, 6][d % 16],
    8: lambda d: [1, 2, 3, 1, 2, 3, 1, 2, 3, 6][d % 10],
    9: lambda d: [1, 2, 3, 0][d % 4],
    10: lambda d: [*[1, 2, 3, 1, 2, 3, 1, 2, 3], *[1, 2, 3, 1, 2, 3, 1, 2, 3, 6] * 7][d % 79],
    11: lambda d: [6, 6, 0][d % 3] if d % 16 == 15 else [1, 2, 3][d % 3],
    12: lambda d: [7, 7, 0][d % 3] if d % 16 == 15 else [1, 2, 3][d % 3],
}


def layer_kinds(attn_order: int, depth: int) -> list[int]:
    if attn_order not in ATTN_ORDERS:
        raise ConfigError(f"unknown attn_order {attn_order}")
    return [ATTN_ORDERS[attn_order](d) for d in range(depth)]


@dataclass(frozen=True)
class Geometry:
    """Shape facts shared by every layer of one transformer."""

    seq_len: int  # L, positions per window
    blocks: int | None
    prime_len: int | None = None  # lyric prefix length (prefix models)
    encoder_len: int = 0  # lyric encoder positions (separate models)
    spread: int | None = None  # summary-spread attention: keys per row

    @property
    def block_ctx(self) -> int:
        if not self.blocks:
            raise ConfigError("factored attention needs `blocks`")
        return self.seq_len // self.blocks

    @property
    def prime_keys(self) -> int:
        """Keys a prime layer sees: the original rounds the prefix up as (prime_len // blocks + 1) * blocks."""
        if self.prime_len is None or not self.blocks:
            raise ConfigError("prime attention needs prime_len and blocks")
        return (self.prime_len // self.blocks + 1) * self.blocks

    def summary_width(self, kind: int) -> int:
        """Keys per row of a summary layer: its last position, or its last `spread` positions."""
        if kind == SUMMARY:
            return 1
        if not self.spread or self.spread > self.block_ctx:
            raise ConfigError(
                f"summary-spread attention needs 1 <= spread <= {self.block_ctx}, got {self.spread}"
            )
        return self.spread

    def summary_positions(self, kind: int, device: torch.device | None = None) -> Tensor:
        """Window position of each key of a summary layer, the original's layout: one group of
        zero keys (seen by every query; position -1), then the last keys of rows 0..blocks-2."""
        w, bc = self.summary_width(kind), self.block_ctx
        g = torch.arange(self.seq_len // bc, device=device)[:, None]
        pos = g * bc - w + torch.arange(w, device=device)[None]
        return torch.where(g == 0, -1, pos).reshape(-1)


@dataclass
class LayerCache:
    k: Tensor  # [B, H, ..., D], kind-specific middle dims
    v: Tensor


def cache_shape(kind: int, geo: Geometry, batch: int, heads: int, head_dim: int) -> tuple[int, ...]:
    if kind == DENSE:
        mid: tuple[int, ...] = (geo.seq_len,)
    elif kind == BLOCK:
        mid = (geo.block_ctx,)
    elif kind == PREV:
        mid = (2 * geo.block_ctx,)
    elif kind == TRANSPOSE:
        mid = (geo.block_ctx, geo.seq_len // geo.block_ctx)
    elif kind == PRIME:
        mid = (min(geo.prime_keys, geo.seq_len),)
    elif kind == CROSS:
        mid = (geo.encoder_len,)
    elif kind in (SUMMARY, SUMMARY_SPREAD):
        mid = (geo.summary_positions(kind).numel(),)
    else:  # pragma: no cover - rejected by layer_kinds
        raise ConfigError(f"no cache for attention kind {kind}")
    return (batch, heads, *mid, head_dim)


def step_masks(
    kinds: set[int], s: Tensor, geo: Geometry, dtype: torch.dtype | None = None
) -> dict[int, Tensor]:
    """Key masks [B, 1, 1, keys] for one decode step at sequence positions `s` [B]: boolean, or
    with `dtype` additive (0 where a key is seen, -inf where not; what SDPA makes of a boolean
    mask, made once per step instead of once per layer)."""
    dev = s.device
    s_ = s[:, None]
    out: dict[int, Tensor] = {}
    for kind in kinds:
        if kind == DENSE:
            m = torch.arange(geo.seq_len, device=dev)[None] <= s_
        elif kind == BLOCK:
            m = torch.arange(geo.block_ctx, device=dev)[None] <= s_ % geo.block_ctx
        elif kind == TRANSPOSE:
            m = torch.arange(geo.seq_len // geo.block_ctx, device=dev)[None] <= s_ // geo.block_ctx
        elif kind == PREV:
            prev_slot = (s_ // geo.block_ctx + 1) % 2
            m = torch.arange(2 * geo.block_ctx, device=dev)[None] // geo.block_ctx == prev_slot
        elif kind == PRIME:
            m = torch.arange(min(geo.prime_keys, geo.seq_len), device=dev)[None] <= s_
        elif kind in (SUMMARY, SUMMARY_SPREAD):
            m = geo.summary_positions(kind, dev)[None] <= s_
        else:
            continue
        m = m[:, None, None, :]
        if dtype is not None:
            m = torch.zeros(m.shape, dtype=dtype, device=dev).masked_fill(~m, float("-inf"))
        out[kind] = m
    return out


class Conv1D(nn.Module):
    """The original's linear layer: weight `w` is [n_in, n_out] (transposed versus nn.Linear)."""

    def __init__(self, n_in: int, n_out: int, zero_out: bool = False, init_scale: float = 1.0) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        w = torch.zeros(n_in, n_out) if zero_out else torch.empty(n_in, n_out).normal_(std=0.02 * init_scale)
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, self.n_in).to(self.w.dtype)
        s = SPLIT_K
        if s > 1 and x2.shape[0] <= SPLIT_K_MAX_ROWS and self.n_in % s == 0:
            # A few rows (a decode step): one GEMM of [rows x n_in] x [n_in x n_out] keeps only
            # n_out / 64 multiprocessors busy reading the weight; s partial products over slices of
            # n_in run s times as many, and the sum fuses into whatever follows (engine.sampling.graphs).
            k = self.n_in // s
            part = torch.bmm(x2.view(-1, s, k).transpose(0, 1), self.w.reshape(s, k, self.n_out))
            return (part.float().sum(0) + self.b.float()).to(self.w.dtype).view(*x.shape[:-1], self.n_out)
        return torch.addmm(self.b, x2, self.w).view(*x.shape[:-1], self.n_out)


# Split-K for few-row products (engine.sampling.graphs sets it for a compiled decode step; 1 = off).
SPLIT_K = 1
SPLIT_K_MAX_ROWS = 16


class FactoredAttention(nn.Module):
    def __init__(
        self,
        n_in: int,
        n_state: int,
        heads: int,
        kind: int,
        geo: Geometry,
        zero_out: bool = False,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.n_state, self.heads, self.kind, self.geo = n_state, heads, kind, geo
        self.head_dim = n_state // heads
        if kind == CROSS:
            self.c_attn = Conv1D(n_in, n_state, init_scale=init_scale)
            self.c_enc_kv = Conv1D(n_in, n_state * 2, init_scale=init_scale)
        else:
            self.c_attn = Conv1D(n_in, n_state * 3, init_scale=init_scale)
        self.c_proj = Conv1D(n_state, n_in, zero_out, init_scale=init_scale)
        # The original scales q and k by d**-0.25 each.
        self.scale = (1.0 / math.sqrt(math.sqrt(self.head_dim))) ** 2
        if kind in (BLOCK, TRANSPOSE, PREV):
            _ = geo.block_ctx  # fail at construction, not at the first forward
        if kind in (SUMMARY, SUMMARY_SPREAD):
            _ = geo.summary_width(kind)
        if kind == PRIME:
            _ = geo.prime_keys

    # -- helpers ------------------------------------------------------------------------------
    def _split(self, x: Tensor) -> Tensor:  # [B, S, n_state] -> [B, H, S, D]
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: Tensor) -> Tensor:  # [B, H, S, D] -> [B, S, n_state]
        b, _, s, _ = x.shape
        return x.transpose(1, 2).reshape(b, s, self.n_state)

    def _sdpa(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False
    ) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale)

    def encoder_kv(self, enc: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.c_enc_kv(enc).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    # -- whole window (exact slow path and prefill) ------------------------------------------
    def forward(
        self,
        x: Tensor,
        enc: Tensor | None = None,
        cache: LayerCache | None = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """x: [B, S, n_in] for window positions 0..S-1 (S <= seq_len). Fills `cache` when given."""
        qkv = self.c_attn(x)
        if self.kind == CROSS:
            if enc is None:
                raise ValueError("this layer attends to the lyric encoder: pass its output")
            q = self._split(qkv)
            k, v = self.encoder_kv(enc)
        else:
            q, k, v = (self._split(t) for t in qkv.chunk(3, dim=-1))
        a = self._attend_all(q, k, v)
        if cache is not None:
            self._fill(cache, k, v, rows)
        return self.c_proj(self._merge(a))

    def _blocked(self, t: Tensor) -> Tensor:  # [B, H, S, D] -> [B, H, nb, bc, D], zero-padded
        bc = self.geo.block_ctx
        s = t.shape[2]
        pad = (-s) % bc
        if pad:
            t = F.pad(t, (0, 0, 0, pad))
        return t.view(t.shape[0], t.shape[1], -1, bc, t.shape[3])

    def _attend_all(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        kind, s = self.kind, q.shape[2]
        if kind == DENSE:
            return self._sdpa(q, k, v, causal=True)
        if kind == CROSS:
            return self._sdpa(q, k, v)
        if kind == PRIME:
            p = min(self.geo.prime_keys, s)
            mask = torch.arange(p, device=q.device)[None] <= torch.arange(s, device=q.device)[:, None]
            return self._sdpa(q, k[:, :, :p], v[:, :, :p], mask=mask)
        if kind in (SUMMARY, SUMMARY_SPREAD):
            return self._attend_summary(q, k, v)
        b, h, _, d = q.shape
        qb, kb, vb = self._blocked(q), self._blocked(k), self._blocked(v)
        nb, bc = qb.shape[2], qb.shape[3]
        if kind == BLOCK:
            q2, k2, v2 = (t.reshape(b, h * nb, bc, d) for t in (qb, kb, vb))
            a = self._sdpa(q2, k2, v2, causal=True).reshape(b, h, nb * bc, d)
        elif kind == TRANSPOSE:
            qt, kt, vt = (t.transpose(2, 3).reshape(b, h * bc, nb, d) for t in (qb, kb, vb))
            a = (
                self._sdpa(qt, kt, vt, causal=True)
                .reshape(b, h, bc, nb, d)
                .transpose(2, 3)
                .reshape(b, h, nb * bc, d)
            )
        elif kind == PREV:
            # Row r attends to all of row r-1; row 0 sees zero keys and values, so its output is 0.
            q2, k2, v2 = (
                t.reshape(b, h * nb, bc, d)
                for t in (qb, *(F.pad(t[:, :, :-1], (0, 0, 0, 0, 1, 0)) for t in (kb, vb)))
            )
            a = self._sdpa(q2, k2, v2).reshape(b, h, nb * bc, d)
        else:  # pragma: no cover
            raise ConfigError(f"attention kind {kind}")
        return a[:, :, :s]

    def _summary_keys(self, t: Tensor) -> Tensor:
        """[B, H, S, D] -> the summary keys (or values) [B, H, keys, D] in the cache's layout."""
        w, geo = self.geo.summary_width(self.kind), self.geo
        t = F.pad(t, (0, 0, 0, geo.seq_len - t.shape[2]))  # positions not yet there: masked
        rows = t.view(t.shape[0], t.shape[1], -1, geo.block_ctx, t.shape[3])[:, :, :-1, -w:]
        return F.pad(rows, (0, 0, 0, 0, 1, 0)).flatten(2, 3)

    def _attend_summary(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # The original's "summary" mask: a key is seen from its own position on.
        pos = self.geo.summary_positions(self.kind, q.device)
        mask = pos[None] <= torch.arange(q.shape[2], device=q.device)[:, None]
        return self._sdpa(q, self._summary_keys(k), self._summary_keys(v), mask=mask)

    def _summary_slot(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """Cache slot of the key at positions `s`, and whether that position has one."""
        w, bc = self.geo.summary_width(self.kind), self.geo.block_ctx
        j = s % bc - (bc - w)
        has = (j >= 0) & (s // bc + 1 < self.geo.seq_len // bc)
        return torch.where(has, (s // bc + 1) * w + j, 0), has

    def _fill(self, cache: LayerCache, k: Tensor, v: Tensor, rows: Tensor | None) -> None:
        """Write what later single steps need of positions 0..S-1 into the cache rows."""
        for dst, src in ((cache.k, k), (cache.v, v)):
            if rows is None:  # all rows: write in place
                new = dst.zero_()
            else:
                new = torch.zeros((src.shape[0], *dst.shape[1:]), dtype=dst.dtype, device=dst.device)
            src = src.to(dst.dtype)
            s = src.shape[2]
            kind = self.kind
            if kind == CROSS:
                new.copy_(src)
            elif kind == DENSE:
                new[:, :, :s] = src
            elif kind == PRIME:
                p = min(new.shape[2], s)
                new[:, :, :p] = src[:, :, :p]
            elif kind in (SUMMARY, SUMMARY_SPREAD):
                new.copy_(self._summary_keys(src))
            else:
                bc = self.geo.block_ctx
                if kind == BLOCK:
                    lo = (s - 1) // bc * bc
                    new[:, :, : s - lo] = src[:, :, lo:]
                elif kind == PREV:
                    lo = max(0, ((s - 1) // bc - 1) * bc)
                    slots = torch.arange(lo, s, device=dst.device) % (2 * bc)
                    new[:, :, slots] = src[:, :, lo:]
                elif kind == TRANSPOSE:
                    blk = self._blocked(src).transpose(2, 3)  # [B, H, bc, nb_s, D]
                    new[:, :, :, : blk.shape[3]] = blk
            if rows is not None:
                dst[rows] = new

    # -- one position per row (decode) ---------------------------------------------------------
    def step(self, x: Tensor, s: Tensor, cache: LayerCache, masks: dict[int, Tensor]) -> Tensor:
        """x: [B, 1, n_in] at sequence positions s: [B]. Writes this position's key/value."""
        qkv = self.c_attn(x)
        kind = self.kind
        if kind == CROSS:
            q = self._split(qkv)
            a = self._sdpa(q, cache.k, cache.v)
            return self.c_proj(self._merge(a))
        q, k, v = (self._split(t) for t in qkv.chunk(3, dim=-1))
        k1, v1 = k[:, :, 0].to(cache.k.dtype), v[:, :, 0].to(cache.v.dtype)
        rows = torch.arange(s.shape[0], device=s.device)
        if kind == TRANSPOSE:
            bc = self.geo.block_ctx
            col, row = s % bc, s // bc
            cache.k[rows, :, col, row] = k1
            cache.v[rows, :, col, row] = v1
            kk, vv = cache.k[rows, :, col], cache.v[rows, :, col]
        else:
            if kind == DENSE:
                slot = s
            elif kind == BLOCK:
                slot = s % self.geo.block_ctx
            elif kind == PREV:
                slot = s % (2 * self.geo.block_ctx)
            elif kind in (SUMMARY, SUMMARY_SPREAD):  # only the last positions of a row have keys
                slot, has = self._summary_slot(s)
                keep = ~has[:, None, None]
                k1 = torch.where(keep, cache.k[rows, :, slot], k1)
                v1 = torch.where(keep, cache.v[rows, :, slot], v1)
            else:  # PRIME: keys exist only for the first prime_keys positions
                n = cache.k.shape[2]
                slot = s.clamp(max=n - 1)
                keep = (s >= n)[:, None, None]
                k1 = torch.where(keep, cache.k[rows, :, slot], k1)
                v1 = torch.where(keep, cache.v[rows, :, slot], v1)
            cache.k[rows, :, slot] = k1
            cache.v[rows, :, slot] = v1
            kk, vv = cache.k, cache.v
        a = self._sdpa(q, kk.to(q.dtype), vv.to(q.dtype), mask=masks[kind])
        if kind == PREV:
            a = a * (s >= self.geo.block_ctx).to(a.dtype)[:, None, None, None]
        return self.c_proj(self._merge(a))
