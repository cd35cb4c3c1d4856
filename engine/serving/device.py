"""The device a worker runs on: which one, its dtype and threads, and one worker per GPU (a lock file)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DeviceBusy(RuntimeError):
    pass


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: no CUDA GPU is visible to this process")
    return device


def default_threads(device: str) -> int | None:
    """torch threads when none are asked for: 1 on a CPU, torch's own choice on a GPU. Sampling
    is a loop of one-token steps of small matrices, where a second thread mostly waits for the
    first: on the 2-core CI machine one thread is as fast when idle and far faster while other
    processes share the CPU (79 s against 132-163 s for the demo's 10 s song, docs/BENCHMARKS.md).
    `--threads N` overrides it."""
    return 1 if device == "cpu" else None


def resolve_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}: use one of {', '.join(table)}")
    return table[name]


@contextlib.contextmanager
def device_lock(device: str) -> Iterator[None]:
    """One worker per GPU on this host: an exclusive lock file per CUDA device."""
    if not device.startswith("cuda"):
        yield
        return
    index = device.split(":", 1)[1] if ":" in device else "0"
    path = Path(tempfile.gettempdir()) / f"jukebot-worker-cuda{index}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            other = f.read().strip() or "?"
            raise DeviceBusy(
                f"another jukebot worker (pid {other}) already uses {device} on this machine; "
                "run one worker per GPU"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
