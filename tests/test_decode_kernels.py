"""engine.sampling.decode_kernels: the Triton decode step of one block against the reference step.

On this machine (no GPU) the kernels run in Triton's interpreter, which executes the same kernel
code with NumPy: indexing, masks, the chunked softmax and the cache writes are checked here; the
GPU benchmark (bench/step_speed.py --modes fused) checks speed and the compiled kernels' logits.
Every attention kind of the released models, 1 and 3 rows, float32 and bfloat16 weights, random
positions (block starts, the first row, past the lyric prefix) and random cache contents.
"""

from __future__ import annotations

import os
import platform

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: kernels on the CPU

import pytest
import torch

from engine.model.attention import (
    BLOCK,
    CROSS,
    DENSE,
    PREV,
    PRIME,
    TRANSPOSE,
    Geometry,
    LayerCache,
    cache_shape,
    step_masks,
)
from engine.model.transformer import ResAttnBlock

if platform.machine() != "x86_64":  # the test extra installs Triton on x86-64 only
    pytest.skip("Triton's wheels are x86-64 only", allow_module_level=True)

import engine.sampling.decode_kernels as dk  # a missing Triton fails here, loudly
from engine.sampling import decode_attention

GEO = Geometry(seq_len=64, blocks=4, prime_len=10, encoder_len=12)  # block_ctx 16, 4 rows of blocks


def _block(kind: int, width: int, heads: int, dtype: torch.dtype, seed: int) -> ResAttnBlock:
    torch.manual_seed(seed)
    blk = ResAttnBlock(
        width, heads, kind, GEO, m_attn=0.5, m_mlp=2.0, zero_out=False, init_scale=4.0, res_scale=1.0
    )
    with torch.no_grad():
        for p in blk.parameters():  # LayerNorm gains and all biases away from 1 and 0
            if p.dim() == 1:
                p.normal_(0.5, 0.3)
    return blk.to(dtype)


def _cache(blk: ResAttnBlock, rows: int, dtype: torch.dtype) -> LayerCache:
    att = blk.attn
    shape = cache_shape(att.kind, GEO, rows, att.heads, att.head_dim)
    return LayerCache(torch.randn(shape).to(dtype), torch.randn(shape).to(dtype))


POSITIONS = {1: [0], 3: [0, 17, 63]}


