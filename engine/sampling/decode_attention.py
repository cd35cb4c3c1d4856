"""The attention kernel of the fused decode step (engine.sampling.decode_kernels, launch 2): the one
query of each row and head over this layer's KV cache, split over key chunks (flash-decoding). Each
chunk leaves partial softmax results (unnormalized output, max, sum); the output projection's GEMV
combines them in its prologue."""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from engine.model.attention import BLOCK, CROSS, DENSE, PREV, PRIME, TRANSPOSE, LayerCache
from engine.sampling.decode_launch import pow2, use_pdl

MAX_SUB = 64  # keys per attention iteration at most (tests lower it to split tiny caches)

SUPPORTED_KINDS = frozenset({DENSE, BLOCK, TRANSPOSE, PREV, PRIME, CROSS})


@triton.jit
def _attn_kernel(
    qkv_ptr,
    stride_qb,
    k_ptr,
    v_ptr,
    stride_cb,
    stride_ch,
    stride_col,
    stride_key,
    s_ptr,
    part_o_ptr,
    part_m_ptr,
    part_l_ptr,
    scale,
    H: tl.constexpr,
    D: tl.constexpr,
    N_STATE: tl.constexpr,
    KIND: tl.constexpr,
    BC: tl.constexpr,
    NKEYS: tl.constexpr,
    CHUNK: tl.constexpr,
    NCHUNK: tl.constexpr,
    SUB: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PDL: tl.constexpr,
):
    """One query per (row, head) over one chunk of this layer's keys; partial softmax results
    (unnormalized output, max, sum) go to part_*. Chunk 0 writes the new key/value into the
    cache; a chunk that reads that slot uses the new values directly (no race with the write).
    With PDL the cached keys and values (written by earlier steps) are read while the previous
    kernel still computes this step's query."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    b = tl.program_id(0)
    h = tl.program_id(1)
    c = tl.program_id(2)
    s = tl.load(s_ptr + b)
    rd = tl.arange(0, BLOCK_D)
    d_mask = rd < D
    base = b * stride_cb + h * stride_ch
    lo = s * 0
    if KIND == 0:  # DENSE
        nv = s + 1
        slot = s
    elif KIND == 1:  # BLOCK
        nv = s % BC + 1
        slot = s % BC
    elif KIND == 2:  # TRANSPOSE: the keys of this column, one per row of blocks
        base += (s % BC) * stride_col
        nv = s // BC + 1
        slot = s // BC
    elif KIND == 3:  # PREVIOUS: all of the previous row, a ring of two rows
        lo = ((s // BC + 1) % 2) * BC
        nv = tl.where(s >= BC, BC, 0)
        slot = s % (2 * BC)
    elif KIND == 7:  # PRIME: the lyric prefix's keys; later positions write nothing
        nv = tl.minimum(s + 1, NKEYS)
        slot = tl.where(s < NKEYS, s, -1)
    else:  # CROSS: the lyric encoder's keys, all seen, none written
        nv = s * 0 + NKEYS
        slot = s * 0 - 1
    if PDL:
        tl.extra.cuda.gdc_wait()
    cdt = qkv_ptr.dtype.element_ty  # the reference attends in the weights' dtype
    q = tl.load(qkv_ptr + b * stride_qb + h * D + rd, mask=d_mask, other=0.0).to(tl.float32)
    knew = tl.zeros([BLOCK_D], tl.float32)
    vnew = tl.zeros([BLOCK_D], tl.float32)
    if KIND != 6:
        kn = tl.load(qkv_ptr + b * stride_qb + N_STATE + h * D + rd, mask=d_mask, other=0.0)
        vn = tl.load(qkv_ptr + b * stride_qb + 2 * N_STATE + h * D + rd, mask=d_mask, other=0.0)
        knew = kn.to(k_ptr.dtype.element_ty).to(cdt).to(tl.float32)
        vnew = vn.to(v_ptr.dtype.element_ty).to(cdt).to(tl.float32)
        if c == 0:
            wm = d_mask & ((rd * 0 + slot) >= 0)
            tl.store(k_ptr + base + slot * stride_key + rd, kn.to(k_ptr.dtype.element_ty), mask=wm)
            tl.store(v_ptr + base + slot * stride_key + rd, vn.to(v_ptr.dtype.element_ty), mask=wm)
    start = (c * CHUNK + s * 0).to(tl.int32)
    stop = tl.minimum(start + CHUNK, nv).to(tl.int32)
    m_i = tl.max(tl.full([SUB], -1.0e30, tl.float32), 0)
    l_i = tl.sum(tl.zeros([SUB], tl.float32), 0)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for j0 in range(start, stop, SUB):  # online softmax over this chunk's valid keys
        rj = j0 + tl.arange(0, SUB)
        j_mask = rj < stop
        key = lo + rj
        m2 = j_mask[:, None] & d_mask[None, :]
        offs = base + key[:, None] * stride_key + rd[None, :]
        kt = tl.load(k_ptr + offs, mask=m2, other=0.0).to(cdt).to(tl.float32)
        vt = tl.load(v_ptr + offs, mask=m2, other=0.0).to(cdt).to(tl.float32)
        if KIND != 6:  # the slot being written this step: its new key/value
            is_new = (key == slot)[:, None]
            kt = tl.where(is_new, knew[None, :], kt)
            vt = tl.where(is_new, vnew[None, :], vt)
        sc = tl.sum(kt * q[None, :], 1) * scale
        sc = tl.where(j_mask, sc, -1.0e30)
        m_new = tl.maximum(m_i, tl.max(sc, 0))
        alpha = tl.exp(m_i - m_new)
        p = tl.where(j_mask, tl.exp(sc - m_new), 0.0)
        l_i = l_i * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * vt, 0)
        m_i = m_new
    pidx = (b * H + h) * NCHUNK + c
    tl.store(part_o_ptr + pidx * D + rd, acc, mask=d_mask)
    tl.store(part_m_ptr + pidx, m_i)
    tl.store(part_l_ptr + pidx, l_i)


def _key_layout(kind: int, cache: LayerCache) -> tuple[int, int, int]:
    """(stride_col, stride_key, keys) of a cache [B, H, ..., D]."""
    t = cache.k
    if kind == TRANSPOSE:
        return t.stride(2), t.stride(3), t.shape[3]
    return 0, t.stride(2), t.shape[2]


def attention(qkv: Tensor, s: Tensor, cache: LayerCache, att: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Partial softmax results [B, H, C, D] / [B, H, C] of the one-query attention of `att` (a
    FactoredAttention) for positions s [B]; writes this position's key and value."""
    kind = att.kind
    rows, heads, d = qkv.shape[0], att.heads, att.head_dim
    col_stride, key_stride, keys = _key_layout(kind, cache)
    block_d = pow2(d)
    # `sub` keys a program reads per iteration. The keys of a (row, head) are split over up to
    # 16 programs, as many as it takes to give the GPU ~160 programs (one row, one head of an
    # upsampler: 8; 3 rows x 8 heads of the top prior: 1-7): each loops over its share of the
    # keys that are valid at this position, and fewer shares keep the combine cheap.
    span = keys // 2 if kind == PREV else keys
    sub = min(max(16, min(64, 8192 // block_d)), MAX_SUB, pow2(span))
    n_sub = triton.cdiv(span, sub)
    nchunk = max(1, min(16, n_sub, triton.cdiv(160, rows * heads)))
    chunk = triton.cdiv(n_sub, nchunk) * sub
    dev = qkv.device
    po = torch.empty(rows, heads, nchunk, d, device=dev, dtype=torch.float32)
    pm = torch.empty(rows, heads, nchunk, device=dev, dtype=torch.float32)
    pl = torch.empty(rows, heads, nchunk, device=dev, dtype=torch.float32)
    bc = att.geo.block_ctx if kind in (BLOCK, TRANSPOSE, PREV) else 1
    pdl = dev.type == "cuda" and use_pdl()
    _attn_kernel[(rows, heads, nchunk)](
        qkv,
        qkv.stride(0),
        cache.k,
        cache.v,
        cache.k.stride(0),
        cache.k.stride(1),
        col_stride,
        key_stride,
        s,
        po,
        pm,
        pl,
        float(att.scale),
        H=heads,
        D=d,
        N_STATE=att.n_state,
        KIND=kind,
        BC=bc,
        NKEYS=keys,
        CHUNK=chunk,
        NCHUNK=nchunk,
        SUB=sub,
        BLOCK_D=block_d,
        PDL=pdl,
        num_warps=4,
        **({"launch_pdl": True} if pdl else {}),
    )
    return po, pm, pl
