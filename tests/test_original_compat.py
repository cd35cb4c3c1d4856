"""Every model the original Jukebox code can write loads here with the original's numbers (issue 15).

Models are built with the original code (`jukebox-infer`), given random weights, saved the way the
original `save_checkpoint` does (`{'hps': Hyperparams, 'model': state_dict, 'step': ...}`, default
pickle protocol) and loaded through `load_model`. Checked: fp32 logits within 1e-4 of the logit
scale, the loss, equal VQ-VAE codes, and equal sampled tokens with equal noise (the original's
forward pass drives the same sampling loop as ours).

Cases: a lyric-prefix prior whose hps say `merged_decoder=True` (the original builds it unmerged);
hps holding a numpy scalar (the original `make_vqvae` stores an np.int64 `sample_length`); the
original README's own-model recipe (a 2-level VQ-VAE, priors without labels) and attention
orders 3, 4 and 5 (summary attention), which the original can train but not sample.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.model.checkpoints import CheckpointError, read_checkpoint
from engine.model.config import PriorConfig, VQVAEConfig
from engine.model.jukebox import load_model
from engine.sampling.noise import NoiseKey, pick_tokens
from engine.sampling.sample import Plan, SamplingSettings, run_plan
from tests.engine_reference import (
    SMALL_PRIORS,
    SMALL_VQVAE,
    build_reference_prior,
    cpu_reference,
    one_thread,
    randomize_,
    reference_preds,
)
from tests.test_engine_parity import _labels_y

B = 2

# The original README's own-model recipe at tiny sizes: `small_vqvae` (2 levels, 22 kHz), then
# `small_prior` (level 1, the top) and `small_upsampler` (level 0), trained with --labels=False.
SMALL_VQVAE_2 = dict(
    sr=22050,
    levels=2,
    downs_t=(3, 2),
    strides_t=(2, 2),
    emb_width=16,
    l_bins=64,
    l_mu=0.99,
    commit=0.02,
    spectral=0.0,
    multispectral=1.0,
    width=8,
    depth=2,
    m_conv=1.0,
    dilation_growth_rate=3,
    restore_vqvae="",
    sample_length=0,  # only seconds given: make_vqvae computes an np.int64 sample_length
    sample_length_in_seconds=1,
)
_TINY = dict(n_ctx=64, prior_width=32, heads=2, blocks=8, c_res=1, labels=False, restore_prior="")
SMALL_PRIOR_2 = dict(level=1, prior_depth=6, attn_order=2, init_scale=0.7, **_TINY)
SMALL_UPSAMPLER_2 = dict(
    level=0,
    prior_depth=6,
    attn_order=2,
    init_scale=0.7,
    cond_width=16,
    cond_depth=3,
    cond_dilation_growth_rate=3,
    cond_dilation_cycle=2,
    cond_c_res=1,
    **_TINY,
)
# Top priors with the attention orders that use summary attention (order 4 needs a spread).
SUMMARY_PRIORS = {
    3: dict(SMALL_PRIOR_2, attn_order=3, prior_depth=4),
    4: dict(SMALL_PRIOR_2, attn_order=4, prior_depth=4, spread=3),
    5: dict(SMALL_PRIOR_2, attn_order=5, prior_depth=8),
}
# Case 1: 1b_lyrics-style prefix prior whose hps say merged_decoder=True.
PREFIX_MERGED = dict(SMALL_PRIORS["prior_1b_lyrics"], merged_decoder=True)


def _quiet() -> contextlib.AbstractContextManager[Any]:
    return contextlib.redirect_stdout(io.StringIO())


def _hparams(d: dict[str, Any]) -> Any:
    from jukebox_infer.hparams import setup_hparams

    return setup_hparams("", dict(d))


def save_like_original(module: torch.nn.Module, hps: Any, path: Path) -> Path:
    """The original `save_checkpoint`: the Hyperparams object itself, default protocol."""
    torch.save({"hps": hps, "model": module.state_dict(), "step": 3}, path)
    return path


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Any:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def two_level(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-level model of the original's own-model recipe, in a folder of original files."""
    from jukebox_infer.make_models import make_vqvae

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("own_model")
    vq_hps = _hparams(SMALL_VQVAE_2)
    with _quiet():
        vq = make_vqvae(vq_hps, "cpu")
    assert isinstance(vq_hps.sample_length, np.integer)  # what makes case 2 happen
    randomize_(vq, seed=1)
    save_like_original(vq, vq_hps, folder / "vqvae.pth.tar")
    priors = {}
    for level, hps in ((1, SMALL_PRIOR_2), (0, SMALL_UPSAMPLER_2)):
        h = _hparams({**SMALL_VQVAE_2, "sample_length": int(vq_hps.sample_length), **hps})
        p = build_reference_prior(h, vq)
        randomize_(p, seed=10 + level)
        save_like_original(p, h, folder / f"prior_level_{level}.pth.tar")
        priors[level] = p
    return {"folder": folder, "vqvae": vq, "priors": priors, "sample_length": int(vq_hps.sample_length)}


