"""Reference models built with the original code (the `jukebox-infer` package), for parity checks.

Used by tests/test_engine_parity.py (small sizes, CPU) and tests/gpu/parity_full.py (released
sizes, GPU). The reference's own constructors (`make_vqvae`, `make_prior`) build every model from
hparams in the ORIGINAL names; our configs come from the same dicts via `from_hparams`.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

# hparams in the original names -----------------------------------------------------------------

SMALL_VQVAE = dict(
    sr=44100,
    levels=3,
    downs_t=(3, 2, 2),
    strides_t=(2, 2, 2),
    emb_width=16,
    l_bins=64,
    l_mu=0.99,
    commit=0.02,
    spectral=0.0,
    multispectral=1.0,
    hvqvae_multipliers=(2, 1, 1),
    width=8,
    depth=2,
    m_conv=1.0,
    dilation_growth_rate=3,
    restore_vqvae="",
)
_V2 = dict(labels=True, y_bins=(120, 4111), t_bins=128, max_bow_genre_size=5, n_vocab=80)
_V3 = dict(labels=True, labels_v3=True, y_bins=(604, 7898), t_bins=64, max_bow_genre_size=1, n_vocab=79)
_SMALL_UPSAMPLER = dict(
    n_ctx=64,
    prior_width=32,
    prior_depth=6,
    heads=2,
    attn_order=2,
    blocks=8,
    init_scale=0.4,
    c_res=1,
    cond_width=16,
    cond_depth=3,
    cond_dilation_growth_rate=3,
    cond_dilation_cycle=2,
    cond_c_res=1,
    use_tokens=False,
    prime_loss_fraction=0.0,
    fp16_params=False,
    restore_prior="",
    **_V2,
)
SMALL_PRIORS: dict[str, dict[str, Any]] = {
    # upsampler with conditioner (level 0), and level 1 with cond_res_scale like the released one
    "upsampler_level_0": dict(level=0, **_SMALL_UPSAMPLER),
    "upsampler_level_1": dict(level=1, cond_res_scale=True, **_SMALL_UPSAMPLER),
    # 5b-style top prior: timing labels, merged decoder, fp16 Conv1D weights
    "prior_5b": dict(
        level=2,
        n_ctx=64,
        prior_width=32,
        prior_depth=6,
        heads=2,
        attn_order=2,
        blocks=8,
        init_scale=0.1,
        c_res=1,
        min_duration=1.0,
        max_duration=600.0,
        use_tokens=False,
        n_tokens=0,
        prime_loss_fraction=0.0,
        merged_decoder=True,
        fp16_params=True,
        restore_prior="",
        **_V2,
    ),
    # 5b_lyrics-style: separate lyric encoder, cross-attention layers (attn_order 6: every 4th layer)
    "prior_5b_lyrics": dict(
        level=2,
        n_ctx=64,
        prior_width=32,
        prior_depth=8,
        heads=2,
        attn_order=6,
        blocks=8,
        init_scale=0.1,
        c_res=1,
        prime_width=16,
        prime_depth=3,
        prime_heads=2,
        prime_attn_order=2,
        prime_blocks=4,
        prime_init_scale=0.7,
        prime_c_res=1,
        min_duration=1.0,
        max_duration=600.0,
        use_tokens=True,
        n_tokens=32,
        prime_loss_fraction=0.4,
        merged_decoder=True,
        fp16_params=True,
        restore_prior="",
        alignment_layer=7,
        alignment_head=1,
        **_V2,
    ),
    # 1b_lyrics-style: lyric prefix in one sequence (merged vocabulary), attn_order 12 with its
    # prime layers (15, 31) and the dense layer 47; 16 + 64 = 80 positions, block_ctx 10
    "prior_1b_lyrics": dict(
        level=2,
        n_ctx=64,
        prior_width=32,
        prior_depth=48,
        heads=2,
        attn_order=12,
        blocks=8,
        init_scale=0.2,
        c_res=1,
        min_duration=1.0,
        max_duration=600.0,
        use_tokens=True,
        n_tokens=16,
        prime_loss_fraction=0.4,
        single_enc_dec=True,
        fp16_params=False,
        restore_prior="",
        alignment_layer=15,
        alignment_head=0,
        **_V3,
    ),
}
LEVEL_OF = {
    "upsampler_level_0": 0,
    "upsampler_level_1": 1,
    "prior_5b": 2,
    "prior_5b_lyrics": 2,
    "prior_1b_lyrics": 2,
}


class _AnyLongTensorMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, torch.Tensor) and obj.dtype == torch.long


class AnyLongTensor(metaclass=_AnyLongTensorMeta):
    """Stands in for `torch.cuda.LongTensor` in isinstance checks: any int64 tensor, any device."""


@contextlib.contextmanager
def cpu_reference() -> Iterator[None]:
    """The reference asserts `isinstance(x, torch.cuda.LongTensor)` in its forward passes, which
    fails for CPU tensors; for the duration of the block any int64 tensor passes that check. The
    installed package itself is not modified."""
    saved = getattr(torch.cuda, "LongTensor")  # noqa: B009
    setattr(torch.cuda, "LongTensor", AnyLongTensor)  # noqa: B010
    try:
        yield
    finally:
        setattr(torch.cuda, "LongTensor", saved)  # noqa: B010


def _quiet() -> contextlib.AbstractContextManager[Any]:
    return contextlib.redirect_stdout(io.StringIO())  # the reference prints a lot


def reference_hparams(base: str | None, overrides: dict[str, Any]) -> Any:
    from jukebox_infer.hparams import setup_hparams

    return setup_hparams(base or "", dict(overrides))


def build_reference_vqvae(hps: dict[str, Any], sample_length: int, device: str = "cpu") -> Any:
    from jukebox_infer.make_models import make_vqvae

    h = reference_hparams(None, {**hps, "sample_length": sample_length})
    with _quiet():
        return make_vqvae(h, device)


def build_reference_prior(hps: Any, vqvae: Any, device: str = "cpu") -> Any:
    from jukebox_infer.make_models import make_prior

    h = reference_hparams(None, dict(hps)) if isinstance(hps, dict) else hps
    with _quiet():
        return make_prior(h, vqvae, device)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> None:
    """Random weights large enough that attention patterns and masks matter (the original init
    zeroes many tensors, which would hide mistakes). Drawn on each tensor's own device."""
    gens: dict[torch.device, torch.Generator] = {}

    def randn(t: torch.Tensor) -> torch.Tensor:
        if t.device not in gens:
            gens[t.device] = torch.Generator(device=t.device).manual_seed(seed)
        return torch.randn(t.shape, generator=gens[t.device], device=t.device)

    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            continue
        if ".ln" in name or "_ln" in name or name.startswith("ln"):
            val = (1.0 if name.endswith("weight") else 0.0) + 0.1 * randn(t)
        elif name.endswith(".w") and t.dim() == 2:
            val = randn(t) / math.sqrt(t.shape[0])
        elif t.dim() == 3:  # conv kernels
            val = randn(t) / math.sqrt(t.shape[1] * t.shape[2])
        else:
            val = 0.3 * randn(t)
        t.copy_(val.to(t.dtype))


