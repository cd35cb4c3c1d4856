"""Where audio, codes and checkpoints live: one fsspec URL (a local folder by default, `./data`).

Any fsspec URL works unchanged (`memory://`, `s3://bucket/prefix`, `file:///srv/jukebot`, …).
Writes are atomic: the bytes go to a temporary key in the same folder, then are moved into place
(a rename on a local disk), so a reader sees the old file or the new one, never half of one.
Keys are relative POSIX paths inside the root; anything that could escape it is refused.

Several hosts may share one remote store (the workers of a scaled-out deployment and the bot): what one
host wrote is seen by the others at once, because every look-up asks the store itself (s3fs would
otherwise answer from the folder listings it saw earlier). For S3 and S3-protocol servers (MinIO, moto,
...) the bucket, endpoint and keys come from the standard AWS variables: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL (a server that is not AWS), AWS_DEFAULT_REGION.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from db.private_files import FILE_MODE, private_folder

if TYPE_CHECKING:
    from db.settings import Settings

_TMP_MARK = ".tmp-"
_DRIVE = re.compile(r"^[A-Za-z]:")


class StorageUnavailable(RuntimeError):
    """The storage URL cannot be used; the message says why and what to do."""


def check_key(key: str, *, allow_empty: bool = False) -> str:
    """Return `key` if it is a safe relative POSIX path inside the root; else raise ValueError."""
    if not isinstance(key, str):
        raise ValueError(f"A storage key must be text, not {type(key).__name__}.")
    if key == "" and allow_empty:
        return key
    problem = None
    if not key.strip():
        problem = "it is empty"
    elif "\\" in key:
        problem = "it contains a backslash (use / between folders)"
    elif "\x00" in key or any(ord(c) < 32 for c in key):
        problem = "it contains a control character"
    elif key.startswith("/") or key.startswith("~") or _DRIVE.match(key):
        problem = "it is an absolute path"
    elif "://" in key or key.startswith("::"):
        problem = "it looks like a URL"
    else:
        parts = key.rstrip("/").split("/") if allow_empty else key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            problem = "it has an empty, '.' or '..' part"
    if problem:
        raise ValueError(
            f"Storage key {key!r} is not allowed: {problem}. Keys look like 'songs/12/draft-0.wav'."
        )
    return key


class Storage:
    """Files under one root, addressed by relative keys such as 'songs/12/draft-0.wav'."""

    def __init__(self, url: str | os.PathLike[str]) -> None:
        text = os.fspath(url).strip()
        if not text:
            raise StorageUnavailable(
                "The storage URL is empty. Set JUKEBOT_STORAGE_URL, e.g. ./data or s3://bucket/jukebot."
            )
        try:
            fs, root = fsspec.core.url_to_fs(text)
        except ImportError as exc:
            raise StorageUnavailable(
                f"The storage URL {text!r} needs a package that is not installed ({exc}). "
                "Install it (e.g. `pip install s3fs` for s3://), or use a local folder."
            ) from None
        except (ValueError, TypeError) as exc:
            raise StorageUnavailable(
                f"The storage URL {text!r} cannot be used: {exc}. Use a folder such as ./data, or an "
                "fsspec URL such as s3://bucket/prefix (JUKEBOT_STORAGE_URL)."
            ) from None
        self.url = text
        self.fs: Any = fs
        self.is_local = isinstance(fs, LocalFileSystem)
        if self.is_local:
            root = str(Path(root).expanduser().resolve())
        self.root = root.rstrip("/") or "/"
        self._prepare_root()

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    def _makedirs(self, path: str) -> None:
        if self.is_local:
            private_folder(Path(path))  # 0700: stored audio and lyrics are the members' own
        else:
            self.fs.makedirs(path, exist_ok=True)

    def _prepare_root(self) -> None:
        try:
            self._makedirs(self.root)
        except OSError as exc:
            raise StorageUnavailable(
                f"Cannot create the storage folder {self.root} ({self.url}): {exc.strerror or exc}. "
                "Choose a writable place with JUKEBOT_STORAGE_URL."
            ) from None
        except (
            Exception
        ) as exc:  # a remote store's client errors (no credentials, no endpoint) are not OSErrors
            if self.is_local:
                raise
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise StorageUnavailable(
                f"Cannot use the storage {self.url}: {why}. Check the bucket and its credentials "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, and AWS_ENDPOINT_URL for a server that is not "
                "AWS), or choose another place with JUKEBOT_STORAGE_URL."
            ) from None
        if self.is_local and not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(
                f"The storage folder {self.root} is not writable for this user. Fix its permissions or "
                "choose another place with JUKEBOT_STORAGE_URL."
            )

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}" if self.root != "/" else f"/{check_key(key)}"

    def _fresh(self, path: str) -> str:
        """`path`, with what this process remembers of it and its folders forgotten: another host may
        have written or deleted it since (a no-op on a local disk, which keeps no such memory)."""
        if not self.is_local:
            self.fs.invalidate_cache(path)
        return path

    def write_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, atomically (a reader never sees a half-written file)."""
        path = self._path(key)
        parent, name = path.rsplit("/", 1)
        tmp = f"{parent}/.{name}{_TMP_MARK}{uuid.uuid4().hex}"
        self._makedirs(parent)
        try:
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
                if self.is_local:  # the bytes are on disk before the rename makes them visible
                    os.fchmod(f.fileno(), FILE_MODE)
                    f.flush()
                    os.fsync(f.fileno())
            self.fs.mv(tmp, path)
        except BaseException:
            try:
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
            except OSError:
                pass
            raise

    def write_file(self, key: str, source: str | os.PathLike[str]) -> None:
        """Store a local file under `key`, atomically."""
        self.write_bytes(key, Path(source).read_bytes())

    def read_bytes(self, key: str) -> bytes:
        """The bytes under `key`; FileNotFoundError (naming the key) if there are none."""
        path = self._fresh(self._path(key))
        try:
            with self.fs.open(path, "rb") as f:
                return bytes(f.read())
        except FileNotFoundError:
            raise FileNotFoundError(f"Nothing is stored under {key!r} in {self.url}.") from None

    def exists(self, key: str) -> bool:
        return bool(self.fs.isfile(self._fresh(self._path(key))))

    def delete(self, key: str) -> bool:
        """Remove `key`; False when there was nothing to remove."""
        path = self._fresh(self._path(key))
        if not self.fs.isfile(path):
            return False
        self.fs.rm(path)
        return True

    def list(self, prefix: str = "") -> list[str]:
        """Every key under `prefix` (a folder such as 'songs/12'), sorted; temporary files left out."""
        check_key(prefix, allow_empty=True)
        base = f"{self.root}/{prefix.strip('/')}" if prefix else self.root
        if not self.is_local:
            self.fs.invalidate_cache()  # the whole tree below may have changed, not just `base`
        if not self.fs.exists(base):
            return []
        start = len(self.root.rstrip("/")) + 1
        keys = []
        for found in self.fs.find(base):
            key = self.fs._strip_protocol(found)[start:] if not self.is_local else str(found)[start:]
            if _TMP_MARK not in key.rsplit("/", 1)[-1]:
                keys.append(key)
        return sorted(keys)

    def local_path(self, key: str) -> Path | None:
        """The file's path on this machine for a local storage (for ffmpeg and friends), else None."""
        return Path(self._path(key)) if self.is_local else None

    def size(self, key: str) -> int:
        return int(self.fs.size(self._fresh(self._path(key))))


def get_storage(settings: Settings | None = None) -> Storage:
    """The storage named by JUKEBOT_STORAGE_URL (default ./data)."""
    if settings is None:
        from db.settings import get_settings

        settings = get_settings()
    return Storage(settings.storage.storage_url)
