"""Scale-out: several `jukebot worker` processes on one queue; songs per hour, exactly once, a kill.

    python bench/scale_out.py --model 1b_lyrics --random-weights --gpus 0,1 --workers 1,2 \\
        --songs 4 --seconds 1 --kill-after-windows 1 --out scale_out.json

For each worker count W in `--workers` (one run each, on a fresh SQLite queue and storage folder):

1. W real worker processes start: the command line's `worker` command (bot/cli.py, as
   `jukebot worker --device cuda:I --model M`), worker i on `--gpus[i]`. Each makes its model and
   warms it up with one short song outside the queue (on a GPU that compiles and captures the
   decode step of every level), then writes a ready file. The time to ready is reported apart.
2. N songs are requested the way the bot requests them (bot.features.requests.logic.request_song, one member each,
   then start_pending: one `draft` job per song). As soon as a song's drafts exist its vote is
   closed the way the bot closes it (db.lifecycle.open_vote and close_vote: no votes, so draft 1
   wins and the `upsample` job of that draft is queued). The clock runs from the requests to the
   last song's final clip: songs per hour = N / that time.
3. Exactly once: per song one succeeded job of each kind and no other job, n_drafts drafts with
   indices 0..n-1, one clip with its final.wav, final.mp3 and codes.npz in storage, and in the
   workers' logs one "done" line per job (fenced writes refuse a second finisher).

Kill test (`--kill-after-windows K`, in the run with `--kill-in` workers, default the most): after
the timed songs, one more song; once its upsample job has saved K window checkpoints (the job
row's fenced checkpoint pointer, engine.sampling.resume), the worker running it is SIGKILLed. Another
worker (or the same one restarted: `--restart-killed`, always with one worker) claims the job
when its lease (`--lease-seconds`) expires and must resume from the last saved window. Reported:
windows saved before the kill, the window the resumed run started at (from the resumed worker's
log line "resuming at level L window W ... from KEY", which must name the pointer at the kill),
and windows lost: the window in flight plus any finished window that had to be sampled again
(must be at most 1).

Models: `--model demo` (or any model the worker can load) runs the product's own loading. With
`--random-weights` each worker instead gets the released-size model with random weights
(bench/common.random_engine; `--small`: the CPU-test sizes) through this script's worker entry
(`worker-child`), which replaces the worker's model loading in that process and then runs the
command line's worker unchanged. Nothing in the product maps a model name to random weights.
With one GPU for several workers (`--gpus 0,0`, a stand-in where a host with one GPU per worker
is not available) the entry also lifts the worker's one-worker-per-GPU lock in those processes.

Prints JSON lines (worker_ready, progress, run, kill, scale_out) and a table; writes all results
to `--out` after every run, so a run stopped by a time limit still leaves what it measured.
Exit status: 0 when every check passed, 1 when one failed, 2 when a package or ffmpeg is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from db.database import Database
    from db.storage import Storage

# Modules the driver (queue, storage, the bot's song and vote code) and the workers import, with
# the distribution that provides each: checked before anything else so a bare machine gets one
# clear message instead of a traceback from a worker process.
DRIVER_MODULES = {
    "numpy": "numpy",
    "sqlalchemy": "SQLAlchemy",
    "sqlmodel": "sqlmodel",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic-core",
    "pydantic_settings": "pydantic-settings",
    "annotated_types": "annotated-types",
    "typing_inspection": "typing-inspection",
    "typing_extensions": "typing-extensions",
    "dotenv": "python-dotenv",
    "alembic": "alembic",
    "mako": "mako",
    "markupsafe": "markupsafe",
    "fsspec": "fsspec",
}
WORKER_MODULES = {
    **DRIVER_MODULES,
    "torch": "torch",
    "typer": "typer",
    "shellingham": "shellingham",
    "annotated_doc": "annotated-doc",
    "rich": "rich",
    "unidecode": "unidecode",
    "rapidfuzz": "rapidfuzz",
}
SONG = ("The Beatles", "pop rock", "Here comes the sun, little darling\nit's all right")
DEMO_SONG = ("bach", "chorale", "")
RESUMED = re.compile(r"job (\d+): resuming at level (\d+) window (\d+) \((\d+)/(\d+) tokens\) from (\S+)")
NOT_USED = re.compile(r"job (\d+): checkpoint (\S+) not used \((.*)\)|job (\d+): (.*); starting over")
DONE = re.compile(r"job (\d+) \((\w+)\) done")
LEASE_LOST = re.compile(r"Lease lost on job (\d+)")


class Missing(SystemExit):
    pass


def emit(**kw: Any) -> None:
    print(json.dumps(kw, default=str), flush=True)


def check_modules(modules: dict[str, str]) -> None:
    """Import each module; exit 2 naming the distributions to install when any fails."""
    bad: dict[str, str] = {}
    for mod, dist in modules.items():
        try:
            importlib.import_module(mod)
        except Exception as e:  # missing, or present but broken (a version that does not fit)
            bad[dist] = f"{type(e).__name__}: {e}"
    if bad:
        lines = "\n".join(f"  {dist}: {why}" for dist, why in bad.items())
        print(
            "bench/scale_out.py cannot run here; these Python packages are missing or broken:\n"
            f"{lines}\nInstall them (on the GPU machine: add their wheels to .whl, README of the "
            "device tool) and run again.",
            file=sys.stderr,
            flush=True,
        )
        raise Missing(2)


def find_ffmpeg(bin_dir: Path) -> str | None:
    """A folder to put first on the workers' PATH so `ffmpeg` (the final MP3) is found, or None
    when it already is. Without a system ffmpeg, the static binary inside the `imageio-ffmpeg`
    wheel is linked there. Exits 2 when there is neither."""
    if shutil.which("ffmpeg"):
        return None
    spec = importlib.util.find_spec("imageio_ffmpeg")  # located, not imported: no setuptools needed
    if spec is not None and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            found = sorted(Path(base, "binaries").glob("ffmpeg-*"))
            if found:
                exe = found[-1]
                if not os.access(exe, os.X_OK):
                    exe.chmod(exe.stat().st_mode | 0o111)
                bin_dir.mkdir(parents=True, exist_ok=True)
                link = bin_dir / "ffmpeg"
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(exe)
                return str(bin_dir)
    print(
        "bench/scale_out.py: the upsample stage writes the final MP3 with ffmpeg, and there is no "
        "`ffmpeg` on PATH and no imageio-ffmpeg package (its wheel carries a static ffmpeg: "
        "pip download imageio-ffmpeg==0.5.1 for the GPU machine). Or run `--stages draft`.",
        file=sys.stderr,
        flush=True,
    )
    raise Missing(2)


# ---------------------------------------------------------------------------------------------
# The worker entry: `python bench/scale_out.py worker-child [options] -- worker --device ...`


def _no_device_lock(device: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def child_main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit("worker-child: put the worker's command line after `--`")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(prog="scale_out.py worker-child")
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--share-gpu", action="store_true")
    ap.add_argument("--warmup-seconds", type=float, default=0.05)
    ap.add_argument("--drafts", type=int, default=3)
    ap.add_argument("--stages", default="draft,upsample")
    ap.add_argument("--artist", required=True)
    ap.add_argument("--genre", required=True)
    ap.add_argument("--lyrics", default="")
    ns = ap.parse_args(argv[:cut])
    cli_args = argv[cut + 1 :]
    check_modules(WORKER_MODULES)

    import engine.serving.worker as ew

    if ns.share_gpu:
        # Several workers on one GPU (the stand-in for one GPU per worker): the product refuses
        # that with a lock file per GPU; only these benchmark processes skip it.
        ew.device_lock = _no_device_lock  # type: ignore[assignment]
    original = ew.Worker.engine_for

    def engine_for(self: Any, name: str) -> Any:
        if self._engine is not None and (ns.random_weights or name == self._engine_name):
            return self._engine
        first = self._engine is None
        t = time.perf_counter()
        if ns.random_weights:
            from bench.common import random_engine

            self._engine = random_engine(
                self.model_name, self.device, self.dtype, small=ns.small, seed=ns.seed
            )
            self._engine_name = name
            engine = self._engine
        else:
            engine = original(self, name)
        built = time.perf_counter() - t
        if first:
            info = warm_up(engine, ns)
            info.update(
                pid=os.getpid(),
                owner=self.owner,
                device=self.device,
                dtype=str(self.dtype).replace("torch.", ""),
                model=self.model_name,
                random_weights=ns.random_weights,
                build_seconds=round(built, 2),
            )
            tmp = Path(ns.ready_file + ".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(ns.ready_file)
        return engine

    ew.Worker.engine_for = engine_for  # type: ignore[method-assign]
    from bot.cli import app

    app(args=cli_args, prog_name="jukebot")
    return 0


def warm_up(engine: Any, ns: argparse.Namespace) -> dict[str, Any]:
    """One short song outside the queue (its decoders stay cached: on a GPU the compiled and
    captured step of each level), then the same again timed: ms per decode step of the warm model
    (a sanity figure: a step that fell back to eager shows here at once)."""
    import torch

    from engine.sampling.pipeline import SongRequest, make_drafts, upsample
    from engine.sampling.sample import SamplingSettings

    device = engine.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    request = SongRequest(
        artist=ns.artist,
        genre=ns.genre,
        lyrics=ns.lyrics,
        seconds=ns.warmup_seconds,
        seed=987654,
        settings=SamplingSettings(),
    )
    upsampling = "upsample" in ns.stages
    times: list[dict[str, float]] = []
    tokens: dict[str, int] = {}
    t_all = time.perf_counter()
    for _ in range(2):
        rec: dict[str, float] = {}
        sync()
        t = time.perf_counter()
        drafts = make_drafts(engine, request, ns.drafts, decode=True)
        sync()
        rec["drafts"] = time.perf_counter() - t
        tokens["drafts"] = int(drafts.codes.shape[1])
        if upsampling:
            t = time.perf_counter()
            final = upsample(engine, request, drafts.codes[0], draft_index=0, decode=False)
            engine.decode(final.codes[0], 0, chunk_tokens=1 << 20)
            sync()
            rec["upsample"] = time.perf_counter() - t
            tokens["upsample"] = int(final.codes[0].shape[1] + final.codes[1].shape[1])
        times.append(rec)
    out: dict[str, Any] = {
        "warmup_seconds": round(time.perf_counter() - t_all, 2),
        "warm_ms_per_step": {k: round(1000 * v / max(tokens[k], 1), 2) for k, v in times[1].items()},
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    if device.type == "cuda":
        out["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


# ---------------------------------------------------------------------------------------------
# The driver


@dataclass
class WorkerProc:
    name: str
    device: str
    proc: subprocess.Popen[bytes]
    log: Path
    ready_file: Path
    started: float
    ready: dict[str, Any] | None = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def owner(self) -> str:
        return f"{socket.gethostname()}:{self.pid}"

    def log_tail(self, lines: int = 25) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


@dataclass
class Ctx:
    args: argparse.Namespace
    root: Path
    path_prefix: str | None
    deadline: float | None
    song: tuple[str, str, str]
    results: dict[str, Any] = field(default_factory=dict)


def _devices(spec: str, n: int) -> list[str]:
    if spec.strip().lower() == "cpu":
        return ["cpu"] * n
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    if len(ids) < n:
        raise SystemExit(f"--gpus {spec}: {n} workers need {n} GPU ids (repeat one to share it: 0,0)")
    return [f"cuda:{i}" for i in ids[:n]]


def spawn_worker(ctx: Ctx, run_dir: Path, name: str, device: str, share_gpu: bool) -> WorkerProc:
    a = ctx.args
    ready = run_dir / f"ready-{name}.json"
    ready.unlink(missing_ok=True)
    log = run_dir / f"worker-{name}.log"
    env = dict(os.environ)
    env.update(
        JUKEBOT_DATABASE_URL=f"sqlite:///{run_dir / 'queue.db'}",
        JUKEBOT_STORAGE_URL=str(run_dir / "storage"),
        JUKEBOT_MODEL=a.model,
        JUKEBOT_LEASE_SECONDS=str(a.lease_seconds),
        JUKEBOT_HEARTBEAT_SECONDS=str(a.heartbeat_seconds),
        JUKEBOT_POLL_SECONDS=str(a.worker_poll),
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
        PYTHONUNBUFFERED="1",
        TQDM_DISABLE="1",
    )
    if ctx.path_prefix:
        env["PATH"] = ctx.path_prefix + os.pathsep + env.get("PATH", "")
    child = [
        "--ready-file",
        str(ready),
        "--seed",
        str(a.seed),
        "--warmup-seconds",
        str(a.warmup_seconds),
        "--drafts",
        str(a.drafts),
        "--stages",
        a.stages,
        "--artist",
        ctx.song[0],
        "--genre",
        ctx.song[1],
        "--lyrics",
        ctx.song[2],
    ]
    if a.random_weights:
        child.append("--random-weights")
    if a.small:
        child.append("--small")
    if share_gpu:
        child.append("--share-gpu")
    cli = ["worker", "--device", device, "--model", a.model, "--checkpoint-seconds", "0"]
    if a.threads:
        cli += ["--threads", str(a.threads)]
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker-child", *child, "--", *cli]
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=run_dir, env=env)
    return WorkerProc(name, device, proc, log, ready, time.monotonic())


def stop_workers(workers: list[WorkerProc], grace: float = 15.0) -> None:
    """SIGTERM (an idle worker exits at once, a busy one after its window), then SIGKILL."""
    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()


class PhaseError(RuntimeError):
    pass


def _check_time(ctx: Ctx, what: str) -> None:
    if ctx.deadline is not None and time.monotonic() > ctx.deadline:
        raise PhaseError(f"--time-budget ran out while {what}")


def _check_alive(workers: list[WorkerProc]) -> None:
    for w in workers:
        if not w.killed and w.proc.poll() is not None:
            tail = "\n".join(w.log_tail(30))
            raise PhaseError(f"worker {w.name} exited with status {w.proc.returncode}:\n{tail}")


def wait_ready(ctx: Ctx, workers: list[WorkerProc]) -> None:
    while True:
        _check_alive(workers)
        for w in workers:
            if w.ready is None and w.ready_file.exists():
                w.ready = json.loads(w.ready_file.read_text())
                w.ready["ready_seconds"] = round(time.monotonic() - w.started, 2)
                emit(kind="worker_ready", worker=w.name, **w.ready)
        if all(w.ready is not None for w in workers):
            return
        _check_time(ctx, "workers were starting")
        time.sleep(0.1)


def request_songs(ctx: Ctx, db: Database, n: int, seconds: float, first_index: int) -> list[int]:
    """Songs as the bot writes them: request_song (one member each: no quota in the way), then
    start_pending queues each one's first job."""
    from bot.features.requests.logic import Requester, request_song, start_pending
    from db.settings import Settings

    a = ctx.args
    settings = Settings(  # type: ignore[call-arg]
        database_url=str(db.url), model=a.model, _env_file=None
    )
    ids = []
    for i in range(first_index, first_index + n):
        who = Requester(discord_id=700_000 + i, name=f"bench-{i}", guild_id=None, channel_id=None)
        song = request_song(
            db,
            settings,
            None,
            who,
            artist=ctx.song[0],
            genre=ctx.song[1],
            lyrics=ctx.song[2],
            seconds=seconds,
            n_drafts=a.drafts,
            seed=1000 + i,
        )
        assert song.id is not None
        ids.append(song.id)
    start_pending(db, lambda _guild: 1 << 30)
    return ids


