"""OpenAI's Jukebox checkpoint files: download (mirrors, resume, SHA-256) and strict loading.

Download: each file is tried at every mirror in order (a user URL or local folder first, then
the CDN host, then the blob-storage origin). A partial download is kept as `<file>.part` and
resumed with an HTTP Range request. OpenAI's released files are checked against the sizes and
SHA-256 shipped here (`RELEASED_KNOWN`): a mirror or folder that serves anything else is refused,
whatever the cache's manifest says. The SHA-256 of a file is also recorded in `manifest.json` in
the cache folder the first time it is downloaded and checked after every later download and
whenever the file's size or time changed (the only check for files we know no digest of). OpenAI's weights are under a noncommercial licence: the notice is
shown whenever they are fetched.

Loading: the original files are `{'model': state_dict, ...}` (maybe `hps`, `step`, `opt`), fp16 or
fp32 tensors, maybe with `module.` prefixes. They are read without running pickled code
(`weights_only`, or a whitelist unpickler for files that carry the original `Hyperparams`) and
loaded strictly; a file that does not fit raises `CheckpointError` naming the file and the shapes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import pickle
import shutil
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

LICENSE_NOTICE = (
    "OpenAI's Jukebox weights are under OpenAI's Noncommercial Use License: no portion of them, nor any "
    "content created with them, may be used for commercial purposes "
    "(https://github.com/openai/jukebox/blob/master/LICENSE)."
)

# Files of the released models, relative to a mirror's root.
VQVAE_FILE = "jukebox/models/5b/vqvae.pth.tar"
UPSAMPLER_FILES = ("jukebox/models/5b/prior_level_0.pth.tar", "jukebox/models/5b/prior_level_1.pth.tar")
TOP_FILES = {
    "5b": "jukebox/models/5b/prior_level_2.pth.tar",
    "5b_lyrics": "jukebox/models/5b_lyrics/prior_level_2.pth.tar",
    "1b_lyrics": "jukebox/models/1b_lyrics/prior_level_2.pth.tar",
}
DEFAULT_MIRRORS = ("https://openaipublic.azureedge.net/", "https://openaipublic.blob.core.windows.net/")


@dataclass(frozen=True)
class KnownFile:
    """What a released file must be; None where no trustworthy figure was found."""

    size: int | None = None
    sha256: str | None = None


# OpenAI publishes no digests. These come from third parties who downloaded the official files:
# - SHA-256 of 5b/vqvae.pth.tar and 5b/prior_level_2.pth.tar: github.com/ZeyuLing/Motius (EDGE docs,
#   "expected files" of jukemirlib's cache, which fetches openaipublic.azureedge.net/jukebox/models/5b/).
# - size of 5b/prior_level_2.pth.tar: github.com/midotronn/MAESTRO scripts/process_song.sh (PRIOR_SIZE,
#   checked after downloading the same URL).
# No size or digest was found for 5b/prior_level_0, 5b/prior_level_1, 5b_lyrics and 1b_lyrics
# prior_level_2: those are still trusted on first download (recorded in the cache's manifest).
RELEASED_KNOWN: dict[str, KnownFile] = {
    VQVAE_FILE: KnownFile(sha256="69745413a48e887f8a3fe91b972a6f7f434021a1ce911a99187b331eb48c059a"),
    TOP_FILES["5b"]: KnownFile(
        size=10_288_727_721, sha256="89a1dd14f5b2f9b16b3e73b53fa2138cc89fd96bb13249b4267fea471de92672"
    ),
}


def released_files(name: str) -> dict[str, str]:
    """{'vqvae', 'prior_level_0', 'prior_level_1', 'prior_level_2'} -> path under a mirror."""
    if name not in TOP_FILES:
        raise KeyError(f"unknown released model {name!r}; choose one of {sorted(TOP_FILES)}")
    return {
        "vqvae": VQVAE_FILE,
        "prior_level_0": UPSAMPLER_FILES[0],
        "prior_level_1": UPSAMPLER_FILES[1],
        "prior_level_2": TOP_FILES[name],
    }


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be fetched, read, or does not fit the model."""


