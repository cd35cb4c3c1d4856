"""Triton kernels for the one-token decode step: one transformer block in five launches.

A decode step multiplies 1-8 rows by every weight of the model: it is bound by reading the
weights (about 25 MB a block at 1b_lyrics sizes) and by the number of launches. cuBLAS tiles a
3-row product 64 output columns wide, which keeps 24-32 of an H100's 132 multiprocessors busy,
and the compiled step still launches ~11 kernels a block (docs/BENCHMARKS.md, "Step tuning").
Here each weight product is a GEMV over the weight stored [n_out, n_in] (inputs contiguous, the
classic GEMV layout), 8 output columns per program, so every multiprocessor reads; the
LayerNorm before a product and the bias, GELU or residual add after it run inside the same
kernel; and the attention of the one query is split over key chunks (flash-decoding, in
`decode_attention.py`), its partial results combined in the prologue of the output projection. A product wider than
MAX_K inputs (5b's 4800) loops over tiles of its inputs (the next tile's weights loaded while
this one is multiplied; LayerNorm statistics from a first pass over the rows): only with
JUKEBOT_FUSED_WIDE=1, since the compiled step is faster there on an H100 (see FUSED_WIDE):

    1. LayerNorm_0 + c_attn                         -> q, k, v (the weights' dtype)
    2. attention over this layer's KV cache         -> per-chunk partials; writes k, v to the cache
    3. combine partials + c_proj + bias, x1 = x + a  (float32 residual)
    4. LayerNorm_1 + c_fc + bias + quick GELU
    5. c_proj + bias, h = x1 + m

Numerics follow the reference step (engine.model.transformer.ResAttnBlock.step): LayerNorm in float32,
each product's input and output rounded to the weights' dtype, accumulation in float32, the
residual stream in float32. On a machine without a GPU the kernels run in Triton's interpreter
(`TRITON_INTERPRET=1`), which is how the tests check them against the reference on the CPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from engine.model.attention import LayerCache
from engine.sampling.decode_attention import SUPPORTED_KINDS, attention
from engine.sampling.decode_launch import interpreted, pow2, use_pdl

MAX_ROWS = 8  # beyond this the tensor cores of a GEMM pay off: the compiled step is used
MAX_K = 2048  # inputs per product held in registers at once (1b_lyrics and the upsamplers: all)
# Wider products (5b's 4800) loop over tiles of this many inputs (JUKEBOT_GEMV_KTILE tunes it;
# tests lower MAX_K to make tiny widths loop)
K_TILE = int(os.environ.get("JUKEBOT_GEMV_KTILE", "1024"))
# Measured on an H100 (docs/BENCHMARKS.md, 2026-12-07): that loop gives 12.6 ms a step for the
# 5b_lyrics top prior (3 rows), the compiled step 7.9 ms. So wide priors keep the compiled step
# unless JUKEBOT_FUSED_WIDE=1 (benchmarks and tuning of the loop); exact either way.
FUSED_WIDE = os.environ.get("JUKEBOT_FUSED_WIDE") == "1"


@triton.jit
def _raw_input(
    x_ptr,
    stride_xb,
    b,
    rk,
    k_mask,
    part_o_ptr,
    part_m_ptr,
    part_l_ptr,
    H: tl.constexpr,
    D: tl.constexpr,
    NCHUNK: tl.constexpr,
    COMBINE: tl.constexpr,
):
    """Row b of the product's input at the inputs rk, float32, before any LayerNorm: the row of
    x, or (COMBINE) the attention output combined from its partial softmax results."""
    if COMBINE:
        # a[b, k] for k = head * D + d, from NCHUNK partial softmax results per (row, head)
        ph = b * H + rk // D
        dk = rk % D
        big = tl.full(rk.shape, -1.0e30, tl.float32)
        for c in range(NCHUNK):
            big = tl.maximum(big, tl.load(part_m_ptr + ph * NCHUNK + c, mask=k_mask, other=-1.0e30))
        num = tl.zeros(rk.shape, tl.float32)
        den = tl.zeros(rk.shape, tl.float32)
        for c in range(NCHUNK):
            mc = tl.load(part_m_ptr + ph * NCHUNK + c, mask=k_mask, other=-1.0e30)
            lc = tl.load(part_l_ptr + ph * NCHUNK + c, mask=k_mask, other=0.0)
            oc = tl.load(part_o_ptr + (ph * NCHUNK + c) * D + dk, mask=k_mask, other=0.0)
            wc = tl.exp(mc - big)
            num += wc * oc
            den += wc * lc
        xv = tl.where(den > 0.0, num / tl.where(den > 0.0, den, 1.0), 0.0)
    else:
        xv = tl.load(x_ptr + b * stride_xb + rk, mask=k_mask, other=0.0).to(tl.float32)
    return xv


@triton.jit
def _ln_apply(dv, rstd, rk, k_mask, ln_w_ptr, ln_b_ptr):
    """LayerNorm's output at the inputs rk from the centred row dv (0 where masked)."""
    g = tl.load(ln_w_ptr + rk, mask=k_mask, other=0.0).to(tl.float32)
    be = tl.load(ln_b_ptr + rk, mask=k_mask, other=0.0).to(tl.float32)
    return dv * rstd * g + be