def save_original(
    module: nn.Module,
    path: Path,
    *,
    prefix: bool = False,
    legacy: bool = False,
    hps: dict[str, Any] | None = None,
) -> Path:
    """Write `{'model': state_dict}` the way the original `save_checkpoint` does."""
    sd = {("module." + k if prefix else k): v.detach().cpu() for k, v in module.state_dict().items()}
    ckpt: dict[str, Any] = {"model": sd, "step": 7}
    if hps is not None:
        ckpt["hps"] = dict(hps)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path


def reference_preds(
    ref_prior: Any, z: torch.Tensor, z_conds: list[torch.Tensor] | None, y: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits over the whole transformer sequence) from the reference's training forward
    (`SimplePrior.z_forward`, spelled out for separate-encoder priors: its prime loss calls
    `.view` on a non-contiguous slice of y, which only works for a batch of 1)."""
    rp = ref_prior
    with cpu_reference(), torch.no_grad():
        if rp.single_enc_dec:
            loss, metrics = rp.z_forward(z=z, z_conds=z_conds or [], y=y, fp16=False, get_preds=True)
            return loss, metrics["preds"]
        x_cond, y_cond, prime = rp.get_cond(z_conds or [], y)
        encoder_kv = rp.get_encoder_kv(prime, fp16=False)
        prime_loss = rp.get_prime_loss(encoder_kv, None if prime is None else prime.contiguous())
        gen_loss, preds = rp.prior(z, x_cond, y_cond, encoder_kv, fp16=False, get_preds=True)
        loss = (
            rp.prime_loss_fraction * prime_loss * rp.prime_loss_dims / rp.total_loss_dims
            + gen_loss * rp.gen_loss_dims / rp.total_loss_dims
        )
    return loss, preds


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: OpenMP threads only wait on each other."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
