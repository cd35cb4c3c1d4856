"""What a continuation starts from (`Prompt`: codes of every level, from a clip or from audio) and
the codes file of a clip (`codes.npz`, every level plus a JSON `meta`)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class PipelineError(ValueError):
    """A request this model cannot make, in words for the person who asked (not worth a retry)."""


class CodesModel(Protocol):
    """What a prompt needs of the model (engine.sampling.pipeline.Engine provides it)."""

    @property
    def sample_rate(self) -> int: ...
    @property
    def hop_lengths(self) -> tuple[int, ...]: ...
    def check_codes(self, codes: Sequence[np.ndarray], what: str) -> None: ...
    def encode(self, audio: np.ndarray) -> list[np.ndarray]: ...


@dataclass
class Prompt:
    """Codes to continue from: one row per level, aligned (level L has T2 * hop2 / hop_L tokens)."""

    codes: list[np.ndarray]  # [1, T_level] int64, index = level
    source: str  # for messages and the request digest

    @property
    def top_tokens(self) -> int:
        return int(self.codes[-1].shape[1])

    def seconds(self, engine: CodesModel) -> float:
        return self.top_tokens * engine.hop_lengths[-1] / engine.sample_rate

    def tiled(self, n: int) -> list[np.ndarray]:
        return [np.repeat(c, n, axis=0) for c in self.codes]

    @classmethod
    def from_clip_codes(
        cls,
        engine: CodesModel,
        data: bytes,
        seconds: float | None = None,
        *,
        source: str = "clip",
        at: float | None = None,
    ) -> Prompt:
        """The clip's codes (`codes.npz`, all three levels) up to the moment `at` (None: its end),
        the last `seconds` of them (None: all). The new music starts at `at`: what comes before it
        is kept exactly, so the song's codes up to `at` are the clip's."""
        codes = codes_from_npz(data, name=source)
        engine.check_codes(codes, source)
        hops, sr = engine.hop_lengths, engine.sample_rate
        have = codes[-1].shape[1]
        end = have
        if at is not None:
            length = have * hops[-1] / sr
            if not math.isfinite(at) or at < 0:
                raise PipelineError(f"the moment to continue from must be 0 or later, not {at:g} s")
            if at > length + hops[-1] / sr:  # a step of slack: lengths are shown rounded
                raise PipelineError(
                    f"{at:.2f} s is past the end of {source} ({length:.2f} s long): "
                    "choose a moment inside it, or continue from its end"
                )
            end = min(have, int(at * sr) // hops[-1])
            if end < 1:
                raise PipelineError(
                    f"there is no music before {at:.2f} s in {source} to continue from "
                    f"(at least {hops[-1] / sr:.3f} s is needed)"
                )
        take = end if seconds is None else min(end, int(seconds * sr) // hops[-1])
        if take < 1:
            raise PipelineError(f"the prime is shorter than one step of the model ({hops[-1] / sr:.3f} s)")
        cut = [
            c[:1, (end - take) * hops[-1] // hop : end * hops[-1] // hop]
            for c, hop in zip(codes, hops, strict=True)
        ]
        part = f"last {take * hops[-1] / sr:.2f} s"
        if end < have:
            part = f"{(end - take) * hops[-1] / sr:.2f}-{end * hops[-1] / sr:.2f} s"
        return cls(cut, f"{source} ({part})")

    @classmethod
    def from_audio(cls, engine: CodesModel, audio: np.ndarray, *, source: str = "audio") -> Prompt:
        """Encode audio (mono float32 at the model's rate) to all levels, rounded down to whole
        top-level tokens like the original's `load_prompts`."""
        top = engine.hop_lengths[-1]
        n = len(audio) // top * top
        if n < top:
            raise PipelineError(
                f"the prime audio is too short: at least {top / engine.sample_rate:.3f} s are needed"
            )
        codes = engine.encode(audio[:n])
        return cls(codes, f"{source} ({n / engine.sample_rate:.2f} s)")


def codes_to_npz(codes: Sequence[np.ndarray], meta: dict[str, Any] | None = None) -> bytes:
    """A clip's codes of all levels (`level_0`, `level_1`, `level_2`) plus a JSON `meta`."""
    buf = io.BytesIO()
    arrays: dict[str, np.ndarray] = {f"level_{i}": np.asarray(c, dtype=np.int32) for i, c in enumerate(codes)}
    arrays["meta"] = np.frombuffer(json.dumps(meta or {}).encode(), dtype=np.uint8)
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def codes_from_npz(data: bytes, *, name: str = "codes") -> list[np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            levels = sorted(int(k.split("_")[1]) for k in z.files if k.startswith("level_"))
            if not levels or levels != list(range(len(levels))):
                raise PipelineError(
                    f"{name} does not hold the codes of every level from 0 up (it has {levels})"
                )
            codes = [z[f"level_{i}"].astype(np.int64) for i in levels]
    except PipelineError:
        raise
    except Exception as e:
        raise PipelineError(f"{name} is damaged or not a jukebot codes file") from e
    return [c[None] if c.ndim == 1 else c for c in codes]