def jobs_of(db: Database, song_ids: list[int]) -> list[Any]:
    from sqlmodel import col, select

    from db.models import Job

    with db.read() as s:
        return list(s.execute(select(Job).where(col(Job.song_id).in_(song_ids))).scalars())


@dataclass(frozen=True)
class Saved:
    """Where a job's latest checkpoint stands, read from the file the job row points at."""

    key: str
    level: int
    window: int
    windows_by_level: tuple[tuple[int, int], ...]  # (level, windows) in sampling order

    def index(self, level: int, window: int) -> int:
        """Index of window `window` of `level` among all the job's windows, in sampling order."""
        before = 0
        for lv, n in self.windows_by_level:
            if lv == level:
                return before + window
            before += n
        raise ValueError(f"level {level} is not part of the job")

    @property
    def count(self) -> int:  # windows saved
        return self.index(self.level, self.window) + 1

    @property
    def total(self) -> int:
        return sum(n for _, n in self.windows_by_level)


def saved_windows(storage: Storage, key: str | None) -> Saved | None:
    """The job's latest checkpoint; None while there is none or its file was just replaced by
    the next one (the worker deletes the previous file once the row points at the new one)."""
    from engine.sampling.resume import CheckpointError, loads

    if not key:
        return None
    try:
        ckpt = loads(storage.read_bytes(key), name=key)
    except (FileNotFoundError, CheckpointError):
        return None
    plan = ckpt.plan()
    return Saved(key, ckpt.level, ckpt.window, tuple((lv, len(plan.windows(lv))) for lv in plan.levels))


