"""Training (engine/training/train.py): every part trains on a tiny labelled folder, writes original-format
checkpoints that our loader and the original code read, resumes exactly after SIGKILL, skips bad
files with a message, and refuses bad requests in words."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.model.config import CustomLabels, ModelConfig, tiny_config
from engine.training.errors import TrainError
from engine.training.train import train

ROOT = Path(__file__).resolve().parents[1]
SR = 22050
LABELS = CustomLabels(("unknown", "bach", "mozart"), ("unknown", "chorale", "string quartet"))


def _tone(seconds: float, f0: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    return (0.2 * x + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def make_folder(root: Path, n: int = 6, seconds: float = 2.0) -> Path:
    """A corpus-format folder: audio/*.flac + labels.csv (engine/training/corpus.py's columns)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        artist, genre = (("bach", "chorale"), ("mozart", "string quartet"))[i % 2]
        name = f"audio/{artist}_{i}.flac"
        sf.write(root / name, _tone(seconds, (220.0, 330.0)[i % 2] * (1 + 0.05 * i), i), SR)
        rows.append(
            {
                "file": name,
                "artist": artist,
                "genre": genre,
                "lyrics": "",
                "seconds": seconds,
                "offset_seconds": 0.0,
                "total_seconds": 30.0,
                "source": "test",
                "split": "test" if i == n - 1 else "train",
            }
        )
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tiny_config("tiny", lyrics="none", custom_labels=LABELS)
    path = tmp_path_factory.mktemp("cfg") / "model.json"
    cfg.save(path)
    return path


VQ: dict[str, Any] = dict(batch_size=2, sample_seconds=0.2, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data: Path, config_file: Path) -> Path:
    """A model folder with every part trained a few steps."""
    out = tmp_path_factory.mktemp("model")
    torch.set_num_threads(1)
    s = train("vqvae", config_file, data, out, steps=6, **VQ)
    assert (s.step, s.stopped, s.clips) == (6, "done", 5)  # the test-split clip is held out
    for kind, level in (("prior", None), ("upsampler", 1), ("upsampler", 0)):
        s = train(
            kind, config_file, data, out, level=level, steps=4, batch_size=2, progress=False, val_every=2
        )
        assert s.step == 4 and s.loss is not None and np.isfinite(s.loss)
    return out


def test_every_part_writes_original_format_files_our_loader_reads(trained: Path) -> None:
    from engine.model.checkpoints import read_checkpoint
    from engine.model.config import PriorConfig, VQVAEConfig
    from engine.model.jukebox import load_model

    model = load_model(trained)
    assert all(p is not None for p in model.priors)
    cfg = ModelConfig.load(trained / "model.json")
    vq = read_checkpoint(trained / "vqvae.pth.tar")
    assert set(vq) == {"hps", "model", "step", "jukebot_config"} and vq["step"] == 6
    assert VQVAEConfig.from_hparams(vq["hps"]) == cfg.vqvae
    assert any(k.startswith("encoders.0.level_blocks.0.model.0") for k in vq["model"])
    for level in range(3):
        ck = read_checkpoint(trained / f"prior_level_{level}.pth.tar")
        got = PriorConfig.from_hparams(ck["hps"])
        # the original hparams have no notion of our custom label lists; everything else matches
        assert got.__class__(**{**got.__dict__, "labels_version": "custom"}) == cfg.priors[level]
        assert ck["step"] == 4
    # the codebooks were set from the data (not left at zero) and are used by encode
    k = model.vqvae.bottleneck[0].k
    assert float(k.abs().sum()) > 0


def test_train_writes_a_manifest_and_a_changed_file_is_refused(trained: Path, tmp_path: Path) -> None:
    import hashlib
    import shutil

    from engine.model.checkpoints import CheckpointError
    from engine.model.jukebox import load_model

    manifest = json.loads((trained / "manifest.json").read_text())
    names = ["model.json", "vqvae.pth.tar", *(f"prior_level_{i}.pth.tar" for i in range(3))]
    assert sorted(manifest) == sorted(names)  # the files it wrote, not its own state under train/
    for name in names:
        data = (trained / name).read_bytes()
        assert manifest[name]["size"] == len(data) and manifest[name]["source"] == "jukebot train"
        assert manifest[name]["sha256"] == hashlib.sha256(data).hexdigest()

    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    # Another run's upsampler copied in: a real checkpoint of the same shapes, not the one trained here.
    other = torch.load(folder / "prior_level_1.pth.tar", weights_only=True)
    other["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in other["model"].items()}
    torch.save(other, folder / "prior_level_1.pth.tar")
    with pytest.raises(
        CheckpointError, match=r"prior_level_1\.pth\.tar is not the file `jukebot train` wrote"
    ):
        load_model(folder)
    (folder / "manifest.json").unlink()  # the way out the message names: accept the folder as it is
    assert load_model(folder).priors[1] is not None


def test_the_original_code_builds_from_our_hps_and_loads_our_state_dicts(trained: Path) -> None:
    pytest.importorskip("jukebox_infer")
    from engine.model.checkpoints import read_checkpoint
    from tests.engine_reference import build_reference_prior, build_reference_vqvae, cpu_reference

    vq = read_checkpoint(trained / "vqvae.pth.tar")
    ref_vq = build_reference_vqvae(vq["hps"], sample_length=16 * 64)
    ref_vq.load_state_dict(vq["model"], strict=True)
    ck = read_checkpoint(trained / "prior_level_1.pth.tar")
    with cpu_reference():
        ref = build_reference_prior(dict(ck["hps"], restore_prior=""), ref_vq)
    ref.load_state_dict(ck["model"], strict=True)  # every key and shape the original expects

    # Same decode as ours from the same codes.
    from engine.model.jukebox import load_model

    ours = load_model(trained)
    z = torch.randint(0, 64, (1, 32))
    with torch.no_grad():
        a = ours.vqvae.decode([z], start_level=2, end_level=3)
        b = ref_vq.decode([z], start_level=2, end_level=3)[:, :, 0]
    torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-5)


def test_loss_curves_and_logs_are_written(trained: Path) -> None:
    for part in ("vqvae", "prior_level_0", "prior_level_1", "prior_level_2"):
        png = trained / "train" / part / "loss.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        lines = (trained / "train" / part / "log.jsonl").read_text().splitlines()
        assert json.loads(lines[-1])["step"] in (4, 6)
    rec = json.loads((trained / "train" / "prior_level_2" / "log.jsonl").read_text().splitlines()[-1])
    assert "val_loss" in rec  # the held-out split is scored


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "train", *args],
        cwd=ROOT,
        text=True,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def test_vqvae_resumes_exactly_after_sigkill(tmp_path: Path, data: Path, config_file: Path) -> None:
    """8 steps straight == 4 steps, SIGKILL, then the same command again (EMA codebooks, random
    restarts of dead codes, the batch sampler and Adam all continue where they were)."""
    args = [
        "vqvae",
        "--config",
        str(config_file),
        "--data",
        str(data),
        "--batch-size",
        "2",
        "--sample-seconds",
        "0.2",
        "--save-every",
        "2",
        "--steps",
        "8",
        "--quiet",
    ]
    straight = _cli(*args, "--out", str(tmp_path / "a"))
    killed = _cli(*args, "--out", str(tmp_path / "b"), env={"JUKEBOT_TRAIN_HANG_AFTER": "4"})
    assert straight.wait(timeout=120) == 0, straight.stderr.read() if straight.stderr else ""
    assert killed.stderr is not None
    deadline = time.monotonic() + 120
    seen = ""
    while "HANGING AFTER STEP 4" not in seen and time.monotonic() < deadline:
        line = killed.stderr.readline()
        if not line and killed.poll() is not None:
            break
        seen += line
    assert "HANGING AFTER STEP 4" in seen, seen
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = _cli(*args, "--out", str(tmp_path / "b"))
    _out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "resuming from step 4" in err
    a = torch.load(tmp_path / "a" / "vqvae.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "b" / "vqvae.pth.tar", weights_only=True)
    assert a["step"] == b["step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa = torch.load(tmp_path / "a" / "train" / "vqvae" / "state.pt", weights_only=False)
    sb = torch.load(tmp_path / "b" / "train" / "vqvae" / "state.pt", weights_only=False)
    assert sa["history"] == sb["history"] and len(sa["history"]) == 8
    for ea, eb in zip(sa["extra"]["vq"]["ema"], sb["extra"]["vq"]["ema"], strict=True):
        assert torch.equal(ea["k_sum"], eb["k_sum"]) and torch.equal(ea["k_elem"], eb["k_elem"])


def test_upsampler_resumes_exactly_after_a_stop(
    tmp_path: Path, trained: Path, data: Path, config_file: Path
) -> None:
    """A run stopped at step 3 of 6 (as on SIGTERM) and run again ends where a straight run ends."""
    torch.set_num_threads(1)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "vqvae.pth.tar").write_bytes((trained / "vqvae.pth.tar").read_bytes())
    kw: dict[str, Any] = dict(level=0, steps=6, batch_size=2, progress=False, save_every=100)
    train("upsampler", config_file, data, tmp_path / "a", **kw)
    first = train("upsampler", config_file, data, tmp_path / "b", stop_after=3, **kw)
    assert (first.step, first.stopped) == (3, "stopped")
    b = train("upsampler", config_file, data, tmp_path / "b", **kw)
    assert (b.resumed_from, b.step) == (3, 6)
    wa = torch.load(tmp_path / "a" / "prior_level_0.pth.tar", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "prior_level_0.pth.tar", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = torch.load(tmp_path / "a" / "train" / "prior_level_0" / "state.pt", weights_only=False)["history"]
    hb = torch.load(tmp_path / "b" / "train" / "prior_level_0" / "state.pt", weights_only=False)["history"]
    assert ha == hb


def test_truncated_and_unlabeled_files_are_skipped_with_a_message(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_folder(tmp_path / "data", n=4)
    good = (folder / "audio" / "bach_0.flac").read_bytes()
    (folder / "audio" / "bach_2.flac").write_bytes(good[: len(good) // 3])  # cut off mid-stream
    sf.write(folder / "audio" / "nobody.flac", _tone(2.0, 440.0, 9), SR)  # no labels row
    s = train("vqvae", config_file, folder, tmp_path / "out", steps=2, **VQ)
    assert s.step == 2
    text = " ".join(s.skipped) + capsys.readouterr().err
    assert "bach_2.flac" in text and "nobody.flac" in text


def test_bad_requests_are_refused_in_words(tmp_path: Path, data: Path, config_file: Path) -> None:
    with pytest.raises(TrainError, match="unknown training kind"):
        train("decoder", config_file, data, tmp_path)
    with pytest.raises(TrainError, match="level 0 or 1"):
        train("upsampler", config_file, data, tmp_path, level=2, steps=1)
    with pytest.raises(TrainError, match="train it first"):
        train("prior", config_file, data, tmp_path / "empty", steps=1)
    with pytest.raises(TrainError, match="no model config"):
        train("vqvae", tmp_path / "nowhere.json", data, tmp_path, steps=1)
    with pytest.raises(TrainError, match="cannot start from demo"):  # another model's shapes
        train("vqvae", config_file, data, tmp_path / "o5", steps=1, init_from="demo", **VQ)
    with pytest.raises(TrainError, match="no data folder"):
        train("vqvae", config_file, tmp_path / "missing", tmp_path / "o2", steps=1)
    with pytest.raises(TrainError, match=r"--steps.*--max-minutes"):
        train("vqvae", config_file, data, tmp_path / "o3", **VQ)
    other = tiny_config("other", lyrics="none", custom_labels=LABELS, width=16)
    other.save(tmp_path / "other.json")
    (tmp_path / "o4").mkdir()
    ModelConfig.load(config_file).save(tmp_path / "o4" / "model.json")
    with pytest.raises(TrainError, match="different model"):
        train("vqvae", tmp_path / "other.json", data, tmp_path / "o4", steps=1)


def test_time_budget_stops_cleanly_with_a_checkpoint(tmp_path: Path, data: Path, config_file: Path) -> None:
    s = train("vqvae", config_file, data, tmp_path, max_minutes=0.05, **VQ)  # 3 s: calibrates, then fits
    assert s.stopped in ("done", "time") and s.step > 0
    assert (tmp_path / "vqvae.pth.tar").exists() and (tmp_path / "train" / "vqvae" / "state.pt").exists()
