"""Exact resume: checkpoints after every window, and runs killed anywhere (a real SIGKILL) that
resume on another worker with exactly the codes of an uninterrupted run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from db.database import Database
from db.models import Job
from db.queue import LeaseLost, claim, enqueue, get_job
from db.storage import Storage
from engine.sampling.resume import (
    Checkpoint,
    CheckpointAltered,
    CheckpointError,
    FileCheckpointer,
    JobCheckpointer,
    compatible,
    dumps,
    loads,
    resumable_run,
)
from engine.sampling.sample import Hooks, Progress, SamplingStopped, run_plan
from tests.pipeline_fixtures import CPU, TinyLabels, empty_codes, tiny_model_config, tiny_plan, tiny_priors

FIXTURES = Path(__file__).with_name("pipeline_fixtures.py")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny() -> tuple:
    config = tiny_model_config()
    return config, tiny_priors(config)


def _codes(*shapes: tuple[int, int], hi: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, hi, size=s) for s in shapes]


# --- the file format ------------------------------------------------------------------------------


def test_checkpoint_round_trip_keeps_everything() -> None:
    config = tiny_model_config()
    plan, _ = tiny_plan(config, 0.1, 2, seed=3)
    codes = _codes((2, 40), (2, 10), (2, 5))
    ckpt = Checkpoint(plan.to_dict(), codes, level=1, window=4, done=55, total=200, extra={"request": "abc"})
    back = loads(dumps(ckpt))
    assert back.plan() == plan and back.extra == {"request": "abc"}
    assert (back.level, back.window, back.done, back.total) == (1, 4, 55, 200)
    assert all(np.array_equal(a, b) and b.dtype == np.int64 for a, b in zip(codes, back.codes, strict=True))
    big = _codes((1, 3), (1, 3), (1, 3), hi=100_000)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(big, loads(dumps(Checkpoint({}, big, 0, 0, 0, 0))).codes, strict=True)
    )


def test_damaged_checkpoint_is_refused_in_words() -> None:
    data = dumps(Checkpoint({}, _codes((1, 4), (1, 2), (1, 1)), 0, 0, 0, 0))
    with pytest.raises(CheckpointError, match="damaged or not a jukebot checkpoint"):
        loads(data[: len(data) // 2], name="ck.npz")
    with pytest.raises(CheckpointError, match="damaged"):
        loads(b"not a zip at all")


def _rewritten(data: bytes, change: Callable[[dict[str, np.ndarray]], None]) -> bytes:
    """The checkpoint with `change` made to its arrays, saved again as a valid file: the zip's CRC
    cannot tell, only the digest can."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _bump_first_code(arrays: dict[str, np.ndarray]) -> None:
    """One code changed, in the first level that has any."""
    codes = next(arrays[k] for k in sorted(arrays) if k.startswith("codes_") and arrays[k].size)
    codes.flat[0] = (int(codes.flat[0]) + 1) % 64


def test_a_checkpoint_with_altered_codes_or_facts_is_refused() -> None:
    ckpt = Checkpoint({"seed": 1}, _codes((1, 4), (1, 2), (1, 1)), 0, 3, 7, 9, {"request": "r"})
    data = dumps(ckpt)
    with pytest.raises(CheckpointAltered, match="altered after it was written"):
        loads(_rewritten(data, _bump_first_code), name="ck.npz")

    def later_window(arrays: dict[str, np.ndarray]) -> None:
        meta = json.loads(bytes(arrays["meta"]).decode())
        meta["window"] = 4
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)

    with pytest.raises(CheckpointAltered):
        loads(_rewritten(data, later_window))
    assert loads(_rewritten(data, lambda a: None)).window == 3  # rewritten unchanged: accepted


def test_an_older_checkpoint_without_a_digest_is_accepted_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    codes = _codes((1, 4), (1, 2), (1, 1))

    def strip(arrays: dict[str, np.ndarray]) -> None:
        del arrays["digest"]

    old = _rewritten(dumps(Checkpoint({}, codes, 0, 1, 2, 3)), strip)
    with caplog.at_level("WARNING", logger="jukebot.resume"):
        back = loads(old, name="old.npz")
    assert all(np.array_equal(a, b) for a, b in zip(codes, back.codes, strict=True))
    assert "old.npz has no digest" in caplog.text


