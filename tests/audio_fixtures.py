"""Audio files that tests make: ones that lie about themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

SR = 8000


def lying_flac(path: Path, seconds: float, claimed: float, sr: int = SR, amplitude: float = 0.3) -> Path:
    """A FLAC of `seconds` of tone whose STREAMINFO total-samples field claims `claimed` seconds."""
    t = np.arange(int(seconds * sr)) / sr
    soundfile.write(path, (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first block is STREAMINFO
    # STREAMINFO starts at 8; bytes 18..25 hold rate (20 bits), channels (3), bits (5), samples (36).
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | int(claimed * sr)
    data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path
