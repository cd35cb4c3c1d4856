"""Helpers shared by the speed benchmarks (bench/step_speed.py, song_e2e.py, throughput.py, memory.py).

Random weights at the released sizes, built directly in their final dtype on the device (the way
`JukeboxModel.load_level` ends up: bf16 weights on the GPU, nothing else), the reference
(`jukebox-infer`, the original sampling loop) built with its own constructors, CUDA-event timing,
and JSON lines on stdout.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.model.config import PRESETS, ModelConfig, PriorConfig  # noqa: E402
from engine.model.labels import Labeller  # noqa: E402
from engine.model.prior import Cond, JukeboxPrior  # noqa: E402

REF_KIND = {
    2: {"1b_lyrics": "prior_1b_lyrics", "5b_lyrics": "prior_5b_lyrics", "5b": "prior_5b"},
    1: "upsampler_level_1",
    0: "upsampler_level_0",
}
SONG = ("The Beatles", "pop rock", "Here comes the sun, little darling\nit's all right " * 20)


def emit(**kw: Any) -> None:
    print(json.dumps(kw), flush=True)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of `fn()` including all device work it queued."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def peak_gib(device: torch.device) -> float:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else 0.0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@torch.no_grad()
def randomize(module: nn.Module, seed: int) -> None:
    """Random weights in place, drawn on each tensor's device in float32 and stored in its dtype.
    Scaled like a trained net (unit-ish activations), never zeros: the speed of a kernel must not
    depend on the data being trivial."""
    g: dict[torch.device, torch.Generator] = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if not t.is_floating_point():
            continue
        if t.device not in g:
            g[t.device] = torch.Generator(device=t.device).manual_seed(seed)
        r = torch.randn(t.shape, generator=g[t.device], device=t.device)
        if ".ln" in name or "_ln" in name or name.startswith("ln"):
            r = (1.0 if name.endswith("weight") else 0.0) + 0.05 * r
        elif name.endswith(".w") and t.dim() == 2:
            r = r / math.sqrt(t.shape[0])
        elif t.dim() == 3:
            r = r / math.sqrt(t.shape[1] * t.shape[2])
        else:
            r = 0.1 * r
        t.copy_(r.to(t.dtype))
        del r


def random_prior(
    config: ModelConfig, level: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> JukeboxPrior:
    """A released-size prior with random weights, allocated once in `dtype` on `device`."""
    with torch.device("meta"):
        prior = JukeboxPrior(config.priors[level], config.vqvae)
    prior = prior.to(dtype=dtype).to_empty(device=device)
    prior.prior.tie_weights()
    randomize(prior, seed + level)
    return prior.eval().requires_grad_(False)


def random_engine(
    model: str,
    device: torch.device | str,
    dtype: torch.dtype = torch.bfloat16,
    *,
    small: bool = False,
    seed: int = 0,
) -> Any:
    """A whole model set (`engine.sampling.pipeline.Engine`, every level resident) with random weights at
    the released sizes of `model` (`small`: the CPU-test sizes), priors in `dtype`, the VQ-VAE in
    float32, as `Engine.load` leaves them. The same seed gives the same weights in any process on
    the same kind of device, so jobs can move between workers (bench/scale_out.py)."""
    from engine.model.jukebox import JukeboxModel
    from engine.sampling.pipeline import Engine

    device = torch.device(device)
    config = config_of(model, small)
    m = JukeboxModel(config, levels=[])
    m.prior_dtype = dtype
    randomize(m.vqvae, seed)
    m.vqvae.to(device).eval().requires_grad_(False)
    for level in range(3):
        m._priors[str(level)] = random_prior(config, level, device, dtype, seed)
    return Engine(m, device=device, swap_levels=False, name=model)


def labels_y(
    config: ModelConfig,
    level: int,
    rows: int,
    sample_length: int,
    offset: int,
    song: tuple[str, str, str] = SONG,
) -> torch.Tensor:
    lab = Labeller.for_prior(config, level)
    s = lab.encode(
        song[0], song[1] if config.priors[level].labels_version == "v3" else "rock", song[2], strict=False
    )
    total = lab.label_total_length(sample_length)
    return torch.tensor([lab.window_y(s, total, offset)] * rows, dtype=torch.long)


def window_inputs(
    prior: JukeboxPrior, config: ModelConfig, rows: int, device: torch.device, seed: int = 0
) -> tuple[Cond, torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """A second window of a long song: the context a window re-prefills (n_ctx - hop tokens),
    its labels and (upsamplers) the codes of the level above. Returns (cond, context, y, upper,
    abs_start)."""
    pc: PriorConfig = prior.config
    level = pc.level
    hop = int(pc.n_ctx * (0.125 if level == 2 else 0.5))
    g = torch.Generator(device="cpu").manual_seed(seed)
    context = torch.randint(0, pc.l_bins, (rows, pc.n_ctx - hop), generator=g).to(device)
    hops = config.vqvae.hop_lengths
    sample_length = (hop + pc.n_ctx) * hops[level] * 4
    y = labels_y(config, level, rows, sample_length, hop * hops[level]).to(device)
    upper = None
    if level < 2:
        upper = torch.randint(0, pc.l_bins, (rows, pc.n_ctx // 4), generator=g).to(device)
    with torch.inference_mode():
        cond = prior.get_cond(y, upper)
    return cond, context, y, upper, hop


# --- the reference ----------------------------------------------------------------------------


def import_reference() -> Any:
    """Import jukebox_infer. Its package __init__ imports librosa and soundfile (audio_utils) for
    loading audio files, which no benchmark does: where they are missing (the GPU machine has no
    librosa), empty stand-in modules go into sys.modules first. Nothing the benchmarks call uses them."""
    for name in ("librosa", "soundfile"):
        try:
            __import__(name)
        except Exception:
            sys.modules[name] = types.ModuleType(name)
    import jukebox_infer

    return jukebox_infer


def _ref_kind(model: str, level: int) -> str:
    return REF_KIND[level][model] if level == 2 else REF_KIND[level]  # type: ignore[index,return-value]


def reference_prior(model: str, level: int, device: torch.device, small: bool = False) -> Any:
    """The original prior (`jukebox-infer`) at the released size, with the original init, on the
    GPU; as the original samples: fp16 activations (`fp16=True` at sampling), fp32 Conv1D weights
    for 1b_lyrics and the upsamplers, fp16 for 5b/5b_lyrics. `small`: the CPU-test sizes of
    tests/engine_reference.py (to check a benchmark script on a CPU)."""
    import contextlib
    import io

    import_reference()
    from jukebox_infer.hparams import setup_hparams
    from jukebox_infer.make_models import make_prior, make_vqvae

    kind = _ref_kind(model, level)
    if small:
        from tests.engine_reference import SMALL_PRIORS, SMALL_VQVAE

        vq_hps = setup_hparams("", {**SMALL_VQVAE, "sample_length": 8192})
        hps = setup_hparams("", dict(SMALL_PRIORS[kind]))
    else:
        vq_hps = setup_hparams("vqvae", {"restore_vqvae": "", "sample_length": 1048576})
        hps = setup_hparams(kind, {"restore_prior": ""})
    with contextlib.redirect_stdout(io.StringIO()), torch.device(device):
        vq = make_vqvae(vq_hps, str(device))
        prior = make_prior(hps, vq, str(device))
    del vq
    return prior


def config_of(model: str, small: bool = False) -> ModelConfig:
    """The released config, or (`small`) the same model kinds at the CPU-test sizes."""
    if not small:
        return PRESETS[model]
    from engine.model.config import VQVAEConfig
    from tests.engine_reference import SMALL_PRIORS, SMALL_VQVAE

    vq = VQVAEConfig.from_hparams(SMALL_VQVAE)
    top = {"1b_lyrics": "prior_1b_lyrics", "5b_lyrics": "prior_5b_lyrics", "5b": "prior_5b"}[model]
    priors = tuple(
        PriorConfig.from_hparams(SMALL_PRIORS[k], l_bins=vq.l_bins)
        for k in ("upsampler_level_0", "upsampler_level_1", top)
    )
    return ModelConfig(f"small-{model}", vq, priors)  # type: ignore[arg-type]


@contextlib.contextmanager
def cpu_reference_patch(device: torch.device) -> Iterator[None]:
    """On CPU the reference's `isinstance(x, torch.cuda.LongTensor)` asserts need the tests'
    stand-in (tests/engine_reference.cpu_reference); on the GPU nothing is patched."""
    if device.type == "cuda":
        yield
        return
    from tests.engine_reference import cpu_reference

    with cpu_reference():
        yield


__all__ = [
    "REF_KIND",
    "ROOT",
    "SONG",
    "config_of",
    "cpu_reference_patch",
    "device_name",
    "emit",
    "import_reference",
    "labels_y",
    "peak_gib",
    "random_engine",
    "random_prior",
    "randomize",
    "reference_prior",
    "reset_peak",
    "sync",
    "timed",
    "window_inputs",
]
