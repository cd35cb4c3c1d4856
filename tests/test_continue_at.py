"""Continue from a chosen moment (`jukebot generate --prime … --prime-at T`, the worker's `prime_at`)
with the shipped demo model on a CPU: the new song keeps the clip's codes up to T exactly, at
every level, and a run SIGKILLed in the middle resumes to exactly the same song."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from db.audio.moments import MomentError, clock, parse_moment
from db.settings import get_settings
from engine.cli import register
from engine.sampling.pipeline import Engine, PipelineError, Prompt, codes_from_npz

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SR, TOP_HOP = 22050, 256  # the demo model's sample rate and level-2 hop
HOPS = (16, 64, 256)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("JUKEBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("JUKEBOT_STORAGE_URL", str(tmp_path / "storage"))
    monkeypatch.setenv("JUKEBOT_MAX_PRIME_SECONDS", "1.5")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _args(out: Path, *extra: str, seconds: str = "1.0", seed: str = "5") -> list[str]:
    return [
        "generate",
        "--model",
        "demo",
        "--artist",
        "bach",
        "--genre",
        "chorale",
        "--seconds",
        seconds,
        "--drafts",
        "2",
        "--pick",
        "2",
        "--seed",
        seed,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-second demo song's codes.npz: the clip the tests continue."""
    out = tmp_path_factory.mktemp("clip")
    mp = pytest.MonkeyPatch()
    mp.setenv("JUKEBOT_DATABASE_URL", f"sqlite:///{out / 'none.db'}")
    mp.setenv("JUKEBOT_STORAGE_URL", str(out / "storage"))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    try:
        res = runner.invoke(app, _args(out / "song", seconds="2.0", seed="1"))
        assert res.exit_code == 0, res.output
    finally:
        mp.undo()
        get_settings.cache_clear()
    return out / "song" / "codes.npz"


def _levels(path: Path) -> list[np.ndarray]:
    return codes_from_npz(path.read_bytes())


def _kept_up_to(clip: list[np.ndarray], song: list[np.ndarray], at: float) -> None:
    """The song's codes up to `at` (whole top-level steps) are the clip's, at every level."""
    top = int(at * SR) // TOP_HOP
    for level, hop in enumerate(HOPS):
        n = top * TOP_HOP // hop
        assert song[level].shape[1] > n, level  # and new music follows
        assert np.array_equal(song[level][:, :n], clip[level][:, :n]), f"level {level} differs before {at} s"


def test_moments_are_read_as_people_write_them() -> None:
    assert [parse_moment(t) for t in ("42", "0:42", "1:02.5", "1:02:03", " 7.25 ")] == [
        42.0,
        42.0,
        62.5,
        3723.0,
        7.25,
    ]
    for junk in ("soon", "1:75", "1:2:3:4", "nan", "inf", "", "0x10", "4 2"):
        with pytest.raises(MomentError, match="is not a moment in"):
            parse_moment(junk)
    with pytest.raises(MomentError, match="is before the start"):
        parse_moment("-0:05")
    assert [clock(s) for s in (0, 42, 62.5, 3723)] == ["0:00", "0:42", "1:02.5", "1:02:03"]


