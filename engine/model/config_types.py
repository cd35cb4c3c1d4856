"""The config dataclasses: the VQ-VAE, the priors (with their lyric encoder and conditioner), the
whole model, and their JSON form (model.json). Torch-free.

`from_hparams` reads the ORIGINAL hparam names (missing keys take the original's defaults,
engine/model/original_defaults.py), so checkpoints trained with the original code build the right
modules.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from engine.model.original_defaults import PRIOR_DEFAULTS, VQVAE_DEFAULTS

LabelVersion = Literal["v2", "v3", "custom"]
LyricsKind = Literal["none", "separate", "prefix"]


class ConfigError(ValueError):
    """A config that the model code cannot build."""


def _tuple(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


@dataclass(frozen=True)
class VQVAEConfig:
    """The hierarchical VQ-VAE: one encoder/decoder per level, hop lengths 8/32/128 when released."""

    sample_rate: int = 44100
    levels: int = 3
    downs_t: tuple[int, ...] = (3, 2, 2)
    strides_t: tuple[int, ...] = (2, 2, 2)
    emb_width: int = 64
    l_bins: int = 2048
    width: int = 32
    depth: int = 4
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = None
    multipliers: tuple[int, ...] = (2, 1, 1)
    reverse_decoder_dilation: bool = True

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ConfigError(f"a VQ-VAE needs at least one level, this config has {self.levels}")
        if not (len(self.downs_t) == len(self.strides_t) == len(self.multipliers) == self.levels):
            raise ConfigError("downs_t, strides_t and multipliers need one entry per level")

    @property
    def downsamples(self) -> tuple[int, ...]:
        return tuple(s**d for s, d in zip(self.strides_t, self.downs_t, strict=True))

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        """Raw audio samples per token at each level (cumulative downsampling)."""
        out, acc = [], 1
        for d in self.downsamples:
            acc *= d
            out.append(acc)
        return tuple(out)

    @classmethod
    def from_hparams(cls, hps: Mapping[str, Any]) -> VQVAEConfig:
        h = {**VQVAE_DEFAULTS, **hps}
        if not h["use_bottleneck"]:
            raise ConfigError("VQ-VAE without a bottleneck (use_bottleneck=False) is not supported")
        levels = int(h["levels"])
        mult = h["hvqvae_multipliers"]
        return cls(
            sample_rate=int(h["sr"]),
            levels=levels,
            downs_t=_tuple(h["downs_t"]),
            strides_t=_tuple(h["strides_t"]),
            emb_width=int(h["emb_width"]),
            l_bins=int(h["l_bins"]),
            width=int(h["width"]),
            depth=int(h["depth"]),
            m_conv=float(h["m_conv"]),
            dilation_growth_rate=int(h["dilation_growth_rate"]),
            dilation_cycle=None if h["dilation_cycle"] is None else int(h["dilation_cycle"]),
            multipliers=(1,) * levels if mult is None else _tuple(mult),
            reverse_decoder_dilation=bool(h["vqvae_reverse_decoder_dilation"]),
        )


@dataclass(frozen=True)
class LyricEncoderConfig:
    """The separate lyric encoder of 5b_lyrics (`prime_prior`): a small causal transformer."""

    width: int = 1280
    depth: int = 18
    heads: int = 4
    attn_order: int = 2
    blocks: int | None = 32
    spread: int | None = None
    init_scale: float = 0.7
    m_attn: float = 0.25
    m_mlp: float = 1.0
    res_scale: bool = False
    zero_out: bool = False


@dataclass(frozen=True)
class ConditionerConfig:
    """The upsampler conditioner: embeds the codes of the level above and upsamples them."""

    width: int = 1024
    depth: int = 16
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = 8
    zero_out: bool = False
    res_scale: bool = False
    checkpoint_res: bool = True  # the original's cond_c_res=1: Resnet1D keys use `.blocks.`


@dataclass(frozen=True)
class PriorConfig:
    """One level's prior: a factored-attention transformer over that level's codes.

    `n_ctx` counts music tokens per window; with a lyric prefix (1b_lyrics) the transformer sees
    `n_tokens + n_ctx` positions.
    """

    level: int
    n_ctx: int
    width: int
    depth: int
    heads: int
    attn_order: int
    blocks: int | None
    l_bins: int = 2048
    init_scale: float = 1.0
    m_attn: float = 0.25
    m_mlp: float = 1.0
    res_scale: bool = False
    zero_out: bool = False
    spread: int | None = None
    merged_decoder: bool = False
    fp16_params: bool = False
    # Labels (artist, genre, timing)
    labels: bool = True
    labels_version: LabelVersion = "v2"
    y_bins: tuple[int, int] = (120, 4111)  # (genres, artists)
    t_bins: int = 128
    max_bow_genre_size: int = 5
    min_duration: float | None = None  # seconds; timing signal only at the top level
    max_duration: float | None = None
    # Lyrics
    lyrics: LyricsKind = "none"
    n_tokens: int = 0
    n_vocab: int = 80
    prime_loss_fraction: float = 0.0
    lyric_encoder: LyricEncoderConfig | None = None
    # Upsampler conditioner (every level but the top)
    conditioner: ConditionerConfig | None = None
    alignment_layer: int | None = None
    alignment_head: int | None = None

    def __post_init__(self) -> None:
        if self.lyrics == "separate" and self.lyric_encoder is None:
            raise ConfigError("a separate lyric encoder needs lyric_encoder settings")
        if self.lyrics != "none" and self.n_tokens <= 0:
            raise ConfigError("a lyrics model needs n_tokens > 0")
        if self.lyrics == "prefix" and not self.labels:
            raise ConfigError("a lyric-prefix model needs labels")
        if self.blocks is not None and self.seq_len % self.blocks:
            raise ConfigError(f"sequence length {self.seq_len} is not a multiple of blocks={self.blocks}")
        if int(self.m_attn * self.width) % self.heads:
            raise ConfigError(
                f"attention width {int(self.m_attn * self.width)} does not split into {self.heads} heads"
            )

    @property
    def seq_len(self) -> int:
        """Transformer positions per window (lyric prefix + music)."""
        return self.n_ctx + (self.n_tokens if self.lyrics == "prefix" else 0)

    @property
    def bins(self) -> int:
        """Transformer vocabulary: music codes, plus the characters for a lyric-prefix model."""
        return self.l_bins + (self.n_vocab if self.lyrics == "prefix" else 0)

    @property
    def y_len(self) -> int:
        """Length of the label vector y: [total, offset, length, artist, *genres, *lyric tokens]."""
        return (4 + self.max_bow_genre_size + self.n_tokens) if self.labels else 0

    @classmethod
    def from_hparams(
        cls, hps: Mapping[str, Any], *, l_bins: int | None = None, levels: int | None = None
    ) -> PriorConfig:
        """Build from the original hparam names (`prior_width`, `single_enc_dec`, `cond_width`, ...).
        `levels` is the VQ-VAE's (the top prior is level `levels - 1`; 3 when not given). The hps'
        own `levels` is not used: the original builds a prior from its VQ-VAE's levels, and an hps
        set merged with the original DEFAULTS says 2 for a 3-level model."""
        h = {**PRIOR_DEFAULTS, **hps}
        n_levels = 3 if levels is None else int(levels)
        if h["pos_init"] or h["prime_pos_init"]:
            raise ConfigError("pos_init=True priors are not supported")
        if h["copy_input"]:
            raise ConfigError("copy_input=True priors are not supported")
        level = int(h["level"])
        use_tokens, n_tokens = bool(h["use_tokens"]), int(h["n_tokens"] or 0)
        lyrics: LyricsKind = "none"
        if h["single_enc_dec"]:
            lyrics = "prefix"
        elif use_tokens and n_tokens > 0:
            lyrics = "separate"
        enc = None
        if lyrics == "separate":
            enc = LyricEncoderConfig(
                width=int(h["prime_width"]),
                depth=int(h["prime_depth"]),
                heads=int(h["prime_heads"]),
                attn_order=int(h["prime_attn_order"]),
                blocks=None if h["prime_blocks"] is None else int(h["prime_blocks"]),
                spread=h["prime_spread"],
                init_scale=float(h["prime_init_scale"]),
                m_attn=float(h["prime_m_attn"]),
                m_mlp=float(h["prime_m_mlp"]),
                res_scale=bool(h["prime_res_scale"]),
                zero_out=bool(h["prime_zero_out"]),
            )
        labels = bool(h["labels"])
        y_bins = h["y_bins"]
        top = level == n_levels - 1
        cond = None
        if not top:
            cond = ConditionerConfig(
                width=int(h["cond_width"]),
                depth=int(h["cond_depth"]),
                m_conv=float(h["cond_m_conv"]),
                dilation_growth_rate=int(h["cond_dilation_growth_rate"]),
                dilation_cycle=None if h["cond_dilation_cycle"] is None else int(h["cond_dilation_cycle"]),
                zero_out=bool(h["cond_zero_out"]),
                res_scale=bool(h["cond_res_scale"]),
                checkpoint_res=bool(h["cond_c_res"]),
            )
        return cls(
            level=level,
            n_ctx=int(h["n_ctx"]),
            width=int(h["prior_width"]),
            depth=int(h["prior_depth"]),
            heads=int(h["heads"]),
            attn_order=int(h["attn_order"]),
            blocks=None if h["blocks"] is None else int(h["blocks"]),
            l_bins=int(l_bins if l_bins is not None else h["l_bins"]),
            init_scale=float(h["init_scale"]),
            m_attn=float(h["m_attn"]),
            m_mlp=float(h["m_mlp"]),
            res_scale=bool(h["res_scale"]),
            zero_out=bool(h["zero_out"]),
            spread=h["spread"],
            # The original's single_enc_dec branch never passes merged_decoder on: always unmerged.
            merged_decoder=bool(h["merged_decoder"]) and lyrics != "prefix",
            fp16_params=bool(h["fp16_params"]),
            labels=labels,
            labels_version="v3" if h["labels_v3"] else "v2",
            y_bins=(int(y_bins[0]), int(y_bins[1])) if labels else (0, 0),
            t_bins=int(h["t_bins"]),
            max_bow_genre_size=int(h["max_bow_genre_size"] or 0) if labels else 0,
            min_duration=None if h["min_duration"] is None else float(h["min_duration"]),
            max_duration=None if h["max_duration"] is None else float(h["max_duration"]),
            lyrics=lyrics,
            n_tokens=n_tokens,
            n_vocab=int(h["n_vocab"] or 0),
            prime_loss_fraction=float(h["prime_loss_fraction"]),
            lyric_encoder=enc,
            conditioner=cond,
            alignment_layer=h["alignment_layer"],
            alignment_head=h["alignment_head"],
        )


@dataclass(frozen=True)
class CustomLabels:
    """Artist/genre lists and character vocabulary of a custom (e.g. demo) model."""

    artists: tuple[str, ...]  # index = id
    genres: tuple[str, ...]
    vocab: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-'\"()[] \t\n"


@dataclass(frozen=True)
class ModelConfig:
    """A whole model: the VQ-VAE and one prior per level (index 0 = finest, the last = top; the
    released models have 3 levels, the original code trains any number)."""

    name: str
    vqvae: VQVAEConfig
    priors: tuple[PriorConfig, ...]
    custom_labels: CustomLabels | None = None

    def __post_init__(self) -> None:
        if len(self.priors) != self.vqvae.levels:
            raise ConfigError(f"{len(self.priors)} priors for a VQ-VAE of {self.vqvae.levels} levels")
        for level, p in enumerate(self.priors):
            if p.level != level:
                raise ConfigError(f"prior {level} says it is level {p.level}")
            if p.l_bins != self.vqvae.l_bins:
                raise ConfigError(f"prior {level} has {p.l_bins} bins, the VQ-VAE {self.vqvae.l_bins}")
            if (p.labels_version == "custom") != (self.custom_labels is not None) and p.labels:
                raise ConfigError("labels_version 'custom' needs custom_labels (and only then)")

    @property
    def sample_rate(self) -> int:
        return self.vqvae.sample_rate

    @property
    def top(self) -> PriorConfig:
        return self.priors[-1]

    def raw_to_tokens(self, level: int) -> int:
        """Raw audio samples per token at `level`."""
        return self.vqvae.hop_lengths[level]

    def window_samples(self, level: int) -> int:
        """Raw samples one window of `level` covers (the original's prior.sample_length)."""
        return self.priors[level].n_ctx * self.raw_to_tokens(level)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        return _build(cls, d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read a model.json; anything that is not a model config is a ConfigError naming the file."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
            if not isinstance(d, dict):
                raise ConfigError("not a JSON object")
            return cls.from_dict(d)
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # ConfigError is a ValueError
            why = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
            raise ConfigError(f"{path} is not a valid model config ({why})") from None


_NESTED: dict[str, Any] = {
    "vqvae": VQVAEConfig,
    "lyric_encoder": LyricEncoderConfig,
    "conditioner": ConditionerConfig,
    "custom_labels": CustomLabels,
}


def _build(cls: Any, d: Mapping[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from `dataclasses.asdict` output (lists -> tuples)."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k == "priors":
            v = tuple(_build(PriorConfig, p) for p in v)
        elif k in _NESTED and v is not None:
            v = _build(_NESTED[k], v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


def seconds_to_tokens(seconds: float, config: ModelConfig, level: int) -> int:
    """Whole tokens at `level` for `seconds` of audio (rounded down like the original)."""
    return math.floor(seconds * config.sample_rate) // config.raw_to_tokens(level)
