"""Several hosts (issue #14, deployment): two real `jukebot worker` processes, each with its own local
folder (working directory, temporary files, model cache), share one PostgreSQL queue and one S3 store.

The S3 store is moto's S3 server (`python -m moto.server`, started here on a free port) reached through
s3fs with the storage URL `s3://bucket/prefix`, exactly as a bucket on AWS or MinIO is: the endpoint and
the keys come from the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Nothing is
mocked inside the product: the queue, the workers, their leases, checkpoints and results are real.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
from sqlalchemy import select
from sqlmodel import col

from db import lifecycle, repo
from db.database import Database
from db.models import Clip, Job, SongStatus, utcnow
from db.storage import Storage
from engine.sampling.pipeline import codes_from_npz

ROOT = Path(__file__).resolve().parents[1]
DONE = re.compile(r"job (\d+) \((\w+)\) done")
RESUMED = re.compile(r"job (\d+): resuming at level \d+ window \d+ \(\d+/\d+ tokens\) from (\S+)")
SONGS = 4
DRAFTS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's S3 server in its own process; the AWS variables that point a client at it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto's S3 server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "multihost-test",
        "AWS_SECRET_ACCESS_KEY": "multihost-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        yield env
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def bucket_url(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; this process (the bot's host, say) reaches it like the workers do."""
    import s3fs

    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    name = f"jukebot-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return f"s3://{name}/media"


def _other_host(code: str, url: str, env: dict[str, str]) -> None:
    """Run `code` (with `store`, a Storage on `url`) in another process: another host's view."""
    prog = f"from db.storage import Storage; store = Storage({url!r}); {code}"
    subprocess.run(
        [sys.executable, "-c", prog],
        check=True,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )


def test_a_file_another_host_wrote_is_seen_at_once(bucket_url: str, s3_env: dict[str, str]) -> None:
    """s3fs keeps the folder listings it has seen; a host that looked at a folder before another host
    wrote into it was told the new file did not exist (a resumed job then started over, a clip could
    not be read). The storage asks the store itself every time."""
    here = Storage(bucket_url)
    here.write_bytes("songs/1/draft-1.wav", b"first")
    assert here.list("songs/1") == ["songs/1/draft-1.wav"] and here.exists("songs/1/draft-1.wav")

    _other_host("store.write_bytes('songs/1/draft-2.wav', b'second')", bucket_url, s3_env)
    assert here.exists("songs/1/draft-2.wav")
    assert here.read_bytes("songs/1/draft-2.wav") == b"second"
    assert here.size("songs/1/draft-2.wav") == len(b"second")

    _other_host("store.delete('songs/1/draft-1.wav')", bucket_url, s3_env)
    assert not here.exists("songs/1/draft-1.wav")
    with pytest.raises(FileNotFoundError, match=re.escape("Nothing is stored under 'songs/1/draft-1.wav'")):
        here.read_bytes("songs/1/draft-1.wav")
    assert here.list("songs/1") == ["songs/1/draft-2.wav"]