class DownloadError(CheckpointError):
    pass


# ---------------------------------------------------------------------------------------------
# Download


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Manifest:
    """`manifest.json` in the cache folder: {relative path: {sha256, size, mtime_ns, source}}."""

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


# ---------------------------------------------------------------------------------------------
# The manifest of a model folder written by `jukebot train`

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


def _not_known(rel: str, path: Path, known: KnownFile | None) -> str | None:
    """Why `path` is not OpenAI's `rel` (size first: cheap), or None when it is (or nothing is known)."""
    if known is None:
        return None
    size = path.stat().st_size
    if known.size is not None and size != known.size:
        return f"it is {size} bytes, OpenAI's file is {known.size}"
    if known.sha256 is not None:
        sha = sha256_file(path)
        if sha != known.sha256:
            return f"its SHA-256 is {sha}, OpenAI's file has {known.sha256}"
    return None


def _is_url(mirror: str) -> bool:
    return mirror.startswith(("http://", "https://"))


def _local_candidates(mirror: str, rel: str) -> list[Path]:
    root = Path(mirror.removeprefix("file://")).expanduser()
    short = rel.removeprefix("jukebox/models/")
    return [root / rel, root / short, root / Path(rel).name]


def _progress(total: int | None, initial: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        file=sys.stderr,
        leave=False,
        # sizes first: in a narrow terminal tqdm shrinks the bar, then trims the end (the speed)
        bar_format="{desc} {n_fmt}/{total_fmt} {percentage:3.0f}% {bar} {rate_fmt}",
    )


def _http_get(url: str, part: Path, *, timeout: float, progress: bool, chunk: int = 1 << 20) -> None:
    """Download `url` into `part`, resuming from its current size. Raises on any failure,
    including a response that ends before the announced length."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(
        url, headers={"User-Agent": "jukebot", **({"Range": f"bytes={have}-"} if have else {})}
    )
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # asked past the end: is the part already whole?
            whole = e.headers.get("Content-Range", "").rpartition("/")[2]
            if whole.isdigit() and int(whole) == have:
                return
            part.unlink()
            raise DownloadError(f"HTTP 416 with a partial file of {have} bytes; starting again") from e
        raise
    with resp:
        if have and resp.status == 200:  # the server ignored the range: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        bar = _progress(total, have, Path(url).name, progress)
        try:
            with open(part, "ab" if have else "wb") as f:
                while block := resp.read(chunk):
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"the connection ended after {size} of {total} bytes")


def fetch(
    rel: str,
    *,
    cache_dir: str | Path,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    progress: bool = True,
    attempts: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
    notice: Callable[[str], None] | None = None,
    known: Mapping[str, KnownFile] | None = None,
) -> Path:
    """The local path of checkpoint file `rel` (e.g. `jukebox/models/5b/vqvae.pth.tar`), downloading
    it if needed. `notice` receives the licence text before anything is downloaded. `known` is the
    table of released files' sizes and digests (default `RELEASED_KNOWN`; tests pass their own)."""
    root = Path(cache_dir).expanduser()
    dest = root / rel
    manifest = Manifest(root)
    want = (RELEASED_KNOWN if known is None else known).get(rel)
    if dest.exists():
        entry = manifest.get(rel)
        st = dest.stat()
        unchanged = entry is not None and (st.st_size, st.st_mtime_ns) == (entry["size"], entry["mtime_ns"])
        if unchanged and want is not None and entry is not None:
            # the manifest may have recorded a substitute as good (before this check existed)
            unchanged = (want.size is None or want.size == entry["size"]) and (
                want.sha256 is None or want.sha256 == entry["sha256"]
            )
        if unchanged:
            return dest
        why = _not_known(rel, dest, want)
        sha = sha256_file(dest) if why is None else ""
        if why is None and (entry is None or sha == entry["sha256"] or want is not None):
            manifest.record(rel, dest, sha, (entry or {}).get("source", "found in cache"))
            return dest
        log.warning(
            "%s is not the expected file (%s); downloading it again", dest, why or "it changed on disk"
        )
        dest.unlink()
    if notice is not None:
        notice(LICENSE_NOTICE)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = (manifest.get(rel) or {}).get("sha256") if want is None else None
    for round_ in range(2):  # a mismatch gets one clean re-download (it may have been a bad transfer)
        source = _download_any(
            rel, dest, mirrors, progress=progress, attempts=attempts, timeout=timeout, backoff=backoff
        )
        why = _not_known(rel, dest, want)
        sha = sha256_file(dest) if why is None else ""
        if why is None and (expected is None or sha == expected):
            manifest.record(rel, dest, sha, source)
            return dest
        dest.unlink()
        if round_ == 1 and why is None:
            raise CheckpointError(
                f"{rel}: downloaded twice and its SHA-256 is {sha}, not the recorded {expected}. The mirror "
                f"serves a different file; check it, or delete {manifest.path} to accept the new one."
            )
        if round_ == 1:
            raise CheckpointError(
                f"{rel}: refused the file from {source} twice: {why}. It is not OpenAI's released file; "
                f"point JUKEBOT_MODEL_URL at OpenAI's original files."
            )
        log.warning("%s from %s: %s; downloading once more", rel, source, why or "SHA-256 mismatch")
    raise AssertionError("unreachable")


