"""The GPU worker on CPU with a tiny random-weight model: draft, upsample and continue jobs through
the real queue, storage and database; SIGTERM, cancel, bad requests and retries."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from sqlalchemy import func, select

from db import lifecycle, queue, repo
from db.database import Database
from db.models import Clip, Draft, Job, SongStatus, utcnow
from db.settings import Settings
from db.storage import Storage
from engine.audio import probe
from engine.sampling.pipeline import Engine, codes_from_npz, make_drafts
from engine.serving.device import DeviceBusy, device_lock
from engine.serving.jobs import request_from_song
from engine.serving.worker import Worker, WorkerOptions
from tests.pipeline_fixtures import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def _settings(settings: Settings, **kw: object) -> Settings:
    base: dict[str, object] = dict(heartbeat_seconds=0.1, lease_seconds=30.0, poll_seconds=0.1, device="cpu")
    return settings.model_copy(update={**base, **kw})


def _sqlite_settings(url: str, storage: Storage) -> Settings:
    return _settings(Settings(database_url=url, storage_url=storage.root, _env_file=None))  # type: ignore[call-arg]


def _song(db: Database, model_dir: Path, **kw: object) -> int:
    user = repo.get_or_create_user(db, 1234, "tester")
    args: dict[str, object] = dict(
        user_id=user.id,
        artist="bach",
        genre="chorale",
        seconds=0.1,
        seed=7,
        lyrics="Ein feste Burg",
        model=str(model_dir),
        n_drafts=3,
    )
    args.update(kw)
    song = repo.create_song(db, **args)  # type: ignore[arg-type]
    assert song.id is not None
    return song.id


def _worker(db: Database, storage: Storage, settings: Settings, model_dir: Path, **kw: object) -> Worker:
    opts = WorkerOptions(device="cpu", model=str(model_dir), once=True, threads=1, tokens_every=8)
    for k, v in kw.items():
        setattr(opts, k, v)
    return Worker(settings, opts, db=db, storage=storage)


def _job(db: Database, job_id: int) -> Job:
    job = queue.get_job(db, job_id)
    assert job is not None
    return job


def test_draft_upsample_and_continue(
    db: Database, storage: Storage, settings: Settings, model_dir: Path
) -> None:
    settings = _settings(settings)
    song_id = _song(db, model_dir)
    job_id = queue.enqueue(db, "draft", {"song_id": song_id}, song_id=song_id)
    worker = _worker(db, storage, settings, model_dir)
    assert worker.run() == 0

    job = _job(db, job_id)
    assert job.status == "succeeded", job.last_error
    drafts = repo.drafts_for_song(db, song_id)
    assert [d.index for d in drafts] == [0, 1, 2] and job.result["draft_ids"] == [d.id for d in drafts]
    assert repo.song_by_id(db, song_id).status == SongStatus.drafting  # type: ignore[union-attr]
    sr = worker.engine_for(str(model_dir)).sample_rate
    for d in drafts:
        assert d.audio_key == f"songs/{song_id}/draft-{d.index + 1}.wav"
        assert d.codes_key == f"songs/{song_id}/draft-{d.index + 1}.npy"
        audio, rate = soundfile.read(io.BytesIO(storage.read_bytes(d.audio_key)))
        assert (
            rate == sr
            and len(audio) == pytest.approx(d.seconds * sr, abs=1)
            and d.seconds == pytest.approx(0.1, abs=0.01)
        )
        codes = np.load(io.BytesIO(storage.read_bytes(d.codes_key)))
        assert codes.ndim == 1 and len(codes) * 16 == len(audio)
    assert job.checkpoint_key is not None and storage.list("checkpoints") == []  # cleaned up after success

    # The same request sampled directly gives the same drafts: the worker adds no randomness.
    song = repo.song_by_id(db, song_id)
    assert song is not None
    direct = make_drafts(Engine.load(model_dir), request_from_song(song), 3, decode=False)
    stored = np.stack([np.load(io.BytesIO(storage.read_bytes(d.codes_key))) for d in drafts])
    assert np.array_equal(direct.codes, stored)

    # Upsample the second draft.
    lifecycle.open_vote(db, song_id, utcnow())
    repo.cast_vote(db, song_id, 7, drafts[1].id)
    closed = lifecycle.close_vote(db, song_id)  # the bot's way: the upsample job comes with the close
    assert closed is not None and closed.winner.id == drafts[1].id
    up_id = closed.job_id
    assert _worker(db, storage, settings, model_dir).run() == 0
    up = _job(db, up_id)
    assert up.status == "succeeded", up.last_error
    with db.read() as s:
        clip = s.get(Clip, up.result["clip_id"])
    assert clip is not None and clip.song_id == song_id and clip.mp3_key == f"songs/{song_id}/final.mp3"
    final, rate = soundfile.read(io.BytesIO(storage.read_bytes(clip.audio_key)))
    assert rate == sr and len(final) == len(audio)
    assert probe(storage.local_path(clip.mp3_key)).codec == "mp3"  # type: ignore[arg-type]
    all_codes = codes_from_npz(storage.read_bytes(clip.codes_key))
    assert [c.shape[1] for c in all_codes] == [len(stored[1]) * 4, len(stored[1]) * 2, len(stored[1])]
    assert np.array_equal(all_codes[2][0], stored[1])
    assert repo.song_by_id(db, song_id).status == SongStatus.upsampling  # type: ignore[union-attr]

    # Continue the clip: 0.05 s of it as the prime, 0.05 s of new music.
    cont_id = _song(
        db, model_dir, parent_clip_id=clip.id, prime_seconds=0.05, seconds=0.05, n_drafts=2, seed=9
    )
    cjob = queue.enqueue(db, "continue", {"song_id": cont_id}, song_id=cont_id)
    assert _worker(db, storage, settings, model_dir).run() == 0
    assert _job(db, cjob).status == "succeeded", _job(db, cjob).last_error
    cdrafts = repo.drafts_for_song(db, cont_id)
    prime = codes_from_npz(storage.read_bytes(f"songs/{cont_id}/prime.npz"))
    n_prime = prime[2].shape[1]
    assert n_prime == int(0.05 * sr) // 16 and np.array_equal(prime[2][0], all_codes[2][0, -n_prime:])
    for d in cdrafts:
        c = np.load(io.BytesIO(storage.read_bytes(d.codes_key)))
        assert np.array_equal(c[:n_prime], prime[2][0]) and len(c) > n_prime
    cup = queue.enqueue(db, "upsample", {"song_id": cont_id, "draft_id": cdrafts[0].id}, song_id=cont_id)
    assert _worker(db, storage, settings, model_dir).run() == 0
    assert _job(db, cup).status == "succeeded", _job(db, cup).last_error
    with db.read() as s:
        cclip = s.get(Clip, _job(db, cup).result["clip_id"])
    assert cclip is not None
    ccodes = codes_from_npz(storage.read_bytes(cclip.codes_key))
    for lv in (0, 1):  # the prime's lower levels are kept, not resampled
        assert np.array_equal(ccodes[lv][0, : prime[lv].shape[1]], prime[lv][0])


def test_bad_requests_fail_once_with_a_sentence(sqlite_url: str, storage: Storage, model_dir: Path) -> None:
    db = Database(sqlite_url)
    settings = _sqlite_settings(sqlite_url, storage)
    unknown = _song(db, model_dir, artist="Bahc")
    j1 = queue.enqueue(db, "draft", {"song_id": unknown}, song_id=unknown)
    storage.write_bytes("uploads/bad.mp3", os.urandom(5000))
    corrupt = _song(db, model_dir, prime_key="uploads/bad.mp3", prime_seconds=1.0)
    j2 = queue.enqueue(db, "continue", {"song_id": corrupt}, song_id=corrupt)
    j3 = queue.enqueue(db, "draft", {"song_id": 99999})
    gone = _song(db, model_dir)
    j4 = queue.enqueue(db, "upsample", {"song_id": gone, "draft_id": 4242}, song_id=gone)
    for _ in range(4):
        assert _worker(db, storage, settings, model_dir).run() == 0
    expected = {
        j1: "Unknown artist 'Bahc'. Did you mean: bach",
        j2: "the prime audio cannot be used: this does not look like an audio file ffmpeg can read",
        j3: "song 99999 no longer exists",
        j4: "draft 4242 of song",
    }
    for job_id, text in expected.items():
        job = _job(db, job_id)
        assert job.status == "failed" and job.attempts == 1, (job.status, job.last_error)
        assert text in (job.last_error or ""), job.last_error


def test_internal_errors_are_retried(
    sqlite_url: str, storage: Storage, model_dir: Path, tmp_path: Path
) -> None:
    db = Database(sqlite_url)
    settings = _sqlite_settings(sqlite_url, storage)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    data = (broken / "prior_level_2.pth.tar").read_bytes()
    (broken / "prior_level_2.pth.tar").write_bytes(data[: len(data) // 3])  # truncated
    song_id = _song(db, broken)
    job_id = queue.enqueue(db, "draft", {"song_id": song_id}, song_id=song_id)
    worker = _worker(db, storage, settings, model_dir)  # its own model is fine; the song's is not
    assert worker.run() == 0
    job = _job(db, job_id)
    assert job.status == "queued" and job.attempts == 1 and job.run_at is not None
    assert "internal error" in (job.last_error or "") and "prior_level_2.pth.tar" in (job.last_error or "")


def test_cancel_stops_between_windows(sqlite_url: str, storage: Storage, model_dir: Path) -> None:
    db = Database(sqlite_url)
    settings = _sqlite_settings(sqlite_url, storage)
    song_id = _song(db, model_dir, seconds=2.0, n_drafts=1)
    job_id = queue.enqueue(db, "draft", {"song_id": song_id}, song_id=song_id)
    worker = _worker(db, storage, settings, model_dir)
    worker.engine_for(str(model_dir))
    lease = queue.claim(db, ["draft"], "w", 30)
    assert lease is not None
    outcome: list[str] = []
    t = threading.Thread(target=lambda: outcome.append(worker.run_job(lease)))
    t.start()
    deadline = time.monotonic() + 60
    while _job(db, job_id).checkpoint_key is None and time.monotonic() < deadline:
        time.sleep(0.02)
    progress = _job(db, job_id).progress
    assert queue.cancel(db, job_id)
    t.join(timeout=60)
    assert outcome == ["cancelled"]
    job = _job(db, job_id)
    assert job.status == "cancelled" and repo.drafts_for_song(db, song_id) == []
    assert storage.list("checkpoints") == []
    assert progress.get("stage") in ("drafts (level 2)", "loading model")
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Draft)).scalar_one() == 0


def test_sigterm_gives_the_job_back_and_the_resumed_run_is_exact(
    sqlite_url: str, storage: Storage, model_dir: Path
) -> None:
    db = Database(sqlite_url)
    settings = _sqlite_settings(sqlite_url, storage)
    song_id = _song(db, model_dir, seconds=0.5, n_drafts=2)
    job_id = queue.enqueue(db, "draft", {"song_id": song_id}, song_id=song_id)
    code = (
        f"import sys, torch; torch.set_num_threads(1); sys.path.insert(0, {str(ROOT)!r});"
        "from db.settings import Settings; from engine.serving.worker import Worker, WorkerOptions;"
        f"s = Settings(database_url={sqlite_url!r}, storage_url={str(storage.root)!r}, heartbeat_seconds=0.1, poll_seconds=0.1, _env_file=None);"
        f"sys.exit(Worker(s, WorkerOptions(device='cpu', model={str(model_dir)!r}, once=True, threads=1)).run())"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        job = _job(db, job_id)
        if job.checkpoint_key is not None and (job.progress or {}).get("done", 0) > 80:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    job = _job(db, job_id)
    assert job.status == "queued" and job.attempts == 0, (job.status, job.last_error)  # no attempt burned
    assert job.checkpoint_key is not None and storage.exists(job.checkpoint_key)
    assert repo.drafts_for_song(db, song_id) == []

    assert _worker(db, storage, settings, model_dir).run() == 0  # another worker resumes it
    job = _job(db, job_id)
    assert job.status == "succeeded" and job.lease_token == 2
    song = repo.song_by_id(db, song_id)
    assert song is not None
    direct = make_drafts(Engine.load(model_dir), request_from_song(song), 2, decode=False)
    stored = np.stack(
        [np.load(io.BytesIO(storage.read_bytes(d.codes_key))) for d in repo.drafts_for_song(db, song_id)]
    )
    assert np.array_equal(direct.codes, stored)


def test_one_worker_per_gpu() -> None:
    with device_lock("cuda:7"), pytest.raises(DeviceBusy, match="already uses cuda:7"), device_lock("cuda:7"):
        pass
    with device_lock("cpu"), device_lock("cpu"):  # CPU workers are not limited
        pass


def test_an_idle_worker_rescues_jobs_whose_worker_died(
    db: Database, storage: Storage, settings: Settings, model_dir: Path
) -> None:
    """Reliability issue, defect 6: `queue.reclaim_expired` ran only in tests, so a job cancelled
    while its worker was dead, or lost more than `max_reclaims` times, stayed `running` forever and
    held its member's and its server's slots. Every worker now runs the rescue while it waits."""
    from datetime import timedelta

    from sqlalchemy import update

    settings = _settings(settings)
    cancelled = queue.enqueue(db, "draft", {"song_id": None})
    lost = queue.enqueue(db, "draft", {"song_id": None}, max_reclaims=0)
    for _ in range(2):
        assert queue.claim(db, ["draft"], "a-worker-that-dies", 60) is not None
    assert queue.cancel(db, cancelled) == queue.CancelResult.requested  # while its worker was alive
    with db.write() as s:  # ...then both workers were SIGKILLed and their leases ran out
        s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    worker = _worker(db, storage, settings, model_dir, once=False, idle_exit_seconds=0.5)
    assert worker.run() == 0
    assert _job(db, cancelled).status == "cancelled"
    assert _job(db, lost).status == "failed" and "lost" in (_job(db, lost).last_error or "")
