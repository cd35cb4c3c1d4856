"""`jukebot generate` (and the other engine commands' wiring) with a tiny random-weight model."""

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
import soundfile
import typer
from typer.testing import CliRunner

from db.audio import ffmpeg
from db.settings import get_settings
from engine.audio import probe
from engine.cli import register
from engine.sampling.pipeline import codes_from_npz
from tests.audio_fixtures import lying_flac
from tests.pipeline_fixtures import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("JUKEBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("JUKEBOT_STORAGE_URL", str(tmp_path / "storage"))
    monkeypatch.setenv("JUKEBOT_MAX_PRIME_SECONDS", "1.0")
    monkeypatch.setenv("JUKEBOT_MAX_UPLOAD_BYTES", str(2 * 1024 * 1024))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _args(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "generate",
        "--model",
        str(model_dir),
        "--artist",
        "bach",
        "--genre",
        "chorale",
        "--lyrics",
        "la la la",
        "--seconds",
        "0.1",
        "--drafts",
        "2",
        "--pick",
        "2",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def test_generate_writes_the_song_and_a_json_summary(
    app: typer.Typer, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "song"
    res = runner.invoke(app, _args(model_dir, out, "--json"))
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["model"] == str(model_dir) and summary["seed"] == 3 and summary["device"] == "cpu"
    assert summary["seconds"] == pytest.approx(0.1, abs=0.01) and summary["resumed"] is False
    assert set(summary["timings"]) >= {"load_model", "drafts", "upsample", "decode_final", "total"}
    for name in ("draft-1.wav", "draft-2.wav", "final.wav", "final.mp3", "codes.npz", "summary.json"):
        assert (out / name).is_file(), name
    audio, sr = soundfile.read(out / "final.wav")
    assert sr == 22050 and len(audio) == pytest.approx(summary["seconds"] * sr, abs=1)
    assert probe(out / "final.mp3").codec == "mp3"
    assert json.loads((out / "summary.json").read_text()) == summary
    codes = codes_from_npz((out / "codes.npz").read_bytes())
    with np.load(out / "drafts.npz") as z:
        assert np.array_equal(codes[2][0], z["codes"][1])  # final = the picked (2nd) draft, upsampled
    assert list(out.glob(".checkpoint-*")) == []

    # The same command again: nothing to sample, same result.
    again = runner.invoke(app, _args(model_dir, out, "--json"))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["resumed"] is True
    assert all(
        np.array_equal(a, b)
        for a, b in zip(codes, codes_from_npz((out / "codes.npz").read_bytes()), strict=True)
    )

    # Another request in the same folder is refused; --fresh starts over.
    other = runner.invoke(app, [*_args(model_dir, out), "--seed", "4"])
    assert other.exit_code == 2 and "holds a run of a different request" in other.output
    assert runner.invoke(app, [*_args(model_dir, out), "--seed", "4", "--fresh"]).exit_code == 0


def _spawn(model_dir: Path, out: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import typer; from engine.cli import register;"
        "app = typer.Typer(); register(app); app()"
    )
    args = _args(model_dir, out)
    args[args.index("0.1")] = "0.2"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _kill_when(proc: subprocess.Popen[str], path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -9


def test_generate_makes_every_file_with_no_ffmpeg_on_path(model_dir: Path, tmp_path: Path) -> None:
    # A machine with nothing but Python: the ffmpeg of the imageio-ffmpeg wheel writes the MP3.
    empty = tmp_path / "bin"
    empty.mkdir()
    out = tmp_path / "song"
    proc = _spawn(model_dir, out, {**os.environ, "PATH": str(empty)})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    for name in ("draft-1.wav", "draft-2.wav", "final.wav", "final.mp3", "codes.npz", "summary.json"):
        assert (out / name).is_file(), name
    assert probe(out / "final.mp3").codec == "mp3" and probe(out / "final.wav").channels == 1


def test_a_prime_whose_header_lies_is_refused_without_decoding_it_all(
    app: typer.Typer, model_dir: Path, tmp_path: Path
) -> None:
    # 10 minutes of audio whose FLAC header says 0.5 s: it used to be decoded whole (the 3-hour
    # version of this took 2.7 GB and then failed a 30 GB allocation).
    liar = lying_flac(tmp_path / "liar.flac", seconds=600, claimed=0.5, amplitude=0.0)
    res = runner.invoke(app, [*_args(model_dir, tmp_path / "x"), "--prime", str(liar)])
    assert res.exit_code == 2, res.output
    assert "longer than 1 s (though its header says otherwise); the prime can be at most that long" in (
        " ".join(res.output.split())
    )


def test_killed_generate_resumes_exactly(app: typer.Typer, model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ}
    ref, out = tmp_path / "ref", tmp_path / "killed"
    args = _args(model_dir, ref)
    args[args.index("0.1")] = "0.2"
    assert runner.invoke(app, args).exit_code == 0  # uninterrupted (in this process, also one thread)

    _kill_when(_spawn(model_dir, out, env), out / ".checkpoint-drafts.npz")  # during the drafts
    _kill_when(_spawn(model_dir, out, env), out / ".checkpoint-upsample-2.npz")  # during the upsample
    last = _spawn(model_dir, out, env)
    assert last.wait(timeout=300) == 0, last.communicate()[1]
    a = codes_from_npz((ref / "codes.npz").read_bytes())
    b = codes_from_npz((out / "codes.npz").read_bytes())
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert json.loads((out / "summary.json").read_text())["resumed"] is True


def test_primes_and_their_errors(
    app: typer.Typer, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clip's codes: the new song starts with the clip's last seconds.
    first = tmp_path / "first"
    assert runner.invoke(app, _args(model_dir, first)).exit_code == 0
    cont = tmp_path / "cont"
    res = runner.invoke(
        app,
        [*_args(model_dir, cont, "--json"), "--prime", str(first / "codes.npz"), "--prime-seconds", "0.05"],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["prime_seconds"] == pytest.approx(0.05, abs=0.001)
    assert summary["seconds"] == pytest.approx(0.15, abs=0.01)
    src, new = (
        codes_from_npz((first / "codes.npz").read_bytes()),
        codes_from_npz((cont / "codes.npz").read_bytes()),
    )
    for lv in range(3):
        n = src[lv].shape[1] * 68 // 137  # 0.05 s of 0.1 s, in whole top-level tokens
        assert np.array_equal(new[lv][0, :n], src[lv][0, -n:])

    # Audio: any format ffmpeg reads.
    sine = tmp_path / "sine.ogg"
    t = np.arange(int(0.5 * 22050)) / 22050
    soundfile.write(tmp_path / "sine.wav", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 22050)
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(tmp_path / "sine.wav"), str(sine)], check=True)
    res = runner.invoke(app, [*_args(model_dir, tmp_path / "from-audio", "--json"), "--prime", str(sine)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["prime_seconds"] == pytest.approx(0.5, abs=0.03)  # Vorbis pads a little

    # Too long, corrupt, too big.
    long = tmp_path / "long.flac"
    soundfile.write(long, np.zeros(3 * 22050, dtype=np.float32), 22050)
    res = runner.invoke(app, [*_args(model_dir, tmp_path / "x1"), "--prime", str(long)])
    assert res.exit_code == 2
    assert "this file is 3 s long; the prime can be at most 1 s (use --prime-seconds" in res.output
    ok = runner.invoke(
        app, [*_args(model_dir, tmp_path / "x2"), "--prime", str(long), "--prime-seconds", "0.2"]
    )
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(os.urandom(3000))
    res = runner.invoke(app, [*_args(model_dir, tmp_path / "x3"), "--prime", str(bad)])
    assert res.exit_code == 2 and "does not look like an audio file ffmpeg can read" in res.output
    big = tmp_path / "big.wav"
    soundfile.write(big, np.zeros(int(0.9 * 22050), dtype=np.float64), 22050, subtype="DOUBLE")
    monkeypatch.setenv("JUKEBOT_MAX_UPLOAD_BYTES", "100000")
    get_settings.cache_clear()
    res = runner.invoke(app, [*_args(model_dir, tmp_path / "x4"), "--prime", str(big)])
    assert res.exit_code == 2 and "the prime can be at most 98 KB" in res.output
    res = runner.invoke(app, [*_args(model_dir, tmp_path / "x5"), "--prime", str(tmp_path / "nope.wav")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(
        app, [*_args(model_dir, tmp_path / "x6"), "--prime", str(long), "--prime-seconds", "5"]
    )
    assert res.exit_code == 2 and "--prime-seconds must be between 0 and 1 s" in res.output


def test_bad_requests_are_said_in_words(
    app: typer.Typer, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = runner.invoke(app, [*_args(model_dir, tmp_path / "a"), "--artist", "Bahc"])
    assert res.exit_code == 2 and "Unknown artist 'Bahc'. Did you mean: bach" in res.output
    res = runner.invoke(app, [*_args(model_dir, tmp_path / "b"), "--pick", "5"])
    assert res.exit_code == 2 and "--pick must be between 1 and 2" in res.output
    res = runner.invoke(app, [*_args(model_dir, tmp_path / "c"), "--lyrics-file", str(tmp_path / "none.txt")])
    assert res.exit_code == 2 and "use --lyrics or --lyrics-file, not both" in res.output

    import engine.model.config

    monkeypatch.setattr(engine.model.config, "DEMO_DIR", tmp_path / "no-demo-here")
    args = _args(model_dir, tmp_path / "d")
    args[args.index("--model") + 1] = "demo"
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "the demo model is not installed in this build" in res.output


def test_commands_are_registered(app: typer.Typer) -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in ("generate", "worker", "train", "corpus"):
        assert name in res.output
    res = runner.invoke(app, ["worker", "--kinds", "draft,bogus"])
    assert res.exit_code == 2 and "unknown job kind(s) bogus" in res.output
