"""The text of a song's status message: one channel message, edited in place as the song moves
(waiting → queue position → drafting % → voting → upsampling % → done). Pure functions of a
snapshot of the database, so the watcher can tell whether anything changed before editing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.core.text import describe, ts
from db.models import Job, JobStatus, Song, SongStatus

BAR_CELLS = 12


@dataclass(frozen=True)
class Snapshot:
    song: Song
    requester_id: int  # the requester's Discord id
    job: Job | None  # the song's latest job
    position: int | None  # place in the queue when the job waits
    waiting_for_slot: bool  # held back by the guild's concurrency cap (no job yet)
    drafts_url: str | None = None
    clip_url: str | None = None
    winner_index: int | None = None  # 0-based draft index
    now: datetime | None = None
    worker_quiet: bool = False  # the running job's worker stopped sending heartbeats


def bar(percent: float) -> str:
    filled = max(0, min(BAR_CELLS, round(percent / 100 * BAR_CELLS)))
    return "▰" * filled + "▱" * (BAR_CELLS - filled)


def header(song: Song, requester_id: int) -> str:
    return f"🎵 **Song #{song.id}** — {describe(song)} — for <@{requester_id}>"


def progress_line(job: Job, now: datetime) -> str:
    p = job.progress or {}
    stage = str(p.get("stage") or ("upsampling" if job.kind == "upsample" else "drafting"))
    parts = [stage.replace("_", " ").capitalize()]
    if p.get("level") is not None:
        parts[0] += f" (level {p['level']})"
    percent = p.get("percent")
    if percent is None and p.get("total"):
        percent = 100.0 * float(p.get("done") or 0) / float(p["total"])
    line = f"🎛️ {parts[0]}"
    if percent is not None:
        line += f": {bar(float(percent))} {float(percent):.0f}%"
    else:
        line += ": starting…"
    extras = []
    if p.get("tokens_per_second"):
        extras.append(f"{float(p['tokens_per_second']):.0f} tokens/s")
    eta = p.get("eta_seconds")
    if eta is not None and float(eta) >= 0:
        # Rounded to 10 s so a steady job does not need a new edit every heartbeat.
        at = now + timedelta(seconds=float(eta))
        extras.append(f"done {ts(datetime.fromtimestamp(round(at.timestamp() / 10) * 10, tz=at.tzinfo))}")
    if extras:
        line += " · " + " · ".join(extras)
    if job.attempts > 1 or job.reclaims:
        line += f"\n↻ Restarted after a worker problem (attempt {job.attempts}); resuming where it stopped."
    return line


def render(snap: Snapshot) -> str:
    song, job = snap.song, snap.job
    now = snap.now or datetime.now().astimezone()
    lines = [header(song, snap.requester_id)]
    status = song.status
    if status == SongStatus.cancelled:
        lines.append("🛑 Cancelled. It did not count against your daily songs.")
    elif status == SongStatus.failed:
        lines.append(
            f"❌ This song could not be made: {song.error or 'the engine stopped'}. "
            "It did not count against your daily songs."
        )
    elif status == SongStatus.rerolled:
        lines.append("🎲 Rerolled: its vote was replaced by a new set of drafts (the reroll's own song).")
    elif status == SongStatus.done:
        lines.append(f"✅ Finished! {'Listen here: ' + snap.clip_url if snap.clip_url else ''}".rstrip())
    elif status == SongStatus.voting:
        where = f" in {snap.drafts_url}" if snap.drafts_url else " below"
        closes = f" until {ts(song.vote_closes_at)}" if song.vote_closes_at else ""
        lines.append(f"🗳️ The drafts are ready — vote for your favourite{where}{closes}.")
    elif snap.waiting_for_slot:
        lines.append(
            "⏳ Waiting for a free slot: this server has as many songs in the studio as it may at once."
        )
    elif job is None:
        lines.append("⏳ Getting ready…")
    elif job.cancel_requested and job.status == JobStatus.running:
        lines.append("🛑 Cancelling…")
    elif job.status == JobStatus.queued:
        if snap.winner_index is not None and job.kind == "upsample":
            lines.append(f"🏆 Draft {snap.winner_index + 1} won the vote.")
        if job.attempts and job.last_error:
            lines.append(f"↻ The last try failed ({job.last_error}); trying again {ts(job.run_at)}.")
        elif snap.position is not None:
            lines.append(f"⏳ In the queue: position **{snap.position}**.")
        else:
            lines.append("⏳ In the queue.")
    elif job.status == JobStatus.running:
        if snap.winner_index is not None and job.kind == "upsample":
            lines.append(f"🏆 Draft {snap.winner_index + 1} won the vote.")
        if snap.worker_quiet:
            # Not the last percent and ETA until the lease runs out: the worker is gone, and the
            # job resumes from its last saved window when another worker takes it.
            lines.append(
                "⏳ Waiting for a worker: the one making this song stopped answering. "
                "It will carry on from where it stopped."
            )
        else:
            lines.append(progress_line(job, now))
    elif job.status == JobStatus.succeeded:
        lines.append("📤 Finished rendering; posting it now…")
    return "\n".join(lines)


def is_final(song: Song) -> bool:
    return song.status in (SongStatus.done, SongStatus.failed, SongStatus.cancelled, SongStatus.rerolled)


def shows_cancel(snap: Snapshot) -> bool:
    """The cancel button is offered until the song is finished (also while it is voted on)."""
    if snap.song.status in (SongStatus.queued, SongStatus.drafting, SongStatus.voting, SongStatus.upsampling):
        return not (snap.job is not None and snap.job.cancel_requested)
    return False
