"""OpenAI's Jukebox checkpoint files, read and loaded strictly.

The original files are `{'model': state_dict, ...}` (maybe `hps`, `step`, `opt`), fp16 or
fp32 tensors, maybe with `module.` prefixes. They are read without running pickled code
(`weights_only`, or a whitelist unpickler for files that carry the original `Hyperparams`) and
loaded strictly; a file that does not fit raises `CheckpointError` naming the file and the shapes.
Fetching OpenAI's files is engine.model.checkpoint_download; the manifests that check a folder's
files are engine.model.manifests.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be fetched, read, or does not fit the model."""


class _Hyperparams(dict):
    """Stand-in for the original `jukebox.hparams.Hyperparams` (a dict with attribute access)."""


_SAFE = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("builtins", "slice"),
    # Pickle protocol 2 (torch.save's default) writes the bytes inside a numpy scalar as
    # `_codecs.encode(text, "latin1")`; the original's hps hold such scalars (torch allows it too).
    ("_codecs", "encode"),
}


class RefusedObject(pickle.UnpicklingError):
    """A checkpoint names a Python object that is not on the allow-list."""


class _WhitelistUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name == "Hyperparams" and module.endswith("hparams"):
            return _Hyperparams
        if (module, name) in _SAFE or (
            module == "torch"
            and (name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype))
        ):
            return super().find_class(module, name)
        raise RefusedObject(f"{module}.{name}")


_whitelist_pickle = types.ModuleType("jukebot_whitelist_pickle")
_whitelist_pickle.Unpickler = _WhitelistUnpickler  # type: ignore[attr-defined]
_whitelist_pickle.load = lambda f, **kw: _WhitelistUnpickler(f, **kw).load()  # type: ignore[attr-defined]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of an original-format file, without running arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Weights only load failed" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_whitelist_pickle)
    except CheckpointError:
        raise
    except RefusedObject as e:
        raise CheckpointError(
            f"{path}: not loaded: it holds {e}, which is not allowed in a checkpoint (only tensors, "
            "numbers, strings, containers and the original's hparams are read, never code)"
        ) from None
    except Exception as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: cannot read this checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"The file is {size} bytes; it may be truncated or not a PyTorch file. Delete it to download it again."
        ) from e
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        return dict(obj)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return {"model": dict(obj)}  # a bare state dict
    raise CheckpointError(f"{path}: not a Jukebox checkpoint (expected a dict with a 'model' state dict)")


def state_dict_of(ckpt: Mapping[str, Any]) -> dict[str, Tensor]:
    """The original `restore_model`: strip a leading `module.` from every key."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in ckpt["model"].items()}


def hparams_of(ckpt: Mapping[str, Any]) -> dict[str, Any] | None:
    hps = ckpt.get("hps")
    return dict(hps) if isinstance(hps, Mapping) else None


@dataclass
class Mismatch:
    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self, limit: int = 5) -> str:
        lines = []
        if self.shapes:
            lines.append(f"{len(self.shapes)} tensors have other shapes (expected vs found):")
            lines += [f"    {k}: expected {list(a)}, found {list(b)}" for k, a, b in self.shapes[:limit]]
        if self.missing:
            lines.append(
                f"{len(self.missing)} expected tensors are missing: " + ", ".join(self.missing[:limit])
            )
        if self.unexpected:
            lines.append(
                f"{len(self.unexpected)} tensors are not part of this model: "
                + ", ".join(self.unexpected[:limit])
            )
        return "\n".join("  " + line for line in lines)


def compare(module: nn.Module, sd: Mapping[str, Tensor]) -> Mismatch:
    want = module.state_dict()
    return Mismatch(
        missing=[k for k in want if k not in sd],
        unexpected=[k for k in sd if k not in want],
        shapes=[
            (k, tuple(v.shape), tuple(sd[k].shape))
            for k, v in want.items()
            if k in sd and tuple(v.shape) != tuple(sd[k].shape)
        ],
    )


def load_into(
    module: nn.Module, path: str | Path, what: str = "model", *, assign: bool = False
) -> dict[str, Any]:
    """Strictly load an original-format file into `module`; returns the checkpoint dict.
    `assign=True` takes the file's tensors as the parameters (for a module built on `meta`)."""
    ckpt = read_checkpoint(path)
    sd = state_dict_of(ckpt)
    bad = compare(module, sd)
    if bad:
        hint = ""
        if any(k.startswith(("priors.", "vqvae.")) for k in sd):
            hint = "\n  It looks like a Hugging Face transformers file; use OpenAI's original files."
        raise CheckpointError(f"{path}: this checkpoint does not fit the {what}:\n{bad.describe()}{hint}")
    module.load_state_dict(sd, strict=True, assign=assign)
    return ckpt
