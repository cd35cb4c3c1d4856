"""A whole Jukebox model: the VQ-VAE and a prior per level, and `load_model`.

    model = load_model("1b_lyrics", device="cuda", dtype=torch.bfloat16, levels=[2])
    model.priors[2]          # the top prior (index = level); None where not loaded
    model.load_level(0)      # later, to upsample; model.unload_level(2) frees the top prior

Sources: a released name (`5b`, `5b_lyrics`, `1b_lyrics`: OpenAI's files, fetched through
`engine.model.checkpoint_download`), `demo` (the shipped demo model), or a folder with `model.json` (our config)
and/or original-format files `vqvae.pth.tar`, `prior_level_{0,1,2}.pth.tar` (configs then come
from the `hps` the original training code stored in them). A folder may add `sampling.json`, its
recommended sampling temperatures per level (engine.model.config.SamplingDefaults; `model.sampling`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.model.checkpoint_download import fetch_released
from engine.model.checkpoints import CheckpointError, hparams_of, load_into, read_checkpoint
from engine.model.config import (
    PRESETS,
    ConfigError,
    ModelConfig,
    PriorConfig,
    SamplingDefaults,
    VQVAEConfig,
    resolve_model_dir,
    sampling_defaults,
)
from engine.model.manifests import verify_model_folder
from engine.model.prior import JukeboxPrior
from engine.model.vqvae import VQVAE

PARTS = ("vqvae", "prior_level_0", "prior_level_1", "prior_level_2")  # the released models' files


def parts_of(levels: int) -> tuple[str, ...]:
    """The files of a model with `levels` levels: the VQ-VAE and one prior per level."""
    return ("vqvae", *(f"prior_level_{i}" for i in range(levels)))


@dataclass
class ModelSource:
    """Where a model's weights come from: a file per part, or a function that fetches them, and
    the model's recommended sampling temperatures (a folder's sampling.json)."""

    config: ModelConfig
    files: dict[str, Path] = field(default_factory=dict)
    fetcher: Callable[[list[str]], dict[str, Path]] | None = None
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)

    def path(self, part: str) -> Path:
        if part not in self.files and self.fetcher is not None:
            self.files.update(self.fetcher([part]))
        if part not in self.files:
            raise CheckpointError(f"no weights file for {part} of model {self.config.name}")
        return self.files[part]


class JukeboxModel(nn.Module):
    def __init__(self, config: ModelConfig, levels: Iterable[int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.vqvae = VQVAE(config.vqvae)
        self._priors = nn.ModuleDict()
        for level in range(config.vqvae.levels) if levels is None else levels:
            self._priors[str(level)] = JukeboxPrior(config.priors[level], config.vqvae)
        self.source: ModelSource | None = None
        self.prior_dtype: torch.dtype = torch.float32

    @property
    def priors(self) -> list[JukeboxPrior | None]:
        """Priors by level (0 = finest, the last = top); None where a level is not loaded."""
        loaded = dict(self._priors.items())
        return [loaded.get(str(i)) for i in range(self.config.vqvae.levels)]  # type: ignore[misc]

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def sampling(self) -> SamplingDefaults:
        """The recommended sampling temperatures (the original's when the source has none)."""
        return self.source.sampling if self.source is not None else SamplingDefaults()

    @property
    def device(self) -> torch.device:
        return self.vqvae.bottleneck[0].k.device

    def prior(self, level: int) -> JukeboxPrior:
        p = self.priors[level]
        if p is None:
            raise RuntimeError(f"level {level} is not loaded; call load_level({level})")
        return p

    def load_level(self, level: int) -> JukeboxPrior:
        """Build and load the prior of `level` (from the recorded source) on the model's device."""
        if self.priors[level] is not None:
            return self.prior(level)
        if self.source is None:
            raise RuntimeError("this model has no weights source to load from")
        path = self.source.path(f"prior_level_{level}")
        with torch.device("meta"):  # no random init: the file's tensors become the parameters
            prior = JukeboxPrior(self.config.priors[level], self.config.vqvae)
        load_into(prior, path, f"level-{level} prior of {self.config.name}", assign=True)
        prior.prior.tie_weights()
        prior = prior.to(device=self.device, dtype=self.prior_dtype).eval().requires_grad_(False)
        self._priors[str(level)] = prior
        return prior

    def unload_level(self, level: int) -> None:
        """Drop a prior to free its memory (reload it with load_level)."""
        if str(level) in self._priors:
            del self._priors[str(level)]
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def _folder_source(folder: Path) -> ModelSource:
    verify_model_folder(folder)  # a folder `jukebot train` wrote: its files are still those it wrote
    sampling = sampling_defaults(folder)  # checked now: a broken sampling.json fails at load time

    def present(parts: tuple[str, ...]) -> dict[str, Path]:
        return {p: folder / f"{p}.pth.tar" for p in parts if (folder / f"{p}.pth.tar").exists()}

    if (folder / "model.json").exists():
        config = ModelConfig.load(folder / "model.json")
        return ModelSource(config, present(parts_of(config.vqvae.levels)), sampling=sampling)
    # Files written by the original training code carry their hparams; the VQ-VAE's say how many
    # levels (and so prior files) the model has.
    vq_file = folder / "vqvae.pth.tar"
    vq_hps = hparams_of(read_checkpoint(vq_file)) if vq_file.exists() else None
    n_levels = VQVAEConfig.from_hparams(vq_hps).levels if vq_hps is not None else 3
    parts = parts_of(n_levels)
    files = present(parts)
    missing = [p for p in parts if p not in files]
    if missing:
        raise CheckpointError(
            f"{folder}: no model.json, and these files are missing: "
            + ", ".join(f"{p}.pth.tar" for p in missing)
        )
    hps = {p: hparams_of(read_checkpoint(files[p])) for p in parts}
    without = [p for p, h in hps.items() if h is None]
    if without:
        raise CheckpointError(f"{folder}: no model.json, and {', '.join(without)} carry no hparams ('hps')")
    vq = VQVAEConfig.from_hparams(hps["vqvae"])  # type: ignore[arg-type]
    priors = tuple(
        PriorConfig.from_hparams(hps[f"prior_level_{i}"], l_bins=vq.l_bins, levels=vq.levels)  # type: ignore[arg-type]
        for i in range(vq.levels)
    )
    return ModelSource(ModelConfig(folder.name, vq, priors), files, sampling=sampling)


def model_source(name_or_path: str | Path, *, settings: Any = None, progress: bool = True) -> ModelSource:
    if isinstance(name_or_path, str) and name_or_path in PRESETS:
        name = name_or_path
        return ModelSource(
            PRESETS[name],
            fetcher=lambda parts: fetch_released(name, parts, settings=settings, progress=progress),
        )
    folder = resolve_model_dir(name_or_path)
    if not folder.is_dir():
        hint = " (the demo model is not installed in this build)" if str(name_or_path) == "demo" else ""
        raise ConfigError(
            f"unknown model {str(name_or_path)!r}{hint}: use one of {sorted(PRESETS)}, "
            f"'demo', or a model folder"
        )
    return _folder_source(folder)


def load_model(
    name_or_path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    levels: Iterable[int] | None = None,
    settings: Any = None,
    progress: bool = True,
) -> JukeboxModel:
    """Load a model for inference. `levels` picks which priors to load now (default all); the
    VQ-VAE is always loaded and kept in float32 (it is small); priors use `dtype`."""
    source = model_source(name_or_path, settings=settings, progress=progress)
    return load_from_source(source, device=device, dtype=dtype, levels=levels)


def load_from_source(
    source: ModelSource,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    levels: Iterable[int] | None = None,
) -> JukeboxModel:
    model = JukeboxModel(source.config, levels=[])
    model.source = source
    model.prior_dtype = dtype
    load_into(model.vqvae, source.path("vqvae"), f"VQ-VAE of {source.config.name}")
    model.vqvae.eval().requires_grad_(False).to(device)
    for level in range(source.config.vqvae.levels) if levels is None else levels:
        model.load_level(level)
    return model
