"""Parity with the original code at the RELEASED sizes, on a GPU, with random weights.

    python tests/gpu/parity_full.py [--kinds vqvae,upsampler_level_0,...] [--bf16] [--device cuda]

For every model kind the reference (`jukebox-infer`, the original numerics) is built with its own
constructors from the original hparam sets (`vqvae`, `upsampler_level_0/1`, `prior_5b`,
`prior_5b_lyrics`, `prior_1b_lyrics`), given random weights, and our modules take the same
tensors. Printed, one JSON line per kind: max |Δ| between the reference's logits (fp32, TF32 off)
and ours from the full forward, from a window prefill, and from token-by-token decode steps; with
`--bf16` also ours in bf16 against the fp32 reference. The VQ-VAE line gives the share of equal
codes per level and the max |Δ| of each level's decode. Needs ~40 GB of GPU memory (5b_lyrics).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.model.config import PRESETS, PriorConfig, VQVAEConfig
from engine.model.labels import Labeller, released_labels
from engine.model.prior import JukeboxPrior
from engine.model.vqvae import VQVAE
from tests.engine_reference import (
    LEVEL_OF,
    SMALL_PRIORS,
    SMALL_VQVAE,
    randomize_,
    reference_hparams,
    reference_preds,
)

MODEL_OF = {
    "upsampler_level_0": "5b",
    "upsampler_level_1": "5b",
    "prior_5b": "5b",
    "prior_5b_lyrics": "5b_lyrics",
    "prior_1b_lyrics": "1b_lyrics",
}
B = 2
DECODE_STEPS = 32


def _quiet() -> contextlib.AbstractContextManager[Any]:
    return contextlib.redirect_stdout(io.StringIO())


def _reference_vqvae(device: str, sample_length: int, small: bool) -> Any:
    from jukebox_infer.make_models import make_vqvae

    if small:
        hps = reference_hparams(None, {**SMALL_VQVAE, "sample_length": sample_length})
    else:
        hps = reference_hparams("vqvae", {"restore_vqvae": "", "sample_length": sample_length})
    with _quiet(), torch.device(device):
        return make_vqvae(hps, device), hps


def _labels(prior: JukeboxPrior) -> torch.Tensor:
    cfg = prior.config
    lab = Labeller(
        released_labels(cfg.labels_version), cfg.max_bow_genre_size, cfg.n_tokens, prior.sample_length
    )
    songs = [
        lab.encode(
            "The Beatles",
            "pop rock" if prior.config.labels_version == "v3" else "rock",
            "Here comes the sun\nlittle darling " * 40,
            strict=False,
        ),
        lab.encode("Frank Sinatra", "jazz", "Fly me to the moon", strict=False),
    ]
    total = 120 * 44100
    return torch.tensor([lab.window_y(s, total, 30 * 44100) for s in songs])


def _ours_sharing(ref: Any, cfg: PriorConfig, vq: VQVAEConfig, device: str) -> JukeboxPrior:
    """Our prior on the reference's tensors (fp16 Conv1D weights of 5b/5b_lyrics become fp32 copies)."""
    with torch.device("meta"):
        ours = JukeboxPrior(cfg, vq)
    sd = {k: (v.float() if v.dtype == torch.float16 else v) for k, v in ref.state_dict().items()}
    ours.load_state_dict(sd, strict=True, assign=True)
    ours.prior.tie_weights()
    return ours.to(device).eval()