class ReferencePrior:
    """The original's forward pass as a prior for `run_plan`: each token recomputes the whole
    window (padded with zeros; the model is causal) and reads the next position's logits over the
    music codes."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self.bins = int(ref.l_bins)
        self.n_ctx = int(ref.n_ctx)
        self.prefix = int(ref.n_tokens) if ref.single_enc_dec else 0
        self.n_vocab = int(ref.prior_bins[0]) if ref.single_enc_dec else 0

    def get_cond(self, labels_y: torch.Tensor | None, upper: torch.Tensor | None) -> Any:
        return labels_y, upper

    def new_cache(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any:
        return {}

    def _next(self, cache: dict[str, torch.Tensor], cond: Any) -> torch.Tensor:
        y, upper = cond
        z = cache["z"]
        t = z.shape[1]
        padded = torch.nn.functional.pad(z, (0, self.n_ctx - t))
        _, preds = reference_preds(self.ref, padded, None if upper is None else [upper], y)
        return preds[:, self.prefix + t, self.n_vocab :].float()

    def prefill(self, cache: Any, tokens: torch.Tensor, cond: Any) -> torch.Tensor:
        cache["z"] = tokens.long()
        return self._next(cache, cond)

    def decode_step(self, cache: Any, tokens: torch.Tensor, pos: int, cond: Any) -> torch.Tensor:
        cache["z"] = torch.cat([cache["z"], tokens.long()[:, None]], dim=1)
        return self._next(cache, cond)


def close_to_scale(got: torch.Tensor, want: torch.Tensor) -> None:
    """Within 1e-4 of the logit scale (the largest logit magnitude)."""
    scale = float(want.abs().max())
    assert scale > 1.0  # random weights big enough to make mistakes visible
    torch.testing.assert_close(got, want, atol=1e-4 * scale, rtol=0)


def _check_prior(ours: Any, ref: Any, z: torch.Tensor, upper: torch.Tensor | None, y: Any) -> None:
    """Our full forward, prefill and one-token steps against the original's forward."""
    ref_loss, want = reference_preds(ref, z, None if upper is None else [upper], y)
    if ref.single_enc_dec:
        want = want[:, ref.n_tokens :, ref.prior_bins[0] :]
    with torch.no_grad():
        cond = ours.get_cond(y, upper)
        close_to_scale(ours.logits(z, cond), want)
        torch.testing.assert_close(ours.loss(z, cond)[0], ref_loss, atol=1e-4, rtol=1e-4)
        for t0 in (0, 13):
            cache = ours.new_cache(z.shape[0], "cpu", torch.float32)
            steps = [ours.prefill(cache, z[:, :t0], cond)]
            for pos in range(t0, ours.n_ctx - 1):
                steps.append(ours.decode_step(cache, z[:, pos], pos, cond))
            close_to_scale(torch.stack(steps, dim=1), want[:, t0:])


# ---------------------------------------------------------------------------------------------
# Case 1: a lyric-prefix prior whose hps say merged_decoder=True


