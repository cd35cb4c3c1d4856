"""One claimed job run to its outcome: what `draft`, `continue` and `upsample` jobs do, their files
and rows, their progress, and how they end (succeeded, failed, released, cancelled or lost).
`JobHandlers` is the half of the worker (engine.serving.worker.Worker) that runs one job; the
worker's loop claims the jobs and keeps the model resident.

Job contract (payloads are written by the bot, see bot/songs.py and bot/voting.py):
- `draft` {"song_id"}: the song's `n_drafts` level-2 drafts in one batch. Writes
  `songs/{id}/drafts/{i}.wav` (level-2 preview) and `songs/{id}/drafts/{i}.npy` (level-2 codes,
  int, shape [T2]), one Draft row each; result {"draft_ids": [...]}. Song -> drafting.
- `continue` {"song_id"}: like `draft`, primed on the song's `parent_clip_id` (the last
  `prime_seconds` of that clip's codes up to `prime_at`, default its end; at most
  `max_prime_seconds`) or
  `prime_key` (an uploaded audio file: its first `prime_seconds`). The prime's codes of all levels
  are kept at `songs/{id}/prime.npz` for the upsample. `seconds` is the new music after the prime.
- `upsample` {"song_id", "draft_id"}: levels 1 and 0 for that draft. Writes `songs/{id}/final.wav`,
  `final.mp3` and `codes.npz` (all three levels, see engine.sampling.pipeline.codes_to_npz), one Clip row
  for (song, draft); result {"clip_id"}. Song -> upsampling. A draft chosen again after the vote (not
  the song's winner) writes `songs/{id}/draft-<n>-final.wav` etc., beside the winner's clip.
- Progress (heartbeat): {"stage", "level", "done", "total", "percent", "tokens_per_second",
  "eta_seconds"}; stage is "loading model", "drafts (level 2)", "upsampling level 1",
  "upsampling level 0", "decoding", "saving", "timing the lyrics". An upsample adds
  "preview_key" (`songs/{id}/preview-{n}.mp3`, the level-1 decode of the draft, lower quality)
  as soon as level 1 is done, for the bot to post while level 0 renders.
- Lyric models also write `songs/{id}/alignment.json` and `final.lrc` (timed lyrics), recorded on
  the Clip row (`alignment_key`, `lrc_key`).
- SIGTERM: the current window finishes, is checkpointed, the lease is released (no attempt is
  burned) and the worker exits 0. A cancel request stops it between windows (job cancelled).
- A bad request (unknown artist, damaged prime, song too long, ...) fails at once with a sentence
  in `last_error`; anything else is retried with backoff by the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from db import lifecycle, queue, repo
from db.database import Database
from db.models import JobKind, Song, SongStatus
from db.settings import Settings
from db.storage import Storage
from engine.serving.alive import AliveFile
from engine.serving.final_names import PrefixedFinals, finals_prefix
from engine.serving.heartbeat import Heartbeat, ProgressTracker
from engine.serving.options import WorkerOptions

log = logging.getLogger("jukebot.worker")


class PermanentError(Exception):
    """The job cannot succeed on any worker; its message is for the musician."""


def request_from_song(song: Song, sampling: Any = None) -> Any:
    """The engine request of a song. `sampling` is the model's recommendation
    (`engine.sampling`, from its sampling.json; the original's temperatures when None): it sets the
    upsamplers' temperatures always, and the drafts' unless the song has its own
    (`song.temperature` > 0; 0 means "not chosen")."""
    from engine.model.config import SamplingDefaults
    from engine.sampling.pipeline import SongRequest
    from engine.sampling.sample import SamplingSettings

    defaults: SamplingDefaults = sampling if sampling is not None else SamplingDefaults()
    chosen = float(song.temperature) if song.temperature and song.temperature > 0 else None
    return SongRequest(
        artist=song.artist,
        genre=song.genre,
        lyrics=song.lyrics or "",
        seconds=float(song.seconds),
        seed=int(song.seed),
        settings=SamplingSettings(temperatures=defaults.resolve(top=chosen)),
    )


@dataclass
class _Job:
    lease: queue.Lease
    tracker: ProgressTracker
    heartbeat: Heartbeat
    song: Song
    checkpointer: Any = None
    stop_reason: str | None = None
    last_cancel_check: float = field(default=0.0)


class JobHandlers:
    """Runs one claimed job (`run_job`). The worker (engine.serving.worker.Worker) is one: it sets
    these attributes and provides the resident model (`engine_for`)."""

    settings: Settings
    options: WorkerOptions
    db: Database
    storage: Storage
    model_name: str
    terminating: threading.Event  # set on SIGTERM: each job stops after its window
    alive: AliveFile
    jobs_done: int

    def engine_for(self, name: str) -> Any:
        """The resident model set `name` (the worker's: engine.serving.worker.Worker.engine_for)."""
        raise NotImplementedError

    # -- one job --------------------------------------------------------------------------------
    def run_job(self, lease: queue.Lease) -> str:
        """Run a claimed job to an outcome: succeeded, failed, released, cancelled or lost."""
        from engine.sampling.sample import SamplingStopped

        tracker = ProgressTracker()
        tracker.stage("loading model")
        song_id = lease.payload.get("song_id", lease.song_id)
        beat = self.settings.queue.heartbeat_seconds
        with Heartbeat(self.db, lease, tracker, beat, on_beat=self.alive.touch) as hb:
            try:
                song = repo.song_by_id(self.db, int(song_id)) if song_id is not None else None
                if song is None:
                    raise PermanentError(f"song {song_id} no longer exists")
            except Exception as e:
                return self._failed(lease, e)
            job = _Job(lease, tracker, hb, song)
            try:
                result = self._dispatch(job)
            except SamplingStopped:
                return self._stopped(job)
            except queue.LeaseLost as e:
                log.warning("job %s: %s", lease.job_id, e)
                return "lost"
            except Exception as e:
                return self._failed(lease, e)
        self.jobs_done += 1
        log.info("job %s (%s) done: %s", lease.job_id, lease.kind, result)
        return "succeeded"

    def _stopped(self, job: _Job) -> str:
        lease = job.lease
        if job.heartbeat.lost.is_set():
            log.warning("job %s: lease lost; stopped without writing", lease.job_id)
            return "lost"
        try:
            if job.stop_reason == "cancel":
                queue.finish_cancelled(self.db, lease)
                if job.checkpointer is not None:
                    job.checkpointer.cleanup()
                log.info("job %s cancelled between windows", lease.job_id)
                return "cancelled"
            status = queue.release(self.db, lease)
            log.info("job %s given back to the queue (%s) at its last checkpoint", lease.job_id, status)
            return "released"
        except queue.LeaseLost as e:
            log.warning("%s", e)
            return "lost"

    def _failed(self, lease: queue.Lease, e: BaseException) -> str:
        from engine.audio import AudioError
        from engine.model.checkpoint_download import DownloadError
        from engine.model.config import ConfigError
        from engine.model.labels import LabelsError
        from engine.model.prior import LabelError
        from engine.sampling.pipeline import PipelineError
        from engine.sampling.song import SongError

        permanent = isinstance(
            e, PermanentError | PipelineError | SongError | AudioError | LabelsError | LabelError
        )
        if isinstance(e, ConfigError) and not isinstance(e, DownloadError):
            permanent = True
        if permanent:
            message = str(e)
            log.warning("job %s failed for good: %s", lease.job_id, message)
        else:
            message = f"the engine hit an internal error ({type(e).__name__}: {e}); it will be retried"
            log.exception("job %s failed (will be retried if attempts are left)", lease.job_id)
        try:
            return queue.fail(self.db, lease, message, retry=not permanent)
        except queue.LeaseLost as lost:
            log.warning("%s", lost)
            return "lost"

    def _hooks(self, job: _Job, primed: bool) -> Any:
        from engine.sampling.pipeline import stage_name
        from engine.sampling.sample import Hooks

        def on_tokens(p: Any) -> None:
            job.tracker.tokens(stage_name(p.level, primed=primed), p)

        def should_stop() -> bool:
            hb = job.heartbeat
            if hb.lost.is_set():
                job.stop_reason = "lost"
            elif hb.cancel.is_set():
                job.stop_reason = "cancel"
            elif self.terminating.is_set():
                job.stop_reason = "terminate"
            elif time.monotonic() - job.last_cancel_check > 1.0:
                job.last_cancel_check = time.monotonic()
                try:
                    if queue.is_cancel_requested(self.db, job.lease):
                        job.stop_reason = "cancel"
                except queue.LeaseLost:
                    hb.lost.set()
                    job.stop_reason = "lost"
            return job.stop_reason is not None

        return Hooks(on_tokens=on_tokens, should_stop=should_stop, tokens_every=self.options.tokens_every)

    def _dispatch(self, job: _Job) -> dict[str, Any]:
        kind = job.lease.kind
        if kind == JobKind.draft:
            return self._drafts(job, primed=False)
        if kind == JobKind.continue_:
            return self._drafts(job, primed=True)
        if kind == JobKind.upsample:
            return self._upsample(job)
        raise PermanentError(f"this worker does not run {kind!r} jobs")

    def _set_status(self, job: _Job, status: SongStatus) -> None:
        """Report the stage (drafting, upsampling) in the song's life, fenced by the lease; a song
        cancelled or finished meanwhile stays as it is (`lifecycle.advance`)."""
        assert job.song.id is not None
        with queue.fenced(self.db, job.lease) as s:
            lifecycle.advance(s, job.song.id, status)

    # -- prompts --------------------------------------------------------------------------------
    def _prompt(self, engine: Any, song: Song) -> Any:
        from engine.audio import AudioError, load_audio
        from engine.sampling.pipeline import PipelineError, Prompt

        assert song.id is not None
        prime_key = f"songs/{song.id}/prime.npz"
        if self.storage.exists(prime_key):  # made by this song's draft job: the exact same codes
            return Prompt.from_clip_codes(
                engine, self.storage.read_bytes(prime_key), None, source="the prime"
            )
        limit = self.settings.limits.max_prime_seconds
        seconds = min(float(song.prime_seconds), limit) if song.prime_seconds else limit
        if song.parent_clip_id is not None:
            clip = repo.clip_by_id(self.db, song.parent_clip_id)
            if clip is None:
                raise PermanentError(f"clip #{song.parent_clip_id} to continue no longer exists")
            try:
                data = self.storage.read_bytes(clip.codes_key)
            except FileNotFoundError:
                raise PermanentError(
                    f"the codes of clip #{song.parent_clip_id} are missing from storage"
                ) from None
            # The song keeps the clip up to prime_at (None: its end) and continues from there.
            prompt = Prompt.from_clip_codes(
                engine, data, seconds, source=f"clip #{song.parent_clip_id}", at=song.prime_at
            )
        elif song.prime_key:
            try:
                local = self.storage.local_path(song.prime_key)
                if local is not None and local.exists():
                    audio = load_audio(
                        local,
                        engine.sample_rate,
                        max_bytes=self.settings.limits.max_upload_bytes,
                        duration=seconds,
                    )
                else:
                    from engine.audio import load_audio_bytes

                    audio = load_audio_bytes(
                        self.storage.read_bytes(song.prime_key),
                        engine.sample_rate,
                        max_bytes=self.settings.limits.max_upload_bytes,
                        duration=seconds,
                    )
            except FileNotFoundError:
                raise PermanentError("the uploaded prime audio is missing from storage") from None
            except AudioError as e:
                raise PermanentError(f"the prime audio cannot be used: {e}") from e
            prompt = Prompt.from_audio(engine, audio, source="the uploaded audio")
        else:
            raise PipelineError("a continuation needs a clip or an uploaded audio file to continue from")
        from engine.sampling.pipeline import codes_to_npz

        self.storage.write_bytes(prime_key, codes_to_npz(prompt.codes, {"source": prompt.source}))
        return prompt

    # -- drafts ---------------------------------------------------------------------------------
    def _runner(self, job: _Job, engine: Any, primed: bool, outputs: str = "") -> Any:
        """The song runner writing to `songs/<id>/` in the storage, checkpoints fenced by the lease.
        `outputs`: a prefix for the final files' names (a draft chosen again keeps its own)."""
        from engine.sampling.song import SongRunner, StorageFiles

        base = f"songs/{job.song.id}"
        files: Any = StorageFiles(self.storage, base, self.db, job.lease)
        if outputs:
            files = PrefixedFinals(files, outputs)

        def on_preview(name: str) -> None:
            # Every later heartbeat carries it; one goes out now so the bot can post it at once.
            job.tracker.keep(preview_key=f"{base}/{name}")
            job.heartbeat.beat()

        return SongRunner(
            engine,
            files,
            hooks=lambda _primed: self._hooks(job, primed),
            on_stage=job.tracker.stage,
            on_preview=on_preview,
            checkpoint_every=self.options.checkpoint_seconds,
            interleave_levels=self.settings.engine.interleave_levels,
        )

    def _drafts(self, job: _Job, *, primed: bool) -> dict[str, Any]:
        from engine.sampling.song import DRAFTS_STAGE

        song, lease = job.song, job.lease
        assert song.id is not None
        engine = self.engine_for(song.model or self.model_name)
        request = request_from_song(song, engine.sampling)
        prompt = self._prompt(engine, song) if primed else None
        self._set_status(job, SongStatus.drafting)
        runner = self._runner(job, engine, primed)
        job.checkpointer = runner.checkpointer(DRAFTS_STAGE)
        drafts = runner.drafts(
            request, int(song.n_drafts), max_drafts=self.settings.limits.max_drafts, prompt=prompt
        )
        job.heartbeat.stop()
        base = f"songs/{song.id}"
        with queue.fenced(self.db, lease) as s:
            ids = [
                repo.add_draft(s, song.id, i, f"{base}/{a}", f"{base}/{c}", seconds=drafts.seconds).id
                for i, (a, c) in enumerate(drafts.names)
            ]
            result = {"draft_ids": ids, "seconds": drafts.seconds, "notes": drafts.notes}
            queue.complete(self.db, lease, result, session=s)
        runner.finished(DRAFTS_STAGE)
        return result

    # -- upsample -------------------------------------------------------------------------------
    def _upsample(self, job: _Job) -> dict[str, Any]:
        from db.models import Draft
        from engine.sampling.song import CODES, FINAL_MP3, FINAL_WAV, upsample_stage

        song, lease = job.song, job.lease
        assert song.id is not None
        draft_id = lease.payload.get("draft_id", song.winner_draft_id)
        with self.db.read() as s:
            draft = s.get(Draft, int(draft_id)) if draft_id is not None else None
        if draft is None or draft.song_id != song.id:
            raise PermanentError(f"draft {draft_id} of song {song.id} does not exist")
        base = f"songs/{song.id}"
        if not draft.codes_key.startswith(f"{base}/"):
            raise PermanentError(f"the codes of draft {draft.index + 1} are not where this song keeps them")
        engine = self.engine_for(song.model or self.model_name)
        request = request_from_song(song, engine.sampling)
        primed = song.parent_clip_id is not None or song.prime_key is not None
        prompt = self._prompt(engine, song) if primed else None
        self._set_status(job, SongStatus.upsampling)
        pick = draft.index + 1
        outputs = finals_prefix(song.winner_draft_id, draft.id, pick)
        runner = self._runner(job, engine, primed, outputs)
        job.checkpointer = runner.checkpointer(upsample_stage(pick))
        final = runner.upsample(
            request,
            pick,
            prompt=prompt,
            meta={"song_id": song.id, "draft_id": draft.id},
            draft_codes_name=draft.codes_key.removeprefix(f"{base}/"),
        )
        job.heartbeat.stop()
        with queue.fenced(self.db, lease) as s:
            clip = repo.add_clip(
                s,
                song.id,
                f"{base}/{outputs}{FINAL_WAV}",
                f"{base}/{outputs}{CODES}",
                mp3_key=f"{base}/{outputs}{FINAL_MP3}",
                seconds=final.seconds,
                draft_id=draft.id,
                lrc_key=f"{base}/{outputs}{final.lrc}" if final.lrc else None,
                alignment_key=f"{base}/{outputs}{final.alignment}" if final.alignment else None,
            )
            result = {"clip_id": clip.id, "seconds": final.seconds}
            queue.complete(self.db, lease, result, session=s)
        runner.finished(upsample_stage(pick))
        return result
