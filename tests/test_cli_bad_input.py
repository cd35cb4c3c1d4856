"""Bad input on the command line (issue #14): each case is the real command in its own process and
must end with one line on stderr that says what is wrong, a non-zero exit and no traceback."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.audio_fixtures import lying_flac
from tests.pipeline_fixtures import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUKEBOT_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",
            "JUKEBOT_DATABASE_URL": f"sqlite:///{tmp / 'none.db'}",
            "JUKEBOT_STORAGE_URL": str(tmp / "storage"),
            "JUKEBOT_MAX_PRIME_SECONDS": "1.0",
            **extra,
        }
    )
    return env


def _generate_args(model: Path, out: Path, *extra: str) -> list[str]:
    args = ["--model", str(model), "--artist", "bach", "--genre", "chorale", "--seconds", "0.1"]
    args += ["--drafts", "2", "--pick", "2", "--seed", "3", "--device", "cpu", "--threads", "1"]
    return [sys.executable, "-m", "engine.cli", "generate", *args, "--out", str(out), "--quiet", *extra]


def generate(model: Path, out: Path, *extra: str, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _generate_args(model, out, *extra),
        cwd=tmp,
        env=_env(tmp, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def refused(res: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one line the person reads; the command failed and showed no traceback."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode not in (0, None), res.stderr
    assert "Traceback" not in res.stderr and "╭" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `generate` output folder (copied by the tests that damage it)."""
    tmp = tmp_path_factory.mktemp("finished")
    res = generate(model_dir, tmp / "song", tmp=tmp)
    assert res.returncode == 0, res.stderr
    return tmp / "song"


# --- --seconds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", ["nan", "inf", "-inf", "-1", "1e308", "1e9"])
def test_seconds_that_are_not_a_song_length_are_refused(
    model_dir: Path, tmp_path: Path, seconds: str
) -> None:
    res = generate(model_dir, tmp_path / "out", "--seconds", seconds, tmp=tmp_path)
    refused(res, "--seconds")
    if seconds in ("nan", "inf", "-inf", "-1"):
        assert not (tmp_path / "out").exists()  # refused before anything was written


# --- --out ----------------------------------------------------------------------------------------