@dataclass
class Kill:
    windows: int
    kind: str
    restart: bool
    song_id: int | None = None
    record: dict[str, Any] | None = None
    saved: Saved | None = None  # the checkpoint the job row pointed at when its worker died


def drive(
    ctx: Ctx,
    db: Database,
    storage: Storage,
    song_ids: list[int],
    workers: list[WorkerProc],
    label: str,
    kill: Kill | None = None,
    spawn: Any = None,
) -> float:
    """Move the songs along as the bot does (close each vote once the drafts exist) until every
    song has its final clip; kill a worker on the way if asked. Returns the driver's wall time."""
    from db.lifecycle import close_vote, open_vote
    from db.models import JobKind, JobStatus, utcnow

    a = ctx.args
    upsampling = "upsample" in a.stages
    last_kind = JobKind.upsample.value if upsampling else JobKind.draft.value
    voted: set[int] = set()
    t0 = time.monotonic()
    last_report = t0
    warned: set[tuple[int, str]] = set()
    while True:
        _check_alive(workers)
        jobs = jobs_of(db, song_ids)
        for j in jobs:
            if j.status in (JobStatus.failed.value, JobStatus.cancelled.value):
                raise PhaseError(f"job {j.id} ({j.kind}) of song {j.song_id} {j.status}: {j.last_error}")
            if j.last_error and (j.id, j.last_error) not in warned:
                warned.add((j.id, j.last_error))
                emit(kind="job_error", run=label, job=j.id, job_kind=j.kind, error=j.last_error)
                if not a.keep_going:  # a benchmark's job has no reason to fail: stop, save the time
                    raise PhaseError(f"job {j.id} ({j.kind}) of song {j.song_id} failed: {j.last_error}")
            if (
                upsampling
                and j.kind == JobKind.draft.value
                and j.status == JobStatus.succeeded.value
                and j.song_id not in voted
            ):
                open_vote(db, j.song_id, utcnow())
                close_vote(db, j.song_id, force=True)
                voted.add(j.song_id)
        if kill is not None and kill.record is None and kill.song_id is not None:
            _maybe_kill(ctx, db, storage, jobs, workers, kill, spawn)
        done = {j.song_id for j in jobs if j.kind == last_kind and j.status == JobStatus.succeeded.value}
        now = time.monotonic()
        if len(done) == len(song_ids):
            return now - t0
        if now - last_report >= a.report_every:
            last_report = now
            running = [j for j in jobs if j.status == JobStatus.running.value]
            emit(
                kind="progress",
                run=label,
                songs_done=len(done),
                songs=len(song_ids),
                elapsed=round(now - t0, 1),
                running=[f"{j.kind}:{j.id}:{(j.progress or {}).get('percent')}%" for j in running],
            )
        _check_time(ctx, f"the songs of {label} were made")
        time.sleep(a.poll)