@triton.jit
def _row_input(
    x_ptr,
    stride_xb,
    b,
    rk,
    k_mask,
    ln_w_ptr,
    ln_b_ptr,
    eps,
    part_o_ptr,
    part_m_ptr,
    part_l_ptr,
    cdt: tl.constexpr,
    K: tl.constexpr,
    H: tl.constexpr,
    D: tl.constexpr,
    NCHUNK: tl.constexpr,
    LN: tl.constexpr,
    COMBINE: tl.constexpr,
):
    """Row b of the product's input (all K of it), after the prologue, rounded to the weights'
    dtype. The row is read once; LayerNorm statistics come from the registers."""
    xv = _raw_input(
        x_ptr, stride_xb, b, rk, k_mask, part_o_ptr, part_m_ptr, part_l_ptr, H, D, NCHUNK, COMBINE
    )  # fmt: skip
    if LN:
        mean = tl.sum(xv, 0) / K
        dv = tl.where(k_mask, xv - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(dv * dv, 0) / K + eps)
        xv = _ln_apply(dv, rstd, rk, k_mask, ln_w_ptr, ln_b_ptr)
    return xv.to(cdt).to(tl.float32)  # the product's input in the weights' dtype, as the reference


@triton.jit
def _ln_stats(x_ptr, stride_xb, B, eps, K: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    """(mean, 1 / std) of every row of x [B, K], K wider than one tile: per tile of BLOCK_K
    inputs its mean and squared deviations (two-pass, from the registers), merged tile by tile
    (Chan et al.'s pairwise update), so no cancellation whatever the rows' mean. Unrolled: the
    loads of every tile are issued at once (one trip to L2, not one per tile)."""
    rb = tl.arange(0, BLOCK_B)
    b_mask = rb < B
    mean = tl.zeros([BLOCK_B], tl.float32)
    m2 = tl.zeros([BLOCK_B], tl.float32)
    n = tl.sum(tl.zeros([BLOCK_K], tl.float32), 0)
    for t in tl.static_range((K + BLOCK_K - 1) // BLOCK_K):
        rk = t * BLOCK_K + tl.arange(0, BLOCK_K)
        k_mask = rk < K
        xs = tl.load(
            x_ptr + rb[:, None] * stride_xb + rk[None, :], mask=b_mask[:, None] & k_mask[None, :], other=0.0
        ).to(tl.float32)
        cnt = tl.sum(k_mask.to(tl.float32), 0)
        mean_t = tl.sum(xs, 1) / cnt
        d = tl.where(k_mask[None, :], xs - mean_t[:, None], 0.0)
        m2_t = tl.sum(d * d, 1)
        tot = n + cnt
        delta = mean_t - mean
        mean = mean + delta * (cnt / tot)
        m2 = m2 + m2_t + delta * delta * (n * cnt / tot)
        n = tot
    return mean, 1.0 / tl.sqrt(m2 / K + eps)


@triton.jit
def _load_w_tile(w_ptr, stride_wn, rn, n_mask, t, K: tl.constexpr, BLOCK_K: tl.constexpr):
    """Tile t of the program's weight rows (all masked past K: no memory read)."""
    rk = t * BLOCK_K + tl.arange(0, BLOCK_K)
    return tl.load(
        w_ptr + rn[:, None] * stride_wn + rk[None, :], mask=n_mask[:, None] & (rk < K)[None, :], other=0.0
    )


@triton.jit
def _gemv_kernel(
    x_ptr,
    stride_xb,
    ln_w_ptr,
    ln_b_ptr,
    eps,
    part_o_ptr,
    part_m_ptr,
    part_l_ptr,
    w_ptr,
    stride_wn,
    bias_ptr,
    res_ptr,
    stride_rb,
    out_ptr,
    stride_ob,
    B,
    N,
    K: tl.constexpr,
    H: tl.constexpr,
    D: tl.constexpr,
    NCHUNK: tl.constexpr,
    LN: tl.constexpr,
    COMBINE: tl.constexpr,
    EPI: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PDL: tl.constexpr,
):
    """out[b, n] = epilogue(sum_k prologue(x)[b, k] * w[n, k] + bias[n]).

    prologue: LN (LayerNorm of the float32 row) or COMBINE (attention partials -> output);
    epilogue: EPI 0 plain, 1 quick GELU, 2 residual (out = res + y, float32). A program's
    weights (BLOCK_N whole rows of w) are read once, used for every row of x. K <= BLOCK_K: one
    load of the whole tile; wider (5b's 4800): tiles of BLOCK_K inputs in turn, the next tile's
    load issued before this one's products, the LayerNorm statistics from a first pass over x.
    With PDL (programmatic dependent launch) the kernel starts while the previous one finishes
    and streams its (first) weight tile in meanwhile: weights do not depend on the previous
    kernel, the rows of x do (read after `gdc_wait`)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    pid = tl.program_id(0)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rb = tl.arange(0, BLOCK_B)
    n_mask = rn < N
    cdt = w_ptr.dtype.element_ty
    wv = _load_w_tile(w_ptr, stride_wn, rn, n_mask, 0, K, BLOCK_K)
    if PDL:
        tl.extra.cuda.gdc_wait()
    acc = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
    if K <= BLOCK_K:
        rk = tl.arange(0, BLOCK_K)
        k_mask = rk < K
        for b in tl.static_range(BLOCK_B):
            if b < B:
                xv = _row_input(
                    x_ptr, stride_xb, b, rk, k_mask, ln_w_ptr, ln_b_ptr, eps,
                    part_o_ptr, part_m_ptr, part_l_ptr, cdt, K, H, D, NCHUNK, LN, COMBINE,
                )  # fmt: skip
                part = tl.sum(wv.to(tl.float32) * xv[None, :], 1)
                acc = tl.where((rb == b)[:, None], acc + part[None, :], acc)
    else:
        mean = tl.zeros([BLOCK_B], tl.float32)
        rstd = tl.zeros([BLOCK_B], tl.float32)
        if LN:
            mean, rstd = _ln_stats(x_ptr, stride_xb, B, eps, K, BLOCK_B, BLOCK_K)
        for t in range((K + BLOCK_K - 1) // BLOCK_K):
            # the next tile's load is in flight while this one is multiplied (past the last
            # tile it is all masked: nothing read)
            w_next = _load_w_tile(w_ptr, stride_wn, rn, n_mask, t + 1, K, BLOCK_K)
            rk = t * BLOCK_K + tl.arange(0, BLOCK_K)
            k_mask = rk < K
            wf = wv.to(tl.float32)
            for b in tl.static_range(BLOCK_B):
                if b < B:
                    xv = _raw_input(
                        x_ptr, stride_xb, b, rk, k_mask, part_o_ptr, part_m_ptr, part_l_ptr, H, D, NCHUNK, COMBINE
                    )  # fmt: skip
                    if LN:
                        mean_b = tl.sum(tl.where(rb == b, mean, 0.0), 0)
                        rstd_b = tl.sum(tl.where(rb == b, rstd, 0.0), 0)
                        dv = tl.where(k_mask, xv - mean_b, 0.0)
                        xv = _ln_apply(dv, rstd_b, rk, k_mask, ln_w_ptr, ln_b_ptr)
                    xv = xv.to(cdt).to(tl.float32)
                    part = tl.sum(wf * xv[None, :], 1)
                    acc = tl.where((rb == b)[:, None], acc + part[None, :], acc)
            wv = w_next
    bias = tl.load(bias_ptr + rn, mask=n_mask, other=0.0).to(tl.float32)
    y = (acc + bias[None, :]).to(cdt).to(tl.float32)
    om = (rb < B)[:, None] & n_mask[None, :]
    optrs = out_ptr + rb[:, None] * stride_ob + rn[None, :]
    if EPI == 1:
        y = y * tl.sigmoid(1.702 * y)
        tl.store(optrs, y.to(out_ptr.dtype.element_ty), mask=om)
    elif EPI == 2:
        r = tl.load(res_ptr + rb[:, None] * stride_rb + rn[None, :], mask=om, other=0.0)
        tl.store(optrs, r + y, mask=om)
    else:
        tl.store(optrs, y.to(out_ptr.dtype.element_ty), mask=om)


def gemv_tiles(rows: int, n: int, k: int) -> tuple[int, int, int, int]:
    """(BLOCK_B, BLOCK_N, BLOCK_K, num_warps): the whole input row in one tile where it fits
    MAX_K (every program reads all of x, so fewer programs read less of it: 8 output columns a
    program, 256 for a 2048-wide layer, enough to keep every multiprocessor reading weights),
    else tiles of K_TILE inputs that the kernel loops over."""
    bk = pow2(k)
    if bk > MAX_K:
        bk = pow2(min(K_TILE, MAX_K))
    bn = 8 if n >= 1024 else 4
    if os.environ.get("JUKEBOT_GEMV_COLS"):  # tuning knobs for bench/step_speed.py
        bn = int(os.environ["JUKEBOT_GEMV_COLS"])
    warps = 8 if bn * bk >= 8192 else 4
    if os.environ.get("JUKEBOT_GEMV_WARPS"):
        warps = int(os.environ["JUKEBOT_GEMV_WARPS"])
    return pow2(rows), bn, bk, warps


def weight_nk(w: Tensor) -> Tensor:
    """The Conv1D weight [n_in, n_out] seen as [n_out, n_in] with inputs contiguous."""
    wt = w.t()
    if wt.stride(1) != 1:
        raise ValueError("decode kernels need the weight laid out [n_out, n_in]: call relayout() first")
    return wt


def relayout(module: torch.nn.Module) -> None:
    """Store every Conv1D weight of `module` transposed in memory (same shape [n_in, n_out], same
    values; strides (1, n_in)). The GEMV reads whole input rows; cuBLAS reads either layout at
    the same speed, so the prefill is unaffected."""
    from engine.model.attention import Conv1D

    with torch.no_grad():
        for mod in module.modules():
            if isinstance(mod, Conv1D) and mod.w.stride() != (1, mod.w.shape[0]):
                mod.w.data = mod.w.data.t().contiguous().t()


def gemv(
    x: Tensor,
    w: Tensor,
    bias: Tensor,
    *,
    ln: Any = None,
    partials: tuple[Tensor, Tensor, Tensor] | None = None,
    heads: int = 1,
    head_dim: int = 1,
    gelu: bool = False,
    residual: Tensor | None = None,
    tiles: tuple[int, int, int, int] | None = None,
) -> Tensor:
    """y = x' @ w + bias with the prologue/epilogue asked for (see `_gemv_kernel`).
    x: [B, K] (float32 residual rows for `ln`; ignored for `partials`); w: Conv1D weight;
    `tiles` overrides `gemv_tiles` (bench/gemv_tiles.py compares them)."""
    wt = weight_nk(w)
    n, k = wt.shape
    rows = x.shape[0]
    if residual is not None:
        out = torch.empty(rows, n, device=x.device, dtype=torch.float32)
    else:
        out = torch.empty(rows, n, device=x.device, dtype=w.dtype)
    bb, bn, bk, warps = tiles or gemv_tiles(rows, n, k)
    if bb < rows:
        raise ValueError(f"tiles {(bb, bn, bk)} do not cover {rows} rows")
    pdl = x.device.type == "cuda" and use_pdl()
    po, pm, pl = partials if partials is not None else (x, x, x)
    nchunk = pm.shape[-1] if partials is not None else 1
    _gemv_kernel[(triton.cdiv(n, bn),)](
        x,
        x.stride(0),
        ln.weight if ln is not None else bias,
        ln.bias if ln is not None else bias,
        float(ln.eps) if ln is not None else 0.0,
        po,
        pm,
        pl,
        wt,
        wt.stride(0),
        bias,
        residual if residual is not None else out,
        residual.stride(0) if residual is not None else 0,
        out,
        out.stride(0),
        rows,
        n,
        k,
        H=heads,
        D=head_dim,
        NCHUNK=nchunk,
        LN=ln is not None,
        COMBINE=partials is not None,
        EPI=2 if residual is not None else (1 if gelu else 0),
        BLOCK_B=bb,
        BLOCK_N=bn,
        BLOCK_K=bk,
        PDL=pdl,
        num_warps=warps,
        **({"launch_pdl": True} if pdl else {}),
    )
    return out


def supports(layer: Any, rows: int) -> bool:
    att = layer.attn
    widths = (att.c_attn.n_in, att.c_proj.n_in, layer.mlp.c_fc.n_in, layer.mlp.c_proj.n_in)
    return (
        rows <= MAX_ROWS
        and (FUSED_WIDE or max(widths) <= MAX_K)
        and att.kind in SUPPORTED_KINDS
        and layer.res_scale == 1.0
        and att.c_attn.w.dtype == att.c_proj.w.dtype
    )


def fused_block_step(layer: Any, x: Tensor, s: Tensor, cache: LayerCache, masks: dict[int, Tensor]) -> Tensor:
    """`ResAttnBlock.step` in five kernels (same arguments and result: x [B, 1, W] float32)."""
    rows, width = x.shape[0], x.shape[-1]
    if not supports(layer, rows):
        return layer.step(x, s, cache, masks)  # type: ignore[no-any-return]
    att, mlp = layer.attn, layer.mlp
    x2 = x.reshape(rows, width)
    if x2.dtype != torch.float32 or x2.stride(1) != 1:
        x2 = x2.float().contiguous()
    s = s.contiguous()
    qkv = gemv(x2, att.c_attn.w, att.c_attn.b, ln=layer.ln_0)
    partials = attention(qkv, s, cache, att)
    x1 = gemv(
        x2, att.c_proj.w, att.c_proj.b, partials=partials, heads=att.heads, head_dim=att.head_dim, residual=x2
    )
    hid = gemv(x1, mlp.c_fc.w, mlp.c_fc.b, ln=layer.ln_1, gelu=True)
    out = gemv(hid, mlp.c_proj.w, mlp.c_proj.b, residual=x1)
    return out.view(rows, 1, width)


__all__ = [
    "MAX_ROWS",
    "SUPPORTED_KINDS",
    "attention",
    "fused_block_step",
    "gemv",
    "interpreted",
    "relayout",
    "supports",
    "use_pdl",
]
