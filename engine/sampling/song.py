"""The song runner: one path from a song request to files, for `jukebot generate` and the worker.

    files = FolderFiles(out)                             # or StorageFiles(storage, "songs/7", db, lease)
    runner = SongRunner(engine, files, hooks=hooks)
    drafts = runner.drafts(request, n, prompt=prompt, max_drafts=settings.limits.max_drafts)
    final = runner.upsample(request, pick=1, prompt=prompt, meta={"model": "demo"})
    runner.finished(DRAFTS_STAGE); runner.finished(upsample_stage(1))

The runner owns what a song is made of on disk: the file names below, the limits, the order of the
stages, and the errors (`SongError`). Where the files go and how checkpoints are kept is the
`SongFiles` given to it: a local folder for `jukebot generate`, the storage plus the fenced job row
for the worker. Checkpoints are removed only when the caller says the stage is `finished` (the
worker first commits its rows, so a lost lease never loses the work).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from engine.sampling.pipeline import (
    Engine,
    PipelineError,
    Prompt,
    SongRequest,
    WindowLabels,
    codes_to_npz,
    make_drafts,
    stage_name,
    upsample,
)
from engine.sampling.resume import Checkpointer, FileCheckpointer, JobCheckpointer
from engine.sampling.sample import Hooks, Progress

if TYPE_CHECKING:
    from db.database import Database
    from db.queue import Lease
    from engine.sampling.resume import BlobStore

log = logging.getLogger("jukebot.song")

# The files of one song, relative to its folder (the same names in a local folder and the storage).
DRAFTS = "drafts.npz"  # every draft's level-2 codes and the notes: the drafts stage is done
PRIME = "prime.npz"  # the prime's codes (all levels) of a continuation
FINAL_WAV = "final.wav"
FINAL_MP3 = "final.mp3"
CODES = "codes.npz"  # every level of the final song: a later continuation primes on it
ALIGNMENT = "alignment.json"  # lyric models: each sung character's time (engine.sampling.alignment)
FINAL_LRC = "final.lrc"  # lyric models: the timed lyrics beside the clip


def draft_audio(n: int) -> str:
    """The level-2 preview of draft `n` (1-based, as people count them)."""
    return f"draft-{n}.wav"


def draft_codes(n: int) -> str:
    """The level-2 codes of draft `n` (1-based): what its upsample starts from."""
    return f"draft-{n}.npy"


def preview_audio(n: int) -> str:
    """The level-1 decode of draft `n` (1-based), written as soon as level 1 is done, so people
    can listen while level 0 renders (lower quality than the final clip)."""
    return f"preview-{n}.mp3"


DRAFTS_STAGE = "drafts"


def upsample_stage(pick: int) -> str:
    """The checkpoint stage of the upsample of draft `pick` (1-based)."""
    return f"upsample-{pick}"


class SongError(ValueError):
    """A song request the engine cannot run, said in words (retrying does not help)."""


class SongFiles(Protocol):
    """Where the files and checkpoints of one song live."""

    reuse_finished: bool  # may a finished stage found here be taken as this request's?

    def write(self, name: str, data: bytes) -> None: ...
    def read(self, name: str) -> bytes: ...
    def exists(self, name: str) -> bool: ...
    def checkpointer(self, stage: str) -> Checkpointer: ...


class FolderFiles:
    """A local folder (`jukebot generate --out`); checkpoints are `.checkpoint-*.npz` files in it.
    A finished drafts stage is reused: the caller checks the folder holds this request's run."""

    reuse_finished = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / name

    def write(self, name: str, data: bytes) -> None:
        tmp = self.folder / f"{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.folder / name)  # a crash never leaves half a file under the real name

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def exists(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def checkpointer(self, stage: str) -> Checkpointer:
        return FileCheckpointer(self.folder, stage)


class StorageFiles:
    """The storage under `prefix` (`songs/<id>`); checkpoints are fenced by the job's lease, so a
    stalled worker can never overwrite a newer attempt. Finished stages are not reused: a new job
    for the same song (a reroll) must sample again."""

    reuse_finished = False

    def __init__(self, storage: BlobStore, prefix: str, db: Database, lease: Lease) -> None:
        self.storage, self.prefix, self.db, self.lease = storage, prefix.rstrip("/"), db, lease

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def write(self, name: str, data: bytes) -> None:
        self.storage.write_bytes(self.key(name), data)

    def read(self, name: str) -> bytes:
        return self.storage.read_bytes(self.key(name))

    def exists(self, name: str) -> bool:
        return self.storage.exists(self.key(name))

    def checkpointer(self, stage: str) -> Checkpointer:
        return JobCheckpointer(self.db, self.storage, self.lease, stage=stage)


@dataclass
class DraftFiles:
    codes: np.ndarray  # level-2 codes [n, T2]
    notes: list[str]
    sample_length: int
    seconds: float
    names: list[tuple[str, str]]  # (audio, codes) per draft, in order


@dataclass
class FinalFiles:
    codes: list[np.ndarray]  # every level [1, T]
    sample_length: int
    seconds: float
    lrc: str | None = None  # FINAL_LRC when the model sang the song's lyrics with an alignment head
    alignment: str | None = None  # ALIGNMENT, likewise
    preview: str | None = None  # preview_audio(pick), when it was written during this run


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a, dtype=np.int32), allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes, name: str) -> np.ndarray:
    try:
        return np.asarray(np.load(io.BytesIO(data), allow_pickle=False), dtype=np.int64)
    except Exception as e:
        raise SongError(f"the stored draft codes ({name}) are damaged") from e