def test_an_altered_file_checkpoint_names_fresh(tmp_path: Path) -> None:
    config = tiny_model_config()
    plan, _ = tiny_plan(config, 0.1, 1, seed=3)
    ck = FileCheckpointer(tmp_path, "run")
    prog = Progress(level=2, window=0, windows=3, done=1, total=9, level_done=1, level_total=3)
    ck.save(plan, prog, _codes((1, 4), (1, 2), (1, 1)), {"request": "r"})
    assert ck.load(plan, {"request": "r"}) is not None
    ck.path.write_bytes(_rewritten(ck.path.read_bytes(), _bump_first_code))
    with pytest.raises(CheckpointError, match=r"\.checkpoint-run\.npz was altered.*--fresh"):
        ck.load(plan, {"request": "r"})


def test_compatible_notices_a_different_run() -> None:
    config = tiny_model_config()
    plan, _ = tiny_plan(config, 0.1, 2, seed=3)
    other, _ = tiny_plan(config, 0.1, 2, seed=4)
    codes = empty_codes(2)
    ckpt = Checkpoint(plan.to_dict(), codes, 2, 0, 0, 10, {"request": "a"})
    assert compatible(ckpt, plan, {"request": "a"}) is None
    assert compatible(ckpt, other, {"request": "a"}) == "the sampling plan changed"
    assert compatible(ckpt, plan, {"request": "b"}) == "the request changed"
    bad = Checkpoint(plan.to_dict(), empty_codes(3), 2, 0, 0, 10, {"request": "a"})
    assert compatible(bad, plan, {"request": "a"}) is not None


# --- in-process stop and resume -------------------------------------------------------------------


def test_file_checkpoints_resume_exactly(tiny: tuple, tmp_path: Path) -> None:
    config, priors = tiny
    plan, sl = tiny_plan(config, 0.06, 2, seed=8)
    labels = TinyLabels(config, sl, 2)
    full = run_plan(plan, priors.__getitem__, labels, empty_codes(2), device=CPU)

    stops = 0
    while True:
        asked = iter([False, False, True])  # stop after every third window
        try:
            codes = resumable_run(
                plan,
                priors.__getitem__,
                labels,
                empty_codes(2),
                FileCheckpointer(tmp_path, "run"),
                {"request": "r1"},
                device=CPU,
                dtype=torch.float32,
                hooks=Hooks(should_stop=asked.__next__),
            )
            break
        except SamplingStopped:
            stops += 1
    assert stops >= 3
    assert all(np.array_equal(a, b) for a, b in zip(full, codes, strict=True))
    with pytest.raises(CheckpointError, match="different request"):
        FileCheckpointer(tmp_path, "run").load(plan, {"request": "another"})
    FileCheckpointer(tmp_path, "run").cleanup()
    assert not (tmp_path / ".checkpoint-run.npz").exists()


class CountingCheckpointer(FileCheckpointer):
    def __init__(self, folder: Path, stage: str) -> None:
        super().__init__(folder, stage)
        self.saved: list[tuple[int, int]] = []

    def save(self, plan, progress, codes, extra):  # type: ignore[no-untyped-def]
        self.saved.append((progress.level, progress.window))
        return super().save(plan, progress, codes, extra)


