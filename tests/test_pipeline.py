"""engine.sampling.pipeline with a tiny random-weight model: drafts, upsampling, primes, decoding, labels."""

from __future__ import annotations

import gc
import io
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.sampling.pipeline import (
    Engine,
    PipelineError,
    Prompt,
    SongRequest,
    WindowLabels,
    codes_from_npz,
    codes_to_npz,
    make_drafts,
    upsample,
)
from engine.sampling.sample import SamplingSettings
from engine.sampling.windows import Window
from tests.pipeline_fixtures import write_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Engine:
    return Engine.load(model_dir)


REQ = SongRequest("bach", "chorale", "Wachet auf, ruft uns die Stimme", seconds=0.1, seed=11)


def test_drafts_then_upsample(engine: Engine) -> None:
    d = make_drafts(engine, REQ, 3)
    sl = engine.sample_length(0.1)
    assert d.sample_length == sl and d.codes.shape == (3, sl // 16) and d.previews.shape == (3, sl)
    assert d.previews.dtype == np.float32 and np.abs(d.previews).max() <= 1.0
    assert len({tuple(r) for r in d.codes.tolist()}) == 3  # three different drafts
    f = upsample(engine, REQ, d.codes[2], draft_index=2)
    assert [c.shape for c in f.codes] == [(1, sl // 4), (1, sl // 8), (1, sl // 16)]
    assert np.array_equal(f.codes[2][0], d.codes[2]) and f.audio.shape == (sl,)
    # another draft index is another noise stream: a different upsample of the same codes
    g = upsample(engine, REQ, d.codes[2], draft_index=1)
    assert not np.array_equal(f.codes[0], g.codes[0])
    # the same again is the same
    assert np.array_equal(upsample(engine, REQ, d.codes[2], draft_index=2).codes[0], f.codes[0])


def test_swapping_levels_gives_the_same_codes(engine: Engine, model_dir: Path) -> None:
    swapped = Engine.load(model_dir, swap_levels=True)
    assert swapped.model.priors == [None, None, None]
    a = make_drafts(engine, REQ, 2, decode=False)
    b = make_drafts(swapped, REQ, 2, decode=False)
    assert np.array_equal(a.codes, b.codes)
    assert [p is not None for p in swapped.model.priors] == [False, False, True]
    upsample(swapped, REQ, b.codes[0], decode=False)
    assert [p is not None for p in swapped.model.priors] == [True, False, False]


def test_swapping_levels_frees_a_prior_before_the_next_is_loaded(model_dir: Path) -> None:
    """--swap-levels keeps one prior in memory (consumer GPUs): once level 1 is sampled, nothing
    of the loop still holds its prior, so unloading it frees it before level 0's is loaded."""
    swapped = Engine.load(model_dir, swap_levels=True)
    top = make_drafts(swapped, REQ, 1, decode=False).codes[0]
    loaded: dict[int, weakref.ref[Any]] = {}
    alive_at_load: dict[int, list[int]] = {}
    load_level = swapped.model.load_level

    def load_and_look(level: int) -> Any:
        gc.collect()
        alive_at_load[level] = [lv for lv, ref in loaded.items() if lv != level and ref() is not None]
        prior = load_level(level)
        loaded[level] = weakref.ref(prior)
        return prior

    swapped.model.load_level = load_and_look  # type: ignore[method-assign]
    upsample(swapped, REQ, top, decode=False)
    assert alive_at_load == {1: [], 0: []}


def test_decode_any_level(engine: Engine) -> None:
    rng = np.random.default_rng(0)
    for level, hop in enumerate(engine.hop_lengths):
        codes = rng.integers(0, engine.config.vqvae.l_bins, size=(2, 40))
        assert engine.decode(codes, level).shape == (2, 40 * hop)
    chunked = engine.decode(codes, 2, chunk_tokens=16)
    assert chunked.shape == (2, 40 * 16)


def test_prompt_from_clip_codes(engine: Engine) -> None:
    f = upsample(engine, REQ, make_drafts(engine, REQ, 1, decode=False).codes[0], decode=False)
    data = codes_to_npz(f.codes, {"song": 1})
    assert all(np.array_equal(a, b) for a, b in zip(codes_from_npz(data), f.codes, strict=True))
    p = Prompt.from_clip_codes(engine, data, seconds=0.04)
    n2 = int(0.04 * engine.sample_rate) // 16
    assert p.top_tokens == n2 and [c.shape[1] for c in p.codes] == [n2 * 4, n2 * 2, n2]
    for lv in range(3):
        assert np.array_equal(p.codes[lv][0], f.codes[lv][0, -p.codes[lv].shape[1] :])  # the clip's tail
    assert Prompt.from_clip_codes(engine, data).top_tokens == f.codes[2].shape[1]  # all of it

    d = make_drafts(engine, REQ, 2, prompt=p)
    total = n2 + engine.sample_length(0.1) // 16
    assert d.codes.shape == (2, total) and (d.codes[:, :n2] == p.codes[2]).all()
    assert d.prompt_seconds == pytest.approx(n2 * 16 / engine.sample_rate)
    up = upsample(engine, REQ, d.codes[1], draft_index=1, prompt=p)
    assert np.array_equal(up.codes[0][0, : n2 * 4], p.codes[0][0])
    assert np.array_equal(up.codes[1][0, : n2 * 2], p.codes[1][0])
    with pytest.raises(PipelineError, match="does not start with the prime"):
        upsample(engine, REQ, make_drafts(engine, REQ, 1, decode=False).codes[0], prompt=p)


def test_bad_clip_codes(engine: Engine) -> None:
    with pytest.raises(PipelineError, match="damaged or not a jukebot codes file"):
        Prompt.from_clip_codes(engine, b"PK\x03\x04 nonsense")
    buf = io.BytesIO()
    np.savez(buf, level_0=np.zeros(4), level_2=np.zeros(1))
    with pytest.raises(
        PipelineError, match=r"does not hold the codes of every level from 0 up \(it has \[0, 2\]\)"
    ):
        Prompt.from_clip_codes(engine, buf.getvalue())
    two = codes_to_npz([np.zeros((1, 8)), np.zeros((1, 4))])  # a 2-level model's clip
    with pytest.raises(PipelineError, match="holds 2 levels of codes; this model has 3"):
        Prompt.from_clip_codes(engine, two)
    wrong = codes_to_npz([np.zeros((1, 10)), np.zeros((1, 5)), np.zeros((1, 2))])  # not 4:2:1 of this model
    with pytest.raises(PipelineError, match="does not fit this model"):
        Prompt.from_clip_codes(engine, wrong)
    big = codes_to_npz([np.full((1, 8), 9999), np.zeros((1, 4)), np.zeros((1, 2))])
    with pytest.raises(PipelineError, match="outside this model's 64-entry codebook"):
        Prompt.from_clip_codes(engine, big)
    ok = codes_to_npz([np.zeros((1, 8)), np.zeros((1, 4)), np.zeros((1, 2))])
    with pytest.raises(PipelineError, match="shorter than one step"):
        Prompt.from_clip_codes(engine, ok, seconds=0.0001)


def test_prompt_from_audio(engine: Engine) -> None:
    t = np.arange(int(0.05 * engine.sample_rate) + 7) / engine.sample_rate
    p = Prompt.from_audio(engine, (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    n2 = len(t) // 16
    assert [c.shape for c in p.codes] == [(1, n2 * 4), (1, n2 * 2), (1, n2)]
    with pytest.raises(PipelineError, match="too short"):
        Prompt.from_audio(engine, np.zeros(5, dtype=np.float32))


def test_labels_of_each_window(engine: Engine) -> None:
    labels = WindowLabels(engine, REQ, 2208, 2)
    y = labels(2, Window(2, 3, 24, 88, 64))
    assert y is not None and y.shape == (2, engine.config.top.y_len)
    assert y[0, 0].item() == 2208 and y[0, 1].item() == 24 * 16 and y[0, 2].item() == 64 * 16
    assert torch.equal(y[0], y[1])
    with pytest.raises(PipelineError, match=r"Unknown artist 'Bahc'\. Did you mean: bach"):
        WindowLabels(engine, SongRequest("Bahc", "chorale"), 2208, 1)
    with pytest.raises(PipelineError, match="Unknown genre"):
        WindowLabels(engine, SongRequest("bach", "polka"), 2208, 1)
    with pytest.raises(PipelineError, match="shorter than 600 s"):
        WindowLabels(engine, REQ, 601 * engine.sample_rate, 1)
    with pytest.raises(PipelineError, match="positive number of seconds"):
        make_drafts(engine, SongRequest("bach", "chorale", seconds=0), 1)


def test_settings_change_the_result(engine: Engine) -> None:
    hot = SongRequest("bach", "chorale", seconds=0.1, seed=11, settings=SamplingSettings(top_k=1))
    a = make_drafts(engine, hot, 2, decode=False).codes
    assert np.array_equal(a[0], a[1])  # top-k 1 is greedy: every row the same