def song_request(
    engine: Engine,
    *,
    artist: str,
    genre: str,
    lyrics: str,
    seconds: float,
    seed: int,
    temperature: float | None = None,
    upsample_temperature: float | None = None,
    top_k: int = 0,
    top_p: float = 0.0,
) -> SongRequest:
    """The request at the model's recommended temperatures, except where the person chose."""
    if seconds <= 0:
        raise SongError("the song needs a positive number of seconds")
    try:
        settings = engine.sampling_settings(
            temperature=temperature, upsample_temperature=upsample_temperature, top_k=top_k, top_p=top_p
        )
    except ValueError as e:
        raise SongError(str(e)) from None
    return SongRequest(
        artist=artist, genre=genre, lyrics=lyrics, seconds=seconds, seed=seed, settings=settings
    )


def check_drafts(n: int, max_drafts: int) -> None:
    """The one limit on drafts, for the command line and the worker alike."""
    if not 1 <= n <= max_drafts:
        raise SongError(f"the number of drafts must be between 1 and {max_drafts} (JUKEBOT_MAX_DRAFTS)")


class SongRunner:
    """Drafts, then the upsample of one, for one song, writing through `files`.

    `hooks(primed)` gives the sampler's hooks (progress, stop) for a stage; `on_stage(name)` is told
    as each stage begins ("level 2 (drafts)", "decoding", "saving", ...); `on_preview(name)` as soon
    as the level-1 preview of an upsample is written (listen early while level 0 renders)."""

    def __init__(
        self,
        engine: Engine,
        files: SongFiles,
        *,
        hooks: Callable[[bool], Hooks | None] | None = None,
        on_stage: Callable[[str], None] | None = None,
        on_preview: Callable[[str], None] | None = None,
        checkpoint_every: float = 0.0,
        interleave_levels: bool = False,
    ) -> None:
        self.engine, self.files = engine, files
        self.interleave_levels = interleave_levels  # see engine.sampling.pipeline.upsample
        self._hooks = hooks or (lambda primed: None)
        self._on_stage = on_stage or (lambda name: None)
        self._on_preview = on_preview or (lambda name: None)
        self.checkpoint_every = checkpoint_every
        self._checkpointers: dict[str, Checkpointer] = {}

    def checkpointer(self, stage: str) -> Checkpointer:
        """The stage's checkpointer: one per stage, as it remembers the checkpoints it wrote."""
        if stage not in self._checkpointers:
            self._checkpointers[stage] = self.files.checkpointer(stage)
        return self._checkpointers[stage]

    def drafts(
        self, request: SongRequest, n: int, *, max_drafts: int, prompt: Prompt | None = None
    ) -> DraftFiles:
        """N level-2 drafts in one batch; writes `draft-K.wav`, `draft-K.npy` and `drafts.npz`."""
        check_drafts(n, max_drafts)
        engine, files = self.engine, self.files
        if files.reuse_finished and files.exists(DRAFTS):
            top, notes = _read_drafts(files.read(DRAFTS))
            sample_length = top.shape[1] * engine.hop_lengths[-1]
        else:
            self._on_stage(stage_name(2, primed=prompt is not None))
            try:
                d = make_drafts(
                    engine,
                    request,
                    n,
                    prompt=prompt,
                    checkpointer=self.checkpointer(DRAFTS_STAGE),
                    hooks=self._hooks(prompt is not None),
                    decode=False,
                    checkpoint_every=self.checkpoint_every,
                )
            except PipelineError as e:
                raise SongError(str(e)) from None
            top, notes, sample_length = d.codes, d.notes, d.sample_length
        self._on_stage("decoding")
        previews = engine.decode(top, 2)
        self._on_stage("saving")
        names = []
        for i in range(top.shape[0]):
            audio, codes = draft_audio(i + 1), draft_codes(i + 1)
            files.write(audio, _wav_bytes(previews[i], engine.sample_rate))
            files.write(codes, npy_bytes(top[i]))
            names.append((audio, codes))
        if not (files.reuse_finished and files.exists(DRAFTS)):
            buf = io.BytesIO()
            np.savez(
                buf,
                codes=top.astype(np.int32),
                notes=np.frombuffer(json.dumps(notes).encode(), dtype=np.uint8),
            )
            files.write(DRAFTS, buf.getvalue())
        return DraftFiles(top, notes, sample_length, sample_length / engine.sample_rate, names)

    def upsample(
        self,
        request: SongRequest,
        pick: int,
        *,
        prompt: Prompt | None = None,
        meta: dict[str, Any] | None = None,
        draft_codes_name: str | None = None,
    ) -> FinalFiles:
        """Levels 1 and 0 for draft `pick` (1-based); writes `final.wav`, `final.mp3`, `codes.npz`.
        The draft's codes are read from `draft-<pick>.npy` (or `draft_codes_name`, a name the
        caller recorded)."""
        engine, files = self.engine, self.files
        name = draft_codes_name or draft_codes(pick)
        try:
            top = npy_load(files.read(name), name)
        except FileNotFoundError:
            raise SongError(f"the codes of draft {pick} are missing") from None
        self._on_stage(stage_name(1, primed=prompt is not None))
        preview: list[str] = []
        try:
            final = upsample(
                engine,
                request,
                top,
                draft_index=pick - 1,
                prompt=prompt,
                checkpointer=self.checkpointer(upsample_stage(pick)),
                hooks=self._with_preview(self._hooks(prompt is not None), pick, top.shape[-1], preview),
                decode=False,
                checkpoint_every=self.checkpoint_every,
                interleave_levels=self.interleave_levels,
            )
        except PipelineError as e:
            raise SongError(str(e)) from None
        self._on_stage("decoding")
        audio = engine.decode(final.codes[0], 0, chunk_tokens=1 << 20)[0]
        self._on_stage("saving")
        from engine.audio import mp3_bytes

        sr = engine.sample_rate
        files.write(FINAL_WAV, _wav_bytes(audio, sr))
        files.write(FINAL_MP3, mp3_bytes(audio, sr))
        files.write(
            CODES, codes_to_npz(final.codes, {"model": engine.name, "sample_rate": sr, **(meta or {})})
        )
        out = FinalFiles(final.codes, final.sample_length, final.sample_length / sr)
        out.preview = preview[0] if preview else None
        if request.lyrics.strip() and has_alignment(engine):
            # After sampling, on the finished codes: sampling is not slowed at all.
            self._on_stage("timing the lyrics")
            timed = timed_lyrics(engine, request, final.codes)
            if timed is not None:
                record, lrc = timed
                files.write(ALIGNMENT, json.dumps(record, ensure_ascii=False, indent=1).encode() + b"\n")
                files.write(FINAL_LRC, lrc.encode())
                out.alignment, out.lrc = ALIGNMENT, FINAL_LRC
        return out

    def _with_preview(
        self, hooks: Hooks | None, pick: int, top_tokens: int, written: list[str]
    ) -> Hooks | None:
        """`hooks` plus: when level 1 is complete (at the end of its last window, or at the first
        level-0 window of a resumed run), decode it and write `preview_audio(pick)`."""
        engine = self.engine
        level = engine.top_level - 1
        if level < 1:  # a 2-level model: the level below the top is the final one
            return hooks
        hops = engine.hop_lengths
        need = top_tokens * hops[-1] // hops[level]
        base = hooks or Hooks()
        user = base.on_window

        def on_window(p: Progress, codes: list[np.ndarray]) -> None:
            if user is not None:
                user(p, codes)
            if not written and codes[level].shape[1] >= need:
                written.append(self._write_preview(codes[level][:1, :need], level, pick))

        return replace(base, on_window=on_window)

    def _write_preview(self, codes: np.ndarray, level: int, pick: int) -> str:
        from engine.audio import mp3_bytes

        name = preview_audio(pick)
        try:
            audio = self.engine.decode(codes, level, chunk_tokens=1 << 20)[0]
            self.files.write(name, mp3_bytes(audio, self.engine.sample_rate))
        except Exception:  # a nicety: the song goes on without its early preview
            log.exception("the level-%d preview of draft %d could not be written", level, pick)
            return ""
        self._on_preview(name)
        return name

    def finished(self, stage: str) -> None:
        """The stage's results are recorded (or the song is cancelled): its checkpoints can go."""
        self.checkpointer(stage).cleanup()