def test_throttled_checkpoints_still_save_before_a_stop(tiny: tuple, tmp_path: Path) -> None:
    config, priors = tiny
    plan, sl = tiny_plan(config, 0.04, 1, seed=6)
    labels = TinyLabels(config, sl, 1)
    full = run_plan(plan, priors.__getitem__, labels, empty_codes(1), device=CPU)
    ck = CountingCheckpointer(tmp_path, "t")
    asked = iter([False, False, False, True])  # stop after the 4th window
    with pytest.raises(SamplingStopped) as stop:
        resumable_run(
            plan,
            priors.__getitem__,
            labels,
            empty_codes(1),
            ck,
            {"request": "t"},
            device=CPU,
            dtype=torch.float32,
            hooks=Hooks(should_stop=asked.__next__),
            every_seconds=3600,
        )
    p = stop.value.progress
    assert ck.saved == [(p.level, p.window)]  # nothing by time; the stop saved the last window
    ck2 = CountingCheckpointer(tmp_path, "t")
    codes = resumable_run(
        plan,
        priors.__getitem__,
        labels,
        empty_codes(1),
        ck2,
        {"request": "t"},
        device=CPU,
        dtype=torch.float32,
        every_seconds=3600,
    )
    assert ck2.saved == []
    assert all(np.array_equal(a, b) for a, b in zip(full, codes, strict=True))


def test_job_checkpoints_are_fenced(db: Database, storage: Storage, tiny: tuple) -> None:
    config, priors = tiny
    plan, sl = tiny_plan(config, 0.04, 1, seed=2)
    labels = TinyLabels(config, sl, 1)
    job_id = enqueue(db, "draft", {"x": 1})
    first = claim(db, ["draft"], "worker-a", lease_seconds=0.01)
    assert first is not None
    asked = iter([False, True])
    with pytest.raises(SamplingStopped):
        resumable_run(
            plan,
            priors.__getitem__,
            labels,
            empty_codes(1),
            JobCheckpointer(db, storage, first),
            {"request": "j"},
            device=CPU,
            dtype=torch.float32,
            hooks=Hooks(should_stop=asked.__next__),
        )
    job = get_job(db, job_id)
    assert isinstance(job, Job) and job.checkpoint_key is not None
    assert f"job-{job_id}/token-{first.token}/" in job.checkpoint_key and storage.exists(job.checkpoint_key)
    assert len(storage.list(f"checkpoints/job-{job_id}")) == 1  # the older window's file was deleted

    import time

    time.sleep(0.05)
    second = claim(db, ["draft"], "worker-b", lease_seconds=60)
    assert (
        second is not None and second.token == first.token + 1 and second.checkpoint_key == job.checkpoint_key
    )

    # The stalled first attempt wakes up: its checkpoint is refused and the pointer does not move.
    ckpt = JobCheckpointer(db, storage, first)
    prog = Progress(level=2, window=9, windows=10, done=1, total=2, level_done=1, level_total=2)
    with pytest.raises(LeaseLost):
        ckpt.save(plan, prog, empty_codes(1), {"request": "j"})
    assert get_job(db, job_id).checkpoint_key == job.checkpoint_key  # type: ignore[union-attr]

    # The new attempt resumes from the recorded checkpoint and finishes like an uninterrupted run.
    resumed = JobCheckpointer(db, storage, second)
    assert resumed.load(plan, {"request": "j"}) is not None
    assert resumed.load(plan, {"request": "other"}) is None  # not this request: start over
    codes = resumable_run(
        plan,
        priors.__getitem__,
        labels,
        empty_codes(1),
        resumed,
        {"request": "j"},
        device=CPU,
        dtype=torch.float32,
    )
    full = run_plan(plan, priors.__getitem__, labels, empty_codes(1), device=CPU)
    assert all(np.array_equal(a, b) for a, b in zip(full, codes, strict=True))
    resumed.cleanup()
    assert [k for k in storage.list("checkpoints") if f"token-{second.token}" in k] == []


