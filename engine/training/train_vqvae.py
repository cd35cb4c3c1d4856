"""One VQ-VAE training step, as OpenAI's `vqvae/vqvae.py` + `vqvae/bottleneck.py` train it.

Every level encodes the same audio with its own encoder, quantises with its own codebook and
decodes with its own decoder; the loss sums over levels:

    loss = sum_L [ lmix(x, x^_L) + multispectral * msl(x, x^_L) ] + commit * sum_L commit_L

The codebooks are not trained by gradients: each step moves every code towards the mean of the
encoder outputs assigned to it (an exponential moving average with `mu`), and a code that has
gone unused (EMA count below `threshold`) is restarted at a random encoder output of the batch.
The inference module (`engine.model.vqvae.BottleneckBlock`) holds only the codebook `k`, so the EMA
sums `k_sum`/`k_elem` live in `CodebookEMA`, which is saved with the training state (the model's
state-dict keys stay the original ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.model.vqvae import VQVAE, BottleneckBlock, Decoder, Encoder
from engine.training.losses import lmix_loss, multispectral_loss, spectral_convergence


@dataclass
class VQVAELossWeights:
    """The original `vqvae` hparams: l2 1.0 + linf 0.02, multispectral 1.0, commit 0.02, mu 0.99."""

    l2: float = 1.0
    linf: float = 0.02
    linf_k: int = 2048
    multispectral: float = 1.0
    commit: float = 0.02
    mu: float = 0.99
    threshold: float = 1.0


@dataclass
class CodebookEMA:
    """The EMA statistics of one level's codebook (the original's `k_sum`, `k_elem`, `init`)."""

    k_sum: Tensor | None = None
    k_elem: Tensor | None = None
    initialised: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {"k_sum": self.k_sum, "k_elem": self.k_elem, "initialised": self.initialised}

    @classmethod
    def from_state(cls, d: dict[str, Any], device: torch.device) -> CodebookEMA:
        k_sum, k_elem = d["k_sum"], d["k_elem"]
        return cls(
            None if k_sum is None else k_sum.to(device),
            None if k_elem is None else k_elem.to(device),
            bool(d["initialised"]),
        )


@dataclass
class VQVAETrainState:
    ema: list[CodebookEMA] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": [e.state_dict() for e in self.ema]}

    @classmethod
    def from_state(cls, d: dict[str, Any], device: torch.device) -> VQVAETrainState:
        return cls([CodebookEMA.from_state(e, device) for e in d["ema"]])


def _tile(x: Tensor, k_bins: int) -> Tensor:
    """Enough rows to pick k_bins random vectors from (the original `_tile`)."""
    d, ew = x.shape
    if d < k_bins:
        n_repeats = (k_bins + d - 1) // d
        std = 0.01 / math.sqrt(ew)
        x = x.repeat(n_repeats, 1)
        x = x + torch.randn_like(x) * std
    return x


@torch.no_grad()
def init_codebook(block: BottleneckBlock, ema: CodebookEMA, x: Tensor) -> None:
    """`init_k`: the codebook starts as random encoder outputs of the first batch."""
    y = _tile(x, block.l_bins)
    k_rand = y[torch.randperm(y.shape[0], device=y.device)][: block.l_bins]
    block.k.copy_(k_rand)
    ema.k_sum = k_rand.clone()
    ema.k_elem = torch.ones(block.l_bins, device=x.device)
    ema.initialised = True


@torch.no_grad()
def update_codebook(
    block: BottleneckBlock, ema: CodebookEMA, x: Tensor, codes: Tensor, mu: float, threshold: float
) -> dict[str, Tensor]:
    """`update_k`: EMA of the assigned vectors' sum and count; dead codes restart at random inputs."""
    assert ema.k_sum is not None and ema.k_elem is not None
    k_bins, emb_width = block.l_bins, block.emb_width
    onehot = torch.zeros(k_bins, x.shape[0], device=x.device)
    onehot.scatter_(0, codes.view(1, -1), 1)
    k_sum_batch = onehot @ x
    k_elem_batch = onehot.sum(dim=-1)
    y = _tile(x, k_bins)
    k_rand = y[torch.randperm(y.shape[0], device=y.device)][:k_bins]
    old_k = block.k.clone()
    ema.k_sum = mu * ema.k_sum + (1.0 - mu) * k_sum_batch
    ema.k_elem = mu * ema.k_elem + (1.0 - mu) * k_elem_batch
    usage = (ema.k_elem.view(k_bins, 1) >= threshold).float()
    block.k.copy_(
        usage * (ema.k_sum.view(k_bins, emb_width) / ema.k_elem.view(k_bins, 1)) + (1 - usage) * k_rand
    )
    prob = k_elem_batch / k_elem_batch.sum()
    return {
        "entropy": -(prob * torch.log(prob + 1e-8)).sum(),
        "used_curr": (k_elem_batch >= threshold).sum().float(),
        "usage": usage.sum(),
        "dk": torch.norm(block.k - old_k) / math.sqrt(old_k.numel()),
    }