def _download_any(
    rel: str,
    dest: Path,
    mirrors: Sequence[str],
    *,
    progress: bool,
    attempts: int,
    timeout: float,
    backoff: float,
) -> str:
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    for mirror in mirrors:
        if not mirror:
            continue
        if not _is_url(mirror):
            for cand in _local_candidates(mirror, rel):
                if cand.is_file():
                    shutil.copyfile(cand, part)
                    os.replace(part, dest)
                    return str(cand)
            failures.append(f"{mirror}: no {rel} in this folder")
            continue
        url = mirror.rstrip("/") + "/" + rel
        for attempt in range(attempts):
            try:
                _http_get(url, part, timeout=timeout, progress=progress)
                os.replace(part, dest)
                return url
            except (OSError, DownloadError, http.client.HTTPException) as e:
                why = _why(e)
                log.warning("download %s failed (attempt %d of %d): %s", url, attempt + 1, attempts, why)
                if isinstance(e, urllib.error.HTTPError) and e.code in (401, 403, 404, 410):
                    break  # retrying will not help at this mirror
                if attempt + 1 < attempts:
                    time.sleep(backoff * (attempt + 1))
        failures.append(f"{url}: {why}")
    lines = "\n".join(f"  - {f}" for f in failures) or "  (no mirrors configured)"
    raise DownloadError(f"could not download {rel} from any mirror:\n{lines}")


def _why(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"cannot connect ({e.reason})"
    if isinstance(e, http.client.IncompleteRead):
        return f"the connection ended early ({len(e.partial)} bytes in the last read)"
    return str(e) or type(e).__name__


def fetch_released(
    name: str,
    parts: Iterable[str] | None = None,
    *,
    settings: Any = None,
    progress: bool = True,
    notice: Callable[[str], None] | None = None,
    known: Mapping[str, KnownFile] | None = None,
) -> dict[str, Path]:
    """Fetch a released model's files ({part: local path}); mirrors and cache from `db.settings`."""
    if settings is None:
        from db.settings import get_settings

        settings = get_settings()
    files = released_files(name)
    mirrors = [m for m in [settings.engine.model_url, *settings.engine.model_mirrors] if m]
    shown: list[bool] = []

    def once(text: str) -> None:
        if not shown:
            shown.append(True)
            (notice or (lambda t: print(t, file=sys.stderr)))(text)

    return {
        part: fetch(
            files[part],
            cache_dir=settings.engine.model_cache_dir,
            mirrors=mirrors,
            progress=progress,
            notice=once,
            known=known,
        )
        for part in (parts or files)
    }


# ---------------------------------------------------------------------------------------------
# Reading and loading


class _Hyperparams(dict):
    """Stand-in for the original `jukebox.hparams.Hyperparams` (a dict with attribute access)."""


_SAFE = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("builtins", "slice"),
    # Pickle protocol 2 (torch.save's default) writes the bytes inside a numpy scalar as
    # `_codecs.encode(text, "latin1")`; the original's hps hold such scalars (torch allows it too).
    ("_codecs", "encode"),
}