@pytest.fixture(scope="module")
def prefix_merged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.engine_reference import build_reference_vqvae, save_original

    folder = tmp_path_factory.mktemp("prefix_merged")
    vq = build_reference_vqvae(SMALL_VQVAE, 64 * 128)
    randomize_(vq, seed=1)
    save_original(vq, folder / "vqvae.pth.tar", hps=SMALL_VQVAE)
    for level, kind in ((0, "upsampler_level_0"), (1, "upsampler_level_1")):
        p = build_reference_prior(SMALL_PRIORS[kind], vq)
        save_original(p, folder / f"prior_level_{level}.pth.tar", hps=SMALL_PRIORS[kind])
    top = build_reference_prior(PREFIX_MERGED, vq)
    randomize_(top, seed=5)
    save_original(top, folder / "prior_level_2.pth.tar", hps=PREFIX_MERGED)
    return {"folder": folder, "top": top}


def test_prefix_prior_with_merged_decoder_in_its_hps_is_built_unmerged_like_the_original(
    prefix_merged: dict[str, Any],
) -> None:
    assert PriorConfig.from_hparams(PREFIX_MERGED).merged_decoder is False
    model = load_model(prefix_merged["folder"], device="cpu", levels=[2])
    prior, ref = model.prior(2), prefix_merged["top"]
    g = torch.Generator().manual_seed(2)
    z = torch.randint(0, 64, (B, prior.n_ctx), generator=g)
    y = _labels_y("prior_1b_lyrics", prior, offset=prior.sample_length)
    _check_prior(prior, ref, z, None, y)

    # Equal tokens with equal noise, sampled by our loop from our prior and from the original's.
    plan = Plan(
        levels=(2,),
        totals=(0, 0, 64),
        n_ctx=(64, 64, 64),
        downsamples=(4, 4, 1),
        n_samples=B,
        key=NoiseKey(11),
        settings=SamplingSettings(temperatures=(1.0, 1.0, 1.0)),
    )
    start = [np.zeros((B, 0), dtype=np.int64)] * 3
    dev = torch.device("cpu")
    with cpu_reference():
        want = run_plan(plan, lambda lv: ReferencePrior(ref), lambda lv, w: y, start, device=dev)
    got = run_plan(plan, model.prior, lambda lv, w: y, start, device=dev)
    assert np.array_equal(got[2], want[2])
    assert len(np.unique(got[2])) > 3  # not one repeated token


def test_prefix_models_sample_music_codes_only_at_music_positions(prefix_merged: dict[str, Any]) -> None:
    """By design (docs/PARITY.md): at a music position the original samples over characters AND
    music codes and turns a character into code 0 (`prior_postprocess` clamps); the engine samples
    over the music codes only. Where the original would pick a music code both pick the same."""
    model = load_model(prefix_merged["folder"], device="cpu", levels=[2])
    prior, ref = model.prior(2), prefix_merged["top"]
    n_vocab, n_tokens = ref.prior_bins[0], ref.n_tokens
    g = torch.Generator().manual_seed(4)
    z = torch.randint(0, 64, (B, prior.n_ctx), generator=g)
    y = _labels_y("prior_1b_lyrics", prior, offset=0)
    _, full = reference_preds(ref, z, None, y)
    full = full[:, n_tokens + 5].float()  # a music position, over characters + music codes
    assert full.shape[-1] == n_vocab + 64
    with torch.no_grad():
        ours = prior.logits(z, prior.get_cond(y, None))[:, 5].float()
    assert ours.shape[-1] == 64  # the engine's vocabulary at music positions: music codes only

    def original_pick(noise: torch.Tensor) -> torch.Tensor:
        return (torch.argmax(full + noise, dim=-1) - n_vocab).clamp(min=0)

    noise = torch.zeros(B, n_vocab + 64)
    noise[:, n_vocab:] = 1e4 * torch.nn.functional.one_hot(torch.tensor([7, 30]), 64)
    assert torch.equal(original_pick(noise), torch.tensor([7, 30]))  # a music code: the same
    assert torch.equal(pick_tokens(ours, noise[:, n_vocab:], 1.0), torch.tensor([7, 30]))

    noise = torch.zeros(B, n_vocab + 64)
    noise[:, 3] = 1e4  # the original would pick a character here ...
    assert torch.equal(original_pick(noise), torch.zeros(B, dtype=torch.long))  # ... and write code 0
    picked = pick_tokens(ours, noise[:, n_vocab:], 1.0)
    assert torch.equal(picked, torch.argmax(ours, dim=-1))  # the engine picks the best music code
    assert bool((picked != 0).any())


# ---------------------------------------------------------------------------------------------
# Case 2: hps holding numpy scalars


