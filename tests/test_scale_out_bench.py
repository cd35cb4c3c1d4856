"""bench/scale_out.py on the CPU: two real worker processes on one SQLite queue with a tiny
random-weight model, three songs and a worker SIGKILLed mid-job; and its checks catching a song
made twice and a killed job that started over."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import update
from sqlmodel import col

from bench.scale_out import Kill, Saved, WorkerProc, kill_report, request_songs, verify
from db import queue, repo
from db.migrate import open_database
from db.models import Job
from db.storage import Storage

ROOT = Path(__file__).resolve().parents[1]


def test_two_workers_three_songs_and_a_kill(tmp_path: Path) -> None:
    out = tmp_path / "scale_out.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "scale_out.py"),
        "--random-weights",
        "--small",
        "--model=1b_lyrics",
        "--gpus=cpu",
        "--workers=2",
        "--songs=3",
        "--seconds=0.1",
        "--kill-after-windows=3",
        "--kill-seconds=0.2",  # 41 windows in its upsample job: the kill lands mid-job
        "--lease-seconds=3",
        "--heartbeat-seconds=0.5",
        "--worker-poll=0.1",
        "--poll=0.05",
        "--threads=1",
        f"--work-dir={tmp_path / 'work'}",
        f"--out={out}",
    ]
    t = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert time.monotonic() - t < 240
    data = json.loads(out.read_text())
    assert data["ok"] and data["problems"] == []
    (run,) = data["runs"]
    assert run["workers"] == 2 and run["devices"] == ["cpu", "cpu"]
    assert run["songs_per_hour"] > 0 and run["wall_seconds"] > 0
    once = run["exactly_once"]
    assert once["ok"], once["problems"]
    assert once["jobs"] == 8 and once["drafts"] == 12 and once["clips"] == 4  # 3 songs + the kill's
    assert sum(run["jobs_per_worker"].values()) == 6  # the timed songs' draft and upsample jobs

    kill = run["kill"]
    assert kill["ok"], kill["problems"]
    assert kill["job_kind"] == "upsample" and 3 <= kill["windows_saved_before_kill"] < kill["windows_in_job"]
    assert kill["resumed"]["key"] == kill["checkpoint_at_kill"]  # resumed from the pointer at the kill
    assert kill["resumed_at_window"] == kill["windows_saved_before_kill"] + 1
    assert kill["windows_lost"] <= 1
    assert kill["finished_by"] != kill["killed_worker"] and kill["reclaims"] == 1 and kill["final_token"] == 2
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    kinds = [x["kind"] for x in lines if x["kind"] in ("run", "kill", "scale_out")]
    assert kinds == ["run", "kill", "scale_out"]
    assert "windows lost 1: ok" in res.stdout


def _worker_with_log(tmp_path: Path, text: str) -> WorkerProc:
    log = tmp_path / "worker-w1.log"
    log.write_text(text)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return WorkerProc("w1", "cpu", proc, log, tmp_path / "ready.json", 0.0)


def test_checks_catch_a_song_made_twice_and_a_job_that_started_over(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'q.db'}")
    storage = Storage(str(tmp_path / "storage"))
    ctx = type("Ctx", (), {})()
    ctx.args = type("A", (), {"model": "1b_lyrics", "drafts": 3})()
    ctx.song = ("The Beatles", "pop rock", "")
    (song,) = request_songs(ctx, db, 1, 1.0, 0)  # type: ignore[arg-type]
    first = queue.enqueue(db, "draft", {"song_id": song}, song_id=song)  # a second draft job
    with db.write() as s:
        s.execute(update(Job).where(col(Job.song_id) == song).values(status="succeeded"))
    for i in (0, 1):
        repo.add_draft(db, song, i, f"songs/{song}/drafts/{i}.wav", f"songs/{song}/drafts/{i}.npy")
    worker = _worker_with_log(tmp_path, f"x INFO jukebot.worker: job {first} (draft) done: {{}}\n")
    found = verify(db, storage, [song], 3, True, [worker])
    assert not found["ok"]
    text = " | ".join(found["problems"])
    assert "2 draft job(s), 2 succeeded" in text and "draft indices [0, 1]" in text
    assert "0 upsample job(s)" in text and "0 clips" in text and "final.wav missing" in text
    assert f"job {first} (draft): finished 1 times" not in text and "finished 0 times" in text

    # A killed job whose next attempt did not use the checkpoint: everything before it is lost.
    with db.write() as s:
        s.execute(update(Job).where(col(Job.id) == first).values(reclaims=1, lease_token=2))
    saved = Saved("checkpoints/job-1/token-1/upsample-L1-w00002.npz", 1, 2, ((1, 4), (0, 10)))
    assert saved.count == 3 and saved.total == 14 and saved.index(0, 0) == 4
    kill = Kill(3, "draft", False, song_id=song, saved=saved)
    kill.record = {
        "job": first,
        "token_at_kill": 1,
        "checkpoint_at_kill": saved.key,
        "heartbeat_progress_at_kill": {"level": 1, "window": 3},
        "t_kill": time.monotonic(),
    }
    log = f"x INFO jukebot.resume: job {first}: checkpoint {saved.key} not used (the request changed)\n"
    report = kill_report(kill, db, storage, [_worker_with_log(tmp_path, log)], time.monotonic())
    assert not report["ok"] and report["windows_lost"] == 4 and report["resumed_at_window"] == 1
    assert any("started over" in p and "the request changed" in p for p in report["problems"])

    # The same kill, resumed from the pointer: only the window in flight is lost.
    log = f"x INFO jukebot.resume: job {first}: resuming at level 1 window 2 (300/900 tokens) from {saved.key}\n"
    report = kill_report(kill, db, storage, [_worker_with_log(tmp_path, log)], time.monotonic())
    assert report["ok"], report["problems"]
    assert report["windows_lost"] == 1 and report["resumed_at_window"] == 4
    db.dispose()