def test_generate_prime_at_keeps_the_clip_up_to_the_moment(
    app: typer.Typer, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cont"
    res = runner.invoke(app, [*_args(out, "--json"), "--prime", str(clip), "--prime-at", "0:01.2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["prime_at"] == 1.2 and summary["prime"] == "codes.npz (0.00-1.20 s)"
    song = _levels(out / "codes.npz")
    _kept_up_to(_levels(clip), song, 1.2)
    top = int(1.2 * SR) // TOP_HOP
    assert song[2].shape[1] == top + int(1.0 * SR) // TOP_HOP  # the prime, then 1 s of new music


def test_a_moment_past_the_limit_keeps_the_last_seconds_before_it(clip: Path) -> None:
    # JUKEBOT_MAX_PRIME_SECONDS is 1.5 here: continuing at 1.9 s primes on 0.4-1.9 s of the clip.
    engine = Engine.load("demo", device="cpu", progress=False)
    codes = _levels(clip)
    prompt = Prompt.from_clip_codes(engine, clip.read_bytes(), 1.5, at=1.9, source="clip #1")
    end = int(1.9 * SR) // TOP_HOP
    take = int(1.5 * SR) // TOP_HOP
    for level, hop in enumerate(HOPS):
        k = TOP_HOP // hop
        assert np.array_equal(prompt.codes[level], codes[level][:, (end - take) * k : end * k])
    # Without a moment: the clip's end, as before.
    end_prompt = Prompt.from_clip_codes(engine, clip.read_bytes(), 1.5, source="clip #1")
    assert np.array_equal(end_prompt.codes[2], codes[2][:, -take:])
    assert end_prompt.source == "clip #1 (last 1.50 s)"
    with pytest.raises(PipelineError, match=r"5.00 s is past the end of clip #1 \(2.00 s long\)"):
        Prompt.from_clip_codes(engine, clip.read_bytes(), 1.5, at=5.0, source="clip #1")
    with pytest.raises(PipelineError, match=r"no music before 0\.00 s"):
        Prompt.from_clip_codes(engine, clip.read_bytes(), 1.5, at=0.0, source="clip #1")


def test_generate_prime_at_bad_input_is_one_line(app: typer.Typer, clip: Path, tmp_path: Path) -> None:
    cases = {
        "2:00": "--prime codes.npz: 120.00 s is past the end of codes.npz (2.00 s long)",
        "-1": "--prime-at: `-1` is before the start of the prime",
        "soon": "--prime-at: `soon` is not a moment in the prime",
        "0": "there is no music before 0.00 s in codes.npz",
    }
    for at, said in cases.items():
        res = runner.invoke(app, [*_args(tmp_path / f"x{at}"), "--prime", str(clip), "--prime-at", at])
        assert res.exit_code == 2 and said in " ".join(res.output.split()), (at, res.output)
        assert "Traceback" not in res.output
    res = runner.invoke(app, [*_args(tmp_path / "y"), "--prime-at", "0:01"])
    assert res.exit_code == 2 and "--prime-at needs --prime" in res.output


def test_generate_prime_at_on_audio_uses_the_part_ending_there(app: typer.Typer, tmp_path: Path) -> None:
    import soundfile

    t = np.arange(int(4.0 * SR)) / SR
    wav = tmp_path / "long.wav"
    soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    out = tmp_path / "from-audio"
    res = runner.invoke(app, [*_args(out, "--json"), "--prime", str(wav), "--prime-at", "3.5"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["prime"].startswith("long.wav (0:02-0:03.5)")  # the last 1.5 s before 3.5 s
    assert summary["prime_seconds"] == pytest.approx(1.5, abs=0.02)
    res = runner.invoke(app, [*_args(tmp_path / "z"), "--prime", str(wav), "--prime-at", "0:05"])
    assert res.exit_code == 2 and "--prime-at 0:05 is past the end of long.wav (0:04 long)" in res.output


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )


def _kill_when(proc: subprocess.Popen[str], path: Path) -> None:
    deadline = time.monotonic() + 180
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -9


def test_prime_at_resumes_exactly_after_sigkill(app: typer.Typer, clip: Path, tmp_path: Path) -> None:
    extra = ["--prime", str(clip), "--prime-at", "0.8"]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    res = runner.invoke(app, [*_args(ref, seconds="1.5"), *extra])  # uninterrupted
    assert res.exit_code == 0, res.output
    env = dict(os.environ)
    args = [*_args(out, seconds="1.5"), *extra]
    _kill_when(_spawn(args, env), out / "drafts.npz")  # the drafts are done, the upsample starting
    _kill_when(_spawn(args, env), out / ".checkpoint-upsample-2.npz")  # in the middle of the upsample
    last = _spawn(args, env)
    assert last.wait(timeout=300) == 0, last.communicate()[1]
    a, b = _levels(ref / "codes.npz"), _levels(out / "codes.npz")
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert json.loads((out / "summary.json").read_text())["resumed"] is True
    _kept_up_to(_levels(clip), b, 0.8)
