"""engine.sampling.batching: the one decode loop, decode batches shared by several jobs, memory budgets.

Real tiny Jukebox priors (random weights, float32, CPU). The central claim: a job's tokens do not
depend on who it was batched with, so a job sampled alone and the same job sampled in one batch
with others (joining and leaving between windows, each row at its own window position) give the
same codes, token for token, on every level.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from engine.sampling.batching import BatchScheduler, DecodeLoop, use_scheduler
from engine.sampling.decoders import RowDecoder, row_bytes, rows_for_budget
from engine.sampling.noise import NoiseKey
from engine.sampling.sample import ExactPrior, Plan, SamplingSettings, run_plan
from engine.sampling.window_task import WindowTask
from tests.pipeline_fixtures import TinyLabels, empty_codes, tiny_model_config, tiny_plan, tiny_priors

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model() -> tuple[Any, dict[int, Any]]:
    config = tiny_model_config()
    return config, tiny_priors(config, seed=3)


class Job:
    """One song's sampling run, as the pipeline would make it: its own rows, seed, temperature,
    length and noise stream."""

    def __init__(
        self,
        config: Any,
        priors: dict[int, Any],
        *,
        seconds: float,
        rows: int,
        seed: int,
        levels: tuple[int, ...] = (2, 1, 0),
        temperature: float = 1.0,
        stream: int = 0,
    ) -> None:
        plan, sl = tiny_plan(config, seconds, rows, seed)
        self.plan = Plan(
            levels=levels,
            totals=plan.totals,
            n_ctx=plan.n_ctx,
            downsamples=plan.downsamples,
            n_samples=rows,
            key=NoiseKey(seed, stream),
            settings=SamplingSettings(temperatures=(temperature,) * 3),
        )
        self.labels = TinyLabels(config, sl, rows)
        self.priors = priors
        self.codes: list[np.ndarray] | None = None
        self.error: BaseException | None = None

    def run(self) -> list[np.ndarray]:
        return run_plan(
            self.plan, self.priors.__getitem__, self.labels, empty_codes(self.plan.n_samples), device=CPU
        )

    def run_in_thread(self) -> threading.Thread:
        def target() -> None:
            try:
                self.codes = self.run()
            except BaseException as e:
                self.error = e

        t = threading.Thread(target=target)
        t.start()
        return t


def _jobs(config: Any, priors: dict[int, Any]) -> list[Job]:
    # Different lengths (so windows start and end at different times), rows, seeds, temperatures.
    return [
        Job(config, priors, seconds=0.09, rows=2, seed=1, temperature=1.0),
        Job(config, priors, seconds=0.05, rows=3, seed=2, temperature=0.9),
        Job(config, priors, seconds=0.13, rows=1, seed=3, temperature=1.1, stream=4),
    ]


def _together(jobs: list[Job], scheduler: BatchScheduler) -> None:
    with scheduler, use_scheduler(scheduler):
        threads = [j.run_in_thread() for j in jobs]
        for t in threads:
            t.join(timeout=300)
    for j in jobs:
        if j.error is not None:
            raise j.error


def test_a_job_alone_equals_the_job_batched_with_others(model: tuple[Any, dict[int, Any]]) -> None:
    config, priors = model
    alone = [j.run() for j in _jobs(config, priors)]
    jobs = _jobs(config, priors)
    sched = BatchScheduler(budget_bytes=1 << 30, max_rows=16, mode="eager")
    _together(jobs, sched)
    for a, j in zip(alone, jobs, strict=True):
        assert j.codes is not None
        for lv in range(3):
            assert np.array_equal(a[lv], j.codes[lv]), lv
    # They really shared decode batches: more rows at work at once than any one job has, and
    # fewer decode steps than the jobs' tokens one after the other.
    assert sched.stats["max_rows_busy"] > 3
    total_steps_alone = sum(sum(j.plan.tokens_left(empty_codes(j.plan.n_samples)).values()) for j in jobs)
    assert sched.stats["steps"] < total_steps_alone


def test_the_batched_path_is_the_slow_exact_path(model: tuple[Any, dict[int, Any]]) -> None:
    """Batched (per-row positions, shared cache, rows joining mid-window) against a full recompute
    of every token from scratch with the same noise."""
    config, priors = model
    jobs = _jobs(config, priors)[:2]
    _together(jobs, BatchScheduler(budget_bytes=1 << 30, max_rows=8, mode="eager"))
    for j in jobs:
        slow = run_plan(
            j.plan, lambda lv: ExactPrior(priors[lv]), j.labels, empty_codes(j.plan.n_samples), device=CPU
        )
        assert j.codes is not None
        assert all(np.array_equal(a, b) for a, b in zip(slow, j.codes, strict=True))


def test_memory_budget_bounds_the_rows_in_flight(model: tuple[Any, dict[int, Any]]) -> None:
    config, priors = model
    per_row = row_bytes(priors[2], torch.float32)
    budget = 4 * per_row + per_row // 2  # room for 4 rows, not 5
    assert rows_for_budget(priors[2], torch.float32, budget) == 4
    jobs = [Job(config, priors, seconds=0.05, rows=2, seed=s, levels=(2,)) for s in (5, 6, 7)]
    alone = [j.run() for j in jobs]
    sched = BatchScheduler(budget_bytes=budget, max_rows=64, mode="eager")
    _together(jobs, sched)
    assert sched.stats["max_rows_busy"] == 4  # two jobs at a time; the third waited for rows
    assert sched.used_bytes <= budget
    for a, j in zip(alone, jobs, strict=True):
        assert j.codes is not None and np.array_equal(a[2], j.codes[2])


def test_a_window_larger_than_the_budget_is_refused_in_words(model: tuple[Any, dict[int, Any]]) -> None:
    config, priors = model
    job = Job(config, priors, seconds=0.05, rows=3, seed=1, levels=(2,))
    budget = 2 * row_bytes(priors[2], torch.float32)
    with pytest.raises(MemoryError, match=r"3 rows needs .* GiB of decode memory; the batch budget is"):
        _together([job], BatchScheduler(budget_bytes=budget, mode="eager"))


def test_a_failing_job_does_not_stop_the_others(model: tuple[Any, dict[int, Any]]) -> None:
    config, priors = model
    good, bad = Job(config, priors, seconds=0.09, rows=2, seed=1, levels=(2,)), None
    want = good.run()

    class Boom(RuntimeError):
        pass

    sched = BatchScheduler(budget_bytes=1 << 30, max_rows=8, mode="eager")
    with sched, use_scheduler(sched):
        t = good.run_in_thread()
        # a window whose progress callback raises (e.g. a lost lease): only that task fails
        prior = priors[2]
        y = TinyLabels(config, 44100, 1)(2, good.plan.windows(2)[0])
        bad = WindowTask(
            cond=prior.get_cond(y, None),
            context=torch.zeros(1, 0, dtype=torch.long),
            n_new=20,
            row_bin=NoiseKey(9).row_bin_hash(2, [0], prior.n_bins, CPU),
            abs_start=0,
            temperature=1.0,
            on_token=lambda k: (_ for _ in ()).throw(Boom("stop")),
            tokens_every=4,
        )
        with pytest.raises(Boom):
            sched.run(prior, bad, torch.float32)
        t.join(timeout=300)
    assert good.codes is not None and np.array_equal(good.codes[2], want[2])


def test_decoder_rows_join_and_leave_mid_window(model: tuple[Any, dict[int, Any]]) -> None:
    """Two tasks in one decoder, the second admitted while the first is 5 tokens in; each gets
    what it gets alone."""
    config, priors = model
    prior = priors[1]
    lab = TinyLabels(config, 44100, 2)
    w = Job(config, priors, seconds=0.2, rows=2, seed=1).plan.windows(1)[1]
    g = torch.Generator().manual_seed(0)
    upper = torch.randint(0, prior.config.l_bins, (2, prior.n_ctx // 2), generator=g)

    def task(seed: int, have: int, n_new: int) -> WindowTask:
        ctx = torch.randint(0, prior.config.l_bins, (2, have), generator=torch.Generator().manual_seed(seed))
        return WindowTask(
            cond=prior.get_cond(lab(1, w), upper),
            context=ctx,
            n_new=n_new,
            row_bin=NoiseKey(seed).row_bin_hash(1, [0, 1], prior.n_bins, CPU),
            abs_start=w.start,
            temperature=0.95,
        )

    def alone(seed: int, have: int, n_new: int) -> torch.Tensor:
        loop, t = DecodeLoop(), task(seed, have, n_new)
        loop.submit(RowDecoder(prior, 2, CPU, torch.float32, mode="eager"), t)
        return loop.run_until_done(t)

    with torch.inference_mode():
        want_a, want_b = alone(1, 10, 30), alone(2, 33, 12)
        dec = RowDecoder(prior, 5, CPU, torch.float32, mode="eager")
        loop = DecodeLoop()
        a, b = task(1, 10, 30), task(2, 33, 12)
        loop.submit(dec, a)
        for _ in range(5):
            loop.tick()
        loop.submit(dec, b)
        while not (a.done.is_set() and b.done.is_set()):
            loop.tick()
        assert torch.equal(a.tokens(), want_a) and torch.equal(b.tokens(), want_b)
        assert dec.free_rows() == 5


def test_a_window_whose_tokens_cannot_be_copied_out_gives_its_rows_back(
    model: tuple[Any, dict[int, Any]],
) -> None:
    """A failure taking a finished window's tokens out of the decoder (e.g. CUDA out of memory on
    the copy) fails that window with the error, and its rows go back: a shared decoder that lost
    them would keep later windows waiting for rows for ever."""
    config, priors = model
    prior = priors[2]
    y = TinyLabels(config, 44100, 2)(2, Job(config, priors, seconds=0.05, rows=2, seed=1).plan.windows(2)[0])

    class CopyFails(RowDecoder):
        def finish(self, task: WindowTask) -> torch.Tensor:
            raise MemoryError("CUDA out of memory (the copy of the window's tokens)")

    with torch.inference_mode():
        dec = CopyFails(prior, 2, CPU, torch.float32, mode="eager")
        task = WindowTask(
            cond=prior.get_cond(y, None),
            context=torch.zeros(2, 0, dtype=torch.long),
            n_new=6,
            row_bin=NoiseKey(9).row_bin_hash(2, [0, 1], prior.n_bins, CPU),
            abs_start=0,
            temperature=1.0,
        )
        loop = DecodeLoop()
        loop.submit(dec, task)
        with pytest.raises(MemoryError, match="the copy of the window's tokens"):
            loop.run_until_done(task)
    assert dec.free_rows() == 2 and not loop.busy()


@pytest.mark.parametrize("flags", ["default", "splitk"])
def test_compiled_step_equals_the_eager_step(
    model: tuple[Any, dict[int, Any]], monkeypatch: pytest.MonkeyPatch, flags: str
) -> None:
    """The compile mode's step (every block through torch.compile, the pick too) on CPU with the
    aot_eager backend: the same tracing and functionalization of the in-place KV-cache writes as
    Inductor on the GPU, without code generation. Same tokens, same logits (split-K products:
    the same up to float32 rounding)."""
    import engine.model.attention as attention
    import engine.sampling.graphs as graphs

    monkeypatch.setattr(graphs, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(graphs, "_COMPILED", {})
    monkeypatch.setenv("JUKEBOT_INDUCTOR", flags)
    config, priors = model
    prior = priors[2]
    lab = TinyLabels(config, 44100, 3)
    w = Job(config, priors, seconds=0.2, rows=3, seed=1).plan.windows(2)[0]
    ctx = torch.randint(0, prior.config.l_bins, (3, 7), generator=torch.Generator().manual_seed(4))
    out = {}
    with torch.inference_mode():
        for mode in ("eager", "compile"):
            dec = RowDecoder(prior, 3, CPU, torch.float32, mode=mode)  # type: ignore[arg-type]
            assert dec.mode == mode
            t = WindowTask(
                cond=prior.get_cond(lab(2, w), None),
                context=ctx,
                n_new=40,
                row_bin=NoiseKey(2).row_bin_hash(2, range(3), prior.n_bins, CPU),
                abs_start=0,
                temperature=1.0,
            )
            loop = DecodeLoop()
            loop.submit(dec, t)
            out[mode] = (loop.run_until_done(t), dec.state.logits.clone())
    assert torch.equal(out["eager"][0], out["compile"][0])
    torch.testing.assert_close(out["eager"][1], out["compile"][1], atol=1e-4, rtol=1e-4)
    assert attention.SPLIT_K == 1  # only while the compiled step runs


def test_default_mode_and_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.sampling.graphs import StepRunner, default_mode

    monkeypatch.delenv("JUKEBOT_DECODE", raising=False)
    assert default_mode("cpu") == "eager" and default_mode("cuda:0") == "fused"
    monkeypatch.setenv("JUKEBOT_DECODE", "graph")
    assert default_mode("cuda") == "graph"
    monkeypatch.setenv("JUKEBOT_DECODE", "fast")
    with pytest.raises(ValueError, match="use one of eager, graph, compile"):
        default_mode("cuda")
    calls: list[int] = []
    runner = StepRunner(lambda: calls.append(1), CPU, "graph", reset=lambda: None)
    assert runner.mode == "eager"  # no CUDA graphs off the GPU: the step as written
    runner()
    assert calls == [1]