def _max(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@torch.no_grad()
def prior_parity(kind: str, device: str, bf16: bool, small: bool = False) -> dict[str, Any]:
    from jukebox_infer.make_models import make_prior

    t0 = time.time()
    ref_vq, vq_hps = _reference_vqvae(device, 8192 if small else 1048576, small)
    vq_cfg = VQVAEConfig.from_hparams(vq_hps)
    hps = (
        reference_hparams(None, SMALL_PRIORS[kind])
        if small
        else reference_hparams(kind, {"restore_prior": ""})
    )
    with _quiet(), torch.device(device):
        ref = make_prior(hps, ref_vq, device)
    randomize_(ref, seed=LEVEL_OF[kind] + 1)
    cfg = PriorConfig.from_hparams(hps, l_bins=vq_cfg.l_bins)
    if not small:
        assert cfg == PRESETS[MODEL_OF[kind]].priors[LEVEL_OF[kind]]
    ours = _ours_sharing(ref, cfg, vq_cfg, device)

    g = torch.Generator(device=device).manual_seed(7)
    z = torch.randint(0, cfg.l_bins, (B, cfg.n_ctx), generator=g, device=device)
    upper = (
        None if ours.is_top else torch.randint(0, cfg.l_bins, (B, cfg.n_ctx // 4), generator=g, device=device)
    )
    y = _labels(ours).to(device)
    _, want = reference_preds(ref, z, [upper] if upper is not None else None, y)
    if cfg.lyrics == "prefix":
        want = want[:, cfg.n_tokens :, cfg.n_vocab :]
    out: dict[str, Any] = {"kind": kind, "ref_logit_abs_max": float(want.abs().max())}

    cond = ours.get_cond(y, upper)
    out["full_forward"] = _max(ours.logits(z, cond), want)
    t_pre = cfg.n_ctx - DECODE_STEPS - 1
    cache = ours.new_cache(B, device, torch.float32)
    steps = [ours.prefill(cache, z[:, :t_pre], cond)]
    out["prefill"] = _max(steps[0], want[:, t_pre])
    for pos in range(t_pre, cfg.n_ctx - 1):
        steps.append(ours.decode_step(cache, z[:, pos], pos, cond))
    out["decode_steps"] = _max(torch.stack(steps[1:], 1), want[:, t_pre + 1 :])
    cache = ours.new_cache(B, device, torch.float32)
    first = [ours.prefill(cache, z[:, :0], cond)] + [
        ours.decode_step(cache, z[:, p], p, cond) for p in range(8)
    ]
    out["decode_from_empty"] = _max(torch.stack(first, 1), want[:, :9])
    del cache

    if bf16:
        del ref
        half = ours.to(torch.bfloat16)
        cond = half.get_cond(y, upper)
        cache = half.new_cache(B, device, torch.bfloat16)
        steps = [half.prefill(cache, z[:, :t_pre], cond)]
        for pos in range(t_pre, cfg.n_ctx - 1):
            steps.append(half.decode_step(cache, z[:, pos], pos, cond))
        got = torch.stack(steps, 1)
        out["bf16_decode_max_abs"] = _max(got, want[:, t_pre:])
        out["bf16_decode_rel"] = out["bf16_decode_max_abs"] / out["ref_logit_abs_max"]
        out["bf16_argmax_agree"] = float((got.argmax(-1) == want[:, t_pre:].argmax(-1)).float().mean())
    out["seconds"] = round(time.time() - t0, 1)
    return out


@torch.no_grad()
def vqvae_parity(device: str, small: bool = False) -> dict[str, Any]:
    t0 = time.time()
    seconds = 4
    length = seconds * 44100 // 128 * 128
    ref, hps = _reference_vqvae(device, length, small)
    randomize_(ref, seed=1)
    cfg = VQVAEConfig.from_hparams(hps)
    with torch.device("meta"):
        ours = VQVAE(cfg)
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    ours = ours.to(device).eval()
    g = torch.Generator(device=device).manual_seed(3)
    audio = (0.3 * torch.randn(B, length, generator=g, device=device)).clamp(-1, 1)
    ref_zs = ref.encode(audio[:, :, None], start_level=0, end_level=3)
    zs = ours.encode(audio)
    out: dict[str, Any] = {
        "kind": "vqvae",
        "codes_equal": [float((a == b).float().mean()) for a, b in zip(ref_zs, zs, strict=True)],
    }
    out["decode_max_abs"] = [
        _max(ours.decode(ref_zs[lv:], lv), ref.decode(ref_zs[lv:], start_level=lv)[:, :, 0])
        for lv in range(3)
    ]
    out["seconds"] = round(time.time() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--kinds",
        default="vqvae,upsampler_level_0,upsampler_level_1,prior_1b_lyrics,prior_5b,prior_5b_lyrics",
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--small", action="store_true", help="the small CPU-test configs (checks this script)")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 parity: no TF32 on either side
    torch.backends.cudnn.allow_tf32 = False
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
                "torch": torch.__version__,
            }
        ),
        flush=True,
    )
    for kind in args.kinds.split(","):
        if kind == "vqvae":
            res = vqvae_parity(args.device, args.small)
        else:
            res = prior_parity(kind, args.device, args.bf16, args.small)
        if args.device.startswith("cuda"):
            res["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.empty_cache()
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
