"""The whole song: level-2 drafts, upsampling of a chosen draft, continuation, decoding.

    engine = Engine.load("1b_lyrics", device="cuda", dtype=torch.bfloat16, swap_levels=True)
    drafts = make_drafts(engine, request, n=3)                  # level 2, N rows in one batch
    final = upsample(engine, request, drafts.codes[k], draft_index=k)   # levels 1 and 0
    # continuation: the same two steps with `prompt=Prompt.from_clip_codes(...)` or `from_audio(...)`

Every step takes a `Checkpointer` (engine.sampling.resume) and `Hooks` (engine.sampling.sample): the worker passes
fenced job checkpoints, the command line its own files.

Temperatures: `engine.sampling_settings(temperature=..., upsample_temperature=...)` gives the
model's recommended ones (its sampling.json) where the person did not choose; a bare
`SongRequest` keeps the original's 0.99 / 0.99 / 0.98.

Lengths: `request.seconds` is the length of NEW music; with a prompt the song is the prompt
followed by the new part (as the original's primed/continue modes produce), so its length is
prompt + seconds. Audio is mono float32 at the model's rate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from engine.model.labels import Labeller, LabelsError, SongLabels
from engine.sampling.noise import NoiseKey
from engine.sampling.prompt import PipelineError, Prompt, codes_from_npz, codes_to_npz
from engine.sampling.resume import Checkpointer, request_digest, resumable_run
from engine.sampling.sample import Hooks, Plan, SamplingSettings, run_plan
from engine.sampling.windows import DEFAULT_HOP_FRACTIONS, Window, round_sample_length, tokens_per_level

if TYPE_CHECKING:
    from engine.model.config import ModelConfig, SamplingDefaults
    from engine.model.jukebox import JukeboxModel
    from engine.model.prior import JukeboxPrior

log = logging.getLogger("jukebot.pipeline")

__all__ = ["PipelineError", "Prompt", "codes_from_npz", "codes_to_npz"]  # (engine.sampling.prompt) and below

DRAFT_STREAM = 0  # noise stream of the level-2 drafts; an upsample of draft k uses 1 + k


# ---------------------------------------------------------------------------------------------
# What is asked


@dataclass(frozen=True)
class SongRequest:
    artist: str
    genre: str
    lyrics: str = ""
    seconds: float = 10.0  # new music (after the prompt, if any)
    seed: int = 0
    settings: SamplingSettings = field(default_factory=SamplingSettings)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["settings"] = self.settings.to_dict()
        return d


# ---------------------------------------------------------------------------------------------
# The model set


class Engine:
    """A loaded model and the device it runs on. With `swap_levels`, only the prior being sampled
    is kept in memory (consumer GPUs); otherwise every prior stays resident."""

    def __init__(
        self,
        model: JukeboxModel,
        *,
        device: torch.device | str = "cpu",
        swap_levels: bool = False,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.swap_levels = swap_levels
        self.name = name or model.config.name
        self.config: ModelConfig = model.config

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        swap_levels: bool = False,
        settings: Any = None,
        progress: bool = True,
    ) -> Engine:
        from engine.model.jukebox import load_model

        model = load_model(
            name_or_path,
            device=device,
            dtype=dtype,
            levels=[] if swap_levels else None,
            settings=settings,
            progress=progress,
        )
        return cls(model, device=device, swap_levels=swap_levels, name=str(name_or_path))

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        return tuple(self.config.vqvae.hop_lengths)

    @property
    def levels(self) -> int:
        return self.config.vqvae.levels

    @property
    def top_level(self) -> int:
        """The drafts' level: 2 for the released models, `levels - 1` for any model."""
        return self.levels - 1

    @property
    def dtype(self) -> torch.dtype:
        return self.model.prior_dtype

    @property
    def sampling(self) -> SamplingDefaults:
        """The model's recommended temperatures per level (its folder's sampling.json; the
        original's 0.99 / 0.99 / 0.98 for released models and folders without one)."""
        return self.model.sampling

    def sampling_settings(
        self, *, temperature: float | None = None, upsample_temperature: float | None = None, **kw: Any
    ) -> SamplingSettings:
        """Settings at the model's recommended temperatures, except where the person chose:
        `temperature` for the drafts (level 2), `upsample_temperature` for levels 1 and 0.
        Every caller that builds a SongRequest for a person (generate, the worker) goes through
        here, so a model's sampling.json applies everywhere."""
        t0, t1, t2 = self.sampling.resolve(temperature, upsample_temperature)
        if self.levels == 3:
            return SamplingSettings(temperatures=(t0, t1, t2), **kw)
        # Another number of levels (a model the original code trained): the top temperature at the
        # top, the upsamplers' below it; hop fractions by level as the original indexes them.
        temps = tuple(t2 if lv == self.top_level else (t0 if lv == 0 else t1) for lv in range(self.levels))
        hops = tuple(DEFAULT_HOP_FRACTIONS[lv] if lv < 3 else 0.5 for lv in range(self.levels))
        return SamplingSettings(temperatures=temps, **{"hop_fractions": hops, **kw})  # type: ignore[arg-type]

    def prior(self, level: int) -> JukeboxPrior:
        if self.swap_levels:
            for other in range(self.levels):
                if other != level and self.model.priors[other] is not None:
                    self.model.unload_level(other)
        p = self.model.priors[level]
        return p if p is not None else self.model.load_level(level)

    def release_priors(self) -> None:
        for level in range(self.levels):
            self.model.unload_level(level)

    def sample_length(self, seconds: float) -> int:
        return round_sample_length(seconds, self.sample_rate, self.hop_lengths[-1])

    def check_codes(self, codes: Sequence[np.ndarray], what: str) -> None:
        bins = self.config.vqvae.l_bins
        if len(codes) != self.levels:
            raise PipelineError(f"{what} holds {len(codes)} levels of codes; this model has {self.levels}")
        tops = codes[-1].shape[1]
        for lv, c in enumerate(codes):
            if c.ndim != 2 or c.shape[1] != tops * self.hop_lengths[-1] // self.hop_lengths[lv]:
                raise PipelineError(f"{what} does not fit this model (level {lv} has shape {c.shape})")
            if c.size and (c.min() < 0 or c.max() >= bins):
                raise PipelineError(f"{what} holds codes outside this model's {bins}-entry codebook")

    @torch.inference_mode()
    def encode(self, audio: np.ndarray) -> list[np.ndarray]:
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32))[None].to(self.device)
        zs = self.model.vqvae.encode(x)
        return [z.to("cpu").numpy().astype(np.int64) for z in zs]

    @torch.inference_mode()
    def decode(
        self, codes: np.ndarray | Tensor, level: int, *, chunk_tokens: int | None = None
    ) -> np.ndarray:
        """Audio [B, T * hop] from the codes [B, T] of one level (level 2/1: previews; 0: final).
        Decoded in chunks of `chunk_tokens` to bound memory (seams are a few ms of context apart)."""
        z = torch.as_tensor(np.asarray(codes) if isinstance(codes, np.ndarray) else codes).long()
        if z.ndim == 1:
            z = z[None]
        if chunk_tokens is None or z.shape[1] <= chunk_tokens:
            out = self.model.vqvae.decode([z.to(self.device)], start_level=level, end_level=level + 1)
            return out.float().clamp(-1, 1).to("cpu").numpy()
        parts = [self.decode(z[:, i : i + chunk_tokens], level) for i in range(0, z.shape[1], chunk_tokens)]
        return np.concatenate(parts, axis=1)

    def plan(
        self,
        levels: tuple[int, ...],
        n_samples: int,
        sample_length: int,
        key: NoiseKey,
        settings: SamplingSettings,
    ) -> Plan:
        hops = self.hop_lengths
        return Plan(
            levels=levels,
            totals=tuple(tokens_per_level(sample_length, hops)),
            n_ctx=tuple(p.n_ctx for p in self.config.priors),
            downsamples=(*(hops[i + 1] // hops[i] for i in range(len(hops) - 1)), 0),
            n_samples=n_samples,
            key=key,
            settings=settings,
        )


# ---------------------------------------------------------------------------------------------
# Labels of every window


class WindowLabels:
    """The y vector of each window of each level, for `n_rows` identical rows.

    Names are checked strictly at the top level (an unknown artist or genre is an error with
    suggestions); the upsamplers of the released models use the v2 lists, where a v3 name may be
    missing, and fall back to "unknown" like the original."""

    def __init__(self, engine: Engine, request: SongRequest, sample_length: int, n_rows: int) -> None:
        self.engine, self.n_rows = engine, n_rows
        cfg = engine.config
        top = cfg.top
        self.total_length = sample_length
        if top.labels:
            # The timing embedding only knows songs of at least min_duration; a shorter song is
            # sampled as the beginning of a song of that length.
            self.total_length = Labeller.for_prior(cfg, engine.top_level).label_total_length(sample_length)
        if (
            top.labels
            and top.max_duration is not None
            and sample_length >= top.max_duration * engine.sample_rate
        ):
            raise PipelineError(f"this model makes songs shorter than {top.max_duration:.0f} s")
        self.labellers: dict[int, Labeller] = {}
        self.songs: dict[int, SongLabels] = {}
        self.notes: list[str] = []
        top_level = engine.top_level
        for level in reversed(range(engine.levels)):
            if not cfg.priors[level].labels:
                continue
            lab = Labeller.for_prior(cfg, level)
            try:
                song = lab.encode(request.artist, request.genre, request.lyrics, strict=level == top_level)
            except LabelsError as e:
                raise PipelineError(str(e)) from e
            self.labellers[level], self.songs[level] = lab, song
            if level == top_level:
                self.notes = list(song.notes)

    def __call__(self, level: int, w: Window) -> Tensor | None:
        if level not in self.labellers:
            return None
        offset = w.label_offset(self.engine.hop_lengths[level])
        y = self.labellers[level].window_y(self.songs[level], self.total_length, offset)
        return torch.tensor([y] * self.n_rows, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# Steps


@dataclass
class Drafts:
    codes: np.ndarray  # top-level (2 for the released models) codes [n, T_top]
    previews: np.ndarray  # top-level decodes [n, samples]
    sample_length: int
    prompt_seconds: float
    notes: list[str]
    all_codes: list[np.ndarray]  # every level [n, T] (lower levels: the prompt part, if any)


@dataclass
class Final:
    codes: list[np.ndarray]  # every level [1, T]
    audio: np.ndarray  # level-0 decode [samples]
    sample_length: int


def _run(
    plan: Plan,
    engine: Engine,
    labels: WindowLabels,
    codes: list[np.ndarray],
    checkpointer: Checkpointer | None,
    extra: dict[str, Any],
    hooks: Hooks | None,
    checkpoint_every: float = 0.0,
    interleave: bool = False,
) -> list[np.ndarray]:
    if checkpointer is None:
        return run_plan(
            plan,
            engine.prior,
            labels,
            codes,
            device=engine.device,
            dtype=engine.dtype,
            hooks=hooks,
            interleave=interleave,
        )
    return resumable_run(
        plan,
        engine.prior,
        labels,
        codes,
        checkpointer,
        extra,
        device=engine.device,
        dtype=engine.dtype,
        hooks=hooks,
        every_seconds=checkpoint_every,
        interleave=interleave,
    )


def song_length(engine: Engine, request: SongRequest, prompt: Prompt | None) -> int:
    """Raw samples of the whole song: the prompt (whole top tokens) plus the new seconds."""
    if request.seconds <= 0:
        raise PipelineError("the song needs a positive number of seconds")
    start = 0 if prompt is None else prompt.top_tokens * engine.hop_lengths[-1]
    return start + engine.sample_length(request.seconds)


def make_drafts(
    engine: Engine,
    request: SongRequest,
    n: int,
    *,
    prompt: Prompt | None = None,
    checkpointer: Checkpointer | None = None,
    hooks: Hooks | None = None,
    decode: bool = True,
    checkpoint_every: float = 0.0,
) -> Drafts:
    """N level-2 drafts in one batch (primed on `prompt` when given) and their previews."""
    if n < 1:
        raise PipelineError("ask for at least one draft")
    sample_length = song_length(engine, request, prompt)
    labels = WindowLabels(engine, request, sample_length, n)
    top = engine.top_level
    plan = engine.plan((top,), n, sample_length, NoiseKey(request.seed, DRAFT_STREAM), request.settings)
    start = (
        prompt.tiled(n) if prompt is not None else [np.zeros((n, 0), dtype=np.int64) for _ in range(top + 1)]
    )
    extra = {
        "stage": "drafts",
        "request": request_digest(
            {"request": request.to_dict(), "n": n, "prompt": _prompt_digest(prompt), "model": engine.name}
        ),
    }
    codes = _run(plan, engine, labels, start, checkpointer, extra, hooks, checkpoint_every)
    previews = engine.decode(codes[top], top) if decode else np.zeros((n, 0), dtype=np.float32)
    return Drafts(
        codes[top],
        previews,
        sample_length,
        0.0 if prompt is None else prompt.seconds(engine),
        labels.notes,
        codes,
    )


def upsample(
    engine: Engine,
    request: SongRequest,
    level2: np.ndarray,
    *,
    draft_index: int = 0,
    prompt: Prompt | None = None,
    checkpointer: Checkpointer | None = None,
    hooks: Hooks | None = None,
    decode: bool = True,
    checkpoint_every: float = 0.0,
    interleave_levels: bool = False,
) -> Final:
    """The levels below the top (1 and 0) for one draft's top-level codes, then the final audio.
    With a prompt, its lower-level codes are kept and only the rest is sampled. `checkpoint_every` > 0 saves
    checkpoints at most that often (see engine.sampling.resume.resumable_run). `interleave_levels`:
    level 0's windows start as soon as the level-1 codes they are conditioned on exist, their steps
    alternating with level 1's (the same codes; see engine.sampling.sample.run_plan). Both priors
    are then resident, so it is ignored with `swap_levels`."""
    top = np.asarray(level2, dtype=np.int64)
    top = top[None] if top.ndim == 1 else top
    if top.shape[0] != 1:
        raise ValueError("upsample takes the codes of one draft")
    hops = engine.hop_lengths
    sample_length = top.shape[1] * hops[-1]
    if prompt is not None and not np.array_equal(top[:, : prompt.top_tokens], prompt.codes[-1]):
        raise PipelineError("the draft does not start with the prime it should continue")
    labels = WindowLabels(engine, request, sample_length, 1)
    below = tuple(reversed(range(engine.top_level)))
    plan = engine.plan(
        below, 1, sample_length, NoiseKey(request.seed, DRAFT_STREAM + 1 + draft_index), request.settings
    )
    start = [np.zeros((1, 0), dtype=np.int64) for _ in below] + [top]
    if prompt is not None:
        start[:-1] = [c.copy() for c in prompt.codes[:-1]]
    extra = {
        "stage": "upsample",
        "request": request_digest(
            {
                "request": request.to_dict(),
                "draft": draft_index,
                "top": _array_digest(top),
                "prompt": _prompt_digest(prompt),
                "model": engine.name,
            }
        ),
    }
    interleave = interleave_levels and not engine.swap_levels
    if interleave_levels and engine.swap_levels:
        log.info("levels are sampled one after another: interleaving needs both priors in memory")
    codes = _run(plan, engine, labels, start, checkpointer, extra, hooks, checkpoint_every, interleave)
    audio = engine.decode(codes[0], 0)[0] if decode else np.zeros(0, dtype=np.float32)
    return Final(codes, audio, sample_length)


def continue_from(
    engine: Engine,
    request: SongRequest,
    n: int,
    prompt: Prompt,
    *,
    checkpointer: Checkpointer | None = None,
    hooks: Hooks | None = None,
) -> Drafts:
    """Drafts that continue `prompt` (a clip's codes or encoded audio)."""
    return make_drafts(engine, request, n, prompt=prompt, checkpointer=checkpointer, hooks=hooks)


def _array_digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.int64).tobytes()).hexdigest()[:16]


def _prompt_digest(prompt: Prompt | None) -> str | None:
    return None if prompt is None else _array_digest(np.concatenate([c.ravel() for c in prompt.codes]))


# Stage names the worker and the command line show.
STAGES: dict[int, str] = {2: "drafts (level 2)", 1: "upsampling level 1", 0: "upsampling level 0"}


def stage_name(level: int, *, primed: bool = False) -> str:
    if level == 2 and primed:
        return "continuing (level 2)"
    return STAGES[level]


ProgressFn = Callable[[dict[str, Any]], None]
