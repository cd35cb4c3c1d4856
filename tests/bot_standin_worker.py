"""STAND-IN WORKER — temporary, for the bot's end-to-end tests only.

This is NOT the product's worker. The real one is `jukebot worker` (engine/worker.py, by the
engine-pipeline helper), which renders with a Jukebox model; the bot's tests are meant to run it
with a tiny random-weight test model folder. Until that exists, this process plays its part
through the same contract, so the bot is tested against a separate process that meets it only in
the database and the storage:

- claims `draft` / `upsample` / `continue` jobs with `db.queue.claim` (lease + heartbeat), and
  sweeps expired leases with `reclaim_expired` (so a killed worker's job is taken over);
- sets the song to `drafting` / `upsampling`, heartbeats progress JSON (`stage`, `level`, `done`,
  `total`, `percent`, `tokens_per_second`, `eta_seconds`), stops on a cancel;
- writes real WAV files (sine tones) and codes files to the storage, then, in one fenced
  transaction, Draft rows + `complete(result={"draft_ids": [...]})`, or a Clip row +
  `complete(result={"clip_id": id})`;
- fails a job with a musician-readable `last_error` when the prime audio cannot be read, or when
  the lyrics contain the word STANDIN-FAIL (a hook for the failure test).

The lead will swap this for the real worker. Run: `python -m tests.bot_standin_worker`
(settings from JUKEBOT_* like every process; STANDIN_STEPS and STANDIN_STEP_SECONDS pace it).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import time
import wave

import numpy as np

from db import queue, repo
from db.database import Database
from db.models import Clip, JobKind, SongStatus
from db.settings import get_settings
from db.storage import Storage

RATE = 22050
log = logging.getLogger("standin-worker")
_stop = False


def _on_term(_sig: int, _frame: object) -> None:
    global _stop
    _stop = True


def tone_wav(freq: float, seconds: float, rate: int = RATE) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave_ = 0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    pcm = (wave_ * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def codes_npy(n: int, seed: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).integers(0, 2048, size=n, dtype=np.int64))
    return buf.getvalue()


def work(db: Database, storage: Storage, lease: queue.Lease, steps: int, step_seconds: float) -> None:
    song_id = int(lease.payload["song_id"])
    song = repo.song_by_id(db, song_id)
    assert song is not None
    upsample = lease.kind == JobKind.upsample
    with queue.fenced(db, lease) as s:
        repo.set_song_status(s, song_id, SongStatus.upsampling if upsample else SongStatus.drafting)
    if "STANDIN-FAIL" in (song.lyrics or ""):
        queue.fail(db, lease, "The model could not sing these lyrics (stand-in failure for tests).", retry=False)
        return
    if lease.kind == JobKind.continue_:
        if song.prime_key is not None:
            data = storage.read_bytes(song.prime_key)
            if data[:4] != b"RIFF" and data[:3] != b"ID3" and data[:4] != b"OggS" and data[:4] != b"fLaC":
                queue.fail(db, lease, "The uploaded audio could not be decoded.", retry=False)
                return
        elif song.parent_clip_id is not None:
            parent = repo.clip_by_id(db, song.parent_clip_id)
            if parent is None or not storage.exists(parent.codes_key):
                queue.fail(db, lease, "The clip to continue has no stored codes.", retry=False)
                return
    start = int(lease.progress.get("done", 0)) if lease.progress else 0  # resume after a reclaim
    for done in range(start + 1, steps + 1):
        if _stop:
            queue.release(db, lease)
            return
        time.sleep(step_seconds)
        progress = {
            "stage": "upsampling" if upsample else "drafting",
            "level": 0 if upsample else 2,
            "done": done,
            "total": steps,
            "percent": 100.0 * done / steps,
            "tokens_per_second": 1234.0,
            "eta_seconds": (steps - done) * step_seconds,
        }
        if queue.heartbeat(db, lease, progress):
            queue.finish_cancelled(db, lease)
            return
    if upsample:
        draft_id = int(lease.payload["draft_id"])
        base = f"songs/{song_id}/clip"
        storage.write_bytes(f"{base}.wav", tone_wav(330.0 + draft_id, song.seconds))
        storage.write_bytes(f"{base}.npz", codes_npy(64, song.seed))
        with queue.fenced(db, lease) as s:
            clip: Clip = repo.add_clip(s, song_id, f"{base}.wav", f"{base}.npz", seconds=song.seconds)
            queue.complete(db, lease, {"clip_id": clip.id}, session=s)
        return
    ids = []
    for i in range(song.n_drafts):
        key = f"songs/{song_id}/draft-{i}"
        storage.write_bytes(f"{key}.wav", tone_wav(220.0 * (i + 1), song.seconds))
        storage.write_bytes(f"{key}.npy", codes_npy(32, song.seed + i))
    with queue.fenced(db, lease) as s:
        for i in range(song.n_drafts):
            key = f"songs/{song_id}/draft-{i}"
            ids.append(repo.add_draft(s, song_id, i, f"{key}.wav", f"{key}.npy", seconds=song.seconds).id)
        queue.complete(db, lease, {"draft_ids": ids}, session=s)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[standin %(process)d] %(message)s")
    signal.signal(signal.SIGTERM, _on_term)
    settings = get_settings()
    db = Database(settings.database_url)
    storage = Storage(settings.storage_url)
    steps = int(os.environ.get("STANDIN_STEPS", "4"))
    step_seconds = float(os.environ.get("STANDIN_STEP_SECONDS", "0.1"))
    owner = queue.default_owner()
    kinds = [JobKind.draft, JobKind.upsample, JobKind.continue_]
    while not _stop:
        queue.reclaim_expired(db)
        lease = queue.claim(db, kinds, owner, settings.lease_seconds)
        if lease is None:
            time.sleep(settings.poll_seconds)
            continue
        try:
            work(db, storage, lease, steps, step_seconds)
        except queue.LeaseLost:
            log.warning("lost the lease on job %s", lease.job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
