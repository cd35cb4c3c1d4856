"""`manifest.json`: the size and SHA-256 of each file in a folder, to know a file is still the one
written there. Two folders keep one: the download cache of OpenAI's files
(engine.model.checkpoint_download records each file it fetched) and a model folder `jukebot train`
wrote (checked whole on every load)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from engine.model.checkpoints import CheckpointError

log = logging.getLogger(__name__)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Manifest:
    """`manifest.json` in a folder (the download cache; a trained model folder uses the same format):
    {relative path: {sha256, size, mtime_ns, source}}."""

    def __init__(self, root: Path) -> None:
        self.path = root / "manifest.json"
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                log.warning("ignoring unreadable %s", self.path)

    def get(self, rel: str) -> dict[str, Any] | None:
        return self.entries.get(rel)

    def record(self, rel: str, file: Path, sha: str, source: str) -> None:
        st = file.stat()
        self.entries[rel] = {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "source": source}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


# `manifest.json` in a trained model folder: {file name: {sha256, size, mtime_ns, source}}, the
# files `jukebot train` wrote there (model.json and each part's .pth.tar), in the cache's format.
MODEL_MANIFEST = "manifest.json"
TRAINED_BY = "jukebot train"


def record_model_file(folder: Path, name: str) -> None:
    """`jukebot train` wrote `folder/name`: record its size and SHA-256 in the folder's manifest."""
    file = Path(folder) / name
    manifest = Manifest(Path(folder))
    manifest.record(name, file, sha256_file(file), TRAINED_BY)


def verify_model_folder(folder: Path) -> None:
    """Refuse a file of a trained model folder that is not the one `jukebot train` wrote.

    Every file the manifest lists that is in the folder is hashed on each load (strict and simple:
    a trained folder is read whole to load it anyway). A folder without a manifest (trained before
    manifests, the shipped demo, files of the original code) is loaded unchecked, as before; a file
    the manifest does not list (a sampling.json added by hand) is not checked either."""
    folder = Path(folder)
    path = folder / MODEL_MANIFEST
    if not path.is_file():
        return
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in entries.values()
        ):
            raise ValueError("not a list of files with their SHA-256")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(
            f"{path} is damaged ({e}); the folder's files cannot be checked. Train again, or delete "
            f"{MODEL_MANIFEST} to load the folder unchecked."
        ) from None
    for name, entry in sorted(entries.items()):
        file = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not file.is_file():
            continue
        size = file.stat().st_size
        if size != entry.get("size", size) or sha256_file(file) != entry["sha256"]:
            raise CheckpointError(
                f"{file} is not the file `{TRAINED_BY}` wrote: it changed since (its size or SHA-256 "
                f"differs from {MODEL_MANIFEST}). Put back the trained file, run the training again, "
                f"or delete {path} to accept the folder as it is."
            )