def test_a_worker_without_s3_keys_says_so_in_one_line(s3_env: dict[str, str], tmp_path: Path) -> None:
    """A botocore error (no credentials) is not an OSError: it came out of `jukebot worker` as a
    traceback. Now it is one line naming the variables to set, and a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUKEBOT_", "AWS_"))}
    env.update(
        AWS_ENDPOINT_URL=s3_env["AWS_ENDPOINT_URL"],
        AWS_EC2_METADATA_DISABLED="true",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        JUKEBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'jukebot.db'}",
        JUKEBOT_STORAGE_URL="s3://no-keys/media",
        HOME=str(tmp_path),
        PYTHONPATH=str(ROOT),
    )
    res = subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", "worker", "--device", "cpu", "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    (line,) = [x for x in res.stderr.splitlines() if "s3://no-keys/media" in x]
    assert "credentials" in line.lower() and "AWS_ACCESS_KEY_ID" in line and "JUKEBOT_STORAGE_URL" in line


# --- two hosts, one queue, one bucket ----------------------------------------------------------------


@dataclass
class Host:
    name: str
    folder: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def owner(self) -> str:  # the worker's lease owner: host:pid (db.queue.default_owner)
        return f"{socket.gethostname()}:{self.proc.pid}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def done(self) -> list[int]:
        return [int(m[1]) for m in DONE.finditer(self.text())]


def _start_host(name: str, root: Path, database_url: str, storage_url: str, s3_env: dict[str, str]) -> Host:
    """A worker as another machine runs it: its own working folder, temp folder and model cache;
    only the database URL, the storage URL and the S3 keys in common."""
    folder = root / name
    for sub in ("tmp", "models", "home"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JUKEBOT_", "AWS_"))},
        **s3_env,
        "JUKEBOT_DATABASE_URL": database_url,
        "JUKEBOT_STORAGE_URL": storage_url,
        "JUKEBOT_MODEL_CACHE_DIR": str(folder / "models"),
        "JUKEBOT_LEASE_SECONDS": "3",
        "JUKEBOT_HEARTBEAT_SECONDS": "0.3",
        "JUKEBOT_POLL_SECONDS": "0.2",
        "TMPDIR": str(folder / "tmp"),
        "HOME": str(folder / "home"),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "TQDM_DISABLE": "1",
    }
    log = folder / "worker.log"
    cmd = [sys.executable, "-c", "from bot.cli import main; main()"]
    cmd += ["worker", "--device", "cpu", "--model", "demo", "--threads", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Host(name, folder, proc, log)


def _request_songs(db: Database) -> list[int]:
    """Songs as the bot writes them, each with its draft job: one member each (no quota in the way)."""
    from db import queue

    ids = []
    for i in range(SONGS):
        user = repo.get_or_create_user(db, 900_000 + i, f"member-{i}")
        assert user.id is not None
        song = repo.create_song(
            db, user_id=user.id, artist="bach", genre="chorale", seconds=0.8, seed=100 + i, n_drafts=DRAFTS
        )
        assert song.id is not None
        queue.enqueue(db, "draft", {"song_id": song.id}, song_id=song.id)
        ids.append(song.id)
    return ids


def _jobs(db: Database) -> list[Job]:
    with db.read() as s:
        return list(s.execute(select(Job).order_by(col(Job.id))).scalars())


def _close_finished_votes(db: Database, songs: list[int], jobs: list[Job], closed: set[int]) -> None:
    """The bot's part: once a song's drafts are made, its vote opens, one member votes, it closes
    (queueing the upsample job of the winner)."""
    drafted = {j.song_id for j in jobs if j.kind == "draft" and j.status == "succeeded"}
    for song_id in songs:
        if song_id in drafted and song_id not in closed:
            lifecycle.open_vote(db, song_id, utcnow())
            drafts = repo.drafts_for_song(db, song_id)
            repo.cast_vote(db, song_id, 4242, drafts[-1].id)
            assert lifecycle.close_vote(db, song_id) is not None
            closed.add(song_id)


def _logs(hosts: list[Host]) -> str:
    return "\n".join(f"--- {h.name} (exit {h.proc.poll()}):\n{h.text()[-3000:]}" for h in hosts)


@dataclass
class Kill:
    job_id: int
    host: Host
    token: int  # the dead host's lease token
    pointer: str | None  # the job's checkpoint when the host died (written by it, in the bucket)


def _run_songs(db: Database, hosts: list[Host], songs: list[int]) -> tuple[Kill, dict[int, set[str]]]:
    """Play the bot until every song has its clip; SIGKILL one host once, in the middle of an upsample
    job it has checkpointed. Returns the kill and which hosts were seen holding each job."""
    owners = {h.owner: h for h in hosts}
    closed: set[int] = set()
    held_by: dict[int, set[str]] = {}
    kill: Kill | None = None
    deadline = time.monotonic() + 240
    while True:
        jobs = _jobs(db)
        for j in jobs:
            host = owners.get(j.lease_owner or "")
            if j.id is not None and j.status == "running" and host is not None:
                held_by.setdefault(j.id, set()).add(host.name)
                if kill is None and j.kind == "upsample" and j.checkpoint_key:
                    os.kill(host.proc.pid, signal.SIGKILL)
                    host.proc.wait()
                    (pointer,) = [k.checkpoint_key for k in _jobs(db) if k.id == j.id]
                    kill = Kill(j.id, host, j.lease_token, pointer)
        _close_finished_votes(db, songs, jobs, closed)
        if len(jobs) == 2 * SONGS and all(j.status == "succeeded" for j in jobs):
            break
        for h in hosts:
            assert (kill is not None and h is kill.host) or h.proc.poll() is None, _logs(hosts)
        assert time.monotonic() < deadline, (
            f"not finished: {[(j.id, j.kind, j.status) for j in jobs]}\n" + _logs(hosts)
        )
        time.sleep(0.1)
    assert kill is not None, "no upsample job was seen running with a checkpoint\n" + _logs(hosts)
    return kill, held_by


def _assert_in_the_bucket(db: Database, bucket_url: str, songs: list[int], hosts: list[Host]) -> None:
    """Every song's drafts and clip are in the bucket (not on either host) and readable from a third
    place; each clip grew from the voted draft, whichever host made which."""
    store = Storage(bucket_url)
    for song_id in songs:
        drafts = repo.drafts_for_song(db, song_id)
        assert sorted(d.index for d in drafts) == list(range(DRAFTS))
        for d in drafts:
            audio, rate = soundfile.read(io.BytesIO(store.read_bytes(d.audio_key)))
            assert rate > 0 and len(audio) > 0
        with db.read() as s:
            (clip,) = s.execute(select(Clip).where(col(Clip.song_id) == song_id)).scalars()  # one clip
        final, _ = soundfile.read(io.BytesIO(store.read_bytes(clip.audio_key)))
        assert len(final) > 0 and np.isfinite(final).all()
        mp3 = store.read_bytes(clip.mp3_key)
        assert mp3[:3] == b"ID3" or mp3[:1] == b"\xff", mp3[:8]  # a tag or an MPEG frame
        codes = codes_from_npz(store.read_bytes(clip.codes_key))
        assert np.array_equal(codes[2][0], np.load(io.BytesIO(store.read_bytes(drafts[-1].codes_key))))
    assert store.list("checkpoints") == [], "a finished job left checkpoints behind"
    for h in hosts:
        assert not [*h.folder.rglob("*.wav"), *h.folder.rglob("*.np[yz]")], f"{h.name} kept media locally"


@pytest.mark.postgres
def test_two_hosts_finish_every_song_exactly_once(
    postgres_url: str, bucket_url: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    db = Database(postgres_url)
    hosts = [_start_host(n, tmp_path, postgres_url, bucket_url, s3_env) for n in ("host-a", "host-b")]
    try:
        songs = _request_songs(db)
        kill, held_by = _run_songs(db, hosts, songs)
        (alive,) = [h for h in hosts if h is not kill.host]
        alive.proc.send_signal(signal.SIGTERM)  # idle now: it exits at once, its log complete
        assert alive.proc.wait(timeout=60) == 0, _logs(hosts)

        # Both hosts took jobs; the killed job was finished by the other host, from the dead one's
        # last checkpoint in the bucket, under the next lease token.
        assert set().union(*held_by.values()) == {"host-a", "host-b"}, held_by
        (job,) = [j for j in _jobs(db) if j.id == kill.job_id]
        assert job.status == "succeeded" and job.reclaims == 1 and job.lease_token == kill.token + 1
        assert job.lease_owner == alive.owner  # the finisher, kept by db.queue.complete
        assert kill.job_id in alive.done() and kill.job_id not in kill.host.done()
        resumed = {int(m[1]): m[2] for m in RESUMED.finditer(alive.text())}
        assert kill.pointer and resumed.get(kill.job_id) == kill.pointer, _logs(hosts)

        # Every song exactly once: one draft and one upsample job, each finished by one host once;
        # nothing left running or holding a lease.
        jobs = _jobs(db)
        assert sorted(kill.host.done() + alive.done()) == sorted(j.id or 0 for j in jobs), _logs(hosts)
        assert all(j.status == "succeeded" and j.lease_expires_at is None for j in jobs)
        for song_id in songs:
            assert sorted(j.kind for j in jobs if j.song_id == song_id) == ["draft", "upsample"], song_id
            song = repo.song_by_id(db, song_id)
            assert song is not None and song.status == SongStatus.upsampling
        _assert_in_the_bucket(db, bucket_url, songs, hosts)
    finally:
        for h in hosts:
            if h.proc.poll() is None:
                h.proc.send_signal(signal.SIGTERM)
        for h in hosts:
            try:
                h.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait()
        db.dispose()