class RefusedObject(pickle.UnpicklingError):
    """A checkpoint names a Python object that is not on the allow-list."""


class _WhitelistUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name == "Hyperparams" and module.endswith("hparams"):
            return _Hyperparams
        if (module, name) in _SAFE or (
            module == "torch"
            and (name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype))
        ):
            return super().find_class(module, name)
        raise RefusedObject(f"{module}.{name}")


_whitelist_pickle = types.ModuleType("jukebot_whitelist_pickle")
_whitelist_pickle.Unpickler = _WhitelistUnpickler  # type: ignore[attr-defined]
_whitelist_pickle.load = lambda f, **kw: _WhitelistUnpickler(f, **kw).load()  # type: ignore[attr-defined]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of an original-format file, without running arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Weights only load failed" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_whitelist_pickle)
    except CheckpointError:
        raise
    except RefusedObject as e:
        raise CheckpointError(
            f"{path}: not loaded: it holds {e}, which is not allowed in a checkpoint (only tensors, "
            "numbers, strings, containers and the original's hparams are read, never code)"
        ) from None
    except Exception as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: cannot read this checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"The file is {size} bytes; it may be truncated or not a PyTorch file. Delete it to download it again."
        ) from e
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        return dict(obj)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return {"model": dict(obj)}  # a bare state dict
    raise CheckpointError(f"{path}: not a Jukebox checkpoint (expected a dict with a 'model' state dict)")


def state_dict_of(ckpt: Mapping[str, Any]) -> dict[str, Tensor]:
    """The original `restore_model`: strip a leading `module.` from every key."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in ckpt["model"].items()}


def hparams_of(ckpt: Mapping[str, Any]) -> dict[str, Any] | None:
    hps = ckpt.get("hps")
    return dict(hps) if isinstance(hps, Mapping) else None


@dataclass
class Mismatch:
    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self, limit: int = 5) -> str:
        lines = []
        if self.shapes:
            lines.append(f"{len(self.shapes)} tensors have other shapes (expected vs found):")
            lines += [f"    {k}: expected {list(a)}, found {list(b)}" for k, a, b in self.shapes[:limit]]
        if self.missing:
            lines.append(
                f"{len(self.missing)} expected tensors are missing: " + ", ".join(self.missing[:limit])
            )
        if self.unexpected:
            lines.append(
                f"{len(self.unexpected)} tensors are not part of this model: "
                + ", ".join(self.unexpected[:limit])
            )
        return "\n".join("  " + line for line in lines)


def compare(module: nn.Module, sd: Mapping[str, Tensor]) -> Mismatch:
    want = module.state_dict()
    return Mismatch(
        missing=[k for k in want if k not in sd],
        unexpected=[k for k in sd if k not in want],
        shapes=[
            (k, tuple(v.shape), tuple(sd[k].shape))
            for k, v in want.items()
            if k in sd and tuple(v.shape) != tuple(sd[k].shape)
        ],
    )


def load_into(
    module: nn.Module, path: str | Path, what: str = "model", *, assign: bool = False
) -> dict[str, Any]:
    """Strictly load an original-format file into `module`; returns the checkpoint dict.
    `assign=True` takes the file's tensors as the parameters (for a module built on `meta`)."""
    ckpt = read_checkpoint(path)
    sd = state_dict_of(ckpt)
    bad = compare(module, sd)
    if bad:
        hint = ""
        if any(k.startswith(("priors.", "vqvae.")) for k in sd):
            hint = "\n  It looks like a Hugging Face transformers file; use OpenAI's original files."
        raise CheckpointError(f"{path}: this checkpoint does not fit the {what}:\n{bad.describe()}{hint}")
    module.load_state_dict(sd, strict=True, assign=assign)
    return ckpt