def _maybe_kill(
    ctx: Ctx,
    db: Database,
    storage: Storage,
    jobs: list[Any],
    workers: list[WorkerProc],
    kill: Kill,
    spawn: Any,
) -> None:
    from db import queue
    from db.models import JobStatus

    for j in jobs:
        if j.song_id != kill.song_id or j.kind != kill.kind or j.status != JobStatus.running.value:
            continue
        seen = saved_windows(storage, j.checkpoint_key)
        if seen is None or seen.count < kill.windows:
            return
        victim = next((w for w in workers if not w.killed and w.owner() == j.lease_owner), None)
        if victim is None:
            return
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait()
        victim.killed = True
        t_kill = time.monotonic()
        row = queue.get_job(db, j.id)  # nothing can move the pointer any more: this is what was saved
        at_kill = saved_windows(storage, row.checkpoint_key) if row is not None else None
        if row is None or at_kill is None:
            raise PhaseError(f"job {j.id}: the checkpoint its row points at is unreadable after the kill")
        progress = dict(row.progress or {})
        kill.saved = at_kill
        kill.record = {
            "job": j.id,
            "job_kind": j.kind,
            "song": j.song_id,
            "killed_worker": victim.name,
            "killed_pid": victim.pid,
            "token_at_kill": row.lease_token,
            "checkpoint_at_kill": row.checkpoint_key,
            "windows_saved_before_kill": at_kill.count,
            "windows_in_job": at_kill.total,
            "heartbeat_progress_at_kill": {
                k: progress.get(k) for k in ("stage", "level", "window", "windows", "done", "total")
            },
            "t_kill": t_kill,
        }
        emit(kind="kill_sent", **{k: v for k, v in kill.record.items() if k != "t_kill"})
        if kill.restart:
            workers.append(spawn(victim.device, f"{victim.name}-restarted"))
        return


