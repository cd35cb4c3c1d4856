"""How the decode kernels are launched on this machine: in Triton's interpreter (CPU tests) or on a
GPU, with programmatic dependent launch where the GPU has it (Hopper and later)."""

from __future__ import annotations

import functools
import os

import torch


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def pow2(n: int) -> int:
    """The smallest power of two >= n (Triton block sizes)."""
    return 1 << max(0, (n - 1).bit_length())


def use_pdl() -> bool:
    """Programmatic dependent launch (Hopper and later; off in the interpreter and with
    JUKEBOT_PDL=0)."""
    if interpreted() or os.environ.get("JUKEBOT_PDL", "1") == "0":
        return False
    return _hopper_or_later()


@functools.cache
def _hopper_or_later() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
