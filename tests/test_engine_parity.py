"""Parity with the original Jukebox code (the `jukebox-infer` package keeps its numerics).

Small models of every kind are built with the reference's own constructors from hparams in the
original names, given random weights, saved in the original file format, loaded into ours through
`engine.model.checkpoints`, and compared: VQ-VAE codes equal and decodes close; prior logits of our full
forward AND of prefill + token-by-token decode_step match the reference's forward (fp32).
At the released sizes the key layout and shapes are compared on the `meta` device (no memory);
tests/gpu/parity_full.py compares numbers at those sizes on a GPU.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.model.checkpoints import load_into
from engine.model.config import PRESETS, ModelConfig, PriorConfig, VQVAEConfig
from engine.model.jukebox import load_model
from engine.model.labels import Labeller, released_labels
from engine.model.prior import JukeboxPrior
from engine.model.vqvae import VQVAE
from tests.engine_reference import (
    LEVEL_OF,
    SMALL_PRIORS,
    SMALL_VQVAE,
    build_reference_prior,
    build_reference_vqvae,
    cpu_reference,
    one_thread,
    randomize_,
    reference_hparams,
    reference_preds,
    save_original,
)

N_CTX_TOP = 64
SAMPLE_LENGTH = N_CTX_TOP * 128  # raw samples covered by one top-level window
B = 2


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Any:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Reference modules with random weights, and their files in the original format."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("original")
    vq = build_reference_vqvae(SMALL_VQVAE, SAMPLE_LENGTH)
    randomize_(vq, seed=1)
    # The VQ-VAE in the legacy (pre-zip) torch format the 2020 files use.
    files = {"vqvae": save_original(vq, folder / "vqvae.pth.tar", legacy=True, hps=SMALL_VQVAE)}
    priors = {}
    for i, (kind, hps) in enumerate(SMALL_PRIORS.items()):
        p = build_reference_prior(hps, vq)
        randomize_(p, seed=10 + i)
        priors[kind] = p
        # one with DataParallel's `module.` prefixes, all with the original's `hps`
        files[kind] = save_original(
            p, folder / f"{kind}.pth.tar", prefix=kind == "upsampler_level_0", hps=hps
        )
    return {"vqvae": vq, "priors": priors, "files": files, "folder": folder}


def _our_prior(kind: str, ref: dict[str, Any]) -> JukeboxPrior:
    vq_cfg = VQVAEConfig.from_hparams(SMALL_VQVAE)
    prior = JukeboxPrior(PriorConfig.from_hparams(SMALL_PRIORS[kind], l_bins=vq_cfg.l_bins), vq_cfg)
    load_into(prior, ref["files"][kind], kind)
    return prior.eval()


def _labels_y(kind: str, prior: JukeboxPrior, offset: int) -> torch.Tensor:
    cfg = prior.config
    labels = released_labels(cfg.labels_version)
    lab = Labeller(labels, cfg.max_bow_genre_size, cfg.n_tokens, prior.sample_length)
    songs = [
        lab.encode(
            "The Beatles",
            "rock" if cfg.labels_version == "v3" else "Hip Hop",
            "Here comes the sun, little darling\nit's been a long cold lonely winter " * 3,
        ),
        lab.encode(
            "Ludwig van Beethoven" if cfg.labels_version == "v3" else "Frank Sinatra",
            "jazz",
            "Fly me to the moon",
        ),
    ]
    total = 30 * 44100
    return torch.tensor([lab.window_y(s, total, offset) for s in songs])


def _inputs(
    kind: str, prior: JukeboxPrior, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n_ctx = prior.config.n_ctx
    z = torch.randint(0, prior.config.l_bins, (B, n_ctx), generator=g)
    upper = None
    if not prior.is_top:
        upper = torch.randint(0, prior.config.l_bins, (B, n_ctx // 4), generator=g)
    y = _labels_y(kind, prior, offset=3 * prior.sample_length // 2)
    return z, upper, y


def _reference_music_logits(
    kind: str, ref: dict[str, Any], z: torch.Tensor, upper: torch.Tensor | None, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    rp = ref["priors"][kind]
    loss, preds = reference_preds(rp, z, [upper] if upper is not None else None, y)
    hps = SMALL_PRIORS[kind]
    if hps.get("single_enc_dec"):
        preds = preds[:, hps["n_tokens"] :, hps["n_vocab"] :]  # music positions, music codes
    return loss, preds


def test_vqvae_encode_decode_match_reference(ref: dict[str, Any]) -> None:
    ours = VQVAE(VQVAEConfig.from_hparams(SMALL_VQVAE))
    load_into(ours, ref["files"]["vqvae"], "VQ-VAE")
    ours.eval()
    g = torch.Generator().manual_seed(3)
    audio = (torch.randn(B, SAMPLE_LENGTH, generator=g) * 0.3).clamp(-1, 1)
    with torch.no_grad():
        ref_zs = ref["vqvae"].encode(audio[:, :, None], start_level=0, end_level=3)
        zs = ours.encode(audio, 0, 3)
        assert [z.shape for z in zs] == [(B, SAMPLE_LENGTH // h) for h in (8, 32, 128)]
        for a, b in zip(ref_zs, zs, strict=True):
            assert torch.equal(a, b)
            assert len(torch.unique(b)) > 4  # several codes in use, so a wrong distance would show
        assert torch.equal(ours.encode(audio, 1, 3)[0], ref_zs[1])
        assert ours.encode(audio[:, :64], 0, 1)[0].shape == (B, 8)  # level 0 alone: 8 samples per code
        with pytest.raises(ValueError, match="positive multiple of 128"):
            ours.encode(audio[:, :1000])
        for level in range(3):
            want = ref["vqvae"].decode(ref_zs[level:], start_level=level)[:, :, 0]
            got = ours.decode(zs[level:], start_level=level)
            assert got.shape == (B, SAMPLE_LENGTH)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", list(SMALL_PRIORS))
def test_prior_logits_and_cached_decoding_match_reference(kind: str, ref: dict[str, Any]) -> None:
    prior = _our_prior(kind, ref)
    z, upper, y = _inputs(kind, prior, seed=LEVEL_OF[kind] + len(kind))
    ref_loss, want = _reference_music_logits(kind, ref, z, upper, y)
    assert want.shape == (B, prior.n_ctx, prior.config.l_bins)
    assert want.abs().max() > 1.0  # random weights big enough to make mistakes visible

    with torch.no_grad():
        cond = prior.get_cond(y, upper)
        close(prior.logits(z, cond), want)
        loss, _ = prior.loss(z, cond)
        close(loss, ref_loss)

        # A window's context in one pass, at block boundaries and between them ...
        for t0 in (0, 1, 9, 10, 11, 37, prior.n_ctx - 1):
            cache = prior.new_cache(B, "cpu", torch.float32)
            close(prior.prefill(cache, z[:, :t0], cond), want[:, t0])
        # ... then one token at a time.
        for t0 in (0, 13):
            cache = prior.new_cache(B, "cpu", torch.float32)
            steps = [prior.prefill(cache, z[:, :t0], cond)]
            for pos in range(t0, prior.n_ctx - 1):
                steps.append(prior.decode_step(cache, z[:, pos], pos, cond))
            close(torch.stack(steps, dim=1), want[:, t0:])


def test_labels_the_original_asserts_on_get_clear_errors(ref: dict[str, Any]) -> None:
    """Where the reference's RangeEmbedding/SimpleEmbedding asserts fail, we raise LabelError in
    words; where they pass, we accept the labels."""
    from engine.model.prior import LabelError

    kind = "prior_1b_lyrics"
    prior = _our_prior(kind, ref)
    z, _, good = _inputs(kind, prior, seed=1)
    sr, window = 44100, prior.sample_length

    def variant(**cols: int) -> torch.Tensor:
        y = good.clone()
        for col, v in cols.items():
            y[:, {"total": 0, "offset": 1, "artist": 3, "genre": 4}[col]] = v
        return y

    bad = {
        "songs from 1.00 s to 600 s long; the song length given is 0.50 s": variant(total=sr // 2),
        "the song length given is 700.00 s": variant(total=700 * sr),
        "lies outside 0 s to 600 s": variant(total=600 * sr - 50, offset=600 * sr - 100),
        "starts at or after the end of the song": variant(total=100 * sr, offset=100 * sr),
        "artist id 7898 is not one of this model's 7898 artists": variant(artist=7898),
        "genre id 604 is not one of this model's 604 genres": variant(genre=604),
    }
    for message, y in bad.items():
        with pytest.raises(AssertionError):
            reference_preds(ref["priors"][kind], z, None, y)
        with pytest.raises(LabelError, match=message):
            prior.get_cond(y, None)
    for fine in (variant(total=sr, offset=sr - window), variant(genre=-2)):  # shortest song; "no genre"
        reference_preds(ref["priors"][kind], z, None, fine)
        prior.get_cond(fine, None)


def test_load_model_from_files_of_the_original_training_code(ref: dict[str, Any], tmp_path: Path) -> None:
    """A folder of original-format files with their `hps` and no model.json loads as a model."""
    import shutil

    for part, kind in (
        ("vqvae", "vqvae"),
        ("prior_level_0", "upsampler_level_0"),
        ("prior_level_1", "upsampler_level_1"),
        ("prior_level_2", "prior_1b_lyrics"),
    ):
        shutil.copy(ref["files"][kind], tmp_path / f"{part}.pth.tar")
    model = load_model(tmp_path, device="cpu", dtype=torch.float32)
    assert model.config.top.lyrics == "prefix" and model.config.priors[1].conditioner is not None
    assert model.config.priors[1].conditioner.res_scale and not model.config.priors[0].conditioner.res_scale  # type: ignore[union-attr]
    prior = model.prior(0)
    z, upper, y = _inputs("upsampler_level_0", prior, seed=5)
    _, want = _reference_music_logits("upsampler_level_0", ref, z, upper, y)
    with torch.no_grad():
        close(prior.logits(z, prior.get_cond(y, upper)), want)


def test_attention_order_matches_reference() -> None:
    from jukebox_infer.transformer.transformer import Transformer as RefTransformer

    from engine.model.attention import layer_kinds

    for order in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12):
        with _quiet(), torch.device("meta"):
            t = RefTransformer(
                n_in=8,
                n_ctx=16,
                n_head=1,
                n_depth=80,
                attn_order=order,
                blocks=4,
                encoder_dims=4,
                prime_len=4,
            )
        assert layer_kinds(order, 80) == [m.attn.attn_func for m in t._attn_mods], order


def _quiet() -> contextlib.AbstractContextManager[Any]:
    return contextlib.redirect_stdout(io.StringIO())


@pytest.mark.parametrize(
    "name",
    ["vqvae", "upsampler_level_0", "upsampler_level_1", "prior_5b", "prior_5b_lyrics", "prior_1b_lyrics"],
)
def test_released_configs_match_original_hparams_and_key_layout(name: str) -> None:
    """Our presets equal the configs built from the original hparam sets, and at the released sizes
    our modules have exactly the original state-dict keys and shapes (built on `meta`)."""
    from jukebox_infer.make_models import make_prior, make_vqvae

    vq_hps = reference_hparams("vqvae", {"restore_vqvae": "", "sample_length": 1048576})
    assert VQVAEConfig.from_hparams(vq_hps) == PRESETS["5b"].vqvae
    with _quiet(), torch.device("meta"):
        ref_vq = make_vqvae(vq_hps, "meta")
        if name == "vqvae":
            ref_module: torch.nn.Module = ref_vq
            ours: torch.nn.Module = VQVAE(PRESETS["5b"].vqvae)
        else:
            hps = reference_hparams(name, {"restore_prior": ""})
            ref_module = make_prior(hps, ref_vq, "meta")
            cfg = PriorConfig.from_hparams(hps, l_bins=2048)
            model = {"prior_5b": "5b", "prior_5b_lyrics": "5b_lyrics"}.get(name, "1b_lyrics")
            assert cfg == PRESETS[model].priors[LEVEL_OF[name]]
            ours = JukeboxPrior(cfg, PRESETS[model].vqvae)
    want = {k: tuple(v.shape) for k, v in ref_module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want


def test_model_config_round_trips_through_json(tmp_path: Path) -> None:
    for cfg in PRESETS.values():
        cfg.save(tmp_path / "model.json")
        assert ModelConfig.load(tmp_path / "model.json") == cfg


def test_reference_patch_is_scoped() -> None:
    long = torch.zeros(2, dtype=torch.long)
    assert not isinstance(long, torch.cuda.LongTensor)  # type: ignore[attr-defined]
    with cpu_reference():
        assert isinstance(long, torch.cuda.LongTensor)  # type: ignore[attr-defined]
        assert not isinstance(long.float(), torch.cuda.LongTensor)  # type: ignore[attr-defined]
    assert not isinstance(long, torch.cuda.LongTensor)  # type: ignore[attr-defined]