def verify(
    db: Database,
    storage: Storage,
    song_ids: list[int],
    n_drafts: int,
    upsampling: bool,
    workers: list[WorkerProc],
) -> dict[str, Any]:
    """Every song finished exactly once (see the module's docstring); problems in words."""
    from sqlmodel import col, select

    from db.models import Clip, Draft, JobKind, JobStatus

    problems: list[str] = []
    kinds = [JobKind.draft.value] + ([JobKind.upsample.value] if upsampling else [])
    jobs = jobs_of(db, song_ids)
    with db.read() as s:
        drafts = list(s.execute(select(Draft).where(col(Draft.song_id).in_(song_ids))).scalars())
        clips = list(s.execute(select(Clip).where(col(Clip.song_id).in_(song_ids))).scalars())
    done_lines: dict[int, int] = {}
    lease_lost = 0
    for w in workers:
        text = w.log.read_text(errors="replace") if w.log.exists() else ""
        for m in DONE.finditer(text):
            done_lines[int(m.group(1))] = done_lines.get(int(m.group(1)), 0) + 1
        lease_lost += len(LEASE_LOST.findall(text))
    for sid in song_ids:
        mine = [j for j in jobs if j.song_id == sid]
        for kind in kinds:
            of_kind = [j for j in mine if j.kind == kind]
            ok = [j for j in of_kind if j.status == JobStatus.succeeded.value]
            if len(of_kind) != 1 or len(ok) != 1:
                problems.append(
                    f"song {sid}: {len(of_kind)} {kind} job(s), {len(ok)} succeeded (want exactly 1)"
                )
        extra = [j for j in mine if j.kind not in kinds]
        if extra:
            problems.append(f"song {sid}: unexpected jobs {[(j.id, j.kind) for j in extra]}")
        for j in mine:
            if done_lines.get(int(j.id), 0) != 1:
                problems.append(
                    f"job {j.id} ({j.kind}): finished {done_lines.get(int(j.id), 0)} times in the logs"
                )
        d = sorted(x.index for x in drafts if x.song_id == sid)
        if d != list(range(n_drafts)):
            problems.append(f"song {sid}: draft indices {d}, want 0..{n_drafts - 1}")
        for x in drafts:
            if x.song_id == sid and not (storage.exists(x.audio_key) and storage.exists(x.codes_key)):
                problems.append(f"song {sid}: draft {x.index} files missing")
        if upsampling:
            c = [x for x in clips if x.song_id == sid]
            if len(c) != 1:
                problems.append(f"song {sid}: {len(c)} clips (want 1)")
            base = f"songs/{sid}"
            for name in ("final.wav", "final.mp3", "codes.npz"):
                if not storage.exists(f"{base}/{name}"):
                    problems.append(f"song {sid}: {base}/{name} missing from storage")
    return {
        "ok": not problems,
        "problems": problems,
        "jobs": len(jobs),
        "drafts": len(drafts),
        "clips": len(clips),
        "lease_lost_warnings": lease_lost,
        "leftover_checkpoints": len(storage.list("checkpoints")),
    }


