"""The fast path: static per-kind KV caches, prefill, one-token decode steps.

Checked against our exact slow path (itself checked against the original code in
test_engine_parity.py): every attention kind, windows started anywhere, rows at different
positions in one batch, prefill into some rows only, bf16 weights, and a decode step that traces
as one graph (no data-dependent Python control flow, so CUDA graphs can capture it).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from engine.model.attention import BLOCK, CROSS, DENSE, PREV, PRIME, TRANSPOSE, Geometry, cache_shape
from engine.model.config import PRESETS, LyricsKind, PriorConfig, tiny_config
from engine.model.prior import Cond, JukeboxPrior
from tests.engine_reference import one_thread

B = 3


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Any:
    with one_thread():
        yield


def _prior(lyrics: LyricsKind, level: int = 2, seed: int = 0, **kw: Any) -> JukeboxPrior:
    torch.manual_seed(seed)
    mc = tiny_config(lyrics=lyrics, **kw)
    prior = JukeboxPrior(mc.priors[level], mc.vqvae).eval()
    with torch.no_grad():  # weights big enough that attention is far from uniform
        for name, p in prior.named_parameters():
            if name.endswith(".w"):
                p.normal_(std=1.0 / math.sqrt(p.shape[0]))
            elif "emb" in name or "start_token" in name:
                p.normal_(std=0.5)
    return prior


def _cond(prior: JukeboxPrior, seed: int = 1) -> Cond:
    c = prior.config
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(B, c.y_len, dtype=torch.long)
    y[:, 0] = 30 * prior.sample_rate
    y[:, 1] = torch.tensor([0, 1000, 50000])
    y[:, 2] = prior.sample_length
    y[:, 3] = torch.tensor([0, 1, 1])
    y[:, 4] = torch.tensor([1, 0, -1])
    if c.n_tokens:
        y[:, 4 + c.max_bow_genre_size :] = torch.randint(0, c.n_vocab, (B, c.n_tokens), generator=g)
    upper = None if prior.is_top else torch.randint(0, c.l_bins, (B, c.n_ctx // 4), generator=g)
    return prior.get_cond(y, upper)


def _tokens(prior: JukeboxPrior, seed: int = 2) -> torch.Tensor:
    return torch.randint(
        0, prior.config.l_bins, (B, prior.n_ctx), generator=torch.Generator().manual_seed(seed)
    )


CASES = [("none", 2), ("none", 0), ("separate", 2), ("prefix", 2), ("prefix", 1)]


@pytest.mark.parametrize(("lyrics", "level"), CASES)
def test_prefill_then_steps_equal_the_slow_path(lyrics: LyricsKind, level: int) -> None:
    prior = _prior(lyrics, level)
    cond, z = _cond(prior), _tokens(prior)
    with torch.no_grad():
        want = prior.logits(z, cond)
        cache = prior.new_cache(B, "cpu", torch.float32)
        # Reuse one cache for several windows: prefill must leave nothing of the previous one.
        for t0 in (40, 0, 7, prior.n_ctx - 2):
            got = [prior.prefill(cache, z[:, :t0], cond)]
            for pos in range(t0, min(t0 + 20, prior.n_ctx - 1)):
                got.append(prior.decode_step(cache, z[:, pos], torch.tensor(pos), cond))
            torch.testing.assert_close(torch.stack(got, 1), want[:, t0 : t0 + len(got)], atol=2e-5, rtol=1e-4)


def test_rows_at_different_positions_in_one_step() -> None:
    """Continuous batching: each row its own window position, one batched decode step."""
    prior = _prior("prefix")
    cond, z = _cond(prior), _tokens(prior)
    starts = [3, 17, 30]
    with torch.no_grad():
        want = prior.logits(z, cond)
        cache = prior.new_cache(B, "cpu", torch.float32)
        for r, t0 in enumerate(starts):  # rows join one at a time: prefill writes only their row
            rows = torch.tensor([r])
            first = prior.prefill(cache, z[r : r + 1, :t0], cond.select([r]), rows=rows)
            torch.testing.assert_close(first[0], want[r, t0], atol=2e-5, rtol=1e-4)
        pos = torch.tensor(starts)
        for _ in range(25):
            tok = z[torch.arange(B), pos]
            got = prior.decode_step(cache, tok, pos, cond)
            torch.testing.assert_close(got, want[torch.arange(B), pos + 1], atol=2e-5, rtol=1e-4)
            pos = pos + 1


def test_cond_select_and_cat_round_trip() -> None:
    prior = _prior("separate")
    cond = _cond(prior)
    parts = [cond.select([0]), cond.select([1, 2])]
    joined = Cond.cat(parts)
    assert joined.batch == B
    for f in ("x_cond", "start", "lyrics", "encoder"):
        assert torch.equal(getattr(joined, f), getattr(cond, f)), f


def test_bf16_weights_stay_close_to_float32() -> None:
    prior = _prior("prefix", seed=3)
    cond32, z = _cond(prior), _tokens(prior)
    with torch.no_grad():
        want = prior.logits(z, cond32)
        half = prior.to(torch.bfloat16)
        cond = _cond(half)
        cache = half.new_cache(B, "cpu", torch.bfloat16)
        got = [half.prefill(cache, z[:, :10], cond)]
        for pos in range(10, 30):
            got.append(half.decode_step(cache, z[:, pos], pos, cond))
    stacked = torch.stack(got, 1)
    assert stacked.dtype == torch.float32
    err = (stacked - want[:, 10:31]).abs().max() / want.abs().max()
    assert err < 0.05, float(err)


def test_cache_holds_only_what_each_kind_needs() -> None:
    geo = Geometry(seq_len=6528, blocks=64, prime_len=384)  # 1b_lyrics: block_ctx 102
    shapes = {k: cache_shape(k, geo, 1, 2, 256)[2:-1] for k in (DENSE, BLOCK, TRANSPOSE, PREV, PRIME)}
    assert shapes == {DENSE: (6528,), BLOCK: (102,), PREV: (204,), TRANSPOSE: (102, 64), PRIME: (448,)}
    assert cache_shape(CROSS, Geometry(8192, 128, encoder_len=512), 2, 8, 150) == (2, 8, 512, 150)

    # Released models, per sample in bf16: built on meta, nothing allocated.
    def per_sample_mb(cfg: PriorConfig) -> float:
        with torch.device("meta"):
            prior = JukeboxPrior(cfg, PRESETS["5b"].vqvae)
            cache = prior.new_cache(1, "meta", torch.bfloat16)
        return cache.nbytes() / 2**20

    # The original keeps ~400 MB (1b_lyrics) and ~1 GB (5b_lyrics) per sample (README); the
    # transpose-block layers need every key, the others far fewer.
    assert round(per_sample_mb(PRESETS["1b_lyrics"].top)) == 322
    assert round(per_sample_mb(PRESETS["5b_lyrics"].top)) == 938
    assert round(per_sample_mb(PRESETS["5b"].priors[0])) == 368


def test_prefill_of_a_full_window_is_refused() -> None:
    prior = _prior("none")
    cond, z = _cond(prior), _tokens(prior)
    with pytest.raises(ValueError, match="already full"):
        prior.prefill(prior.new_cache(B, "cpu", torch.float32), z, cond)


def test_decode_step_traces_as_one_graph_without_recompiling() -> None:
    import torch._dynamo

    prior = _prior("prefix")
    cond, z = _cond(prior), _tokens(prior)
    with torch.no_grad():
        cache = prior.new_cache(B, "cpu", torch.float32)
        prior.prefill(cache, z[:, :5], cond)
        want = prior.logits(z, cond)
        step = torch.compile(prior.decode_step, backend="eager", fullgraph=True, dynamic=False)
        pos = torch.full((B,), 5)
        out = step(cache, z[:, 5], pos, cond)
        torch._dynamo.config.error_on_recompile = True
        try:
            for i in range(1, 4):  # new positions are new tensor values, not new graphs
                out = step(cache, z[:, 5 + i], pos + i, cond)
        finally:
            torch._dynamo.config.error_on_recompile = False
            torch._dynamo.reset()
    torch.testing.assert_close(out, want[:, 9], atol=2e-5, rtol=1e-4)
