"""`jukebot worker` and `jukebot publish run` with the database unreachable or the storage unusable:
one line that says what cannot be used and the setting to fix, a non-zero exit, no traceback
(trustgaps 4). Each case is the real command in its own process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "worker": ["worker", "--once", "--device", "cpu", "--threads", "1"],
    "publish run": ["publish", "run"],
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jukebot(args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JUKEBOT_", "AWS_"))}
    clean.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=tmp,
        env=clean,
        capture_output=True,
        text=True,
        timeout=180,
    )


def reason(res: subprocess.CompletedProcess[str], *words: str) -> str:
    """The worker logs its start on stderr too: the reason is one `Error:` line, and no traceback."""
    assert res.returncode not in (0, None), res.stderr
    assert "Traceback" not in res.stderr and "╭" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_the_database_unreachable(command: str, tmp_path: Path) -> None:
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/test"
    res = jukebot(
        COMMANDS[command], tmp_path, JUKEBOT_DATABASE_URL=dead, JUKEBOT_STORAGE_URL=str(tmp_path / "s")
    )
    reason(res, "Cannot reach the database", "JUKEBOT_DATABASE_URL")


@pytest.mark.parametrize("command", COMMANDS)
def test_the_storage_unusable(command: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    db = f"sqlite:///{tmp_path / 'jukebot.db'}"
    res = jukebot(
        COMMANDS[command],
        tmp_path,
        JUKEBOT_DATABASE_URL=db,
        JUKEBOT_STORAGE_URL=str(tmp_path / "a-file" / "s"),
    )
    reason(res, "storage", "JUKEBOT_STORAGE_URL")
    s3 = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
    }
    res = jukebot(
        COMMANDS[command], tmp_path, JUKEBOT_DATABASE_URL=db, JUKEBOT_STORAGE_URL="s3://bucket/jb", **s3
    )
    reason(res, "Cannot use the storage s3://bucket/jb", "JUKEBOT_STORAGE_URL")