def test_a_worker_never_resumes_from_an_altered_checkpoint(
    db: Database, storage: Storage, tiny: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    config, priors = tiny
    plan, sl = tiny_plan(config, 0.04, 1, seed=5)
    labels = TinyLabels(config, sl, 1)
    enqueue(db, "draft", {"x": 1})
    first = claim(db, ["draft"], "worker-a", lease_seconds=0.01)
    assert first is not None
    asked = iter([False, True])
    with pytest.raises(SamplingStopped):
        resumable_run(
            plan,
            priors.__getitem__,
            labels,
            empty_codes(1),
            JobCheckpointer(db, storage, first),
            {"request": "j"},
            device=CPU,
            dtype=torch.float32,
            hooks=Hooks(should_stop=asked.__next__),
        )
    import time

    time.sleep(0.05)
    second = claim(db, ["draft"], "worker-b", lease_seconds=60)
    assert second is not None and second.checkpoint_key is not None
    key = second.checkpoint_key
    assert JobCheckpointer(db, storage, second).load(plan, {"request": "j"}) is not None
    storage.write_bytes(key, _rewritten(storage.read_bytes(key), _bump_first_code))

    with caplog.at_level("WARNING", logger="jukebot.resume"):
        assert JobCheckpointer(db, storage, second).load(plan, {"request": "j"}) is None
    assert "was altered after it was written" in caplog.text and "starting over" in caplog.text
    # Starting over gives the uninterrupted run's codes, not a song grown from the altered ones.
    codes = resumable_run(
        plan,
        priors.__getitem__,
        labels,
        empty_codes(1),
        JobCheckpointer(db, storage, second),
        {"request": "j"},
        device=CPU,
        dtype=torch.float32,
    )
    full = run_plan(plan, priors.__getitem__, labels, empty_codes(1), device=CPU)
    assert all(np.array_equal(a, b) for a, b in zip(full, codes, strict=True))


# --- SIGKILL in every level -----------------------------------------------------------------------


def _child(
    db_url: str, storage: Path, owner: str, out: Path, kill_level: int | None
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        str(FIXTURES),
        "run-job",
        "--db",
        db_url,
        "--storage",
        str(storage),
        "--owner",
        owner,
        "--out",
        str(out),
    ]
    if kill_level is not None:
        cmd += ["--kill-level", str(kill_level)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_sigkill_in_every_level_then_resume_on_other_workers_is_exact(
    tmp_path: Path, sqlite_url: str, tiny: tuple
) -> None:
    # The uninterrupted run, in a child process too (same thread settings as the killed ones).
    ref_db = Database(sqlite_url)
    enqueue(ref_db, "draft", {})
    ref = _child(sqlite_url, tmp_path / "ref-storage", "ref", tmp_path / "ref.npz", None)
    assert ref.returncode == 0, ref.stderr

    import shutil

    from tests.conftest import _sqlite_copy

    db_file = Path(sqlite_url.removeprefix("sqlite:///"))
    url = _sqlite_copy(Path(str(db_file)), tmp_path / "kill-db")  # a migrated database ...
    db = Database(url)
    with db.write() as s:  # ... emptied of the reference job
        s.execute(Job.__table__.delete())  # type: ignore[attr-defined]
    job_id = enqueue(db, "draft", {})
    storage = tmp_path / "storage"
    shutil.rmtree(storage, ignore_errors=True)

    for attempt, level in enumerate([2, 1, 0]):
        res = _child(url, storage, f"worker-{attempt}", tmp_path / "out.npz", level)
        assert res.returncode == -9, res.stderr  # killed by SIGKILL
        killed = json.loads(res.stdout.strip().splitlines()[-1])["killed_at"]
        assert killed[0] == level
        key = get_job(db, job_id).checkpoint_key  # type: ignore[union-attr]
        assert key is not None and f"-L{level}-" in key, key  # died after checkpoints in this level
    res = _child(url, storage, "worker-final", tmp_path / "out.npz", None)
    assert res.returncode == 0, res.stderr

    with np.load(tmp_path / "ref.npz") as a, np.load(tmp_path / "out.npz") as b:
        ref_codes = [a[k] for k in sorted(a.files)]
        got = [b[k] for k in sorted(b.files)]
    assert [c.shape for c in got] == [c.shape for c in ref_codes] and got[0].shape[1] > 0
    assert all(np.array_equal(x, y) for x, y in zip(ref_codes, got, strict=True))
    job = get_job(db, job_id)
    assert job is not None and job.status == "succeeded" and job.lease_token == 4 and job.reclaims == 3
