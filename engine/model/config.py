"""Model configs as small dataclasses: the VQ-VAE, the three priors, the whole model. The one place
callers import them from (`engine.model.config`); they live in `config_types.py` (the dataclasses and
`from_hparams`), `original_defaults.py` (the original's hparam defaults), `config_presets.py` (released
models, `tiny_config`) and `sampling_defaults.py` (a model's recommended temperatures).

Torch-free on purpose: the bot reads configs (sample rate, label version, lengths) without torch.

Values of the released models come from OpenAI's `jukebox/hparams.py` (see
shared/research/engine.md §1). `from_hparams` reads the ORIGINAL hparam names, so checkpoints
trained with the original code (their `hps` dict) build the right modules.
"""

from __future__ import annotations

from pathlib import Path

from engine.model.config_presets import (
    PRESETS,
    PRIOR_1B_LYRICS,
    PRIOR_5B,
    PRIOR_5B_LYRICS,
    UPSAMPLER_LEVEL_0,
    UPSAMPLER_LEVEL_1,
    VQVAE_5B,
    tiny_config,
)
from engine.model.config_types import (
    ConditionerConfig,
    ConfigError,
    CustomLabels,
    LabelVersion,
    LyricEncoderConfig,
    LyricsKind,
    ModelConfig,
    PriorConfig,
    VQVAEConfig,
    seconds_to_tokens,
)
from engine.model.sampling_defaults import (
    ORIGINAL_TEMPERATURES,
    SAMPLING_FILE,
    SamplingDefaults,
    sampling_defaults,
)

DEMO_DIR = Path(__file__).parent / "data" / "demo"  # the shipped demo model (model.json + weights)


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """`demo` -> the shipped demo folder; anything else is a folder (or model.json) path."""
    if str(name_or_path) == "demo":
        return DEMO_DIR
    return Path(name_or_path).expanduser()


__all__ = [
    "DEMO_DIR",
    "ORIGINAL_TEMPERATURES",
    "PRESETS",
    "PRIOR_1B_LYRICS",
    "PRIOR_5B",
    "PRIOR_5B_LYRICS",
    "SAMPLING_FILE",
    "UPSAMPLER_LEVEL_0",
    "UPSAMPLER_LEVEL_1",
    "VQVAE_5B",
    "ConditionerConfig",
    "ConfigError",
    "CustomLabels",
    "LabelVersion",
    "LyricEncoderConfig",
    "LyricsKind",
    "ModelConfig",
    "PriorConfig",
    "SamplingDefaults",
    "VQVAEConfig",
    "resolve_model_dir",
    "sampling_defaults",
    "seconds_to_tokens",
    "tiny_config",
]
