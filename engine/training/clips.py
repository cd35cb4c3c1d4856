"""The training data of a run: labelled clips, their crops, and their codes for the priors."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.model.checkpoints import read_checkpoint, state_dict_of
from engine.model.config import ModelConfig
from engine.model.labels import LabelSet, labels_for_prior
from engine.model.vqvae import VQVAE
from engine.training.errors import TrainError
from engine.training.files import atomic_save
from engine.training.train_prior import ClipCodes

log = logging.getLogger("jukebot.train")


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class AudioClip:
    """One labelled clip of the training data, mono float32 at the model's sample rate."""

    name: str
    audio: np.ndarray
    artist: str
    genre: str
    lyrics: str = ""
    offset_seconds: float = 0.0  # where the clip starts in its piece
    total_seconds: float = 0.0  # the whole piece (0: the clip is the piece)
    split: str = "train"


def load_clips(
    data_dir: str | Path,
    sample_rate: int,
    *,
    progress: bool = True,
    workers: int | None = None,
    split: str | None = None,
) -> tuple[list[AudioClip], list[str]]:
    """Every usable clip of `data_dir` (both splits, or only `split`) via `engine.training.dataset`,
    and a message per skipped file (unreadable, truncated, unlabeled, too short, silent)."""
    from engine.training.dataset import AudioDataset, DatasetError

    folder = Path(data_dir)
    if not folder.is_dir():
        raise TrainError(f"no data folder at {folder}")
    threads = workers or min(16, os.cpu_count() or 1)
    try:
        # Both splits; names are resolved to ids later, against the model's lists (engine.model.labels).
        ds = AudioDataset(
            folder, sample_rate=sample_rate, sample_length=sample_rate, split=split, threads=threads
        )
    except DatasetError as e:
        raise TrainError(str(e)) from e
    skipped = {(s.file, s.reason): None for s in ds.skipped}
    clips = [
        AudioClip(
            name=f.file,
            audio=f.audio.astype(np.float32) / 32768.0,
            artist=f.artist,
            genre=f.genre,
            lyrics=f.lyrics,
            offset_seconds=f.offset / sample_rate,
            total_seconds=f.total_length / sample_rate,
            split=f.split,
        )
        for f in ds.files
    ]
    if progress:
        secs = sum(len(c.audio) for c in clips) / sample_rate
        print(
            f"[data] {len(clips)} clips ({secs / 3600:.2f} h) from {folder}, {len(skipped)} files skipped",
            file=sys.stderr,
            flush=True,
        )
    return clips, [f"{f}: {r}" for f, r in skipped]


def resolve_ids(
    labels: LabelSet, clip: AudioClip, unknown: dict[str, set[str]]
) -> tuple[int, tuple[int, ...]]:
    """Artist and genre ids of a clip; names the model does not know become `unknown` (id 0),
    collected in `unknown` for one message at the end."""
    from engine.model.labels import UnknownLabel

    try:
        artist = labels.artist_id(clip.artist)
    except UnknownLabel:
        unknown.setdefault("artist", set()).add(clip.artist)
        artist = 0
    try:
        genres = tuple(labels.genre_word_ids(clip.genre))
    except UnknownLabel:
        unknown.setdefault("genre", set()).add(clip.genre)
        genres = (0,)
    return artist, genres