def kill_report(
    kill: Kill, db: Database, storage: Storage, workers: list[WorkerProc], t_done: float
) -> dict[str, Any]:
    """What the resumed attempt did: the window it started at and the windows lost."""
    from db import queue

    rec = dict(kill.record or {})
    if not rec:
        return {"ok": False, "problems": ["no worker was killed: the job ended before its window"]}
    job = queue.get_job(db, rec["job"])
    assert job is not None
    problems: list[str] = []
    resumed: dict[str, Any] | None = None
    not_used: list[str] = []
    for w in workers:
        if w.killed:
            continue
        text = w.log.read_text(errors="replace") if w.log.exists() else ""
        for m in RESUMED.finditer(text):
            if int(m.group(1)) == rec["job"]:
                resumed = {
                    "by_worker": w.name,
                    "level": int(m.group(2)),
                    "window": int(m.group(3)),
                    "tokens_done": int(m.group(4)),
                    "tokens_total": int(m.group(5)),
                    "key": m.group(6),
                }
                break  # the first attempt after the kill
        for m in NOT_USED.finditer(text):
            if int(m.group(1) or m.group(4)) == rec["job"]:
                not_used.append(m.group(0))
    at_kill = kill.saved
    assert at_kill is not None
    saved, total = at_kill.count, at_kill.total
    hb = rec.get("heartbeat_progress_at_kill") or {}
    hb_done = 0  # windows finished by the last heartbeat's account (it names the window in progress)
    if hb.get("level") is not None and hb.get("window") is not None:
        hb_done = at_kill.index(int(hb["level"]), int(hb["window"]))
    start = 0  # windows the resumed run did not sample again
    if resumed is None:
        why = f" ({'; '.join(not_used)})" if not_used else ""
        problems.append("no worker log says it resumed the killed job: it started over" + why)
    else:
        start = at_kill.index(resumed["level"], resumed["window"]) + 1
        if resumed["key"] != at_kill.key:
            problems.append(
                f"the resumed run loaded {resumed['key']}, not the checkpoint at the kill {at_kill.key}"
            )
    in_flight = 1 if saved < total else 0
    lost = in_flight + max(0, max(saved, hb_done) - start)
    if lost > 1:
        problems.append(f"{lost} windows lost (at most 1 allowed)")
    if job.status != "succeeded":
        problems.append(f"the killed job ended {job.status}: {job.last_error}")
    if job.reclaims < 1 or job.lease_token <= int(rec["token_at_kill"]):
        problems.append(f"the job was not reclaimed (reclaims {job.reclaims}, token {job.lease_token})")
    by = next((w.name for w in workers if w.owner() == job.lease_owner), job.lease_owner)
    out = {
        **{k: v for k, v in rec.items() if k != "t_kill"},
        "resumed": resumed,
        "resumed_at_window": start + 1,  # 1-based: the first window the resumed run sampled
        "windows_lost": lost,
        "finished_by": by,
        "final_token": job.lease_token,
        "reclaims": job.reclaims,
        "seconds_from_kill_to_done": round(t_done - float(rec["t_kill"]), 1),
        "ok": not problems,
        "problems": problems,
    }
    return out


