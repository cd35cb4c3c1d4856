"""OpenAI's released Jukebox files: which they are, and their download (mirrors, resume, SHA-256).

Download: each file is tried at every mirror in order (a user URL or local folder first, then
the CDN host, then the blob-storage origin). A partial download is kept as `<file>.part` and
resumed with an HTTP Range request. OpenAI's released files are checked against the sizes and
SHA-256 shipped here (`RELEASED_KNOWN`): a mirror or folder that serves anything else is refused,
whatever the cache's manifest says. The SHA-256 of a file is also recorded in `manifest.json` in
the cache folder the first time it is downloaded and checked after every later download and
whenever the file's size or time changed (the only check for files we know no digest of).
OpenAI's weights are under a noncommercial licence: the notice is shown whenever they are fetched.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.model.checkpoints import CheckpointError
from engine.model.manifests import Manifest, sha256_file

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


class DownloadError(CheckpointError):
    pass


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
