"""Levels sampled interleaved (issue 18): a level's window starts as soon as the codes of the level
above that condition it exist, its decode steps alternating with the level above's in one loop,
and the codes are exactly those of sampling one level after the other, resumes included.

Real tiny Jukebox priors (random weights, float32, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from db.database import Database
from db.queue import enqueue, get_job
from engine.sampling import batching
from engine.sampling.batching import BatchScheduler, use_scheduler
from engine.sampling.noise import NoiseKey
from engine.sampling.pipeline import Engine, Prompt, SongRequest, codes_to_npz, make_drafts, upsample
from engine.sampling.resume import FileCheckpointer, resumable_run
from engine.sampling.sample import ExactPrior, Hooks, Progress, SamplingStopped, run_plan
from engine.sampling.song import FolderFiles, SongRunner, draft_codes, npy_bytes
from tests.pipeline_fixtures import (
    CPU,
    TinyLabels,
    empty_codes,
    tiny_model_config,
    tiny_plan,
    tiny_priors,
    write_tiny_model,
)

# 0.05 s of the tiny model: 68 / 136 / 272 tokens at levels 2 / 1 / 0, windows of 64 every
# 8 / 32 / 8 tokens: 2, 4 and 27 windows.
REQ = SongRequest("bach", "chorale", "Wachet auf, ruft uns die Stimme", seconds=0.05, seed=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(write_tiny_model(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, dict[int, Any]]:
    config = tiny_model_config()
    return config, tiny_priors(config, seed=2)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _window_order() -> tuple[list[tuple[int, int]], Hooks]:
    order: list[tuple[int, int]] = []
    return order, Hooks(on_window=lambda p, _codes: order.append((p.level, p.window)))


# --- the upsample of a song ----------------------------------------------------------------------


def test_an_interleaved_upsample_gives_the_codes_of_one_level_after_the_other(engine: Engine) -> None:
    top = make_drafts(engine, REQ, 2, decode=False).codes[1]
    plan = engine.plan((1, 0), 1, top.shape[0] * 16, NoiseKey(REQ.seed), REQ.settings)
    assert len(plan.windows(1)) >= 3 and len(plan.windows(0)) >= 3
    seq_order, seq_hooks = _window_order()
    seq = upsample(engine, REQ, top, draft_index=1, decode=False, hooks=seq_hooks)
    inter_order, inter_hooks = _window_order()
    inter = upsample(engine, REQ, top, draft_index=1, decode=False, hooks=inter_hooks, interleave_levels=True)
    assert _same(seq.codes, inter.codes)
    # The same windows, in another order: level 0 began before level 1 ended.
    assert sorted(seq_order) == sorted(inter_order)
    assert seq_order == sorted(seq_order, key=lambda lw: (-lw[0], lw[1]))
    last_of_level_1 = max(i for i, (lv, _) in enumerate(inter_order) if lv == 1)
    assert any(lv == 0 for lv, _ in inter_order[:last_of_level_1])


def test_an_interleaved_continuation_gives_the_same_codes(engine: Engine) -> None:
    first = upsample(engine, REQ, make_drafts(engine, REQ, 1, decode=False).codes[0], decode=False)
    prompt = Prompt.from_clip_codes(engine, codes_to_npz(first.codes), seconds=0.03)
    top = make_drafts(engine, REQ, 2, prompt=prompt, decode=False).codes[0]
    seq = upsample(engine, REQ, top, prompt=prompt, decode=False)
    order, hooks = _window_order()
    inter = upsample(engine, REQ, top, prompt=prompt, decode=False, hooks=hooks, interleave_levels=True)
    assert _same(seq.codes, inter.codes)
    assert np.array_equal(inter.codes[0][:, : prompt.codes[0].shape[1]], prompt.codes[0])  # kept
    assert sum(lv == 0 for lv, _ in order) >= 3
    last_of_level_1 = max(i for i, (lv, _) in enumerate(order) if lv == 1)
    assert any(lv == 0 for lv, _ in order[:last_of_level_1])


def test_the_song_runner_interleaves_when_asked(engine: Engine, tmp_path: Path) -> None:
    top = make_drafts(engine, REQ, 1, decode=False).codes[0]
    finals = []
    for name, interleave in (("seq", False), ("inter", True)):
        files = FolderFiles(tmp_path / name)
        files.write(draft_codes(1), npy_bytes(top))
        runner = SongRunner(engine, files, interleave_levels=interleave)
        finals.append(runner.upsample(REQ, 1).codes)
        assert files.exists("final.wav") and files.exists("preview-1.mp3")
    assert _same(*finals)


# --- the decode loop -----------------------------------------------------------------------------


class StepLog(ExactPrior):
    """The exact path (every token recomputed from scratch), noting which level took each step."""

    def __init__(self, prior: Any, level: int, log: list[int]) -> None:
        super().__init__(prior)
        self.level, self.log = level, log

    def decode_step(self, cache: Any, tokens: torch.Tensor, pos: int, cond: Any) -> torch.Tensor:
        self.log.append(self.level)
        return super().decode_step(cache, tokens, pos, cond)


def test_the_two_levels_alternate_their_decode_steps_in_one_loop(tiny: tuple) -> None:
    config, priors = tiny
    whole, sl = tiny_plan(config, 0.03, 1, seed=4)  # 82 / 164 tokens: 2 and 14 windows at levels 1 / 0
    labels = TinyLabels(config, sl, 1)
    top = run_plan(replace(whole, levels=(2,)), priors.__getitem__, labels, empty_codes(1), device=CPU)
    plan = replace(whole, levels=(1, 0))
    steps: list[int] = []
    exact = {lv: StepLog(priors[lv], lv, steps) for lv in (1, 0)}
    seq = run_plan(plan, exact.__getitem__, labels, top, device=CPU)
    assert steps == sorted(steps, reverse=True)  # in order, level 0 waits for the whole of level 1
    steps.clear()
    inter = run_plan(plan, exact.__getitem__, labels, top, device=CPU, interleave=True)
    assert _same(seq, inter)
    # After level 1's first window, its steps and level 0's alternate one for one.
    first_0 = steps.index(0)
    assert steps[:first_0] == [1] * first_0 and first_0 < steps.count(1)
    assert steps[first_0 : first_0 + 8] == [0, 1] * 4
    # The fast path (row decoders) interleaved gives them too.
    assert _same(seq, run_plan(plan, priors.__getitem__, labels, top, device=CPU, interleave=True))


def test_interleaved_through_a_shared_batch_scheduler(tiny: tuple) -> None:
    config, priors = tiny
    plan, sl = tiny_plan(config, 0.03, 2, seed=6)
    labels = TinyLabels(config, sl, 2)
    alone = run_plan(plan, priors.__getitem__, labels, empty_codes(2), device=CPU)
    with BatchScheduler(budget_bytes=64 << 20, max_rows=8) as sched, use_scheduler(sched):
        shared = run_plan(plan, priors.__getitem__, labels, empty_codes(2), device=CPU, interleave=True)
        # A stop mid-run drops the window another level was decoding; the scheduler lets it go.
        asked = iter([False, True])
        with pytest.raises(SamplingStopped):
            run_plan(
                plan,
                priors.__getitem__,
                labels,
                empty_codes(2),
                device=CPU,
                interleave=True,
                hooks=Hooks(should_stop=asked.__next__),
            )
        for _ in range(500):
            if not sched.loop.busy():
                break
            time.sleep(0.01)
        assert not sched.loop.busy()
        assert sched.stats["steps"] > 0
    assert _same(alone, shared)


# --- stop and resume -----------------------------------------------------------------------------


class SavingCheckpointer(FileCheckpointer):
    """A file checkpointer that also keeps what each checkpoint said."""

    def __init__(self, folder: Path, stage: str) -> None:
        super().__init__(folder, stage)
        self.saved: list[tuple[Progress, list[np.ndarray]]] = []

    def save(self, plan, progress, codes, extra):  # type: ignore[no-untyped-def]
        self.saved.append((progress, [c.copy() for c in codes]))
        return super().save(plan, progress, codes, extra)


def test_an_interleaved_run_stopped_anywhere_resumes_to_the_same_codes(tiny: tuple, tmp_path: Path) -> None:
    config, priors = tiny
    plan, sl = tiny_plan(config, 0.05, 2, seed=8)  # all three levels, interleaved
    labels = TinyLabels(config, sl, 2)
    full = run_plan(plan, priors.__getitem__, labels, empty_codes(2), device=CPU)
    stops, checkpointers = 0, []
    while True:
        asked = iter([False, False, True])  # stop after every third window
        ck = SavingCheckpointer(tmp_path, "run")
        checkpointers.append(ck)
        try:
            codes = resumable_run(
                plan,
                priors.__getitem__,
                labels,
                empty_codes(2),
                ck,
                {"request": "r1"},
                device=CPU,
                dtype=torch.float32,
                hooks=Hooks(should_stop=asked.__next__, tokens_every=1),  # progress at every token
                interleave=True,
            )
            break
        except SamplingStopped:
            stops += 1
            assert not batching._IN_USE  # the window dropped mid-way let its decoder go
    assert stops >= 3 and _same(full, codes)
    saved = [s for ck in checkpointers for s in ck.saved]
    assert {p.level for p, _ in saved} == {0, 1, 2}
    # A checkpoint counts the tokens its codes hold, never those of a window still decoding.
    assert all(p.done == sum(c.shape[1] for c in codes) for p, codes in saved)
    assert any(c[0].shape[1] > 0 and c[1].shape[1] < full[1].shape[1] for _, c in saved)  # mid-way


def test_an_interleaved_upsample_resumes_from_a_sequential_checkpoint(engine: Engine, tmp_path: Path) -> None:
    top = make_drafts(engine, REQ, 1, decode=False).codes[0]
    want = upsample(engine, REQ, top, decode=False).codes
    asked = iter([False, True])
    with pytest.raises(SamplingStopped):
        upsample(
            engine,
            REQ,
            top,
            decode=False,
            checkpointer=FileCheckpointer(tmp_path, "up"),
            hooks=Hooks(should_stop=asked.__next__),
        )
    ck = SavingCheckpointer(tmp_path, "up")
    got = upsample(engine, REQ, top, decode=False, checkpointer=ck, interleave_levels=True).codes
    assert _same(want, got) and ck.saved  # the same request: the order of the levels is not part of it


def test_an_interleaved_job_killed_anywhere_resumes_on_other_workers_exactly(
    tmp_path: Path, sqlite_url: str
) -> None:
    """tests/test_resume.py's SIGKILL test, interleaved: each attempt dies mid-window (a real
    SIGKILL) while the level named, and the levels below it, are decoding."""
    config = tiny_model_config()
    plan, sl = tiny_plan(config, 0.06, 2, seed=5)  # the child's job (tests/pipeline_fixtures.py)
    want = run_plan(
        plan, tiny_priors(config).__getitem__, TinyLabels(config, sl, 2), empty_codes(2), device=CPU
    )
    db = Database(sqlite_url)
    job_id = enqueue(db, "draft", {})
    out, storage = tmp_path / "out.npz", tmp_path / "storage"
    fixtures = Path(__file__).with_name("pipeline_fixtures.py")
    for attempt, level in enumerate([2, 1, 0, None]):
        cmd = [sys.executable, str(fixtures), "run-job", "--db", sqlite_url, "--storage", str(storage)]
        cmd += ["--owner", f"worker-{attempt}", "--out", str(out), "--interleave"]
        cmd += [] if level is None else ["--kill-level", str(level)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if level is None:
            assert res.returncode == 0, res.stderr
            break
        assert res.returncode == -9, res.stderr  # killed by SIGKILL
        assert json.loads(res.stdout.strip().splitlines()[-1])["killed_at"][0] == level
        assert get_job(db, job_id).checkpoint_key  # type: ignore[union-attr]
    with np.load(out) as z:
        got = [z[k] for k in sorted(z.files)]
    assert _same(want, got)
    job = get_job(db, job_id)
    assert job is not None and job.status == "succeeded" and job.reclaims == 3
