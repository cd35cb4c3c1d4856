"""The layer contracts in pyproject.toml (import-linter, run by `make lint`) hold on the tree, and
each one breaks when the import it forbids is added to a copy of the tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "db", "engine", "lyrics", "publisher")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "data", "*.pt*")
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_tree_keeps_every_contract() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and " kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("bot/errors.py", "import torch", "The bot never imports torch BROKEN"),
        ("engine/__init__.py", "import discord", "The worker never imports discord BROKEN"),
        ("db/models.py", "import bot", "Layers: db <- engine <- lyrics, publisher <- bot BROKEN"),
        ("lyrics/errors.py", "import publisher", "Layers: db <- engine <- lyrics, publisher <- bot BROKEN"),
        ("db/database.py", "import db.repo", "No import cycles between sibling modules or packages BROKEN"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    root = _copy_tree(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    done = _lint(root)
    assert done.returncode != 0 and broken in done.stdout, done.stdout + done.stderr