def run_phase(ctx: Ctx, n_workers: int, with_kill: bool) -> dict[str, Any]:
    from db.migrate import open_database
    from db.storage import Storage

    a = ctx.args
    label = f"{n_workers}w"
    run_dir = ctx.root / f"run-{n_workers}-workers"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "storage").mkdir(parents=True)
    db = open_database(f"sqlite:///{run_dir / 'queue.db'}")
    storage = Storage(str(run_dir / "storage"))
    devices = _devices(a.gpus, n_workers)
    share = len(set(devices)) < len(devices) and devices[0] != "cpu"
    workers: list[WorkerProc] = []
    result: dict[str, Any] = {
        "workers": n_workers,
        "devices": devices,
        "shared_gpu": share,
        "songs": a.songs,
        "seconds_per_song": a.seconds,
    }

    def spawn(device: str, name: str) -> WorkerProc:
        return spawn_worker(ctx, run_dir, name, device, share)

    try:
        t_spawn = time.monotonic()
        workers.extend(spawn(d, f"w{i}") for i, d in enumerate(devices))
        wait_ready(ctx, workers)
        result["ready_seconds"] = [w.ready["ready_seconds"] for w in workers if w.ready]
        result["worker_start"] = [w.ready for w in workers]
        result["device_name"] = workers[0].ready.get("device_name") if workers[0].ready else None
        songs = request_songs(ctx, db, a.songs, a.seconds, 0)
        wall = drive(ctx, db, storage, songs, workers, label)
        t_end = time.monotonic()
        result.update(_timing(db, songs, wall, a, n_workers, workers))
        result["wall_seconds_with_start"] = round(t_end - t_spawn, 1)
        emit(kind="run", **{k: v for k, v in result.items() if k != "worker_start"})
        all_songs = list(songs)
        if with_kill:
            kind = "upsample" if "upsample" in a.stages else "draft"
            kill = Kill(a.kill_after_windows, kind, a.restart_killed or n_workers == 1)
            kill.song_id = request_songs(ctx, db, 1, a.kill_seconds or a.seconds, a.songs)[0]
            all_songs.append(kill.song_id)
            drive(ctx, db, storage, [kill.song_id], workers, f"{label}-kill", kill, spawn)
            result["kill"] = kill_report(kill, db, storage, workers, time.monotonic())
            emit(kind="kill", **result["kill"])
        result["exactly_once"] = verify(db, storage, all_songs, a.drafts, "upsample" in a.stages, workers)
        emit(kind="exactly_once", run=label, **result["exactly_once"])
    except PhaseError as e:
        result["error"] = str(e)
        emit(kind="error", run=label, error=str(e))
    finally:
        stop_workers(workers)
        result["worker_exit_codes"] = {w.name: w.proc.returncode for w in workers}
        result["worker_log_tails"] = {w.name: w.log_tail(12) for w in workers}
        db.dispose()
    return result