def _read_drafts(data: bytes) -> tuple[np.ndarray, list[str]]:
    """A finished drafts stage found in a folder: its codes and notes, or SongError naming --fresh
    (a truncated or altered file would otherwise be a traceback, or a different song)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            top = z["codes"].astype(np.int64)
            notes = [str(n) for n in json.loads(bytes(z["notes"]).decode())]
        if top.ndim != 2 or top.size == 0 or int(top.min()) < 0:
            raise ValueError(f"codes of shape {top.shape}")
    except Exception as e:  # zipfile, CRC, KeyError, JSON, ... all mean the same here
        raise SongError(
            f"the saved drafts ({DRAFTS}) are damaged ({type(e).__name__}); "
            "run again with --fresh to sample them again"
        ) from None
    return top, notes


def has_alignment(engine: Engine) -> bool:
    """Does the model's top prior sing lyrics and name the attention they are aligned with?"""
    c = engine.config.priors[engine.top_level]
    return c.lyrics != "none" and c.alignment_layer is not None and c.alignment_head is not None


def timed_lyrics(
    engine: Engine, request: SongRequest, codes: list[np.ndarray]
) -> tuple[dict[str, Any], str] | None:
    """(alignment.json's record, the LRC text) of a finished lyric song (codes of every level,
    one row), as the original's `get_alignment` computes it; None without lyrics to time."""
    from engine.sampling.alignment import (
        AlignmentError,
        alignment_record,
        character_times,
        labelled_inputs,
        lrc_text,
        song_alignment,
    )

    top = engine.top_level
    hop = engine.hop_lengths[top]
    top_codes = np.asarray(codes[top])[:1]
    labels = WindowLabels(engine, request, top_codes.shape[1] * hop, 1)
    if top not in labels.songs or not labels.songs[top].tokens:
        return None
    song = labels.songs[top]
    inputs = labelled_inputs(labels.labellers[top], song, labels.total_length, hop, 1)
    try:
        rows = song_alignment(
            engine.prior(top),
            top_codes,
            inputs,
            [len(song.tokens)],
            hop_fraction=request.settings.hop_fractions[top],
        )
        seconds_per_token = hop / engine.sample_rate
        times = character_times(rows[0], seconds_per_token)
        return alignment_record(song.lyrics, times, seconds_per_token), lrc_text(song.lyrics, times)
    except AlignmentError as e:  # e.g. cleaned lyrics that do not map one character to one token
        log.warning("no timed lyrics for this song: %s", e)
        return None


def _wav_bytes(audio: np.ndarray, sr: int) -> bytes:
    from engine.audio import wav_bytes

    return wav_bytes(audio, sr)
