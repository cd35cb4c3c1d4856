"""One song runner: `jukebot generate` (a local folder) and the worker (the storage and the job row)
write the same files, with the same names and the same bytes, for the same request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from sqlalchemy import select
from sqlmodel import col
from typer.testing import CliRunner

from db import queue, repo
from db.database import Database
from db.models import Clip
from db.settings import Settings, get_settings
from db.storage import Storage
from engine.cli import register
from engine.sampling.pipeline import SongRequest, codes_from_npz
from engine.sampling.song import (
    ALIGNMENT,
    CODES,
    DRAFTS,
    FINAL_LRC,
    FINAL_MP3,
    FINAL_WAV,
    FolderFiles,
    SongError,
    SongRunner,
    check_drafts,
    draft_audio,
    draft_codes,
    preview_audio,
    song_request,
)
from engine.serving.worker import Worker, WorkerOptions
from tests.pipeline_fixtures import write_tiny_model

SEED, DRAFTS_N, PICK, LYRICS = 5, 2, 2, "la la la"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def _generate(model_dir: Path, out: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUKEBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("JUKEBOT_STORAGE_URL", str(tmp_path / "cli-storage"))
    get_settings.cache_clear()
    app = typer.Typer()
    register(app)
    args = ["generate", "--model", str(model_dir), "--artist", "bach", "--genre", "chorale"]
    args += ["--lyrics", LYRICS, "--seconds", "0.1", "--drafts", str(DRAFTS_N), "--pick", str(PICK)]
    args += ["--seed", str(SEED), "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet"]
    try:
        res = CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output


def _work(db: Database, storage: Storage, settings: Settings, model_dir: Path) -> int:
    settings = settings.model_copy(
        update=dict(heartbeat_seconds=0.1, lease_seconds=30.0, poll_seconds=0.1, device="cpu")
    )
    user = repo.get_or_create_user(db, 99, "tester")
    assert user.id is not None
    song = repo.create_song(
        db,
        user_id=user.id,
        artist="bach",
        genre="chorale",
        seconds=0.1,
        seed=SEED,
        lyrics=LYRICS,
        model=str(model_dir),
        n_drafts=DRAFTS_N,
    )
    assert song.id is not None

    def run(kind: str, payload: dict[str, object]) -> None:
        job_id = queue.enqueue(db, kind, payload, song_id=song.id)
        opts = WorkerOptions(device="cpu", model=str(model_dir), once=True, threads=1)
        assert Worker(settings, opts, db=db, storage=storage).run() == 0
        job = queue.get_job(db, job_id)
        assert job is not None and job.status == "succeeded", job and job.last_error

    run("draft", {"song_id": song.id})
    drafts = repo.drafts_for_song(db, song.id)
    run("upsample", {"song_id": song.id, "draft_id": drafts[PICK - 1].id})
    return song.id


def test_generate_and_the_worker_write_the_same_files(
    db: Database,
    storage: Storage,
    settings: Settings,
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "cli"
    _generate(model_dir, out, monkeypatch, tmp_path)
    song_id = _work(db, storage, settings, model_dir)

    # The timed lyrics and the level-1 preview too (issue #16 items 6 and 8): both paths write them.
    names = [DRAFTS, FINAL_WAV, FINAL_MP3, ALIGNMENT, FINAL_LRC, preview_audio(PICK)]
    names += [f(n) for n in range(1, DRAFTS_N + 1) for f in (draft_audio, draft_codes)]
    for name in names:
        here, there = (out / name).read_bytes(), storage.read_bytes(f"songs/{song_id}/{name}")
        assert here == there, f"{name} differs between jukebot generate and the worker"
    # codes.npz: the same codes of every level; only its metadata names the run's origin.
    cli_codes = codes_from_npz((out / CODES).read_bytes())
    worker_codes = codes_from_npz(storage.read_bytes(f"songs/{song_id}/{CODES}"))
    assert len(cli_codes) == 3
    for a, b in zip(cli_codes, worker_codes, strict=True):
        assert np.array_equal(a, b)
    # The worker's draft rows point at the runner's names.
    for d in repo.drafts_for_song(db, song_id):
        assert d.audio_key == f"songs/{song_id}/{draft_audio(d.index + 1)}"
        assert d.codes_key == f"songs/{song_id}/{draft_codes(d.index + 1)}"
    with db.read() as s:
        clip = s.execute(select(Clip).where(col(Clip.song_id) == song_id)).scalar_one_or_none()
    assert clip is not None and clip.lrc_key == f"songs/{song_id}/{FINAL_LRC}"
    assert clip.alignment_key == f"songs/{song_id}/{ALIGNMENT}"


def test_one_drafts_limit_and_typed_errors(model_dir: Path, tmp_path: Path) -> None:
    check_drafts(4, 4)
    for n in (0, 5):
        with pytest.raises(SongError, match=r"between 1 and 4 \(JUKEBOT_MAX_DRAFTS\)"):
            check_drafts(n, 4)
    from engine.sampling.pipeline import Engine

    runner = SongRunner(Engine.load(model_dir), FolderFiles(tmp_path / "song"))
    with pytest.raises(SongError, match="the codes of draft 1 are missing"):
        runner.upsample(_request(runner), 1)
    (tmp_path / "song" / draft_codes(1)).write_bytes(b"not numpy")
    with pytest.raises(SongError, match=r"stored draft codes \(draft-1.npy\) are damaged"):
        runner.upsample(_request(runner), 1)


def _request(runner: SongRunner) -> SongRequest:
    return song_request(runner.engine, artist="bach", genre="chorale", lyrics="", seconds=0.1, seed=0)


def test_the_runner_refuses_a_song_of_no_length(model_dir: Path) -> None:
    from engine.sampling.pipeline import Engine

    with pytest.raises(SongError, match="positive number of seconds"):
        song_request(Engine.load(model_dir), artist="bach", genre="chorale", lyrics="", seconds=0, seed=0)
