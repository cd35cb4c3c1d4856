"""Training files: the config, atomic saves, checkpoints in the original format, the RNG state."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.model.config import ModelConfig, resolve_model_dir
from engine.model.hparams import config_dict, part_hparams
from engine.model.manifests import record_model_file
from engine.training.errors import TrainError

log = logging.getLogger("jukebot.train")


# ---------------------------------------------------------------------------------------------
# Files


def load_config(config_path: str | Path) -> ModelConfig:
    """A model.json, or a folder with one, or a folder of files the original code trained (their
    hps say the config)."""
    p = resolve_model_dir(config_path)
    if p.is_dir() and not (p / "model.json").exists() and (p / "vqvae.pth.tar").exists():
        from engine.model.checkpoints import CheckpointError
        from engine.model.jukebox import model_source

        try:
            return model_source(p).config
        except (CheckpointError, ValueError) as e:
            raise TrainError(
                f"{p} has no model.json and its original files do not say the config: {e}"
            ) from e
    if p.is_dir():
        p = p / "model.json"
    if not p.is_file():
        raise TrainError(f"no model config at {p}: give a model.json or a folder that holds one")
    try:
        return ModelConfig.load(p)
    except (ValueError, TypeError, KeyError) as e:
        raise TrainError(f"{p} is not a usable model config: {e}") from e


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a kill leaves the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def export_checkpoint(
    module: nn.Module,
    config: ModelConfig,
    part: str,
    step: int,
    path: Path,
    *,
    dtype: torch.dtype | None = None,
) -> None:
    """The original file format: {'hps': original hparams, 'model': state_dict, 'step': n}, plus our
    config as `jukebot_config` (the original reads only 'model'). `dtype=torch.float16` stores
    floating tensors in half precision (smaller files; loaders cast)."""
    sd = {}
    for k, v in module.state_dict().items():
        t = v.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        sd[k] = t.clone()
    atomic_save(
        {
            "hps": part_hparams(config, part),
            "model": sd,
            "step": int(step),
            "jukebot_config": config_dict(config),
        },
        path,
    )


def write_model_json(config: ModelConfig, out: Path) -> None:
    """out/model.json; an existing one must describe the same model."""
    path = out / "model.json"
    if path.exists():
        existing = ModelConfig.load(path)
        if existing.to_dict() != config.to_dict():
            raise TrainError(
                f"{out} already holds a different model (its model.json differs from the config given); "
                "use another --out folder, or the same config"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        config.save(path)
    record_model_file(out, path.name)  # the folder's manifest (engine.model.manifests)


# ---------------------------------------------------------------------------------------------
# RNG state


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "sampler": gen.get_state(),
    }


def set_rng_state(d: dict[str, Any], gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(d["torch"])
    if device.type == "cuda" and d.get("cuda") is not None:
        torch.cuda.set_rng_state(d["cuda"], device)
    gen.set_state(d["sampler"])
