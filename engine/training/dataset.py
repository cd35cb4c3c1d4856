"""Training data: a folder of labelled audio files -> random fixed-length crops with their labels.

The folder holds audio files (any depth) and a labels file at its top:

* ``labels.csv`` with at least the columns ``file,artist,genre,lyrics`` (``file`` relative to the
  folder; ``lyrics`` may be empty for instrumental music). This is the format for fine-tuning on
  your own music. Optional columns, written by ``jukebot corpus build``: ``offset_seconds`` and
  ``total_seconds`` (where the file sits in a longer piece, for the timing labels) and ``split``
  (``train``/``test``).
* or ``labels.json``: a list of objects with the same keys, or an object mapping file -> labels.

Audio is read with soundfile (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF) and anything else (M4A, AAC,
...) with the ``ffmpeg`` binary; it is mixed to mono and resampled to the model's rate. Files that
cannot be used (truncated or unreadable data, not in the labels file, no artist or genre, an artist
or genre the model does not know, too short, silent) are skipped with one logged warning each that
names the file and the reason; ``AudioDataset.skipped`` and ``summary()`` list them.

Crops are deterministic: item ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` (a file,
chosen with probability proportional to its length, and an offset in it). Which crops a training
run has seen is therefore one integer, the number of samples consumed: ``CropSampler`` yields sample
numbers from its ``position`` and saves/restores it with ``state_dict``/``load_state_dict``, so a
run resumed from a checkpoint sees exactly the crops it would have seen without the interruption.

This module imports torch; it is for the engine only.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

log = logging.getLogger("jukebot.dataset")

LABEL_FILES = ("labels.csv", "labels.json")
# Longer files are refused (a decoded hour at 44.1 kHz is 635 MB; corpus songs are minutes long).
MAX_FILE_SECONDS = 3600.0
# Read by soundfile (libsndfile); other audio types go through ffmpeg.
SOUNDFILE_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au"}
FFMPEG_EXTENSIONS = {".m4a", ".aac", ".mp4", ".wma", ".webm", ".mka", ".mkv", ".ac3", ".alac", ".ape", ".wv"}
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS
REQUIRED_COLUMNS = ("file", "artist", "genre")


class DatasetError(ValueError):
    """The data folder cannot be used at all (no labels file, bad columns, no usable audio)."""


class AudioReadError(Exception):
    """One file cannot be read; the message says why in words a musician understands."""


@dataclass(frozen=True)
class LabelRow:
    file: str  # relative POSIX path inside the data folder
    artist: str
    genre: str
    lyrics: str
    offset_seconds: float | None = None
    total_seconds: float | None = None
    split: str | None = None


@dataclass(frozen=True)
class SkippedFile:
    file: str
    reason: str


@dataclass
class AudioFile:
    file: str
    audio: np.ndarray  # int16, mono, at the dataset's sample rate (half the memory of float32)
    artist: str
    genre: str
    artist_id: int
    genre_id: int
    lyrics: str
    offset: int  # samples from the start of the whole piece to the start of this file
    total_length: int  # samples in the whole piece
    split: str = "train"  # the labels' split column ("train" where there is none)


# ---------------------------------------------------------------------------------------------
# Labels


def norm_label(name: str) -> str:
    """Case- and punctuation-insensitive key: 'J.S. Bach' and 'j_s_bach' match."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", name.lower())).strip("_")


def _clean_path(name: str, where: str) -> str:
    path = PurePosixPath(name.strip().replace("\\", "/"))
    if not name.strip() or path.is_absolute() or ".." in path.parts:
        raise DatasetError(f"{where}: file {name!r} must be a path inside the data folder")
    return path.as_posix()


def _optional_float(value: Any, field: str, where: str) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise DatasetError(f"{where}: {field} must be a number of seconds, not {value!r}") from None


def _row(record: dict[str, Any], where: str) -> LabelRow:
    return LabelRow(
        file=_clean_path(str(record.get("file") or ""), where),
        artist=str(record.get("artist") or "").strip(),
        genre=str(record.get("genre") or "").strip(),
        lyrics=str(record.get("lyrics") or ""),
        offset_seconds=_optional_float(record.get("offset_seconds"), "offset_seconds", where),
        total_seconds=_optional_float(record.get("total_seconds"), "total_seconds", where),
        split=(str(record["split"]).strip() or None) if record.get("split") is not None else None,
    )


