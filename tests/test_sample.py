"""engine.sampling.sample: the noise, the token picking, and the window loop.

The loop tests here use `CountingPrior`, a small deterministic stand-in for a prior: its logits are
a fixed function of the whole window so far, the level-above codes and the labels, computed by
prefill/decode_step with a running state (like a KV cache) and by `logits` from scratch. Tests
with the real Jukebox prior (tiny random weights) are in tests/test_resume.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from engine.sampling.noise import NoiseKey, filter_logits, gumbel, mix32, mix32_int, pick_tokens
from engine.sampling.sample import Hooks, Plan, Progress, SamplingSettings, SamplingStopped, run_plan
from engine.sampling.windows import Window

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# --- noise -------------------------------------------------------------------------------------


def test_mix32_tensor_matches_python_ints() -> None:
    xs = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1, 0xDEADBEEF]
    assert mix32(torch.tensor(xs)).tolist() == [mix32_int(x) for x in xs]
    assert len({mix32_int(x) for x in range(10_000)}) == 10_000  # a bijection on 32 bits


def test_gumbel_noise_has_the_right_distribution() -> None:
    rb = NoiseKey(seed=7).row_bin_hash(level=2, rows=range(4), bins=512, device=CPU)
    g = torch.cat([gumbel(rb, p) for p in range(200)]).flatten().double()
    assert g.mean().item() == pytest.approx(0.5772, abs=0.01)  # Euler-Mascheroni
    assert g.var().item() == pytest.approx(math.pi**2 / 6, rel=0.02)
    assert torch.isfinite(g).all()


def test_noise_depends_on_everything_it_should() -> None:
    key = NoiseKey(seed=1, stream=0)
    a = gumbel(key.row_bin_hash(0, [0, 1], 64, CPU), 5)
    assert not torch.equal(a, gumbel(key.row_bin_hash(0, [0, 1], 64, CPU), 6))  # position
    assert not torch.equal(a, gumbel(key.row_bin_hash(1, [0, 1], 64, CPU), 5))  # level
    assert not torch.equal(a, gumbel(NoiseKey(2).row_bin_hash(0, [0, 1], 64, CPU), 5))  # seed
    assert not torch.equal(a, gumbel(NoiseKey(1, 1).row_bin_hash(0, [0, 1], 64, CPU), 5))  # stream
    assert not torch.equal(a[0], a[1])  # rows
    assert torch.equal(a, gumbel(key.row_bin_hash(0, [0, 1], 64, CPU), 5))  # and nothing else
    assert NoiseKey(2**40 + 1).level_key(0) != NoiseKey(1).level_key(0)  # high seed bits count


def test_noise_is_independent_of_batch_split_and_position_type() -> None:
    key = NoiseKey(seed=3)
    whole = key.row_bin_hash(1, range(6), 32, CPU)
    parts = torch.cat([key.row_bin_hash(1, range(0, 4), 32, CPU), key.row_bin_hash(1, range(4, 6), 32, CPU)])
    assert torch.equal(whole, parts)
    pos = torch.full((6,), 17, dtype=torch.int64)
    assert torch.equal(gumbel(whole, 17), gumbel(whole, pos))


# --- picking -----------------------------------------------------------------------------------


def _reference_top_p(x: Tensor, top_p: float) -> Tensor:
    """The original's nucleus rule, one row at a time: keep the most likely tokens up to and
    including the first whose cumulative probability passes top_p."""
    out = x.clone()
    for r in range(x.shape[0]):
        order = torch.argsort(x[r], descending=True)
        probs = torch.softmax(x[r][order], dim=-1)
        cum = 0.0
        for rank, idx in enumerate(order.tolist()):
            if rank > 0 and cum > top_p:
                out[r, idx] = -math.inf
            cum += float(probs[rank])
    return out


def test_filter_logits_matches_the_original() -> None:
    from jukebox_infer.transformer.ops import filter_logits as ref_filter

    g = torch.Generator().manual_seed(0)
    for top_k in (0, 1, 5, 40):
        x = torch.randn(3, 64, generator=g) * 3
        assert torch.equal(filter_logits(x, top_k, 0.0), ref_filter(x, top_k, 0.0))
    # (the reference's top-p path no longer runs on current torch: uint8 scatter into a bool mask)
    for top_p in (0.3, 0.9, 1.0):
        x = torch.randn(3, 64, generator=g) * 3
        assert torch.equal(filter_logits(x, 0, top_p), _reference_top_p(x, top_p))


def test_pick_tokens_follows_the_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0, 0.5, 0.2, -0.5]])
    n = 40_000  # independent draws: one per row (rows get independent noise)
    rb = NoiseKey(seed=11).row_bin_hash(2, range(n), 8, CPU)
    for temperature in (1.0, 0.5):
        picks = pick_tokens(logits.expand(n, -1), gumbel(rb, 3), temperature)
        freq = torch.bincount(picks, minlength=8).double() / n
        expected = torch.softmax(logits[0].double() / temperature, dim=-1)
        assert torch.allclose(freq, expected, atol=0.01), (temperature, freq, expected)


def test_top_k_and_top_p_restrict_the_choice() -> None:
    logits = torch.tensor([[3.0, 2.9, 1.0, 0.0, -1.0]])
    rb = NoiseKey(seed=5).row_bin_hash(0, [0], 5, CPU)
    ks = {int(pick_tokens(logits, gumbel(rb, p), 1.0, top_k=2)) for p in range(500)}
    assert ks == {0, 1}
    assert {int(pick_tokens(logits, gumbel(rb, p), 1.0, top_k=1)) for p in range(100)} == {0}
    ps = {int(pick_tokens(logits, gumbel(rb, p), 1.0, top_p=0.5)) for p in range(500)}
    assert ps == {0, 1}  # the first token passes 0.5 only together with the second


def test_settings_validation_and_round_trip() -> None:
    with pytest.raises(ValueError, match="not both"):
        SamplingSettings(top_k=5, top_p=0.5)
    with pytest.raises(ValueError, match="positive"):
        SamplingSettings(temperatures=(0.0, 1.0, 1.0))
    s = SamplingSettings(temperatures=(1.0, 0.9, 0.8), top_p=0.9, max_batch_size=2)
    assert SamplingSettings.from_dict(s.to_dict()) == s


# --- the loop, with a deterministic stand-in prior --------------------------------------------


class CountingPrior:
    """Logits at window position t depend on every earlier token of the window, the label vector
    and the level-above codes at t // 2, through a running hash (the 'cache')."""

    def __init__(self, bins: int, n_ctx: int) -> None:
        self.bins, self.n_ctx = bins, n_ctx
        self.prefill_lengths: list[int] = []
        self.steps = 0
        self.table = torch.randn(997, bins, generator=torch.Generator().manual_seed(1)) * 2

    def get_cond(self, labels_y: Tensor | None, upper_codes: Tensor | None) -> Any:
        return (labels_y, upper_codes)

    def new_cache(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any:
        return {"state": torch.zeros(batch, dtype=torch.long, device=device)}

    def _logits(self, state: Tensor, pos: int, cond: Any) -> Tensor:
        y, up = cond
        h = state * 31 + pos * 7
        if y is not None:
            h = h + y.sum(dim=1)
        if up is not None:
            u = up[:, min(pos // 2, up.shape[1] - 1)]
            h = h + u * 13
        return self.table[h % 997]

    def prefill(self, cache: Any, tokens: Tensor, cond: Any) -> Tensor:
        self.prefill_lengths.append(tokens.shape[1])
        for t in range(tokens.shape[1]):
            cache["state"] = (cache["state"] * 5 + tokens[:, t] + 1) % 1_000_003
        return self._logits(cache["state"], tokens.shape[1], cond)

    def decode_step(self, cache: Any, tokens: Tensor, pos: int, cond: Any) -> Tensor:
        self.steps += 1
        cache["state"] = (cache["state"] * 5 + tokens + 1) % 1_000_003
        return self._logits(cache["state"], pos + 1, cond)

    def logits_from_scratch(self, window_tokens: Tensor, cond: Any) -> Tensor:
        state = torch.zeros(window_tokens.shape[0], dtype=torch.long)
        for t in range(window_tokens.shape[1]):
            state = (state * 5 + window_tokens[:, t] + 1) % 1_000_003
        return self._logits(state, window_tokens.shape[1], cond)


def _plan(
    levels: tuple[int, ...], totals: tuple[int, int, int], n: int = 3, seed: int = 0, **kw: Any
) -> Plan:
    return Plan(
        levels=levels,
        totals=totals,
        n_ctx=(16, 16, 16),
        downsamples=(2, 2, 0),
        n_samples=n,
        key=NoiseKey(seed),
        settings=SamplingSettings(**kw),
    )


def _labels(level: int, w: Window) -> Tensor:
    return torch.tensor([[100, w.start * 4, 64, 1]] * 3)


def _empty(n: int = 3) -> list[np.ndarray]:
    return [np.zeros((n, 0), dtype=np.int64) for _ in range(3)]


def test_loop_samples_every_level_to_its_length() -> None:
    priors = {lv: CountingPrior(32, 16) for lv in range(3)}
    codes = run_plan(_plan((2, 1, 0), (40, 20, 10)), priors.__getitem__, _labels, _empty(), device=CPU)
    assert [c.shape for c in codes] == [(3, 40), (3, 20), (3, 10)]
    assert all(c.min() >= 0 and c.max() < 32 for c in codes)
    # level 2 (10 tokens) is one partial window; levels 1 and 0 re-prefill their contexts
    assert priors[2].prefill_lengths == [0]
    assert priors[1].prefill_lengths == [0, 12]  # windows [0,16) and [4,20) (last start clamped)
    assert len(set(map(tuple, codes[2].tolist()))) == 3  # rows differ


def test_loop_tokens_are_what_slow_exact_sampling_gives() -> None:
    """Replaying every token from scratch (no cache, one full recompute per token) with the same
    noise picks the same tokens: the cached loop is the model's distribution, not an approximation."""
    plan = _plan((2, 1), (0, 24, 12), temperatures=(1.0, 0.9, 0.8), top_k=7)
    priors = {lv: CountingPrior(32, 16) for lv in range(3)}
    codes = run_plan(plan, priors.__getitem__, _labels, _empty(), device=CPU)
    for level in (2, 1):
        rb = plan.key.row_bin_hash(level, range(3), 32, CPU)
        have = 0
        for w in plan.windows(level):
            up = None
            if level < 2:
                lo, hi = w.upper_slice(2)
                up = torch.as_tensor(codes[level + 1][:, lo:hi])
            cond = (_labels(level, w), up)
            for t in range(max(have, w.start), w.end):
                ctx = torch.as_tensor(codes[level][:, w.start : t])
                logits = priors[level].logits_from_scratch(ctx, cond)
                tok = pick_tokens(logits, gumbel(rb, t), plan.settings.temperatures[level], top_k=7)
                assert tok.tolist() == codes[level][:, t].tolist(), (level, t)
            have = w.end


def test_seed_reproducible_and_batch_split_invariant() -> None:
    mk = lambda: {lv: CountingPrior(32, 16) for lv in range(3)}  # noqa: E731
    a = run_plan(_plan((2, 1), (0, 24, 12), seed=9), mk().__getitem__, _labels, _empty(), device=CPU)
    b = run_plan(
        _plan((2, 1), (0, 24, 12), seed=9, max_batch_size=2), mk().__getitem__, _labels, _empty(), device=CPU
    )
    c = run_plan(_plan((2, 1), (0, 24, 12), seed=10), mk().__getitem__, _labels, _empty(), device=CPU)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])


def test_primed_codes_are_kept_and_covered_windows_skipped() -> None:
    priors = {lv: CountingPrior(32, 16) for lv in range(3)}
    prompt = _empty()
    prompt[2] = np.full((3, 20), 5)  # a 20-token prompt at level 2 (window 16, hop 2)
    codes = run_plan(_plan((2,), (0, 0, 30)), priors.__getitem__, _labels, prompt, device=CPU)
    assert (codes[2][:, :20] == 5).all() and codes[2].shape == (3, 30)
    # windows ending at or before 20 were skipped; the first one sampled had 20 - 6 = 14 tokens of context
    assert priors[2].prefill_lengths[0] == 14 and len(priors[2].prefill_lengths) == 5


def test_stop_between_windows_and_resume_gives_the_same_codes() -> None:
    plan = _plan((2, 1, 0), (48, 24, 12), seed=4)
    mk = lambda: {lv: CountingPrior(32, 16) for lv in range(3)}  # noqa: E731
    full = run_plan(plan, mk().__getitem__, _labels, _empty(), device=CPU)

    seen: list[Progress] = []
    codes = _empty()
    resumed_runs = 0
    while True:
        asked = iter([False, True])  # stop after every second window
        hooks = Hooks(on_window=lambda p, c: seen.append(p), should_stop=asked.__next__)
        try:
            codes = run_plan(plan, mk().__getitem__, _labels, codes, device=CPU, hooks=hooks)
            break
        except SamplingStopped as stop:
            codes = stop.codes
            resumed_runs += 1
    assert resumed_runs == 3  # 8 windows, stopped after every 2nd one but the last
    assert all(np.array_equal(x, y) for x, y in zip(full, codes, strict=True))
    assert seen[-1].done == seen[-1].total


def test_progress_counts_tokens_and_rate() -> None:
    plan = _plan((2, 1), (0, 40, 20), max_batch_size=2)
    events: list[Progress] = []
    windows: list[Progress] = []
    run_plan(
        plan,
        {lv: CountingPrior(32, 16) for lv in range(3)}.__getitem__,
        _labels,
        _empty(),
        device=CPU,
        hooks=Hooks(on_tokens=events.append, on_window=lambda p, c: windows.append(p), tokens_every=4),
    )
    assert windows[-1].done == windows[-1].total == 60
    dones = [e.done for e in events]
    assert dones == sorted(dones) and dones[-1] == 60
    assert {w.level for w in windows} == {2, 1} and windows[0].level == 2
    assert windows[-1].percent == 100.0 and events[-1].tokens_per_second > 0


def test_bad_codes_are_refused() -> None:
    priors = {lv: CountingPrior(32, 16) for lv in range(3)}
    with pytest.raises(ValueError, match="expected \\[3, T\\]"):
        run_plan(_plan((2,), (0, 0, 8)), priors.__getitem__, _labels, _empty(2), device=CPU)
    too_long = _empty()
    too_long[2] = np.zeros((3, 9), dtype=np.int64)
    with pytest.raises(ValueError, match="more than"):
        run_plan(_plan((2,), (0, 0, 8)), priors.__getitem__, _labels, too_long, device=CPU)
    with pytest.raises(ValueError, match="level 2 has 0 tokens"):
        run_plan(_plan((1,), (0, 16, 8)), priors.__getitem__, _labels, _empty(), device=CPU)


# --- the real (tiny, random-weight) prior ----------------------------------------------------------


@pytest.mark.parametrize("lyrics", ["prefix", "separate", "none"])
def test_cached_fast_path_picks_what_the_slow_exact_path_picks(lyrics: str) -> None:
    """Prefill + cached decode_step against a full recompute per token (`ExactPrior`), with the
    same noise, on every level of a tiny model of each lyrics kind: the same tokens."""
    from engine.model.config import tiny_config
    from engine.model.prior import JukeboxPrior
    from engine.sampling.sample import ExactPrior
    from tests.pipeline_fixtures import TinyLabels, empty_codes, tiny_plan

    config = tiny_config("exact", lyrics=lyrics, n_ctx=32, width=32, depth=2, heads=2, blocks=4)  # type: ignore[arg-type]
    torch.manual_seed(0)
    priors = {lv: JukeboxPrior(config.priors[lv], config.vqvae).eval() for lv in range(3)}
    plan, sl = tiny_plan(config, 0.03, 2, seed=1)
    labels = TinyLabels(config, sl, 2)
    fast = run_plan(plan, priors.__getitem__, labels, empty_codes(2), device=CPU)
    slow = run_plan(plan, lambda lv: ExactPrior(priors[lv]), labels, empty_codes(2), device=CPU)
    assert [c.shape[1] for c in fast] == list(plan.totals)
    for lv in range(3):
        assert np.array_equal(fast[lv], slow[lv]), lv
