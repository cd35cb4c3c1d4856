"""The Jukebox transformer: pre-LN residual blocks of factored attention + MLP, and the
autoregressive wrapper (token/position embeddings, output head).

Attribute names reproduce the original state-dict keys (`transformer._attn_mods.N.attn.c_attn.w`,
`x_emb.weight`, `pos_emb.pos_emb`, `x_out.weight`, `start_token`).

Numerics: the residual stream stays float32; each block's LayerNorm runs in float32 and hands
its output to the attention/MLP in the weights' dtype (bf16 or fp32), like the original's fp16
path but with a float32 residual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.model.attention import (
    CROSS,
    Conv1D,
    FactoredAttention,
    Geometry,
    LayerCache,
    cache_shape,
    layer_kinds,
    step_masks,
)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the weights' dtype; returns the weights' dtype."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(self.weight.dtype)


def quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


class MLP(nn.Module):
    def __init__(self, n_in: int, n_state: int, zero_out: bool = False, init_scale: float = 1.0) -> None:
        super().__init__()
        self.c_fc = Conv1D(n_in, n_state, init_scale=init_scale)
        self.c_proj = Conv1D(n_state, n_in, zero_out, init_scale=init_scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(quick_gelu(self.c_fc(x)))


class ResAttnBlock(nn.Module):
    """h = x + a + m, with a = attn(ln_0(x)) and m = mlp(ln_1(x + a))."""

    def __init__(
        self,
        width: int,
        heads: int,
        kind: int,
        geo: Geometry,
        m_attn: float,
        m_mlp: float,
        zero_out: bool,
        init_scale: float,
        res_scale: float,
    ) -> None:
        super().__init__()
        self.attn = FactoredAttention(width, int(m_attn * width), heads, kind, geo, zero_out, init_scale)
        self.ln_0 = LayerNorm(width)
        self.mlp = MLP(width, int(m_mlp * width), zero_out, init_scale)
        self.ln_1 = LayerNorm(width)
        self.res_scale = res_scale

    def _residual(self, x: Tensor, a: Tensor) -> Tensor:
        a = a.float()
        m = self.mlp(self.ln_1(x + a)).float()
        return x + a + m if self.res_scale == 1.0 else x + self.res_scale * (a + m)

    def forward(self, x: Tensor, enc: Tensor | None, cache: LayerCache | None, rows: Tensor | None) -> Tensor:
        return self._residual(x, self.attn(self.ln_0(x), enc, cache, rows))

    def step(self, x: Tensor, s: Tensor, cache: LayerCache, masks: dict[int, Tensor]) -> Tensor:
        return self._residual(x, self.attn.step(self.ln_0(x), s, cache, masks))


# (block, x, s, cache, masks) -> x: how one block's decode step is run
BlockStep = Callable[[ResAttnBlock, Tensor, Tensor, LayerCache, dict[int, Tensor]], Tensor]


class Transformer(nn.Module):
    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        attn_order: int,
        geo: Geometry,
        m_attn: float = 0.25,
        m_mlp: float = 1.0,
        zero_out: bool = False,
        init_scale: float = 1.0,
        res_scale: bool = False,
    ) -> None:
        super().__init__()
        self.geo = geo
        self.kinds = layer_kinds(attn_order, depth)
        scale = 1.0 / depth if res_scale else 1.0
        self._attn_mods = nn.ModuleList(
            ResAttnBlock(width, heads, k, geo, m_attn, m_mlp, zero_out or k == CROSS, init_scale, scale)
            for k in self.kinds
        )

    @property
    def layers(self) -> list[ResAttnBlock]:
        return cast(list[ResAttnBlock], list(self._attn_mods))

    def new_cache(self, batch: int, device: torch.device | str, dtype: torch.dtype) -> list[LayerCache]:
        out = []
        for layer in self.layers:
            att = layer.attn
            shape = cache_shape(att.kind, self.geo, batch, att.heads, att.head_dim)
            out.append(
                LayerCache(
                    torch.zeros(shape, device=device, dtype=dtype),
                    torch.zeros(shape, device=device, dtype=dtype),
                )
            )
        return out

    def forward(
        self,
        x: Tensor,
        enc: Tensor | None = None,
        cache: list[LayerCache] | None = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, enc if layer.attn.kind == CROSS else None, None if cache is None else cache[i], rows)
        return x

    def step(
        self, x: Tensor, s: Tensor, cache: list[LayerCache], block_step: BlockStep | None = None
    ) -> Tensor:
        """One position per row. `block_step` runs one block (default `ResAttnBlock.step`); the fast
        decoder passes a compiled version of the same function (engine.sampling.graphs)."""
        masks = step_masks(set(self.kinds), s, self.geo, dtype=self.layers[0].attn.c_attn.w.dtype)
        run = block_step or ResAttnBlock.step
        for layer, lc in zip(self.layers, cache, strict=True):
            x = run(layer, x, s, lc, masks)
        return x


class PositionEmbedding(nn.Module):
    def __init__(self, seq_len: int, width: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.empty(seq_len, width).normal_(std=0.01 * init_scale))


@dataclass(frozen=True)
class ARSpec:
    bins: int
    width: int
    depth: int
    heads: int
    attn_order: int
    geo: Geometry
    init_scale: float = 1.0
    m_attn: float = 0.25
    m_mlp: float = 1.0
    zero_out: bool = False
    res_scale: bool = False
    has_start_token: bool = False  # True when no label embedding provides the first input
    merged_decoder: bool = False
    only_encode: bool = False


class AutoregressiveTransformer(nn.Module):
    """The original `ConditionalAutoregressive2D`: input at position t is the embedding of token
    t-1 (a start vector at t=0) + position embedding + per-position conditioning."""

    def __init__(self, spec: ARSpec) -> None:
        super().__init__()
        self.spec = spec
        self.x_emb = nn.Embedding(spec.bins, spec.width)
        nn.init.normal_(self.x_emb.weight, std=0.02 * spec.init_scale)
        if spec.has_start_token:
            self.start_token = nn.Parameter(torch.empty(1, spec.width).normal_(std=0.01 * spec.init_scale))
        self.pos_emb = PositionEmbedding(spec.geo.seq_len, spec.width, spec.init_scale)
        self.transformer = Transformer(
            spec.width,
            spec.depth,
            spec.heads,
            spec.attn_order,
            spec.geo,
            spec.m_attn,
            spec.m_mlp,
            spec.zero_out,
            spec.init_scale,
            spec.res_scale,
        )
        # The unmerged decoder ties the output head to the input embedding and adds the
        # conditioning again after the transformer.
        self.add_cond_after = not spec.merged_decoder
        if not spec.only_encode:
            self.x_out = nn.Linear(spec.width, spec.bins, bias=False)
            self.tie_weights()

    def tie_weights(self) -> None:
        if not self.spec.only_encode and not self.spec.merged_decoder:
            self.x_out.weight = self.x_emb.weight

    def _start(self, start: Tensor | None, batch: int) -> Tensor:
        if start is None:
            return self.start_token.float().expand(batch, -1)
        return start.float()

    def embed(self, tokens: Tensor, start: Tensor | None, x_cond: Tensor | None) -> Tensor:
        """tokens [B, S-1] are the inputs of positions 1..S-1; returns float32 [B, S, width]."""
        b, s = tokens.shape[0], tokens.shape[1] + 1
        x = torch.cat([self._start(start, b)[:, None], self.x_emb(tokens).float()], dim=1)
        x = x + self.pos_emb.pos_emb[:s].float()
        if x_cond is not None:
            x = x + x_cond[:, :s].float()
        return x

    def forward(
        self,
        tokens: Tensor,
        start: Tensor | None,
        x_cond: Tensor | None,
        enc: Tensor | None = None,
        cache: list[LayerCache] | None = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """Hidden states [B, S, width] (float32) for S = tokens.shape[1] + 1 positions."""
        h = self.transformer(self.embed(tokens, start, x_cond), enc, cache, rows)
        if self.add_cond_after and x_cond is not None:
            h = h + x_cond[:, : h.shape[1]].float()
        return h

    def step(
        self,
        token: Tensor,
        s: Tensor,
        x_cond: Tensor | None,
        cache: list[LayerCache],
        block_step: BlockStep | None = None,
    ) -> Tensor:
        """One position per row: token [B] is the input at sequence position s [B] (s >= 1).
        Returns hidden [B, 1, width] float32."""
        rows = torch.arange(token.shape[0], device=token.device)
        x = self.x_emb(token).float() + self.pos_emb.pos_emb[s].float()
        cond = x_cond[rows, s].float() if x_cond is not None else None
        if cond is not None:
            x = x + cond
        h = self.transformer.step(x[:, None], s, cache, block_step)
        if self.add_cond_after and cond is not None:
            h = h + cond[:, None]
        return h

    def head(self, h: Tensor) -> Tensor:
        return self.x_out(h.to(self.x_out.weight.dtype)).float()