def read_labels(path: str | Path) -> dict[str, LabelRow]:
    """Read ``labels.csv`` or ``labels.json``; keys are the files' relative paths."""
    path = Path(path)
    rows: dict[str, LabelRow] = {}

    def add(row: LabelRow) -> None:
        if row.file in rows:
            log.warning("%s: %s is listed twice; using its last row", path.name, row.file)
        rows[row.file] = row

    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path.name} is not valid JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("files"), list):
            data = data["files"]
        if isinstance(data, dict):
            data = [{**(v if isinstance(v, dict) else {}), "file": k} for k, v in data.items()]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DatasetError(
                f"{path.name} must hold a list of objects with file, artist, genre and lyrics "
                "(or an object mapping each file to its labels)"
            )
        for i, record in enumerate(data):
            add(_row(record, f"{path.name} entry {i + 1}"))
        return rows
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DatasetError(
                f"{path.name} needs the columns file,artist,genre,lyrics; missing: {', '.join(missing)} "
                f"(found: {', '.join(columns) or 'nothing'})"
            )
        for i, record in enumerate(reader, start=2):
            clean = {(k or "").strip().lower(): v for k, v in record.items()}
            add(_row(clean, f"{path.name} line {i}"))
    return rows


def find_labels_file(root: Path) -> Path:
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"No labels file in {root}: add a labels.csv with the columns file,artist,genre,lyrics "
        "(one row per audio file; lyrics may be empty)"
    )


def scan_labels(root: str | Path, labels: str | Path | None = None) -> tuple[list[str], list[str]]:
    """The sorted artist and genre names used in a data folder's labels file (for new label lists)."""
    rows = read_labels(Path(labels) if labels else find_labels_file(Path(root)))
    artists = sorted({r.artist for r in rows.values() if r.artist})
    genres = sorted({r.genre for r in rows.values() if r.genre})
    return artists, genres


# ---------------------------------------------------------------------------------------------
# Audio


def resample(audio: np.ndarray, src: int, dst: int, *, zeros: int = 8, rolloff: float = 0.97) -> np.ndarray:
    """Band-limited resampling (windowed-sinc polyphase filter) of mono float audio.

    Output sample ``j`` sits at input position ``j * src / dst``. With ``g = gcd(src, dst)``, the
    ``dst/g`` output phases each have their own filter, and one strided convolution computes them all.
    """
    if src == dst or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    g = math.gcd(src, dst)
    down, up = src // g, dst // g
    cutoff = min(down, up) * rolloff  # in cycles per ``down`` input samples
    width = math.ceil(zeros * down / cutoff)
    taps = torch.arange(-width, width + down, dtype=torch.float64) / down
    phases = -torch.arange(up, dtype=torch.float64)[:, None] / up
    t = (phases + taps[None, :]) * cutoff
    t = t.clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    arg = t * math.pi
    kernel = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / arg) * window * (cutoff / down)
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    x = torch.nn.functional.pad(x[None, None], (width, width + down))
    y = torch.nn.functional.conv1d(x, kernel[:, None, :].to(torch.float32), stride=down)  # (1, up, n)
    return y[0].t().reshape(-1)[: math.ceil(len(audio) * up / down)].numpy().copy()


def _wav_truncated(info: Any) -> bool:
    # libsndfile reads a cut-off WAV without complaint but notes "data : N (should be M)".
    return any(line.startswith("data") and "should be" in line for line in info.extra_info.splitlines())


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.format in ("WAV", "WAVEX", "RF64") and _wav_truncated(info):
            raise AudioReadError("the file is truncated (its header promises more audio than it holds)")
        if info.frames <= 0:
            raise AudioReadError("the file holds no audio (empty or truncated)")
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except AudioReadError:
        raise
    except Exception as exc:  # soundfile.LibsndfileError, RuntimeError on damaged streams
        detail = str(exc).replace(f"Error opening {str(path)!r}: ", "")
        raise AudioReadError(f"the audio data is damaged or truncated ({detail})") from None
    if len(audio) < info.frames:
        raise AudioReadError(f"the file is truncated ({len(audio)} of {info.frames} samples could be read)")
    return audio.mean(axis=1), rate


