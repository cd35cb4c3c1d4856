"""The worker running several jobs in one decode batch (`--batch-jobs`), on CPU with a tiny model:
every job keeps its own lease, checkpoints and fenced writes, and its drafts are exactly those the
same request gives alone."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from db import queue, repo
from db.database import Database
from db.settings import Settings
from db.storage import Storage
from engine.sampling.pipeline import Engine, make_drafts
from engine.serving.jobs import request_from_song
from engine.serving.worker import Worker, WorkerOptions
from tests.pipeline_fixtures import write_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_jobs_batched_in_one_worker_get_their_own_drafts(
    db: Database, storage: Storage, settings: Settings, model_dir: Path
) -> None:
    settings = settings.model_copy(
        update=dict(heartbeat_seconds=0.1, lease_seconds=30.0, poll_seconds=0.1, device="cpu")
    )
    user = repo.get_or_create_user(db, 99, "batcher")
    assert user.id is not None
    songs, jobs = [], []
    for seed, seconds, n in (
        (7, 0.1, 3),
        (8, 0.15, 2),
        (9, 0.05, 3),
    ):  # different lengths: windows interleave
        made = repo.create_song(
            db,
            user_id=user.id,
            artist="bach",
            genre="chorale",
            seconds=seconds,
            seed=seed,
            lyrics="Ein feste Burg",
            model=str(model_dir),
            n_drafts=n,
        )
        assert made.id is not None
        songs.append(made.id)
        jobs.append(queue.enqueue(db, "draft", {"song_id": made.id}, song_id=made.id))
    opts = WorkerOptions(
        device="cpu", model=str(model_dir), once=True, threads=1, tokens_every=8, batch_jobs=3
    )
    worker = Worker(settings, opts, db=db, storage=storage)
    assert worker.run() == 0
    for job_id in jobs:
        job = queue.get_job(db, job_id)
        assert job is not None and job.status == "succeeded", job and job.last_error
    assert worker.batch_stats["max_rows_busy"] > 3  # the jobs shared decode batches

    engine = Engine.load(model_dir)
    for song_id in songs:
        song = repo.song_by_id(db, song_id)
        assert song is not None
        drafts = repo.drafts_for_song(db, song_id)
        stored = np.stack([np.load(io.BytesIO(storage.read_bytes(d.codes_key))) for d in drafts])
        alone = make_drafts(engine, request_from_song(song), int(song.n_drafts), decode=False)
        assert np.array_equal(alone.codes, stored), song_id
