"""The window schedule matches the original sampler (via the jukebox-infer reference) and the
workload figures derived from it in shared/research/engine.md §2.1."""

from __future__ import annotations

import random

import pytest

from engine.sampling.windows import (
    DEFAULT_HOP_FRACTIONS,
    Window,
    get_starts,
    level_downsample,
    level_windows,
    relevant_lyric_tokens,
    round_sample_length,
    tokens_per_level,
    tokens_to_sample,
)


def test_get_starts_matches_reference() -> None:
    from jukebox_infer.utils.sample_utils import get_starts as ref_get_starts

    rng = random.Random(0)
    for _ in range(300):
        n_ctx = rng.choice([8, 16, 64, 100, 8192])
        hop = max(1, int(rng.choice([0.125, 0.25, 0.5, 1.0]) * n_ctx))
        total = rng.randint(n_ctx, 20 * n_ctx)
        assert get_starts(total, n_ctx, hop) == ref_get_starts(total, n_ctx, hop)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        # (tokens, windows, re-prefilled context tokens) per level 0, 1, 2: research §2.1 table
        (20, [(110_240, 26, 102_752), (27_560, 6, 21_592), (6_890, 1, 0)]),
        (60, [(330_736, 80, 324_624), (82_684, 20, 81_156), (20_671, 14, 94_017)]),
        (180, [(992_240, 242, 990_224), (248_060, 60, 243_460), (62_015, 54, 380_353)]),
    ],
)
def test_workload_of_released_models(seconds: int, expected: list[tuple[int, int, int]]) -> None:
    sample_length = round_sample_length(seconds, 44100, 128)
    totals = tokens_per_level(sample_length, [8, 32, 128])
    for level, total in enumerate(totals):
        windows = level_windows(level, total, 8192, DEFAULT_HOP_FRACTIONS[level])
        have, ctx = 0, 0
        for w in windows:
            ctx += w.context_tokens(have)
            have += w.new_tokens(have)
        assert have == total
        assert (total, len(windows), ctx) == expected[level]


def test_windows_end_at_total_and_cover_every_token_once() -> None:
    windows = level_windows(1, 100, 32, 0.5)
    assert windows[-1].end == 100 and windows[-1].start == 68
    assert [w.index for w in windows] == list(range(len(windows)))
    have = 0
    for w in windows:
        new = w.new_tokens(have)
        assert new > 0 and w.context_tokens(have) + new == w.length
        have += new
    assert have == 100


def test_partial_level_is_one_window() -> None:
    (w,) = level_windows(2, 20, 64, 0.125)
    assert (w.start, w.end, w.partial) == (0, 20, True)
    assert level_windows(2, 0, 64, 0.125) == []


def test_prompt_covered_windows_are_skipped_and_partly_covered_continue() -> None:
    windows = level_windows(0, 128, 32, 0.5)  # starts 0, 16, ..., 96
    have = 40  # a prompt of 40 tokens
    assert [w.new_tokens(have) for w in windows[:2]] == [0, 8]  # [0,32) covered; [16,48) adds 8
    assert windows[1].context_tokens(have) == 24
    assert tokens_to_sample(windows, have) == 88


def test_upper_slice_and_offsets() -> None:
    w = Window(level=0, index=3, start=48, end=80, n_ctx=32)
    assert w.upper_slice(4) == (12, 20)
    assert w.label_offset(8) == 384 and w.label_offset(8, base_offset=1000) == 1384
    with pytest.raises(ValueError, match="aligned"):
        Window(0, 0, 2, 34, 32).upper_slice(4)
    assert level_downsample([8, 32, 128], 0) == 4 and level_downsample([8, 32, 128], 1) == 4


def test_sample_length_rounding() -> None:
    assert round_sample_length(1.0, 44100, 128) == 44032
    assert round_sample_length(0.0001, 44100, 128) == 128
    with pytest.raises(ValueError, match="multiple"):
        tokens_per_level(100, [8, 32])


def test_bad_hop_fraction() -> None:
    with pytest.raises(ValueError, match="hop fraction"):
        level_windows(0, 100, 32, 0.01)


def test_lyric_window_matches_reference() -> None:
    from jukebox_infer.data.labels import get_relevant_lyric_tokens

    rng = random.Random(1)
    for _ in range(200):
        n_tokens = rng.choice([4, 8, 16])
        full = [rng.randint(1, 79) for _ in range(rng.randint(0, 60))]
        total = rng.randint(1000, 100_000)
        offset = rng.randint(0, total - 1)
        duration = rng.randint(100, 50_000)
        ours = relevant_lyric_tokens(full, n_tokens, total, offset, duration)
        assert ours == get_relevant_lyric_tokens(full, n_tokens, total, offset, duration)
    assert relevant_lyric_tokens([1, 2, 3], 0, 100, 0, 10) == ([], [])