def test_out_under_a_file_or_in_proc_is_refused(model_dir: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    refused(generate(model_dir, a_file / "song", tmp=tmp_path), "--out", "notes.txt")
    refused(generate(model_dir, a_file, tmp=tmp_path), "--out", "notes.txt")
    refused(generate(model_dir, Path("/proc/jukebot-song"), tmp=tmp_path), "--out", "/proc/jukebot-song")
    assert a_file.read_text() == "not a folder"


# --- damaged files in an output folder ------------------------------------------------------------


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "song"
    shutil.copytree(finished, out)
    return out


def test_a_truncated_drafts_file_is_refused_naming_fresh(
    model_dir: Path, finished: Path, tmp_path: Path
) -> None:
    out = _copy(finished, tmp_path)
    data = (out / "drafts.npz").read_bytes()
    (out / "drafts.npz").write_bytes(data[: len(data) // 2])
    refused(generate(model_dir, out, tmp=tmp_path), "drafts.npz", "--fresh")
    assert generate(model_dir, out, "--fresh", tmp=tmp_path).returncode == 0  # and --fresh recovers


def test_a_bit_flipped_drafts_file_is_refused_naming_fresh(
    model_dir: Path, finished: Path, tmp_path: Path
) -> None:
    out = _copy(finished, tmp_path)
    data = bytearray((out / "drafts.npz").read_bytes())
    at = data.index(b"codes.npy") + len("codes.npy") + 140  # inside the stored codes
    data[at] ^= 0x10
    (out / "drafts.npz").write_bytes(bytes(data))
    refused(generate(model_dir, out, tmp=tmp_path), "drafts.npz", "--fresh")


@pytest.mark.parametrize("garbage", ["garbage{", "[1, 2]", ""])
def test_a_garbage_run_record_is_refused_naming_fresh(
    model_dir: Path, finished: Path, tmp_path: Path, garbage: str
) -> None:
    out = _copy(finished, tmp_path)
    (out / "run.json").write_text(garbage)
    refused(generate(model_dir, out, tmp=tmp_path), "run.json", "--fresh")


# --- the model folder -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ['{"name": 3', '{"name": "x"}', '{"name": "x", "vqvae": 5, "priors": []}'])
def test_an_invalid_model_json_is_refused(model_dir: Path, tmp_path: Path, text: str) -> None:
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    (bad / "model.json").write_text(text)
    refused(generate(bad, tmp_path / "out", tmp=tmp_path), "model.json")


def test_a_changed_file_in_a_trained_model_folder_is_refused(model_dir: Path, tmp_path: Path) -> None:
    from engine.model.manifests import record_model_file

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    for name in ("model.json", "vqvae.pth.tar", "prior_level_2.pth.tar"):
        record_model_file(folder, name)
    with open(folder / "prior_level_2.pth.tar", "ab") as f:
        f.write(b"\0")
    refused(generate(folder, tmp_path / "out", tmp=tmp_path), "prior_level_2.pth.tar", "manifest.json")


# --- the database is down -------------------------------------------------------------------------


def test_prime_from_a_clip_with_the_database_down(model_dir: Path, tmp_path: Path) -> None:
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/test"
    res = generate(model_dir, tmp_path / "out", "--prime", "clip:1", tmp=tmp_path, JUKEBOT_DATABASE_URL=dead)
    refused(res, "database")
    res = generate(model_dir, tmp_path / "out", "--prime", "clip:one", tmp=tmp_path)
    refused(res, "--prime", "clip:one")


# --- Discord is unreachable -----------------------------------------------------------------------


def test_bot_start_with_discord_unreachable(model_dir: Path, tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        JUKEBOT_DISCORD_TOKEN="not-a-real-token",
        JUKEBOT_DISCORD_API_BASE=f"http://127.0.0.1:{_closed_port()}/api/v10",
        JUKEBOT_MODEL=str(model_dir),
    )
    res = subprocess.run(
        [sys.executable, "-m", "bot.cli", "bot", "--no-worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The bot logs its start on stderr as well; the reason is one line, and nothing else went wrong.
    assert res.returncode not in (0, None), res.stderr
    assert "Traceback" not in res.stderr and "╭" not in res.stderr, res.stderr
    reasons = [ln for ln in res.stderr.splitlines() if "Cannot reach Discord" in ln]
    assert len(reasons) == 1 and "JUKEBOT_DISCORD_API_BASE" in reasons[0], res.stderr


# --- a prime whose header lies --------------------------------------------------------------------


def test_a_prime_whose_header_lies_is_decoded_only_up_to_the_limit(model_dir: Path, tmp_path: Path) -> None:
    # 60 s of audio whose FLAC header says 5 s: decoding stops at the limit (plus a little), so
    # memory is bounded by the limit, not by what the file holds.
    from engine.audio import AudioError, load_audio

    liar = lying_flac(tmp_path / "liar.flac", seconds=60, claimed=5, amplitude=0.1)
    with pytest.raises(AudioError, match="longer than 6 s"):
        load_audio(liar, 22050, max_seconds=6)
    assert len(load_audio(liar, 22050, max_seconds=6, duration=0.5)) == int(0.5 * 22050)

    res = generate(
        model_dir, tmp_path / "a", "--prime", str(liar), tmp=tmp_path, JUKEBOT_MAX_PRIME_SECONDS="6"
    )
    refused(res, "liar.flac", "longer than 6 s (though its header says otherwise)")
    res = generate(
        model_dir, tmp_path / "b", "--prime", str(liar), "--prime-seconds", "0.3", "--json", tmp=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["prime_seconds"] == pytest.approx(0.3, abs=0.03)  # only the first 0.3 s


# --- an altered resume checkpoint -----------------------------------------------------------------


def _altered(path: Path) -> None:
    """Change one code of a checkpoint and write it back as a valid file (only the digest can tell)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    top = next(k for k in ("codes_2", "codes_1", "codes_0") if arrays[k].size)
    arrays[top] = arrays[top].copy()
    arrays[top].flat[0] = (int(arrays[top].flat[0]) + 1) % 64
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    path.write_bytes(buf.getvalue())


def test_a_resume_checkpoint_with_altered_codes_is_refused_naming_fresh(
    model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "song"
    args = _generate_args(model_dir, out)
    args[args.index("0.1")] = "0.2"
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(tmp_path), stderr=subprocess.PIPE, text=True)
    ckpt = out / ".checkpoint-drafts.npz"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    _altered(ckpt)
    res = subprocess.run(args, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    refused(res, ".checkpoint-drafts.npz", "--fresh")
    res = subprocess.run(
        [*args, "--fresh"], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