def _timing(
    db: Database, songs: list[int], wall: float, a: argparse.Namespace, n: int, workers: list[WorkerProc]
) -> dict[str, Any]:
    """Songs per hour from the database's own times: the first request to the last finished job."""
    from sqlmodel import col, select

    from db.models import Song

    jobs = jobs_of(db, songs)
    with db.read() as s:
        created = [c for (c,) in s.execute(select(col(Song.created_at)).where(col(Song.id).in_(songs)))]
    finished = [j.finished_at for j in jobs if j.finished_at is not None]
    span = (max(finished) - min(created)).total_seconds() if finished and created else wall
    per_worker: dict[str, int] = {}
    owners = {w.owner(): w.name for w in workers}
    for j in jobs:
        name = owners.get(j.lease_owner or "", j.lease_owner or "?")
        per_worker[name] = per_worker.get(name, 0) + 1
    busy = sum((j.finished_at - j.started_at).total_seconds() for j in jobs if j.finished_at and j.started_at)
    return {
        "wall_seconds": round(span, 2),
        "driver_wall_seconds": round(wall, 2),
        "songs_per_hour": round(3600 * len(songs) / span, 2),
        "audio_seconds_per_hour": round(3600 * len(songs) * a.seconds / span, 1),
        "jobs_per_worker": per_worker,
        "job_seconds_sum": round(busy, 1),
        "mean_jobs_running": round(busy / span, 2),
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        "workers  devices                 ready_s  wall_s  songs  songs/h   exactly-once",
    ]
    for r in results["runs"]:
        once = r.get("exactly_once", {})
        rows.append(
            f"{r['workers']:<8} {','.join(r['devices']):<23} "
            f"{max(r.get('ready_seconds') or [0]):>7.1f} {r.get('wall_seconds', float('nan')):>7.1f} "
            f"{r['songs']:>6} {r.get('songs_per_hour', float('nan')):>8.1f}   "
            + ("ok" if once.get("ok") else f"FAILED {once.get('problems') or r.get('error')}")
        )
    if results.get("speedup") is not None:
        rows.append(
            f"speed-up {results['workers'][-1]} vs {results['workers'][0]} workers: {results['speedup']}x"
        )
    for r in results["runs"]:
        k = r.get("kill")
        if k and not k.get("killed_worker"):
            rows.append(f"kill ({r['workers']} workers): FAILED {k.get('problems')}")
        elif k:
            rows.append(
                f"kill ({r['workers']} workers): {k.get('killed_worker')} killed after "
                f"{k.get('windows_saved_before_kill')} of {k.get('windows_in_job')} windows saved; "
                f"resumed at window {k.get('resumed_at_window')} by {k.get('finished_by')}; "
                f"windows lost {k.get('windows_lost')}: "
                + ("ok" if k.get("ok") else f"FAILED {k.get('problems')}")
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="1b_lyrics", help="the worker's model (demo, 1b_lyrics, a folder)")
    ap.add_argument(
        "--random-weights",
        action="store_true",
        help="workers make the model's released sizes with random weights (no checkpoint files)",
    )
    ap.add_argument("--small", action="store_true", help="with --random-weights: the CPU-test sizes")
    ap.add_argument("--gpus", default="0,1", help="GPU id per worker (0,1; 0,0 to share one), or cpu")
    ap.add_argument("--workers", default="1,2", help="worker counts, one run each (1,2)")
    ap.add_argument("--songs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds of music per song")
    ap.add_argument("--drafts", type=int, default=3)
    ap.add_argument("--stages", default="draft,upsample", choices=["draft,upsample", "draft"])
    ap.add_argument("--kill-after-windows", type=int, default=0, help="0: no kill test")
    ap.add_argument("--kill-in", type=int, default=None, help="the run (worker count) of the kill test")
    ap.add_argument("--kill-seconds", type=float, default=None, help="length of the kill test's song")
    ap.add_argument("--restart-killed", action="store_true", help="start the killed worker again")
    ap.add_argument("--lease-seconds", type=float, default=10.0)
    ap.add_argument("--heartbeat-seconds", type=float, default=1.0)
    ap.add_argument("--worker-poll", type=float, default=0.2, help="the workers' queue polling (s)")
    ap.add_argument("--poll", type=float, default=0.2, help="the driver's polling (s)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    ap.add_argument("--warmup-seconds", type=float, default=0.05, help="the warm-up song's length")
    ap.add_argument("--seed", type=int, default=0, help="random weights' seed (the same in every worker)")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds; stop what is left after")
    ap.add_argument("--report-every", type=float, default=30.0)
    ap.add_argument(
        "--keep-going",
        action="store_true",
        help="let the queue retry a failed job (default: the run stops at the first job error)",
    )
    ap.add_argument("--work-dir", default=None, help="queue, storage and logs (default: a temp folder)")
    ap.add_argument("--out", default=None, help="JSON file of all results")
    args = ap.parse_args(argv)
    try:
        check_modules(DRIVER_MODULES)
        root = Path(args.work_dir or tempfile.mkdtemp(prefix="jukebot-scale-out-")).resolve()
        root.mkdir(parents=True, exist_ok=True)
        prefix = find_ffmpeg(root / "bin") if "upsample" in args.stages else None
    except Missing as e:
        return int(e.code or 2)
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    kill_in = args.kill_in if args.kill_in is not None else max(counts)
    song = DEMO_SONG if args.model == "demo" else SONG
    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    ctx = Ctx(args, root, prefix, deadline, song)
    results: dict[str, Any] = {
        "kind": "scale_out",
        "model": args.model,
        "random_weights": args.random_weights,
        "small": args.small,
        "gpus": args.gpus,
        "workers": counts,
        "songs": args.songs,
        "seconds_per_song": args.seconds,
        "drafts": args.drafts,
        "stages": args.stages,
        "lease_seconds": args.lease_seconds,
        "work_dir": str(root),
        "runs": [],
    }
    ctx.results = results

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1, default=str))

    t_all = time.monotonic()
    for n in counts:
        if deadline is not None and time.monotonic() > deadline:
            results["runs"].append(
                {"workers": n, "devices": [], "songs": args.songs, "error": "not run: time budget"}
            )
            continue
        run = run_phase(ctx, n, with_kill=args.kill_after_windows > 0 and n == kill_in)
        results["runs"].append(run)
        save()
    runs = [r for r in results["runs"] if r.get("songs_per_hour")]
    if len(runs) >= 2:
        results["speedup"] = round(runs[-1]["songs_per_hour"] / runs[0]["songs_per_hour"], 2)
    kills = [r["kill"] for r in results["runs"] if r.get("kill")]
    problems = [r.get("error") for r in results["runs"] if r.get("error")]
    problems += [p for r in results["runs"] for p in r.get("exactly_once", {}).get("problems", [])]
    problems += [p for k in kills for p in k.get("problems", [])]
    if args.kill_after_windows > 0 and not kills:
        problems.append("the kill test did not run")
    results["ok"] = not problems and len(runs) == len(counts)
    results["problems"] = problems
    results["total_seconds"] = round(time.monotonic() - t_all, 1)
    save()
    emit(
        kind="scale_out",
        ok=results["ok"],
        speedup=results.get("speedup"),
        songs_per_hour={r["workers"]: r.get("songs_per_hour") for r in results["runs"]},
        total_seconds=results["total_seconds"],
        problems=problems,
    )
    print(table(results), flush=True)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker-child":
        try:
            sys.exit(child_main(sys.argv[2:]))
        except Missing as e:
            sys.exit(int(e.code or 2))
    sys.exit(main())
