"""Ready-made model configs: the released models (values from `jukebox/hparams.py`, see
shared/research/engine.md §1) and `tiny_config`, a small model of any lyrics kind for tests and the demo."""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.model.config_types import (
    ConditionerConfig,
    CustomLabels,
    LyricEncoderConfig,
    LyricsKind,
    ModelConfig,
    PriorConfig,
    VQVAEConfig,
)

VQVAE_5B = VQVAEConfig()

_UPSAMPLER = dict(
    n_ctx=8192,
    width=1920,
    depth=72,
    heads=1,
    attn_order=2,
    blocks=128,
    init_scale=0.4,
    labels_version="v2",
    y_bins=(120, 4111),
    t_bins=128,
    max_bow_genre_size=5,
    n_vocab=80,
)
UPSAMPLER_LEVEL_0 = PriorConfig(level=0, conditioner=ConditionerConfig(), **_UPSAMPLER)  # type: ignore[arg-type]
UPSAMPLER_LEVEL_1 = PriorConfig(
    level=1,
    conditioner=ConditionerConfig(res_scale=True),
    **_UPSAMPLER,  # type: ignore[arg-type]
)
PRIOR_5B = PriorConfig(
    level=2,
    n_ctx=8192,
    width=4800,
    depth=72,
    heads=8,
    attn_order=2,
    blocks=128,
    init_scale=0.1,
    min_duration=60.0,
    max_duration=600.0,
    merged_decoder=True,
    fp16_params=True,
    labels_version="v2",
    y_bins=(120, 4111),
    t_bins=128,
    max_bow_genre_size=5,
    n_vocab=80,
)
PRIOR_5B_LYRICS = dataclasses.replace(
    PRIOR_5B,
    depth=79,
    attn_order=10,
    min_duration=23.8,
    lyrics="separate",
    n_tokens=512,
    prime_loss_fraction=0.4,
    lyric_encoder=LyricEncoderConfig(),
    alignment_layer=68,
    alignment_head=2,
)
PRIOR_1B_LYRICS = PriorConfig(
    level=2,
    n_ctx=6144,
    width=2048,
    depth=72,
    heads=2,
    attn_order=12,
    blocks=64,
    init_scale=0.2,
    labels_version="v3",
    y_bins=(604, 7898),
    t_bins=64,
    max_bow_genre_size=1,
    n_vocab=79,
    min_duration=17.84,
    max_duration=600.0,
    lyrics="prefix",
    n_tokens=384,
    prime_loss_fraction=0.4,
    alignment_layer=63,
    alignment_head=0,
)

PRESETS: dict[str, ModelConfig] = {
    "5b": ModelConfig("5b", VQVAE_5B, (UPSAMPLER_LEVEL_0, UPSAMPLER_LEVEL_1, PRIOR_5B)),
    "5b_lyrics": ModelConfig("5b_lyrics", VQVAE_5B, (UPSAMPLER_LEVEL_0, UPSAMPLER_LEVEL_1, PRIOR_5B_LYRICS)),
    "1b_lyrics": ModelConfig("1b_lyrics", VQVAE_5B, (UPSAMPLER_LEVEL_0, UPSAMPLER_LEVEL_1, PRIOR_1B_LYRICS)),
}


def tiny_config(
    name: str = "tiny",
    *,
    sample_rate: int = 22050,
    lyrics: LyricsKind = "prefix",
    n_ctx: int = 64,
    width: int = 32,
    depth: int = 3,
    heads: int = 2,
    blocks: int = 8,
    custom_labels: CustomLabels | None = None,
) -> ModelConfig:
    """A small 3-level model of any lyrics kind, for tests and as a starting point for the demo."""
    labels = custom_labels or CustomLabels(artists=("unknown", "bach"), genres=("unknown", "chorale"))
    vq = VQVAEConfig(
        sample_rate=sample_rate,
        downs_t=(2, 1, 1),
        strides_t=(2, 2, 2),
        emb_width=16,
        l_bins=64,
        width=16,
        depth=2,
        multipliers=(1, 1, 1),
    )
    common: dict[str, Any] = dict(
        n_ctx=n_ctx,
        width=width,
        depth=depth,
        heads=heads,
        blocks=blocks,
        l_bins=vq.l_bins,
        labels_version="custom",
        y_bins=(len(labels.genres), len(labels.artists)),
        t_bins=16,
        max_bow_genre_size=1,
        n_vocab=len(labels.vocab) + 1,
    )
    cond = ConditionerConfig(width=16, depth=2, dilation_cycle=2)
    ups = [PriorConfig(level=i, attn_order=2, conditioner=cond, **common) for i in (0, 1)]
    top_kw: dict[str, Any] = dict(min_duration=0.0, max_duration=600.0, attn_order=2)
    if lyrics == "prefix":
        n_tokens = blocks * 2
        top_kw.update(lyrics="prefix", n_tokens=n_tokens, attn_order=12, prime_loss_fraction=0.4)
        top_kw["depth"] = max(depth, 16)  # attn_order 12 puts lyric attention at layer 15
        top_kw.update(alignment_layer=15, alignment_head=0)  # timed lyrics, as the released models
    elif lyrics == "separate":
        top_kw.update(
            lyrics="separate",
            n_tokens=16,
            attn_order=8,
            prime_loss_fraction=0.4,
            lyric_encoder=LyricEncoderConfig(width=16, depth=2, heads=1, blocks=4, init_scale=0.7),
        )
        top_kw["depth"] = max(depth, 10)
        top_kw.update(alignment_layer=9, alignment_head=0)  # the encoder-attending layer
    top = PriorConfig(level=2, **{**common, **top_kw})
    return ModelConfig(name, vq, (ups[0], ups[1], top), custom_labels=labels)
