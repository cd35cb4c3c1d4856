"""Training losses of the Jukebox VQ-VAE, as in OpenAI's `vqvae/vqvae.py` and `utils/audio_utils.py`.

- Reconstruction `lmix`: l2 (weight 1.0) plus `linf` (weight 0.02: the mean of the `linf_k` largest
  squared errors of each example), both divided by the data's variance (`bandwidth['l2']`).
- Multispectral: the L2 norm of the difference of STFT magnitudes at three resolutions, averaged,
  divided by the mean STFT norm of the data (`bandwidth['spec']`).
- Spectral convergence (a metric): |S(x) - S(x^)| / |S(x)| at the default resolution.

The bandwidths are measured once from the training data (`measure_bandwidth`) and stored with the
run, so a resumed run uses the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class STFTSpec:
    n_fft: int
    hop_length: int
    window_size: int


# The original's defaults (hparams.py: multispec_loss_n_fft, _hop_length, _window_size).
MULTISPEC: tuple[STFTSpec, ...] = (
    STFTSpec(2048, 240, 1200),
    STFTSpec(1024, 120, 600),
    STFTSpec(512, 50, 240),
)
DEFAULT_STFT = STFTSpec(2048, 256, 6 * 256)  # DefaultSTFTValues (bandwidth, spectral convergence)


def spec(x: Tensor, s: STFTSpec) -> Tensor:
    """|STFT| of [N, T] audio -> [N, freq, frames], computed in float32."""
    window = torch.hann_window(s.window_size, device=x.device)
    z = torch.stft(
        x.float(), s.n_fft, s.hop_length, win_length=s.window_size, window=window, return_complex=True
    )
    return z.abs()


def _norm(x: Tensor) -> Tensor:
    return (x.reshape(x.shape[0], -1) ** 2).sum(dim=-1).sqrt()


def multispectral_loss(
    x: Tensor, x_hat: Tensor, bandwidth_spec: float, specs: Sequence[STFTSpec] = MULTISPEC
) -> Tensor:
    losses = torch.stack([_norm(spec(x, s) - spec(x_hat, s)) for s in specs])
    return losses.mean() / bandwidth_spec


def spectral_convergence(x: Tensor, x_hat: Tensor, epsilon: float = 2e-3) -> Tensor:
    s_in, s_out = spec(x, DEFAULT_STFT), spec(x_hat, DEFAULT_STFT)
    gt = _norm(s_in)
    residual = _norm(s_in - s_out)
    mask = (gt > epsilon).float()
    return (residual * mask / gt.clamp(min=epsilon)).mean()


def l2_loss(x: Tensor, x_hat: Tensor, bandwidth_l2: float) -> Tensor:
    return ((x_hat.float() - x.float()) ** 2).mean() / bandwidth_l2


def linf_loss(x: Tensor, x_hat: Tensor, bandwidth_l2: float, k: int) -> Tensor:
    residual = ((x_hat.float() - x.float()) ** 2).reshape(x.shape[0], -1)
    values, _ = torch.topk(residual, min(k, residual.shape[1]), dim=1)
    return values.mean() / bandwidth_l2


def lmix_loss(
    x: Tensor, x_hat: Tensor, bandwidth_l2: float, *, l2: float = 1.0, linf: float = 0.02, linf_k: int = 2048
) -> Tensor:
    loss = l2 * l2_loss(x, x_hat, bandwidth_l2)
    if linf:
        loss = loss + linf * linf_loss(x, x_hat, bandwidth_l2, linf_k)
    return loss


def measure_bandwidth(clips: Iterable[np.ndarray], max_samples: int) -> dict[str, float]:
    """The original `calculate_bandwidth`: data variance (l2), mean |x| (l1) and the mean STFT norm of
    a clip (spec), over at most `max_samples` samples of mono float audio."""
    l1 = total = total_sq = 0.0
    n_seen = 0
    spec_norms: list[float] = []
    for clip in clips:
        x = np.asarray(clip, dtype=np.float64)
        if x.size < DEFAULT_STFT.window_size:
            continue
        s = spec(torch.from_numpy(x[None]).float(), DEFAULT_STFT)
        spec_norms.append(float(_norm(s)[0]))
        l1 += float(np.abs(x).sum())
        total += float(x.sum())
        total_sq += float((x**2).sum())
        n_seen += x.size
        if n_seen >= max_samples:
            break
    if n_seen == 0:
        raise ValueError("no audio to measure the loss scales from")
    mean = total / n_seen
    return {
        "l2": max(total_sq / n_seen - mean**2, 1e-8),
        "l1": max(l1 / n_seen, 1e-8),
        "spec": max(float(np.mean(spec_norms)), 1e-8),
    }
