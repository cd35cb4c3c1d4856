"""The README's two commands on other machines: which Python `make` takes, and what `make test`
says when a system prerequisite is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fake_python(bin_dir: Path, name: str, supported: bool) -> None:
    # Answers the Makefile's version check the way a Python of that version would.
    script = bin_dir / name
    script.write_text(f"#!/bin/sh\nexit {0 if supported else 1}\n")
    script.chmod(0o755)


def _make_py(bin_dir: Path) -> str:
    make = shutil.which("make")
    assert make is not None
    out = subprocess.run(
        [make, "-s", "-C", str(ROOT), "--eval", "show-py: ; @echo PY=$(PY)", "show-py"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_make_takes_the_newest_supported_python(tmp_path: Path) -> None:
    for name in ("sh", "sha1sum", "cut", "cat", "echo"):
        found = shutil.which(name)
        assert found is not None
        (tmp_path / name).symlink_to(found)
    _fake_python(tmp_path, "python3.13", supported=False)  # e.g. a broken or too new one
    _fake_python(tmp_path, "python3.12", supported=True)
    _fake_python(tmp_path, "python3.11", supported=True)
    assert _make_py(tmp_path) == f"PY={tmp_path / 'python3.12'}"
    (tmp_path / "python3.12").unlink()
    (tmp_path / "python3.11").unlink()
    _fake_python(tmp_path, "python3", supported=False)  # e.g. 3.10
    assert _make_py(tmp_path) == "PY="


def test_prereqs_name_the_command_that_installs_what_is_missing(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run(
        [bash, str(ROOT / ".ci" / "prereqs.sh")],
        env={"PATH": str(tmp_path)},  # no fluidsynth, no pg_isready
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "fix (as root): apt-get install -y fluidsynth" in proc.stderr
    assert "apt-get install -y postgresql" in proc.stderr
