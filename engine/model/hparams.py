"""Our configs as the ORIGINAL hparam names, for the `hps` stored in checkpoints we write.

The inverse of `VQVAEConfig.from_hparams` / `PriorConfig.from_hparams`, so a folder of files we
trained loads through `engine.model.jukebox.load_model` with or without `model.json`, and the original
code's `make_vqvae` / `make_prior` build the same modules from the stored `hps`. Prior `hps` hold
the VQ-VAE's hparams too, as the original's merged `Hyperparams` do. Everything is a plain JSON
type so `torch.load(weights_only=True)` reads it. Torch-free.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.model.config import ModelConfig, PriorConfig, VQVAEConfig


def vqvae_hparams(c: VQVAEConfig) -> dict[str, Any]:
    return {
        "sr": c.sample_rate,
        "levels": c.levels,
        "downs_t": list(c.downs_t),
        "strides_t": list(c.strides_t),
        "emb_width": c.emb_width,
        "l_bins": c.l_bins,
        "width": c.width,
        "depth": c.depth,
        "m_conv": c.m_conv,
        "dilation_growth_rate": c.dilation_growth_rate,
        "dilation_cycle": c.dilation_cycle,
        "hvqvae_multipliers": list(c.multipliers),
        "vqvae_reverse_decoder_dilation": c.reverse_decoder_dilation,
        "use_bottleneck": True,
    }


def prior_hparams(p: PriorConfig, vq: VQVAEConfig) -> dict[str, Any]:
    h: dict[str, Any] = {
        **vqvae_hparams(vq),
        "level": p.level,
        "n_ctx": p.n_ctx,
        "prior_width": p.width,
        "prior_depth": p.depth,
        "heads": p.heads,
        "attn_order": p.attn_order,
        "blocks": p.blocks,
        "spread": p.spread,
        "init_scale": p.init_scale,
        "m_attn": p.m_attn,
        "m_mlp": p.m_mlp,
        "res_scale": p.res_scale,
        "zero_out": p.zero_out,
        "pos_init": False,
        "copy_input": False,
        "merged_decoder": p.merged_decoder,
        "fp16_params": p.fp16_params,
        "l_bins": p.l_bins,
        "labels": p.labels,
        "labels_v3": p.labels_version == "v3",
        "y_bins": list(p.y_bins),
        "t_bins": p.t_bins,
        "max_bow_genre_size": p.max_bow_genre_size,
        "min_duration": p.min_duration,
        "max_duration": p.max_duration,
        "use_tokens": p.lyrics != "none",
        "n_tokens": p.n_tokens,
        "n_vocab": p.n_vocab,
        "prime_loss_fraction": p.prime_loss_fraction,
        "single_enc_dec": p.lyrics == "prefix",
        "alignment_layer": p.alignment_layer,
        "alignment_head": p.alignment_head,
    }
    if p.lyric_encoder is not None:
        e = p.lyric_encoder
        h.update(
            {
                "prime_width": e.width,
                "prime_depth": e.depth,
                "prime_heads": e.heads,
                "prime_attn_order": e.attn_order,
                "prime_blocks": e.blocks,
                "prime_spread": e.spread,
                "prime_init_scale": e.init_scale,
                "prime_m_attn": e.m_attn,
                "prime_m_mlp": e.m_mlp,
                "prime_res_scale": e.res_scale,
                "prime_zero_out": e.zero_out,
                "prime_pos_init": False,
            }
        )
    if p.conditioner is not None:
        k = p.conditioner
        h.update(
            {
                "cond_width": k.width,
                "cond_depth": k.depth,
                "cond_m_conv": k.m_conv,
                "cond_dilation_growth_rate": k.dilation_growth_rate,
                "cond_dilation_cycle": k.dilation_cycle,
                "cond_zero_out": k.zero_out,
                "cond_res_scale": k.res_scale,
                "cond_c_res": int(k.checkpoint_res),
            }
        )
    return h


# The original VQ-VAE's loss hparams (hparams.py `vqvae`), recorded with the files we train.
VQVAE_TRAINING = {
    "l_mu": 0.99,
    "commit": 0.02,
    "spectral": 0.0,
    "multispectral": 1.0,
    "loss_fn": "lmix",
    "lmix_l2": 1.0,
    "lmix_linf": 0.02,
    "linf_k": 2048,
}


def part_hparams(config: ModelConfig, part: str) -> dict[str, Any]:
    """`hps` for `vqvae` or `prior_level_N`: only names the original code knows (its
    `setup_hparams` rejects others)."""
    if part == "vqvae":
        return {**vqvae_hparams(config.vqvae), **VQVAE_TRAINING}
    if part.startswith("prior_level_"):
        return prior_hparams(config.priors[int(part.rsplit("_", 1)[1])], config.vqvae)
    raise ValueError(f"unknown model part {part!r}")


def config_dict(config: ModelConfig) -> dict[str, Any]:
    """Our whole config (custom label lists included), stored beside `hps` as `jukebot_config`."""
    return dataclasses.asdict(config)