def test_hps_with_numpy_scalars_load(two_level: dict[str, Any]) -> None:
    ckpt = read_checkpoint(two_level["folder"] / "vqvae.pth.tar")
    assert int(ckpt["hps"]["sample_length"]) == two_level["sample_length"]


def test_a_refused_object_says_so_and_does_not_blame_truncation(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth.tar"
    torch.save({"model": {"w": torch.zeros(2)}, "hps": {"hook": os.getcwd}}, path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    assert "getcwd" in msg and "not allowed" in msg
    assert "truncated" not in msg


# ---------------------------------------------------------------------------------------------
# Case 3: the original README's own model (2 levels) and attention orders 3, 4, 5


def test_two_level_model_loads_encodes_and_predicts_like_the_original(two_level: dict[str, Any]) -> None:
    model = load_model(two_level["folder"], device="cpu")
    assert model.config.vqvae.levels == 2 and len(model.config.priors) == 2
    assert [p is not None for p in model.priors] == [True, True]
    n = two_level["sample_length"]
    g = torch.Generator().manual_seed(3)
    audio = (torch.randn(B, n, generator=g) * 0.3).clamp(-1, 1)
    with torch.no_grad():
        want = two_level["vqvae"].encode(audio[:, :, None], start_level=0, end_level=2)
        got = model.vqvae.encode(audio, 0, 2)
        for a, b in zip(want, got, strict=True):
            assert torch.equal(a, b)
        decoded = model.vqvae.decode(got[1:], start_level=1)
        torch.testing.assert_close(
            decoded, two_level["vqvae"].decode(want[1:], start_level=1)[:, :, 0], atol=1e-5, rtol=1e-4
        )
    with cpu_reference():
        for level in (1, 0):
            z = torch.randint(0, 64, (B, 64), generator=g)
            upper = torch.randint(0, 64, (B, 16), generator=g) if level == 0 else None
            _check_prior(model.prior(level), two_level["priors"][level], z, upper, None)


def _two_level_plan(seed: int) -> Plan:
    return Plan(
        levels=(1, 0),
        totals=(128, 64),
        n_ctx=(64, 64),
        downsamples=(4, 1),
        n_samples=B,
        key=NoiseKey(seed),
        settings=SamplingSettings(temperatures=(0.99, 0.98), hop_fractions=(0.5, 0.5)),  # type: ignore[arg-type]
    )


def test_two_level_model_samples_and_continues_like_the_original(two_level: dict[str, Any]) -> None:
    model = load_model(two_level["folder"], device="cpu")
    refs = two_level["priors"]
    dev = torch.device("cpu")
    none = lambda lv, w: None  # noqa: E731 - no labels (the recipe's --labels=False)
    plan = _two_level_plan(seed=5)
    start = [np.zeros((B, 0), dtype=np.int64)] * 2
    with cpu_reference():
        want = run_plan(plan, lambda lv: ReferencePrior(refs[lv]), none, start, device=dev)
    got = run_plan(plan, model.prior, none, start, device=dev)
    assert [c.shape for c in got] == [(B, 128), (B, 64)]
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a, b)

    # Continue: the first 24 top tokens and 96 level-0 tokens are given (primed windows).
    primed = [got[0][:, :40], got[1][:, :24]]
    plan = _two_level_plan(seed=6)
    with cpu_reference():
        want = run_plan(plan, lambda lv: ReferencePrior(refs[lv]), none, primed, device=dev)
    cont = run_plan(plan, model.prior, none, primed, device=dev)
    for a, b, p in zip(cont, want, primed, strict=True):
        assert np.array_equal(a, b)
        assert np.array_equal(a[:, : p.shape[1]], p)


def test_two_level_model_fine_tunes_with_the_training_command(
    two_level: dict[str, Any], tmp_path: Path
) -> None:
    """`jukebot train prior|upsampler --config FOLDER --init-from FOLDER` on the original's files."""
    from engine.training.errors import TrainError
    from engine.training.train import train
    from tests.test_train import make_folder

    folder = two_level["folder"]
    data = make_folder(tmp_path / "data", n=3, seconds=1.0)
    out = tmp_path / "tuned"
    common: dict[str, Any] = dict(
        steps=2, batch_size=2, progress=False, val_every=0, init_from=folder, vqvae=folder / "vqvae.pth.tar"
    )
    for kind, level, part in (("prior", None, "prior_level_1"), ("upsampler", None, "prior_level_0")):
        s = train(kind, folder, data, out, level=level, **common)
        assert s.part == part and s.step == 2 and s.loss is not None and np.isfinite(s.loss)
    with pytest.raises(TrainError, match=r"an upsampler is level 0, not 1"):
        train("upsampler", folder, data, out, level=1, **common)
    shutil.copy(folder / "vqvae.pth.tar", out / "vqvae.pth.tar")
    tuned = load_model(out, device="cpu")
    assert tuned.config.vqvae.levels == 2
    before = load_model(folder, device="cpu")
    for level in (0, 1):  # the weights moved from where they started
        a, b = tuned.prior(level).state_dict(), before.prior(level).state_dict()
        assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("order", sorted(SUMMARY_PRIORS))
def test_summary_attention_orders_match_the_original(order: int, two_level: dict[str, Any]) -> None:
    hps = _hparams({**SMALL_VQVAE_2, "sample_length": two_level["sample_length"], **SUMMARY_PRIORS[order]})
    ref = build_reference_prior(hps, two_level["vqvae"])
    randomize_(ref, seed=20 + order)
    vq_cfg = VQVAEConfig.from_hparams(SMALL_VQVAE_2)
    from engine.model.checkpoints import load_into
    from engine.model.prior import JukeboxPrior

    path = save_like_original(ref, hps, two_level["folder"].parent / f"order_{order}.pth.tar")
    ours = JukeboxPrior(PriorConfig.from_hparams(hps, l_bins=64, levels=2), vq_cfg)
    load_into(ours, path, f"attn_order {order} prior")
    ours.eval()
    g = torch.Generator().manual_seed(order)
    z = torch.randint(0, 64, (B, 64), generator=g)
    with cpu_reference():
        _check_prior(ours, ref, z, None, None)
    plan = Plan((1,), (0, 64), (64, 64), (4, 1), B, NoiseKey(order), SamplingSettings((1.0, 1.0)))  # type: ignore[arg-type]
    start = [np.zeros((B, 0), dtype=np.int64)] * 2
    dev = torch.device("cpu")
    with cpu_reference():
        want = run_plan(plan, lambda lv: ReferencePrior(ref), lambda lv, w: None, start, device=dev)
    got = run_plan(plan, lambda lv: ours, lambda lv, w: None, start, device=dev)
    assert np.array_equal(got[1], want[1])


def test_two_level_model_makes_a_song_and_continues_it_through_the_song_runner(
    two_level: dict[str, Any],
) -> None:
    """Drafts at the top level (1), upsampling of the levels below, a continuation of the clip."""
    from engine.sampling.pipeline import (
        Engine,
        Prompt,
        SongRequest,
        codes_to_npz,
        continue_from,
        make_drafts,
        upsample,
    )

    engine = Engine(load_model(two_level["folder"], device="cpu"))
    assert engine.top_level == 1
    settings = engine.sampling_settings(temperature=0.9)
    assert settings.temperatures == (0.99, 0.9) and settings.hop_fractions == (0.5, 0.5)
    request = SongRequest("anyone", "anything", seconds=0.2, seed=3, settings=settings)
    drafts = make_drafts(engine, request, n=2)
    t_top = drafts.codes.shape[1]
    assert drafts.codes.shape == (2, t_top) and drafts.previews.shape == (2, t_top * 32)
    final = upsample(engine, request, drafts.codes[1], draft_index=1)
    assert [c.shape for c in final.codes] == [(1, t_top * 4), (1, t_top)]
    assert np.array_equal(final.codes[1][0], drafts.codes[1]) and final.audio.shape == (t_top * 32,)

    prompt = Prompt.from_clip_codes(engine, codes_to_npz(final.codes), seconds=0.05, source="clip")
    more = continue_from(
        engine, SongRequest("anyone", "anything", seconds=0.1, seed=4, settings=settings), 1, prompt
    )
    assert np.array_equal(more.codes[:, : prompt.top_tokens], prompt.codes[1])
    assert more.codes.shape[1] > prompt.top_tokens
