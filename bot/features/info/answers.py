"""The answers of `/queue`, `/song id`, `/top [period]`, `/me` and `/help`: database reads and
their text (synchronous: the cog runs them in threads)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from bot.config import guild_settings
from bot.core.text import describe, message_url, ts
from bot.errors import UserError
from bot.features.recipes import recipe_for, recipe_text
from bot.features.requests.logic import ACTIVE_JOB, song_counts_for
from db import lifecycle, queue, repo
from db.database import Database
from db.models import Job, JobStatus, Song, User, utcnow
from db.scope import GuildScope
from db.settings import Settings

from .family import family_text, top_families_text

PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30), "all": None}
STATUS_WORDS = {
    "queued": "⏳ waiting",
    "drafting": "🎛️ drafting",
    "voting": "🗳️ voting",
    "upsampling": "⬆️ upsampling",
    "done": "✅ done",
    "failed": "❌ failed",
    "cancelled": "🛑 cancelled",
    "rerolled": "🎲 rerolled",
}


@dataclass(frozen=True)
class QueueLine:
    job: Job
    song: Song
    requester: int
    position: int | None


def queue_lines(db: Database, guild_id: int | None, limit: int = 15) -> tuple[list[QueueLine], int]:
    with db.read() as s:
        rows = s.execute(
            select(Job, Song, col(User.discord_id))
            .join(Song, col(Song.id) == col(Job.song_id))
            .join(User, col(User.id) == col(Song.user_id))
            .where(col(Job.status).in_(ACTIVE_JOB), col(Song.guild_id) == guild_id)
            .order_by(col(Job.status).desc(), col(Job.priority).desc(), col(Job.run_at), col(Job.id))
        ).all()
        waiting = s.execute(
            select(col(Song.id)).where(
                col(Song.guild_id) == guild_id,
                col(Song.status) == "queued",
                ~select(col(Job.id)).where(col(Job.song_id) == col(Song.id)).exists(),
            )
        ).all()
    lines = [
        QueueLine(job, song, int(did), queue.queue_position(db, job.id or 0))
        for job, song, did in rows[:limit]
    ]
    return lines, len(waiting)


def render_queue(lines: list[QueueLine], waiting: int) -> str:
    if not lines and not waiting:
        return "The studio is quiet: no songs are being made right now. Start one with `/generate`."
    out = ["**The studio right now**"]
    for ln in lines:
        p = ln.job.progress or {}
        if ln.job.status == JobStatus.running:
            pct = p.get("percent")
            doing = f"{ln.job.kind} {float(pct):.0f}%" if pct is not None else f"{ln.job.kind}, started"
        else:
            doing = f"{ln.job.kind}, position {ln.position}" if ln.position else f"{ln.job.kind}, queued"
        out.append(
            f"• Song #{ln.song.id} ({ln.song.artist} · {ln.song.genre}) for <@{ln.requester}> — {doing} "
            f"(job #{ln.job.id})"
        )
    if waiting:
        out.append(f"…and {waiting} song(s) waiting for a free slot in this server.")
    return "\n".join(out)


@dataclass(frozen=True)
class SongAnswer:
    text: str  # where the song stands
    recipe: str  # how it was made
    family: str | None  # where it comes from and what came from it (None: no relatives)


def song_answer(db: Database, scope: GuildScope, song_id: int) -> SongAnswer:
    """`/song id:`: its details, its recipe card and its family tree (UserError: not here)."""
    text = song_details(db, scope, song_id)
    song = repo.song_by_id(db, song_id)  # found in this server by song_details
    assert song is not None
    return SongAnswer(text, recipe_text(recipe_for(db, song)), family_text(db, scope, song_id))


def song_details(db: Database, scope: GuildScope, song_id: int) -> str:
    with db.read() as s:
        song = scope.song(s, song_id)
        if song is None:
            raise UserError(f"There is no song #{song_id} here.")
        user = s.get(User, song.user_id)
        clip = repo.first_clip(s, song_id)
        job = lifecycle.latest_job(s, song_id)
    drafts = repo.drafts_for_song(db, song_id)
    counts = repo.vote_counts(db, song_id, repo.DRAFT)
    lines = [
        f"**Song #{song.id}** — {describe(song)}",
        f"Asked by <@{user.discord_id if user else 0}> {ts(song.created_at)} · "
        f"{STATUS_WORDS.get(song.status, song.status)}",
    ]
    if song.lyrics:
        excerpt = song.lyrics.strip().replace("\n", " / ")
        lines.append(f"Lyrics: “{excerpt[:200]}{'…' if len(excerpt) > 200 else ''}”")
    if drafts:
        votes = ", ".join(f"draft {d.index + 1}: {counts.get(d.id, 0)}" for d in drafts)
        lines.append(f"Votes — {votes}")
    if song.winner_draft_id:
        win = next((d for d in drafts if d.id == song.winner_draft_id), None)
        if win is not None:
            lines.append(f"🏆 Winner: draft {win.index + 1}")
    if song.status == "voting" and song.vote_closes_at:
        lines.append(f"Voting closes {ts(song.vote_closes_at)}")
    if job is not None and job.status in ACTIVE_JOB:
        lines.append(f"Job #{job.id}: {job.kind}, {job.status}")
    if song.error:
        lines.append(f"Problem: {song.error}")
    if clip is not None:
        where = (
            f" — {message_url(song.guild_id, clip.channel_id, clip.message_id)}"
            if clip.message_id and clip.channel_id
            else ""
        )
        lines.append(f"Clip #{clip.id}{where}")
    return "\n".join(lines)


def top_text(
    db: Database, guild_id: int | None, period: str, now: datetime | None = None, by: str = "clip"
) -> str:
    now = now or utcnow()
    span = PERIODS[period]
    since = now - span if span is not None else datetime(2000, 1, 1, tzinfo=now.tzinfo)
    if by == "family":
        title = {"day": "today", "week": "this week", "month": "this month", "all": "of all time"}[period]
        return top_families_text(db, guild_id, since, title)
    found = repo.top_clips(db, since, None, limit=10, guild_id=guild_id)
    if not found:
        return f"No clips yet in this {period if period != 'all' else 'server'}. Make one with `/generate`!"
    title = {"day": "today", "week": "this week", "month": "this month", "all": "of all time"}[period]
    out = [f"**Top clips {title}**"]
    with db.read() as s:
        for rank, (clip, votes) in enumerate(found, 1):
            song = s.get(Song, clip.song_id)
            if song is None:
                continue
            link = (
                f" — {message_url(song.guild_id, clip.channel_id, clip.message_id)}"
                if clip.message_id and clip.channel_id
                else ""
            )
            out.append(
                f"{rank}. Clip #{clip.id} · {song.artist} · {song.genre} — {votes} vote{'s' if votes != 1 else ''}{link}"
            )
    return "\n".join(out)


def me_text(db: Database, settings: Settings, discord_id: int, guild_id: int | None) -> str:
    with db.read() as s:
        user = s.execute(select(User).where(col(User.discord_id) == discord_id)).scalar_one_or_none()
    gs = guild_settings(db, settings, guild_id) if guild_id is not None else None
    per_day = gs.songs_per_day if gs else settings.limits.songs_per_day
    if user is None or user.id is None:
        return (
            f"You have not made a song yet. You can make {per_day} a day and have "
            f"{settings.limits.max_queued_per_member} in the studio at once. Try `/generate`!"
        )
    day, flying = song_counts_for(db, user.id)
    with db.read() as s:
        recent = (
            s.execute(
                select(Song).where(col(Song.user_id) == user.id).order_by(col(Song.id).desc()).limit(10)
            )
            .scalars()
            .all()
        )
    out = [
        "**Your studio card**",
        f"Songs in the last 24 hours: **{day} of {per_day}** · in the studio now: **{flying} of "
        f"{settings.limits.max_queued_per_member}**",
    ]
    if recent:
        out.append("Your latest songs:")
        for song in recent:
            out.append(
                f"• #{song.id} {song.artist} · {song.genre} — {STATUS_WORDS.get(song.status, song.status)} "
                f"{ts(song.created_at)}"
            )
    return "\n".join(out)


HELP = """**jukebot** makes songs with OpenAI's Jukebox model, and the server votes on them.

