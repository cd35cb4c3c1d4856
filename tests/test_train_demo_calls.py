"""bench/train_demo.sh trains the demo's VQ-VAE over several short GPU calls (docs/DEMO.md "Retraining
plan"): a `VQVAE_ONLY=1` call returns the whole training state, a `RESUME_VQVAE=DIR` call puts it
back and carries on exactly, and `PRIORS_FROM_VQVAE=DIR` trains priors against the final VQ-VAE.
Run here on the CPU, as the GPU machine runs it (bash, a corpus tar, $OUT), with a tiny VQ-VAE."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from bench.train_demo import demo_config
from engine.model.config import ModelConfig
from tests.test_train import make_folder

ROOT = Path(__file__).resolve().parents[1]
# A tiny VQ-VAE (the size knobs), crops of 0.2 s, batch 2: a call takes seconds on one core.
TINY = {
    "VQVAE_WIDTH": "8",
    "VQVAE_DEPTH": "1",
    "VQVAE_BATCH": "2",
    "VQVAE_SAMPLE_SECONDS": "0.2",
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="module")
def corpus_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus packed as `jukebot corpus pack` packs it: corpus/labels.csv + corpus/audio/ in a tar."""
    root = tmp_path_factory.mktemp("corpus")
    make_folder(root / "src" / "corpus", n=4, seconds=2.0)
    tar = root / "corpus.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root / "src" / "corpus", arcname="corpus")
    return tar


@pytest.fixture(scope="module")
def python3_here(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PATH folder whose `python3` is this test's interpreter (the script calls python3)."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    return bin_dir


def call(tmp: Path, name: str, tar: Path, bin_dir: Path, **env: str) -> tuple[Path, str]:
    """One `bench/train_demo.sh` call (a fresh WORK folder, as on a fresh machine) -> ($OUT, output)."""
    out = tmp / f"{name}-out"
    full = {
        **os.environ,
        **TINY,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "WORK": str(tmp / f"{name}-work"),
        "OUT": str(out),
        "CORPUS_TAR": str(tar),
        **env,
    }
    p = subprocess.run(
        ["bash", "bench/train_demo.sh"], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300
    )
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    return out, text


def summary(text: str) -> dict[str, object]:
    """The training command's JSON summary line."""
    line = next(ln for ln in text.splitlines() if ln.startswith('{"kind": "vqvae"'))
    return json.loads(line)  # type: ignore[no-any-return]


def test_two_vqvae_calls_end_where_one_run_ends(tmp_path: Path, corpus_tar: Path, python3_here: Path) -> None:
    """4 steps in one call == 2 steps, then a second call from what the first returned (model, Adam,
    codebook EMA, the crop sampler: all continue)."""
    first, t1 = call(
        tmp_path, "a1", corpus_tar, python3_here, VQVAE_ONLY="1", VQVAE_STEPS="4", VQVAE_STOP_AFTER="2"
    )
    assert summary(t1)["step"] == 2 and summary(t1)["steps"] == 4
    back = sorted(p.name for p in first.iterdir())
    assert back == ["logs.tar", "vqvae.pth.tar", "vqvae.state.pt.gz.0", "vqvae_heldout.json"], back
    assert all(p.stat().st_size < 16 * 2**20 for p in first.iterdir())
    with tarfile.open(first / "logs.tar") as t:
        names = set(t.getnames())
        log = t.extractfile("train/vqvae/log.jsonl")
        assert log is not None
        last = json.loads(log.read().decode().splitlines()[-1])
    assert {"model.json", "manifest.json", "train/vqvae/log.jsonl", "train/vqvae/heldout.json"} <= names
    assert last["step"] == 2  # a call's last steps are in its log, not only in the state

    second, t2 = call(
        tmp_path, "a2", corpus_tar, python3_here, VQVAE_ONLY="1", VQVAE_STEPS="4", RESUME_VQVAE=str(first)
    )
    assert "resuming from step 2" in t2
    s2 = summary(t2)
    assert (s2["resumed_from"], s2["step"], s2["stopped"]) == (2, 4, "done")
    straight, _ = call(tmp_path, "b", corpus_tar, python3_here, VQVAE_ONLY="1", VQVAE_STEPS="4")

    a = torch.load(second / "vqvae.pth.tar", weights_only=True)
    b = torch.load(straight / "vqvae.pth.tar", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = (_state(d, tmp_path) for d in (second, straight))
    assert sa["step"] == sb["step"] == 4
    assert sa["history"] == sb["history"] and len(sa["history"]) == 4
    assert sa["history"][:2] == _state(first, tmp_path)["history"]
    for ea, eb in zip(sa["extra"]["vq"]["ema"], sb["extra"]["vq"]["ema"], strict=True):
        assert torch.equal(ea["k_sum"], eb["k_sum"]) and torch.equal(ea["k_elem"], eb["k_elem"])
    assert torch.equal(sa["rng"]["sampler"], sb["rng"]["sampler"])

    held = json.loads((second / "vqvae_heldout.json").read_text())
    assert (held["step"], held["split"], held["clips"]) == (4, "test", 1)  # the test-split clip
    assert math.isfinite(held["spectral_convergence_l0"]) and len(held["levels"]) == 3
    assert held == json.loads((straight / "vqvae_heldout.json").read_text())

    # The priors against that VQ-VAE: the corpus encoded with it, the VQ-VAE not sent back.
    priors, _ = call(
        tmp_path,
        "p",
        corpus_tar,
        python3_here,
        PRIORS_FROM_VQVAE=str(second),
        PRIORS="0",
        STEPS="2",
        PRIOR_BATCH="2",
    )
    got = sorted(p.name for p in priors.iterdir())
    assert "prior_level_0.pth.tar" in got and "codes.pt.gz.0" in got and "vqvae.pth.tar" not in got, got
    work = tmp_path / "p-work" / "demo-run"
    codes = torch.load(work / "train" / "codes.pt", weights_only=False)
    from engine.training.clips import _file_digest

    assert codes["vqvae"] == _file_digest(second / "vqvae.pth.tar")
    assert ModelConfig.load(work / "model.json").vqvae.width == 8


def _state(out: Path, tmp: Path) -> dict:  # type: ignore[type-arg]
    """The training state a call returned, joined and unzipped as the next call does it."""
    parts = sorted(out.glob("vqvae.state.pt.gz.*"))
    joined = tmp / f"{out.name}.state.pt"
    subprocess.run(f"cat {' '.join(map(str, parts))} | gunzip > {joined}", shell=True, check=True)
    return torch.load(joined, weights_only=False)  # type: ignore[no-any-return]


def test_the_vqvae_size_knob_defaults_to_the_shipped_demo() -> None:
    shipped = ModelConfig.load(ROOT / "engine" / "model" / "data" / "demo" / "model.json")
    labels = shipped.custom_labels
    assert labels is not None
    cfg = demo_config(list(labels.artists[1:]), list(labels.genres[1:]))
    assert cfg.vqvae == shipped.vqvae  # nothing changes by default
    wide = demo_config(["bach"], ["chorale"], vqvae_width=64, vqvae_depth=6)
    assert (wide.vqvae.width, wide.vqvae.depth) == (64, 6)
    assert wide.priors == demo_config(["bach"], ["chorale"]).priors