@pytest.mark.parametrize("kind", [DENSE, BLOCK, TRANSPOSE, PREV, PRIME, CROSS])
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize(("dtype", "max_sub"), [(torch.float32, 64), (torch.float32, 2), (torch.bfloat16, 4)])
def test_fused_block_step_matches_reference(
    kind: int, rows: int, dtype: torch.dtype, max_sub: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_sub 64: each (row, head) in one program; 2 and 4: the keys split over many programs,
    each looping over several sub-chunks (the new key's slot lands in any of them), combined
    in the output projection."""
    monkeypatch.setattr(decode_attention, "MAX_SUB", max_sub)
    width, heads = 32, 2
    blk = _block(kind, width, heads, dtype, seed=kind * 10 + rows)
    dk.relayout(blk)
    gen = torch.Generator().manual_seed(rows + kind)
    for trial in range(3):
        if trial == 0:
            s = torch.tensor(POSITIONS[rows])
        else:  # random positions; PRIME also past its keys, PREV in row 0 (no keys: output 0)
            s = torch.randint(0, GEO.seq_len, (rows,), generator=gen)
        x = torch.randn(rows, 1, width, generator=gen) * 3.0
        ref_cache = _cache(blk, rows, dtype)
        fused_cache = LayerCache(ref_cache.k.clone(), ref_cache.v.clone())
        masks = step_masks({kind}, s, GEO, dtype=dtype)
        with torch.no_grad():
            want = blk.step(x, s, ref_cache, masks)
            got = dk.fused_block_step(blk, x, s, fused_cache, masks)
        assert got.shape == want.shape and got.dtype == torch.float32
        scale = want.abs().max().item()
        tol = 2e-5 if dtype == torch.float32 else 2e-2
        err = (got - want).abs().max().item()
        assert err <= tol * scale, f"kind {kind} rows {rows} s {s.tolist()}: max err {err} (scale {scale})"
        # the new key and value went to the same cache slot as the reference's (or nowhere):
        # equal up to the rounding of the product, every other slot untouched
        for got_c, want_c in ((fused_cache.k, ref_cache.k), (fused_cache.v, ref_cache.v)):
            diff = (got_c.float() - want_c.float()).abs()
            assert diff.max().item() <= (1e-5 if dtype == torch.float32 else 2e-2) * want_c.abs().max().item()
            assert (diff > 0).sum().item() <= rows * heads * blk.attn.head_dim


def test_gemv_prologues_and_epilogues() -> None:
    """LayerNorm in, GELU out; residual out with float32 rows; 5 rows; an odd width (masks)."""
    torch.manual_seed(0)
    rows, k, n = 5, 48, 40
    w = torch.randn(k, n)
    w.data = w.data.t().contiguous().t()
    b = torch.randn(n)
    ln = torch.nn.LayerNorm(k)
    with torch.no_grad():
        ln.weight.normal_(1.0, 0.2)
        ln.bias.normal_(0.0, 0.2)
    x = torch.randn(rows, k) * 2 + 1
    got = dk.gemv(x, w, b, ln=ln, gelu=True)
    y = ln(x) @ w + b
    want = y * torch.sigmoid(1.702 * y)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    res = torch.randn(rows, n)
    got2 = dk.gemv(x, w, b, residual=res)
    torch.testing.assert_close(got2, res + x @ w + b, rtol=1e-5, atol=1e-5)


def test_relayout_keeps_values_and_rejects_plain_layout() -> None:
    blk = _block(BLOCK, 32, 2, torch.float32, seed=1)
    before = {k: v.clone() for k, v in blk.state_dict().items()}
    with pytest.raises(ValueError, match="relayout"):
        dk.weight_nk(blk.attn.c_attn.w)
    dk.relayout(blk)
    for key, value in blk.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert blk.attn.c_attn.w.stride() == (1, blk.attn.c_attn.w.shape[0])
    dk.weight_nk(blk.attn.c_attn.w)


@pytest.mark.parametrize("level", [2, 0])
def test_fused_decoder_samples_the_eager_tokens(level: int) -> None:
    """A whole RowDecoder in `fused` mode (every block through the kernels, on a tiny model of the
    demo's lyric-prefix kind with its timing/upper-level conditioning): the same tokens as the
    eager decoder and logits equal up to float32 rounding, 3 rows at their own positions."""
    from engine.sampling.batching import DecodeLoop
    from engine.sampling.decoders import RowDecoder
    from engine.sampling.noise import NoiseKey
    from engine.sampling.window_task import WindowTask
    from tests.pipeline_fixtures import TinyLabels, tiny_model_config, tiny_plan, tiny_priors

    cpu = torch.device("cpu")
    config = tiny_model_config()
    prior = tiny_priors(config, seed=5)[level]
    plan, sample_length = tiny_plan(config, 0.2, 3, seed=1)
    w = plan.windows(level)[0]
    lab = TinyLabels(config, sample_length, 3)
    g = torch.Generator().manual_seed(level)
    upper = (
        None if prior.is_top else torch.randint(0, prior.config.l_bins, (3, prior.n_ctx // 2), generator=g)
    )
    ctx = torch.randint(0, prior.config.l_bins, (3, 9), generator=g)
    out = {}
    with torch.inference_mode():
        for mode in ("eager", "fused"):
            dec = RowDecoder(prior, 3, cpu, torch.float32, mode=mode)  # type: ignore[arg-type]
            assert dec.mode == mode
            t = WindowTask(
                cond=prior.get_cond(lab(level, w), upper),
                context=ctx,
                n_new=12,
                row_bin=NoiseKey(2).row_bin_hash(level, range(3), prior.n_bins, cpu),
                abs_start=w.start,
                temperature=1.0,
            )
            loop = DecodeLoop()
            loop.submit(dec, t)
            out[mode] = (loop.run_until_done(t), dec.state.logits.clone())
    assert torch.equal(out["eager"][0], out["fused"][0])
    torch.testing.assert_close(out["eager"][1], out["fused"][1], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Products wider than one register tile (5b's 4800): the kernel loops over tiles of inputs.
# The tile is a parameter (MAX_K), lowered here so that tiny widths loop: width 96 in tiles of
# 32 is 3 tiles (c_attn, c_fc), the attention output 48 is 32 + 16 (the combine prologue across
# a tile edge and a head edge: head_dim 24), the MLP's hidden 192 is 6 tiles.


@pytest.mark.parametrize("k", [96, 80])
def test_gemv_loops_over_input_tiles(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """LayerNorm (statistics over every tile, rows with a large mean), GELU, residual; 5 rows;
    80 inputs: the last tile half masked."""
    monkeypatch.setattr(dk, "MAX_K", 32)
    torch.manual_seed(k)
    rows, n = 5, 40
    assert dk.gemv_tiles(rows, n, k)[2] == 32  # the tiled path, not one tile
    w = torch.randn(k, n)
    w.data = w.data.t().contiguous().t()
    b = torch.randn(n)
    ln = torch.nn.LayerNorm(k)
    with torch.no_grad():
        ln.weight.normal_(1.0, 0.2)
        ln.bias.normal_(0.0, 0.2)
    x = torch.randn(rows, k) * 2 + torch.tensor([0.0, 1.0, 100.0, -30.0, 5.0])[:, None]
    got = dk.gemv(x, w, b, ln=ln, gelu=True)
    y = ln(x) @ w + b
    torch.testing.assert_close(got, y * torch.sigmoid(1.702 * y), rtol=1e-5, atol=1e-5)
    res = torch.randn(rows, n)
    got2 = dk.gemv(x, w, b, residual=res)
    torch.testing.assert_close(got2, res + x @ w + b, rtol=1e-5, atol=2e-4)


@pytest.mark.parametrize("kind", [BLOCK, PREV, TRANSPOSE, CROSS])  # the 5b and 5b_lyrics kinds
@pytest.mark.parametrize(("rows", "dtype"), [(3, torch.float32), (1, torch.bfloat16), (3, torch.bfloat16)])
def test_wide_block_step_matches_reference(
    kind: int, rows: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dk, "MAX_K", 32)
    monkeypatch.setattr(dk, "FUSED_WIDE", True)  # the looped kernel is opt-in (see the test below)
    monkeypatch.setattr(decode_attention, "MAX_SUB", 4)
    monkeypatch.setenv("JUKEBOT_GEMV_COLS", "32")  # fewer programs: the interpreter runs each in turn
    width, heads = 96, 2
    blk = _block(kind, width, heads, dtype, seed=kind + rows)
    dk.relayout(blk)
    assert dk.supports(blk, rows)
    gen = torch.Generator().manual_seed(rows * 7 + kind)
    for trial in range(2):
        s = (
            torch.tensor(POSITIONS[rows])
            if trial == 0
            else torch.randint(0, GEO.seq_len, (rows,), generator=gen)
        )
        x = torch.randn(rows, 1, width, generator=gen) * 3.0 + 2.0
        ref_cache = _cache(blk, rows, dtype)
        fused_cache = LayerCache(ref_cache.k.clone(), ref_cache.v.clone())
        masks = step_masks({kind}, s, GEO, dtype=dtype)
        with torch.no_grad():
            want = blk.step(x, s, ref_cache, masks)
            got = dk.fused_block_step(blk, x, s, fused_cache, masks)
        scale = want.abs().max().item()
        tol = 2e-5 if dtype == torch.float32 else 2e-2
        err = (got - want).abs().max().item()
        assert err <= tol * scale, f"kind {kind} rows {rows} s {s.tolist()}: max err {err} (scale {scale})"
        torch.testing.assert_close(fused_cache.k.float(), ref_cache.k.float(), rtol=tol, atol=tol)


def test_released_priors_take_the_fused_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every block of every released prior runs through the kernels for 1-8 rows: 1b_lyrics and
    the upsamplers by default; the 5b and 5b_lyrics top priors (width 4800, 8 heads of 150,
    cross-attention to the lyric encoder) with the looped products switched on
    (JUKEBOT_FUSED_WIDE), and by default not. Built on the meta device (no memory)."""
    from engine.model.config import PRESETS
    from engine.model.prior import JukeboxPrior

    for name, model in PRESETS.items():
        for pc in model.priors:
            with torch.device("meta"):
                prior = JukeboxPrior(pc, model.vqvae)
            wide = pc.width > dk.MAX_K
            for layer in prior.prior.transformer.layers:
                monkeypatch.setattr(dk, "FUSED_WIDE", False)
                assert dk.supports(layer, dk.MAX_ROWS) is not wide, (name, pc.level, layer.attn.kind)
                monkeypatch.setattr(dk, "FUSED_WIDE", True)
                assert dk.supports(layer, dk.MAX_ROWS), (name, pc.level, layer.attn.kind)
            assert wide == (pc.level == 2 and name in ("5b", "5b_lyrics")), name


def _wide_5b_lyrics_prior() -> tuple[object, object]:
    """A 5b_lyrics-kind top prior (separate lyric encoder, cross-attention every 4th layer, timing
    labels) at width 96: the CPU-test sizes of tests/engine_reference.py, wider."""
    from bench.common import random_prior
    from engine.model.config import ModelConfig, PriorConfig, VQVAEConfig
    from tests.engine_reference import SMALL_PRIORS, SMALL_VQVAE

    vq = VQVAEConfig.from_hparams(SMALL_VQVAE)
    hps = {**SMALL_PRIORS["prior_5b_lyrics"], "prior_width": 96, "prior_depth": 4}
    ups = tuple(
        PriorConfig.from_hparams(SMALL_PRIORS[k], l_bins=vq.l_bins)
        for k in ("upsampler_level_0", "upsampler_level_1")
    )
    config = ModelConfig("wide-5b_lyrics", vq, (*ups, PriorConfig.from_hparams(hps, l_bins=vq.l_bins)))
    return config, random_prior(config, 2, torch.device("cpu"), torch.float32, seed=3)


def test_fused_5b_shaped_decoder_samples_the_eager_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole RowDecoder in `fused` mode on the 5b_lyrics-kind prior, every product looping over
    input tiles: the eager decoder's tokens, logits equal up to float32 rounding, 3 rows."""
    from bench.common import window_inputs
    from engine.model.attention import CROSS as CROSS_KIND
    from engine.sampling.batching import DecodeLoop
    from engine.sampling.decoders import RowDecoder
    from engine.sampling.noise import NoiseKey
    from engine.sampling.window_task import WindowTask

    monkeypatch.setattr(dk, "MAX_K", 32)
    monkeypatch.setattr(dk, "FUSED_WIDE", True)  # the looped kernel is opt-in (see the test below)
    monkeypatch.setenv("JUKEBOT_GEMV_COLS", "32")  # fewer programs: the interpreter runs each in turn
    cpu = torch.device("cpu")
    config, prior = _wide_5b_lyrics_prior()
    assert CROSS_KIND in prior.prior.transformer.kinds and prior.config.width == 96
    cond, ctx, _y, _upper, abs_start = window_inputs(prior, config, 3, cpu, seed=2)
    ctx = ctx[:, :20]
    out = {}
    with torch.inference_mode():
        for mode in ("eager", "fused"):
            dec = RowDecoder(prior, 3, cpu, torch.float32, mode=mode)  # type: ignore[arg-type]
            assert dec.mode == mode
            t = WindowTask(
                cond=cond,
                context=ctx,
                n_new=8,
                row_bin=NoiseKey(4).row_bin_hash(2, range(3), prior.n_bins, cpu),
                abs_start=abs_start,
                temperature=1.0,
            )
            loop = DecodeLoop()
            loop.submit(dec, t)
            out[mode] = (loop.run_until_done(t), dec.state.logits.clone())
    assert torch.equal(out["eager"][0], out["fused"][0])
    torch.testing.assert_close(out["eager"][1], out["fused"][1], atol=1e-4, rtol=1e-4)


def test_wide_priors_keep_the_compiled_step_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an H100 the input-tile loop measured 12.6 ms a step for 5b_lyrics' top prior (3 rows)
    against 7.9 ms for the compiled step (docs/BENCHMARKS.md, 2026-12-07): a prior wider than one
    register tile must not take it by default, only with JUKEBOT_FUSED_WIDE=1."""
    from engine.sampling.decoders import RowDecoder

    monkeypatch.setattr(dk, "MAX_K", 32)
    cpu = torch.device("cpu")
    _config, prior = _wide_5b_lyrics_prior()
    layer = prior.prior.transformer.layers[0]
    assert not dk.supports(layer, 3)
    with torch.inference_mode():
        dec = RowDecoder(prior, 3, cpu, torch.float32, mode="fused")  # type: ignore[arg-type]
    assert dec.mode != "fused"
    monkeypatch.setattr(dk, "FUSED_WIDE", True)
    assert dk.supports(layer, 3)