def _read_ffmpeg(path: Path, sample_rate: int) -> np.ndarray:
    from db.audio import AudioError, decode

    try:
        return decode(path, sample_rate, max_seconds=MAX_FILE_SECONDS, what="a training file")
    except AudioError as e:
        raise AudioReadError(str(e)) from None


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at ``sample_rate``; raises ``AudioReadError`` with the reason."""
    path = Path(path)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        audio, rate = _read_soundfile(path)
        return resample(audio, rate, sample_rate)
    return _read_ffmpeg(path, sample_rate)


# ---------------------------------------------------------------------------------------------
# Dataset and sampler


class AudioDataset(Dataset[dict[str, Any]]):
    """Random crops of ``sample_length`` samples from a labelled folder (see the module docstring).

    Args:
        root: the data folder.
        sample_rate: the model's audio rate; files are resampled to it.
        sample_length: crop length in samples (a file shorter than this is zero-padded at the end).
        artists, genres: the model's label lists; a file's artist/genre id is its index there
            (names compared case- and punctuation-insensitively). A name not in a list maps to an
            ``unknown`` entry if the list has one, else the file is skipped. ``None``: the sorted
            names found in the labels file.
        labels: the labels file (default ``root/labels.csv`` or ``root/labels.json``).
        split: keep only rows whose ``split`` is this (rows without a split count as ``train``);
            ``None`` keeps all rows.
        seed: fixes which crop every sample number gives.
        min_seconds: shorter files are skipped.
        threads: files decoded in parallel when the dataset is built.

    Item ``i`` is a dict: ``audio`` (float32 tensor of shape (sample_length, 1), Jukebox's layout),
    ``artist_id``, ``genre_id``, ``artist``, ``genre``, ``lyrics``, ``offset`` (samples from the start
    of the piece to the crop), ``total_length`` (samples in the whole piece), ``sample_length``,
    ``file`` and ``index``. ``len()`` is a nominal epoch: the audio's length in crops.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        sample_rate: int,
        sample_length: int,
        artists: Sequence[str] | None = None,
        genres: Sequence[str] | None = None,
        labels: str | Path | None = None,
        split: str | None = "train",
        seed: int = 0,
        min_seconds: float = 0.5,
        threads: int = 8,
    ) -> None:
        if sample_length <= 0 or sample_rate <= 0:
            raise ValueError("sample_rate and sample_length must be positive")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"The data folder {self.root} does not exist")
        self.sample_rate = sample_rate
        self.sample_length = sample_length
        self.seed = seed
        self.skipped: list[SkippedFile] = []
        labels_path = Path(labels) if labels else find_labels_file(self.root)
        rows = read_labels(labels_path)

        self.artists = (
            list(artists) if artists is not None else sorted({r.artist for r in rows.values() if r.artist})
        )
        self.genres = (
            list(genres) if genres is not None else sorted({r.genre for r in rows.values() if r.genre})
        )
        artist_ids = _index(self.artists)
        genre_ids = _index(self.genres)

        on_disk = {
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
        }
        for file in sorted(on_disk - rows.keys()):
            self._skip(file, f"it has no labels (not listed in {labels_path.name})")

        wanted: list[tuple[LabelRow, int, int]] = []
        for file in sorted(rows):
            row = rows[file]
            if split is not None and (row.split or "train") != split:
                continue
            if file not in on_disk:
                reason = (
                    "the file is missing" if not (self.root / file).exists() else "it is not an audio file"
                )
                self._skip(file, f"{reason} (listed in {labels_path.name})")
                continue
            if not row.artist or not row.genre:
                what = " and ".join(w for w, v in (("artist", row.artist), ("genre", row.genre)) if not v)
                self._skip(file, f"it is unlabeled: no {what} in {labels_path.name}")
                continue
            a = _lookup(artist_ids, row.artist)
            g = _lookup(genre_ids, row.genre)
            if a is None or g is None:
                kind, name, names = (
                    ("artist", row.artist, self.artists) if a is None else ("genre", row.genre, self.genres)
                )
                self._skip(file, f"the model has no {kind} {name!r} (it knows: {_short_list(names)})")
                continue
            wanted.append((row, a, g))

        with ThreadPoolExecutor(max(1, threads)) as pool:  # libsndfile releases the GIL
            decoded = list(pool.map(self._decode, [row.file for row, _, _ in wanted]))
        self.files: list[AudioFile] = []
        min_samples = max(1, round(min_seconds * sample_rate))
        for (row, a, g), result in zip(wanted, decoded, strict=True):
            if isinstance(result, str):
                self._skip(row.file, result)
                continue
            if len(result) < min_samples:
                self._skip(
                    row.file,
                    f"it is too short ({len(result) / sample_rate:.2f} s; at least {min_seconds:g} s)",
                )
                continue
            if not np.any(result):
                self._skip(row.file, "it is silent")
                continue
            offset = round((row.offset_seconds or 0.0) * sample_rate)
            total = round(row.total_seconds * sample_rate) if row.total_seconds else len(result)
            self.files.append(
                AudioFile(
                    file=row.file,
                    audio=result,
                    artist=row.artist,
                    genre=row.genre,
                    artist_id=a,
                    genre_id=g,
                    lyrics=row.lyrics,
                    offset=offset,
                    total_length=max(total, offset + len(result)),
                    split=row.split or "train",
                )
            )
        if not self.files:
            raise DatasetError(f"No usable audio in {self.root}.\n{self.summary()}")
        self._ends = np.cumsum([len(f.audio) for f in self.files])
        if self.skipped:
            log.warning("%s", self.summary())

    def _decode(self, file: str) -> np.ndarray | str:
        try:
            audio = load_audio(self.root / file, self.sample_rate)
        except AudioReadError as exc:
            return str(exc)
        return (np.clip(audio, -1.0, 1.0) * 32767).round().astype(np.int16)

    def _skip(self, file: str, reason: str) -> None:
        self.skipped.append(SkippedFile(file, reason))
        log.warning("Skipping %s: %s", file, reason)

    @property
    def seconds(self) -> float:
        return float(self._ends[-1]) / self.sample_rate

    def summary(self) -> str:
        used = len(getattr(self, "files", []))
        lines = [f"{used} audio files used, {len(self.skipped)} skipped"]
        if used:
            lines[0] += f" ({self.seconds / 3600:.2f} h)"
        lines += [f"  skipped {s.file}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)

    def __len__(self) -> int:
        return max(1, int(self._ends[-1]) // self.sample_length)

    def crop_position(self, index: int) -> tuple[int, int]:
        """(file number, start sample) of item ``index``; depends only on (seed, index)."""
        if index < 0:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        where = int(rng.integers(0, int(self._ends[-1])))
        k = int(np.searchsorted(self._ends, where, side="right"))
        n = len(self.files[k].audio)
        start = int(rng.integers(0, n - self.sample_length + 1)) if n > self.sample_length else 0
        return k, start

    def __getitem__(self, index: int) -> dict[str, Any]:
        k, start = self.crop_position(index)
        f = self.files[k]
        piece = f.audio[start : start + self.sample_length]
        audio = torch.zeros(self.sample_length, 1, dtype=torch.float32)
        audio[: len(piece), 0] = torch.from_numpy(piece.astype(np.float32) / 32768.0)
        return {
            "audio": audio,
            "artist_id": f.artist_id,
            "genre_id": f.genre_id,
            "artist": f.artist,
            "genre": f.genre,
            "lyrics": f.lyrics,
            "offset": f.offset + start,
            "total_length": f.total_length,
            "sample_length": self.sample_length,
            "file": f.file,
            "index": index,
        }


def _index(names: Sequence[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for i, name in enumerate(names):
        ids.setdefault(norm_label(name), i)
    return ids


def _lookup(ids: dict[str, int], name: str) -> int | None:
    return ids.get(norm_label(name), ids.get("unknown"))


def _short_list(names: Sequence[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


class CropSampler(Sampler[int]):
    """Sample numbers for ``AudioDataset``: ``position``, ``position + 1``, ... (``num_samples`` of
    them, or without end).

    The trainer calls ``advance(batch_size)`` after each step and saves ``state_dict()`` with its
    checkpoint; ``load_state_dict`` before the next ``iter(loader)`` resumes on the exact next crop.
    With several processes (``world_size``), process ``rank`` takes every ``world_size``-th number.
    """

    def __init__(
        self, position: int = 0, num_samples: int | None = None, *, rank: int = 0, world_size: int = 1
    ):
        if not 0 <= rank < world_size:
            raise ValueError("need 0 <= rank < world_size")
        self.position = position
        self.num_samples = num_samples
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        i = self.position
        while self.num_samples is None or i < self.position + self.num_samples:
            yield i * self.world_size + self.rank
            i += 1

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("an endless CropSampler has no length")
        return self.num_samples

    def advance(self, count: int) -> None:
        self.position += count

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("world_size", 1) != self.world_size:
            raise ValueError(
                f"this checkpoint was written by {state.get('world_size')} processes, not {self.world_size}"
            )
        self.position = int(state["position"])