def _quantise(block: BottleneckBlock, x: Tensor) -> tuple[Tensor, Tensor]:
    """x [M, C] -> (codes [M], squared distance of each to its code [M])."""
    k_w = block.k.float().t()
    distance = (x**2).sum(dim=-1, keepdim=True) - 2 * (x @ k_w) + (k_w**2).sum(dim=0, keepdim=True)
    min_distance, codes = distance.min(dim=-1)
    return codes, min_distance


def vqvae_loss(
    model: VQVAE,
    audio: Tensor,
    state: VQVAETrainState,
    bandwidth: dict[str, float],
    w: VQVAELossWeights,
    *,
    update: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of a batch of audio [B, T] (float in [-1, 1]); updates the codebooks when `update`.

    Runs under the caller's autocast; the bottleneck and the losses are computed in float32.
    Metrics stay on the device (reading them is a host sync)."""
    x_in = audio[:, None]
    levels = model.levels
    while len(state.ema) < levels:
        state.ema.append(CodebookEMA())
    target = audio.float()
    loss = torch.zeros((), device=audio.device)
    metrics: dict[str, Tensor] = {}
    commit_total = torch.zeros((), device=audio.device)
    for level in range(levels):
        h = cast(Encoder, model.encoders[level])(x_in).float()  # [B, C, T_L]
        n, c, t = h.shape
        flat = h.permute(0, 2, 1).reshape(-1, c)
        block, ema = model.bottleneck[level], state.ema[level]
        # Nearest codes and the EMA sums need float32: bf16 matmuls would pick other codes.
        with torch.autocast(audio.device.type, enabled=False):
            if update and not ema.initialised:
                init_codebook(block, ema, flat.detach())
            codes, fit = _quantise(block, flat.detach())
            if update:
                for k, v in update_codebook(block, ema, flat.detach(), codes, w.mu, w.threshold).items():
                    metrics[f"{k}_l{level}"] = v
            x_d = F.embedding(codes, block.k.float())
            commit = ((x_d.detach() - flat) ** 2).sum() / flat.numel()
        x_q = flat + (x_d - flat).detach()  # straight-through
        x_q = x_q.view(n, t, c).permute(0, 2, 1)
        x_hat = cast(Decoder, model.decoders[level])(x_q)[:, 0].float()
        recons = lmix_loss(target, x_hat, bandwidth["l2"], l2=w.l2, linf=w.linf, linf_k=w.linf_k)
        msl = multispectral_loss(target, x_hat, bandwidth["spec"])
        loss = loss + recons + w.multispectral * msl
        commit_total = commit_total + commit
        metrics[f"recons_l{level}"] = recons.detach()
        metrics[f"multispec_l{level}"] = msl.detach()
        metrics[f"fit_l{level}"] = fit.mean().detach()
        if level == 0:
            with torch.no_grad():
                metrics["spectral_convergence_l0"] = spectral_convergence(target, x_hat.detach())
    loss = loss + w.commit * commit_total
    metrics["commit"] = commit_total.detach()
    return loss, metrics
