"""Finding and running ffmpeg: the one timeout policy and the bounded read of its output.

The system's `ffmpeg` (and `ffprobe`) on PATH are preferred; without them the static ffmpeg binary of
the `imageio-ffmpeg` wheel is used (it has no ffprobe: `probe` then reads ffmpeg's own banner).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass

# One limit for every ffmpeg call: long enough for a 140 s X video on a slow CPU, short enough that a
# stuck decoder frees its worker.
FFMPEG_TIMEOUT_S = 300.0
_CHUNK = 1 << 20


class AudioError(ValueError):
    """Bad audio input, or audio tools that cannot run, with a message meant for a person."""


def ffmpeg() -> str:
    """The ffmpeg executable: the system's when on PATH, else the imageio-ffmpeg wheel's."""
    path = shutil.which("ffmpeg")
    if path is not None:
        return path
    try:
        import imageio_ffmpeg
    except ImportError:
        raise AudioError(
            "ffmpeg is not installed: pip install imageio-ffmpeg (or Debian: apt-get install ffmpeg)"
        ) from None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as e:  # the wheel has no binary for this platform
        raise AudioError(f"ffmpeg is not installed and the bundled one is unusable ({e})") from None


def ffprobe() -> str | None:
    """The system's ffprobe, or None (the wheel has none)."""
    return shutil.which("ffprobe")


def run(
    args: list[str],
    *,
    stdin: bytes | None = None,
    timeout: float = FFMPEG_TIMEOUT_S,
    what: str = "run ffmpeg",
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool with the shared timeout; a timeout is an AudioError, exit codes are the caller's."""
    try:
        return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError(f"ffmpeg took more than {timeout:.0f} s to {what}; gave up") from None


@dataclass(frozen=True)
class BoundedOutput:
    stdout: bytes
    stderr: bytes
    returncode: int
    truncated: bool  # more than `max_bytes` came out; the process was stopped there


def run_bounded(
    args: list[str], max_bytes: int, *, timeout: float = FFMPEG_TIMEOUT_S, what: str = "decode"
) -> BoundedOutput:
    """Run a tool and keep at most `max_bytes` of its stdout, stopping it as soon as there is more:
    memory stays bounded whatever the input claims about itself."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        chunks: list[bytes] = []
        size, truncated = 0, False
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(min(_CHUNK, max_bytes + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    truncated = True
                    proc.kill()
                    break
            returncode = proc.wait()
        finally:
            timed_out = not timer.is_alive() and not truncated and proc.returncode not in (0, None)
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if timed_out and returncode < 0:
            raise AudioError(f"ffmpeg took more than {timeout:.0f} s to {what}; gave up")
        err.seek(0)
        stderr = err.read()
    data = b"".join(chunks)[:max_bytes]
    return BoundedOutput(data, stderr, returncode, truncated)
