"""The output folder of `jukebot generate`: made and proved writable before the model loads, and
`run.json`, which names the request a folder holds, so that running the same command again carries
on where it stopped and another request is refused there (unless --fresh)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.commands.generate_args import GenerateError


def make_out_folder(out: Path) -> None:
    """--out, made now (before a model takes minutes to load) and proved writable."""
    if out.exists() and not out.is_dir():
        raise GenerateError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".jukebot-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        parent = next((p for p in out.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise GenerateError(f"--out {out}: {parent} is a file, not a folder") from None
        raise GenerateError(f"--out {out}: cannot make or write this folder ({e.strerror or e})") from None


def _read_run_record(run_file: Path) -> dict[str, Any]:
    """run.json of an earlier run in the folder; a damaged one is said, not a traceback."""
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        previous = None
    if not isinstance(previous, dict):
        raise GenerateError(
            f"{run_file} is damaged (not a jukebot run record); use --fresh to start over in "
            f"{run_file.parent}, or another --out folder"
        )
    return previous


def run_digest(d: dict[str, Any]) -> str:
    """A short name of `d` (its JSON, keys sorted): equal requests, equal names."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_run(out: Path, run_id: dict[str, Any], *, fresh: bool) -> bool:
    """Write `run.json` naming the request `run_id` in `out`; `fresh` discards an unfinished run
    there first. Refuses a folder holding another request's run. Returns whether an earlier run of
    this request is resumed (its checkpoints or drafts are there)."""
    from engine.sampling.song import DRAFTS

    run_file = out / "run.json"
    if fresh:
        for f in out.glob(".checkpoint-*.npz"):
            f.unlink()
        for f in (out / DRAFTS, run_file):
            f.unlink(missing_ok=True)
    if run_file.exists():
        previous = _read_run_record(run_file)
        if previous.get("id") != run_digest(run_id):
            raise GenerateError(
                f"{out} holds a run of a different request; use another --out folder, "
                "or --fresh to start over there"
            )
    try:
        run_file.write_text(json.dumps({"id": run_digest(run_id), **run_id}, indent=1, default=str))
    except OSError as e:
        raise GenerateError(f"--out {out}: cannot write in this folder ({e.strerror or e})") from None
    return any(out.glob(".checkpoint-*.npz")) or (out / DRAFTS).exists()