• `/generate artist genre` — start a song. Start typing the artist or genre to pick from the model's list. Add `lyrics:` with your own words or `lyrics_prompt:` to have lyrics written (you check them first), `seconds:` and `drafts:`.
• One status message follows your song: queue position, progress, time left. Cancel it there.
• The drafts are posted for everyone to vote on; the winner is made in full quality and posted as a clip.
• On the drafts, the requester or a moderator can press 🎲 **Reroll** for a new set with a new seed (the old drafts stay up for the vote until it is ready), and after the vote **U1**, **U2**… to make another draft in full quality too (a second clip, each draft once). Both count as one of your songs of the day.
• While the winner is made, a 🎧 **Listen early** preview (lower quality) is posted under the status message, then replaced by the clip. A clip with lyrics comes with timed lyrics (`.lrc`, captions in the X video).
• On a clip: **Continue** makes it longer, *from the end* or *from a moment* you type (the clip is kept up to it); **Vote** puts it up for the daily clip; **Remix** opens its recipe to change one thing and make it again (same recipe and seed, same drafts). Or right-click a clip → Apps → *Continue this clip*, or `/continue clip:` (`at:0:42`: the new music starts at 0:42) or `audio:` with your own file (`at:`: the part just before it is used).
• `/queue` what is being made · `/song id` one song: its recipe and its family (what it comes from, what came from it) · `/top` the best clips (`by:family` ranks a song with everything made from it) · `/me` your songs and quota.
• Moderators: `/mod channels`, `/mod role`, `/mod limits`, `/mod daily-time`, `/mod cancel`, `/mod retry`, `/mod playlist` (the SoundCloud playlist: link, or `title:` to rename).

Clips made with OpenAI's released Jukebox weights are for non-commercial use."""
