"""A model's recommended sampling temperatures (its folder's sampling.json) are the defaults of
`jukebot generate` and of the worker, explicit choices win, a broken file is said in words; one torch
thread on a CPU by default; lyrics a model cannot sing are reported; `jukebot train`'s options reach
the training run.

What sampling really gets is recorded at `engine.sampling.batching.WindowDriver.submit`, where every
level's windows go to be decoded, not read back from a settings object."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

import engine.sampling.batching
from db import queue, repo
from db.database import Database
from db.settings import Settings, get_settings
from db.storage import Storage
from engine.cli import register
from engine.model.config import DEMO_DIR, ConfigError, SamplingDefaults, sampling_defaults
from engine.sampling.pipeline import Engine
from engine.serving.worker import Worker, WorkerOptions
from tests.pipeline_fixtures import write_tiny_model

runner = CliRunner()


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("JUKEBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("JUKEBOT_STORAGE_URL", str(tmp_path / "storage"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def temps_used(monkeypatch: pytest.MonkeyPatch) -> dict[int, set[float]]:
    """level -> the temperatures its windows were sampled at."""
    seen: dict[int, set[float]] = {}
    real = engine.sampling.batching.WindowDriver.submit  # every window's every slice passes here

    def recording(self: Any, prior: Any, task: Any) -> None:
        seen.setdefault(int(prior.level), set()).add(task.temperature)
        real(self, prior, task)

    monkeypatch.setattr(engine.sampling.batching.WindowDriver, "submit", recording)
    return seen


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")  # sings lyrics (prefix)


def _generate(app: typer.Typer, model: str, out: Path, *extra: str) -> tuple[int, str, dict[str, Any]]:
    args = ["generate", "--model", model, "--artist", "bach", "--genre", "chorale", "--seconds", "0.1"]
    res = runner.invoke(
        app, [*args, "--drafts", "1", "--device", "cpu", "--out", str(out), "--quiet", *extra]
    )
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return res.exit_code, res.output, summary


# ---------------------------------------------------------------------------------------------
# sampling.json


def test_the_demo_recommends_its_temperatures() -> None:
    rec = sampling_defaults(DEMO_DIR)
    assert rec.temperatures == (0.5, 0.7, 0.9)
    assert SamplingDefaults().temperatures == (0.99, 0.99, 0.98)  # released models: the original's
    assert rec.resolve() == (0.5, 0.7, 0.9)
    assert rec.resolve(top=1.1) == (0.5, 0.7, 1.1)
    assert rec.resolve(upsample=0.8) == (0.8, 0.8, 0.9)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not valid JSON"),
        ('{"temperatures": [0.5, 0.7]}', "3 numbers above 0"),
        ('{"temperatures": [0.5, 0, 0.9]}', "3 numbers above 0"),
        ('{"temperatures": [0.5, "hot", 0.9]}', "must be a list of 3 numbers"),
        ('{"temperature": 0.9}', 'needs {"temperatures"'),
        ('{"temperatures": [0.5, 0.7, 0.9], "top_k": 5}', "unknown fields ['top_k']"),
    ],
)
def test_a_broken_sampling_json_is_said_in_words(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "sampling.json").write_text(text)
    with pytest.raises(ConfigError) as e:
        sampling_defaults(tmp_path)
    assert says in str(e.value) and "sampling.json" in str(e.value)


def test_generate_refuses_a_model_with_a_broken_sampling_json(
    app: typer.Typer, tiny_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / "sampling.json").write_text('{"temperatures": [0.5, 0.7, -1]}')
    code, output, _ = _generate(app, str(model), tmp_path / "out")
    assert code == 2
    assert "cannot load model" in output and "sampling.json" in output and "above 0" in output


# ---------------------------------------------------------------------------------------------
# jukebot generate


def test_generate_with_the_demo_samples_at_its_recommended_temperatures_on_one_thread(
    app: typer.Typer, tmp_path: Path, temps_used: dict[int, set[float]]
) -> None:
    torch.set_num_threads(2)
    code, output, summary = _generate(app, "demo", tmp_path / "a", "--lyrics", "Wachet auf")
    assert code == 0, output
    assert temps_used == {2: {0.9}, 1: {0.7}, 0: {0.5}}
    assert summary["temperatures"] == [0.5, 0.7, 0.9]
    assert summary["threads"] == 1 and torch.get_num_threads() == 1
    # The demo sings no words: said on stderr and in the summary, not silently dropped.
    assert "does not sing words, so the lyrics are not used" in output
    assert any("does not sing words" in n for n in summary["notes"])


def test_explicit_temperatures_win(
    app: typer.Typer, tmp_path: Path, temps_used: dict[int, set[float]]
) -> None:
    code, output, _ = _generate(
        app, "demo", tmp_path / "b", "--temperature", "1.1", "--upsample-temperature", "0.8"
    )
    assert code == 0, output
    assert temps_used == {2: {1.1}, 1: {0.8}, 0: {0.8}}
    assert "does not sing" not in output  # no lyrics, no note
    code, output, _ = _generate(app, "demo", tmp_path / "c", "--temperature", "0")
    assert code == 2 and "--temperature must be above 0" in output


def test_explicit_threads_win(app: typer.Typer, tiny_dir: Path, tmp_path: Path) -> None:
    # Checked on a request that stops at its artist, before sampling: two threads on a shared
    # 2-core machine are exactly what makes sampling slow (a 3 s test took 48 s).
    code, output, _ = _generate(app, str(tiny_dir), tmp_path / "e", "--artist", "nobody", "--threads", "2")
    assert code == 2 and "nobody" in output
    assert torch.get_num_threads() == 2


def test_a_model_without_sampling_json_keeps_the_original_temperatures(
    app: typer.Typer, tiny_dir: Path, tmp_path: Path, temps_used: dict[int, set[float]]
) -> None:
    code, output, summary = _generate(app, str(tiny_dir), tmp_path / "d", "--lyrics", "la la")
    assert code == 0, output
    assert temps_used == {2: {0.98}, 1: {0.99}, 0: {0.99}}
    assert "does not sing" not in output and not any("does not sing" in n for n in summary["notes"])


# ---------------------------------------------------------------------------------------------
# the worker


def test_the_worker_uses_the_model_recommendation_unless_the_song_chose(
    db: Database,
    storage: Storage,
    settings: Settings,
    tiny_dir: Path,
    tmp_path: Path,
    temps_used: dict[int, set[float]],
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / "sampling.json").write_text('{"temperatures": [0.6, 0.65, 0.7], "why": "test"}')
    assert Engine.load(model).sampling.temperatures == (0.6, 0.65, 0.7)
    settings = settings.model_copy(update=dict(heartbeat_seconds=0.1, poll_seconds=0.1, device="cpu"))
    user = repo.get_or_create_user(db, 99, "tester")
    assert user.id is not None

    def run(song_id: int, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        job_id = queue.enqueue(db, kind, {"song_id": song_id, **payload}, song_id=song_id)
        opts = WorkerOptions(device="cpu", model=str(model), once=True, tokens_every=8)  # threads: default
        assert Worker(settings, opts, db=db, storage=storage).run() == 0
        job = queue.get_job(db, job_id)
        assert job is not None and job.status == "succeeded", job and job.last_error
        return job.result

    common: dict[str, Any] = dict(
        user_id=user.id, artist="bach", genre="chorale", seconds=0.05, seed=1, model=str(model), n_drafts=1
    )
    torch.set_num_threads(2)
    song = repo.create_song(db, **common)  # as the bot writes it: no temperature chosen
    assert song.id is not None and song.temperature == 0.0
    drafts = run(song.id, "draft", {})
    assert temps_used == {2: {0.7}} and torch.get_num_threads() == 1  # one thread on a CPU
    temps_used.clear()
    run(song.id, "upsample", {"draft_id": drafts["draft_ids"][0]})
    assert temps_used == {1: {0.65}, 0: {0.6}}

    temps_used.clear()
    chosen = repo.create_song(db, **common, temperature=1.2)
    assert chosen.id is not None
    run(chosen.id, "draft", {})
    assert temps_used == {2: {1.2}}


# ---------------------------------------------------------------------------------------------
# jukebot train


def test_train_options_reach_the_training_run(app: typer.Typer, tmp_path: Path) -> None:
    from engine.model.config import tiny_config
    from tests.test_train import LABELS, make_folder

    data = make_folder(tmp_path / "data", n=3, seconds=1.0)
    cfg = tmp_path / "model.json"
    config = tiny_config("tiny", lyrics="none", custom_labels=LABELS)
    config.save(cfg)
    out = tmp_path / "out"
    base = ["train", "vqvae", "--config", str(cfg), "--data", str(data), "--out", str(out)]
    base += ["--steps", "6", "--batch-size", "1", "--quiet", "--workers", "1"]
    res = runner.invoke(
        app, [*base, "--sample-seconds", "0.1", "--stop-after", "2", "--log-every", "1", "--val-every", "0"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{") :])
    assert (summary["step"], summary["stopped"]) == (2, "stopped")  # --stop-after
    log = [json.loads(line) for line in (out / "train" / "vqvae" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # --log-every 1
    state = torch.load(out / "train" / "vqvae" / "state.pt", weights_only=False)
    top = config.vqvae.hop_lengths[-1]
    assert state["args"]["sample_length"] == int(0.1 * 22050) // top * top  # --sample-seconds

    res = runner.invoke(app, [*base, "--timing-jitter", "0.5"])
    assert res.exit_code == 2 and "--timing-jitter is for the top prior" in res.output
    res = runner.invoke(app, [*base, "--label-dropout", "1.5"])
    assert res.exit_code == 2 and "--label-dropout is a share of the training windows" in res.output
