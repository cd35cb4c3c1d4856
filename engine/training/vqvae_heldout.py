"""How well a trained VQ-VAE reconstructs held-out audio: spectral convergence and SNR per level.

Each held-out clip (the `test` split of the labels) is encoded and decoded at one level alone, whole
(cut to a whole number of top-level tokens), in float32; the figures are means over clips:

- spectral convergence: ||S(x) - S(x^)|| / ||S(x)|| of the STFT magnitudes (the training log's
  `spectral_convergence_l0`, there on training crops; lower is better);
- SNR: 10 log10(sum x^2 / sum (x - x^)^2) in dB (the waveform; a codec that keeps the spectrum but
  not the phase scores low here, so spectral convergence is the figure the demo's targets use).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.model.checkpoints import read_checkpoint, state_dict_of
from engine.model.vqvae import VQVAE
from engine.training.clips import AudioClip, load_clips
from engine.training.errors import TrainError
from engine.training.files import load_config
from engine.training.losses import spectral_convergence


@torch.no_grad()
def reconstruction_scores(
    vqvae: VQVAE, clips: list[AudioClip], device: torch.device, *, max_seconds: float = 30.0
) -> list[dict[str, Any]]:
    """Per level: {level, spectral_convergence, snr_db} averaged over `clips` (each at most
    `max_seconds`, from its start)."""
    vqvae = vqvae.to(device).eval()
    top = vqvae.hop_lengths[-1]
    most = max(top, int(max_seconds * vqvae.sample_rate) // top * top)
    sc: list[list[float]] = [[] for _ in range(vqvae.levels)]
    snr: list[list[float]] = [[] for _ in range(vqvae.levels)]
    for clip in clips:
        n = min(most, len(clip.audio) // top * top)
        if n == 0:
            continue
        x = torch.from_numpy(np.ascontiguousarray(clip.audio[:n])).float().to(device)[None]
        for level in range(vqvae.levels):
            z = vqvae.encode(x, level, level + 1)
            x_hat = vqvae.decode(z, level, level + 1)
            sc[level].append(float(spectral_convergence(x, x_hat)))
            noise = float(((x - x_hat) ** 2).sum())
            snr[level].append(10 * math.log10(float((x**2).sum()) / max(noise, 1e-12)))
    return [
        {
            "level": level,
            "spectral_convergence": round(float(np.mean(sc[level])), 4) if sc[level] else None,
            "snr_db": round(float(np.mean(snr[level])), 2) if snr[level] else None,
        }
        for level in range(vqvae.levels)
    ]


def heldout_report(
    model_dir: str | Path,
    data_dir: str | Path,
    device: torch.device,
    *,
    max_seconds: float = 30.0,
    workers: int | None = None,
) -> dict[str, Any]:
    """The VQ-VAE of `model_dir` (model.json + vqvae.pth.tar) on the `test` split of `data_dir`
    (every clip where the labels have no test split, said in `split`)."""
    config = load_config(model_dir)
    ck = read_checkpoint(Path(model_dir) / "vqvae.pth.tar")
    vqvae = VQVAE(config.vqvae)
    vqvae.load_state_dict(state_dict_of(ck), strict=True)
    split = "test"
    try:
        clips, _ = load_clips(data_dir, config.sample_rate, progress=False, workers=workers, split="test")
    except TrainError:  # no usable test rows (the dataset refuses an empty split): score every clip
        split = "all"
        clips, _ = load_clips(data_dir, config.sample_rate, progress=False, workers=workers)
    t0 = time.monotonic()
    levels = reconstruction_scores(vqvae, clips, device, max_seconds=max_seconds)
    return {
        "step": ck.get("step"),
        "split": split,
        "clips": len(clips),
        "seconds_of_audio": round(
            sum(min(len(c.audio), max_seconds * config.sample_rate) for c in clips) / config.sample_rate, 1
        ),
        "levels": levels,
        "spectral_convergence_l0": levels[0]["spectral_convergence"],
        "measure_seconds": round(time.monotonic() - t0, 1),
    }