class AudioCrops:
    """All training audio in one tensor on the device; random crops of `length` samples."""

    def __init__(self, clips: list[AudioClip], length: int, device: torch.device) -> None:
        usable = [c for c in clips if len(c.audio) >= length]
        if not usable:
            raise TrainError(f"every clip is shorter than one training crop ({length} samples)")
        self.length = length
        self.skipped_short = len(clips) - len(usable)
        lengths = np.array([len(c.audio) for c in usable], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.starts = lengths - length + 1
        self.cum = np.cumsum(self.starts)
        flat = np.concatenate([c.audio.astype(np.float32) for c in usable])
        self.audio = torch.from_numpy(flat).to(device)  # 3 h at 22.05 kHz is under 1 GB
        self.device = device

    def sample(self, batch_size: int, gen: torch.Generator) -> Tensor:
        picks = torch.randint(0, int(self.cum[-1]), (batch_size,), generator=gen).numpy()
        idx = np.searchsorted(self.cum, picks, side="right")
        within = picks - np.where(idx > 0, self.cum[np.maximum(idx - 1, 0)], 0)
        begin = torch.from_numpy(self.offsets[idx] + within).to(self.device)
        ar = torch.arange(self.length, device=self.device)
        return self.audio[begin[:, None] + ar[None]].float()


# ---------------------------------------------------------------------------------------------
# Codes of the data (for the priors)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()[:16]


@torch.no_grad()
def encode_clips(
    vqvae: VQVAE,
    clips: list[AudioClip],
    device: torch.device,
    *,
    chunk_seconds: float = 60.0,
    progress: bool = True,
) -> list[list[np.ndarray]]:
    """Codes of every level for every clip (each clip cut to a whole number of top-level tokens)."""
    vqvae = vqvae.to(device).eval()
    top = vqvae.hop_lengths[-1]
    chunk = max(top, int(chunk_seconds * vqvae.sample_rate) // top * top)
    out: list[list[np.ndarray]] = []
    t0 = time.monotonic()
    for n, clip in enumerate(clips):
        usable = len(clip.audio) // top * top
        levels: list[list[np.ndarray]] = [[] for _ in range(vqvae.levels)]
        for s in range(0, usable, chunk):
            x = (
                torch.from_numpy(np.ascontiguousarray(clip.audio[s : min(usable, s + chunk)]))
                .float()
                .to(device)
            )
            zs = vqvae.encode(x[None])  # float32, as the sampler encodes prompts
            for lv, z in enumerate(zs):
                levels[lv].append(z[0].to("cpu", torch.int32).numpy())
        out.append([np.concatenate(lv).astype(np.int16) if lv else np.zeros(0, np.int16) for lv in levels])
        if progress and (n + 1) % 200 == 0:
            print(
                f"[encode] {n + 1}/{len(clips)} clips, {time.monotonic() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return out


def prepare_codes(
    out_dir: Path,
    data_dir: Path,
    config: ModelConfig,
    vqvae_file: Path,
    device: torch.device,
    *,
    progress: bool = True,
    clips: list[AudioClip] | None = None,
    skipped: list[str] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """The cached codes of the data (`out_dir/train/codes.pt`), made when missing or stale."""
    cache = out_dir / "train" / "codes.pt"
    vq_digest = _file_digest(vqvae_file)
    if cache.exists():
        c = torch.load(cache, map_location="cpu", weights_only=False)
        if c.get("vqvae") == vq_digest and c.get("data_dir") == str(data_dir.resolve()):
            return c
        print("[encode] the VQ-VAE or the data changed: encoding again", file=sys.stderr)
    if clips is None:
        clips, skipped = load_clips(data_dir, config.sample_rate, progress=progress, workers=workers)
    vqvae = VQVAE(config.vqvae)
    vqvae.load_state_dict(state_dict_of(read_checkpoint(vqvae_file)), strict=True)
    t0 = time.monotonic()
    codes = encode_clips(vqvae, clips, device, progress=progress)
    print(
        f"[encode] {len(clips)} clips encoded in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True
    )
    entry = {
        "vqvae": vq_digest,
        "data_dir": str(data_dir.resolve()),
        "skipped": list(skipped or []),
        "clips": [
            {
                "name": c.name,
                "codes": z,
                "artist": c.artist,
                "genre": c.genre,
                "lyrics": c.lyrics,
                "offset_seconds": c.offset_seconds,
                "total_seconds": c.total_seconds,
                "split": c.split,
            }
            for c, z in zip(clips, codes, strict=True)
        ],
    }
    atomic_save(entry, cache)
    return entry


def clip_codes_for(
    config: ModelConfig, level: int, entries: list[dict[str, Any]]
) -> tuple[list[ClipCodes], str | None]:
    """ClipCodes with this level's label ids; plus a note about names the model does not know."""
    labels = labels_for_prior(config, level)
    p = config.priors[level]
    sr = config.sample_rate
    unknown: dict[str, set[str]] = {}
    out = []
    for e in entries:
        clip = AudioClip(e["name"], np.zeros(0, np.float32), e["artist"], e["genre"], e.get("lyrics", ""))
        artist, genres = resolve_ids(labels, clip, unknown)
        lyric_tokens: tuple[int, ...] = ()
        if p.n_tokens and e.get("lyrics"):
            cleaned, _ = labels.clean_lyrics(e["lyrics"])
            lyric_tokens = tuple(labels.tokenise(cleaned))
        offset = round(float(e.get("offset_seconds") or 0.0) * sr)
        clip_len = len(e["codes"][0]) * config.raw_to_tokens(0)
        total = max(round(float(e.get("total_seconds") or 0.0) * sr), offset + clip_len)
        out.append(ClipCodes(e["name"], list(e["codes"]), artist, genres, lyric_tokens, offset, total))
    note = None
    if unknown:
        parts = [f"{k}s {', '.join(sorted(v)[:8])}" for k, v in unknown.items()]
        note = (
            "these labels are not in the model's lists and train as 'unknown': "
            + "; ".join(parts)
            + " (add them to the model's custom labels in model.json to learn them)"
        )
    return out, note
