"""Run the publications that are due: the only place that talks to X and SoundCloud on a schedule.

`run_due_publications(db, storage, settings, notify)` is what the scheduler (and `jukebot publish run`)
calls. For each due row: claim it (committed), reconcile first if its last outcome was unclear, send
otherwise, then record the outcome. Every failure, retry or unclear outcome is told to the moderators
through `notify` (the bot passes a coroutine that posts to the mod channel; this package never imports
discord), with a link to the clip's Discord message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import httpx
from sqlmodel import select

from db.database import Database
from db.models import Clip, Publication, PublicationState, Song, User, utcnow
from db.settings import Settings
from db.storage import Storage
from publisher import state
from publisher.accounts import Account, account_for, not_allowed_text
from publisher.captions import CaptionInfo
from publisher.errors import Outcome, PublishError
from publisher.http import Sleep
from publisher.platforms import (
    LABELS,
    PLATFORMS,
    Platform,
    SoundCloudPlatform,
    make_platform,
    soundcloud_configured,
)
from publisher.playlists import PlaylistKeeper
from publisher.playlists import guilds_pending as playlist_guilds_pending
from publisher.render import RenderError
from publisher.soundcloud_client import SoundCloudClient
from publisher.tokens import SHARED

log = logging.getLogger(__name__)

Notify = Callable[[str], Awaitable[None]]
GuildNotify = Callable[[int | None, str], Awaitable[None]]  # (server, text): to that server's moderators

T = TypeVar("T")

AUTH_RECHECK = timedelta(hours=1)  # an unclear post we cannot look up (login broken): look again this late


class NotAllowed(Exception):
    """The clip's server may not publish to this platform (no own account, shared one not allowed)."""


class LeaseLost(Exception):
    """Another runner took the row over (our heartbeat stopped for longer than the lease)."""


def runner_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RunResult:
    publication_id: int
    clip_id: int
    platform: str
    state: str  # the row's state afterwards
    message: str
    remote_url: str | None = None


@dataclass(frozen=True)
class ClipContext:
    clip: Clip
    info: CaptionInfo
    link: str  # the clip's Discord message, or "clip #N" when it was never posted
    guild_id: int | None = None  # the server the clip was made in


def clip_link(clip: Clip, song: Song | None) -> str:
    if song is not None and song.guild_id and clip.channel_id and clip.message_id:
        return f"https://discord.com/channels/{song.guild_id}/{clip.channel_id}/{clip.message_id}"
    return f"clip #{clip.id}"


def load_clip_context(db: Database, clip_id: int, settings: Settings) -> ClipContext | None:
    with db.read() as s:
        clip = s.get(Clip, clip_id)
        if clip is None:
            return None
        song = s.get(Song, clip.song_id)
        user = s.get(User, song.user_id) if song is not None else None
    info = CaptionInfo(
        clip_id=clip_id,
        title=(song.title if song else "") or "",
        artist=song.artist if song else "",
        genre=song.genre if song else "",
        lyrics=song.lyrics if song else "",
        requester=user.name if user else "",
        model=song.model if song else "demo",
        channel_tag=settings.publish.channel_tag,
    )
    return ClipContext(
        clip=clip, info=info, link=clip_link(clip, song), guild_id=song.guild_id if song else None
    )


class Runner:
    def __init__(
        self,
        db: Database,
        storage: Storage,
        settings: Settings,
        notify: Notify,
        http: httpx.AsyncClient,
        *,
        sleep: Sleep = asyncio.sleep,
        skew: timedelta = timedelta(0),
        notify_guild: GuildNotify | None = None,
    ) -> None:
        self.db, self.storage, self.settings, self.notify = db, storage, settings, notify
        self.notify_guild = notify_guild
        self.http = http
        self.sleep = sleep
        self._platforms: dict[tuple[str, int], Platform] = {}
        self.playlists = PlaylistKeeper(
            db, settings, self._soundcloud_client, self.tell_guild, runner_owner()
        )
        self.skew = skew  # how far the run's clock is ahead of the lease clock (tests move it forward)
        self.now = utcnow() + skew  # the run's clock; never behind the real one
        self.owner = runner_owner()

    def clock(self) -> datetime:
        """The lease clock (the database's on PostgreSQL) plus this run's skew. Blocking."""
        return state.clock(self.db) + self.skew

    async def leased(self, held: state.Claim, work: Awaitable[T]) -> T:
        """Run `work` (an upload, a look-up) while renewing the lease; a lost lease cancels it."""
        task = asyncio.ensure_future(work)
        lease = self.settings.publish.lease_seconds

        def renew() -> bool:
            return state.heartbeat(self.db, held, self.clock(), lease)

        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.settings.publish.heartbeat_seconds)
                if task in done:
                    return task.result()
                if not await asyncio.to_thread(renew):
                    raise LeaseLost(f"publication {held.id}: lease {held.token} was taken over")
        finally:
            if not task.done():
                task.cancel()

    def platform(self, name: str, account: int = SHARED) -> Platform:
        """The platform posting with `account`'s login (SHARED: the operator's; else a server's)."""
        if (name, account) not in self._platforms:
            self._platforms[(name, account)] = make_platform(
                name, self.settings, self.db, self.storage, self.http, sleep=self.sleep, account=account
            )
        return self._platforms[(name, account)]

    def _soundcloud_client(self, account: int) -> SoundCloudClient:
        platform = self.platform("soundcloud", account)
        assert isinstance(platform, SoundCloudPlatform)
        return platform.client

    async def sync_playlist(self, guild_id: int | None) -> None:
        """Put the server's SoundCloud clips in its playlist; a failure is retried at the next sweep."""
        if guild_id is None or not soundcloud_configured(self.settings):
            return
        try:
            await self.playlists.sync(guild_id)
        except PublishError as exc:
            log.warning("server %s: SoundCloud playlist not updated yet: %s", guild_id, exc.message)
        except Exception:  # the upload itself is done and recorded; the sweep catches up
            log.exception("server %s: SoundCloud playlist not updated", guild_id)

    async def tell_guild(self, guild_id: int | None, message: str) -> None:
        """To the server's moderators when the caller can reach them, else the general notify."""
        try:
            if self.notify_guild is not None and guild_id is not None:
                await self.notify_guild(guild_id, message)
            else:
                await self.notify(message)
        except Exception:  # telling people must never break the bookkeeping
            log.exception("could not notify moderators: %s", message)

    async def tell(self, pub: Publication, ctx: ClipContext | None, text: str) -> None:
        label = LABELS.get(pub.platform, pub.platform)
        title = f" “{ctx.info.title}”" if ctx and ctx.info.title else ""
        link = ctx.link if ctx else f"clip #{pub.clip_id}"
        message = f"⚠️ {label} upload of clip #{pub.clip_id}{title}: {text} {link}"
        await self.tell_guild(ctx.guild_id if ctx else None, message)

    async def recover(self, now: datetime) -> None:
        recovered = await asyncio.to_thread(state.recover_interrupted, self.db, now)
        for pub in recovered:
            ctx = await asyncio.to_thread(load_clip_context, self.db, pub.clip_id, self.settings)
            await self.tell(pub, ctx, "was interrupted mid-way; checking the platform before any retry.")

    async def run_one(self, publication_id: int, now: datetime) -> RunResult | None:
        self.now = now
        held = await asyncio.to_thread(
            state.claim,
            self.db,
            publication_id,
            now,
            owner=self.owner,
            lease_seconds=self.settings.publish.lease_seconds,
        )
        if held is None:
            return None  # not due any more, or another runner has it
        try:
            return await self._run_claimed(held, publication_id)
        except LeaseLost as exc:
            log.warning("%s; leaving it to the new owner", exc)
            return None

    async def _run_claimed(self, held: state.Claim, publication_id: int) -> RunResult | None:
        pub = held.publication
        loaded = await asyncio.to_thread(load_clip_context, self.db, pub.clip_id, self.settings)
        if loaded is None:
            return await self._fail(held, None, "the clip no longer exists.")
        ctx = dataclasses.replace(loaded, info=dataclasses.replace(loaded.info, marker=held.marker or ""))
        if held.reconcile and held.marker is None:
            return await self._fail(
                held,
                ctx,
                "it may have been posted by a jukebot that did not mark its posts, so it cannot be told "
                "apart from other posts; look on the platform, and retry it only if it is not there.",
            )
        if pub.platform not in PLATFORMS:
            return await self._fail(held, ctx, f"jukebot does not publish to {pub.platform!r}.")
        # Look for an earlier attempt in the account it went to (rows from before accounts: the shared
        # one); send with the account the server publishes with now, if it still may.
        current = await asyncio.to_thread(account_for, self.db, self.settings, pub.platform, ctx.guild_id)
        sent_with = pub.account_guild_id if pub.account_guild_id is not None else SHARED
        try:
            platform = self.platform(
                pub.platform, sent_with if held.reconcile else self._send_account(current)
            )
        except PublishError as exc:
            return await self._fail(held, ctx, exc.message)
        except NotAllowed:
            return await self._fail(held, ctx, not_allowed_text(ctx.guild_id))
        caption = pub.caption
        if not caption:
            try:
                caption = platform.caption(ctx.info)
            except (KeyError, IndexError, ValueError) as exc:  # a custom template naming an unknown field
                return await self._fail(
                    held,
                    ctx,
                    f"the caption template does not work ({type(exc).__name__}: "
                    f"{exc}); fix JUKEBOT_CAPTION_TEMPLATES.",
                )
            await asyncio.to_thread(state.set_caption, self.db, held, caption)
        try:
            if held.reconcile:
                assert held.marker is not None
                found = await self.leased(held, platform.find(held.marker, since=pub.created_at))
                if found is not None:
                    await asyncio.to_thread(
                        state.finish_published, self.db, held, found.id, found.url, utcnow()
                    )
                    await self.tell(pub, ctx, f"had gone through after all: {found.url}")
                    if pub.platform == "soundcloud":
                        await self.sync_playlist(ctx.guild_id)
                    return self._result(held, PublicationState.published, "found on the platform", found.url)
                if pub.attempts >= pub.max_attempts:
                    return await self._fail(
                        held,
                        ctx,
                        f"not found on the platform after {pub.attempts} attempts; "
                        f"last problem: {pub.last_error}",
                    )
                if current is None:
                    return await self._fail(held, ctx, not_allowed_text(ctx.guild_id))
                renewed = await asyncio.to_thread(state.begin_send, self.db, held, utcnow())
                if renewed is None:
                    return None  # someone else took over
                held = renewed
                platform = self.platform(pub.platform, current.guild_id)
            assert current is not None
            if not await asyncio.to_thread(state.set_account, self.db, held, current.guild_id):
                return None  # taken over
            remote = await self.leased(held, platform.publish(ctx.clip, ctx.info, caption))
        except LeaseLost:
            raise
        except PublishError as exc:
            return await self._handle_error(held, ctx, exc)
        except RenderError as exc:
            return await self._fail(held, ctx, f"the clip could not be rendered: {exc}")
        except Exception as exc:  # a bug: we cannot tell whether the post went out, so look before retrying
            log.exception("publication %s failed unexpectedly", publication_id)
            unclear = PublishError(
                f"internal error ({type(exc).__name__}); it may or may not have been posted.", Outcome.unclear
            )
            return await self._handle_error(held, ctx, unclear)
        if not await asyncio.to_thread(
            state.finish_published, self.db, held, remote.id, remote.url, utcnow()
        ):
            log.warning("publication %s was taken over before it could be marked published", publication_id)
        elif pub.platform == "soundcloud":
            await self.sync_playlist(ctx.guild_id)
        return self._result(held, PublicationState.published, "published", remote.url)

    @staticmethod
    def _send_account(current: Account | None) -> int:
        if current is None:
            raise NotAllowed
        return current.guild_id

    async def _handle_error(self, held: state.Claim, ctx: ClipContext, exc: PublishError) -> RunResult:
        pub = held.publication
        now = max(self.now, utcnow())
        if exc.outcome is Outcome.unclear:
            check_at = now + timedelta(seconds=self.settings.publish.reconcile_seconds)
            await asyncio.to_thread(state.finish_unconfirmed, self.db, held, exc.message, check_at)
            await self.tell(
                pub,
                ctx,
                f"{exc.message} Not sure it was posted; checking at {check_at:%H:%M} UTC before any retry.",
            )
            return self._result(held, PublicationState.unconfirmed, exc.message)
        if held.reconcile:
            # The look-up itself failed: stay unconfirmed (never send blind), look again later.
            wait = (
                AUTH_RECHECK
                if exc.outcome is Outcome.auth
                else timedelta(seconds=self.settings.publish.reconcile_seconds)
            )
            await asyncio.to_thread(state.finish_unconfirmed, self.db, held, exc.message, now + wait)
            await self.tell(pub, ctx, f"could not check whether it was posted: {exc.message}")
            return self._result(held, PublicationState.unconfirmed, exc.message)
        if exc.outcome is Outcome.retry and pub.attempts < pub.max_attempts:
            at = exc.retry_at or now + state.backoff(pub.attempts, self.settings.publish.retry_seconds)
            await asyncio.to_thread(state.finish_retry, self.db, held, exc.message, at)
            await self.tell(
                pub,
                ctx,
                f"{exc.message} Trying again at {at:%H:%M} UTC "
                f"(attempt {pub.attempts} of {pub.max_attempts}).",
            )
            return self._result(held, PublicationState.scheduled, exc.message)
        if exc.outcome is Outcome.retry:
            return await self._fail(held, ctx, f"gave up after {pub.attempts} attempts: {exc.message}")
        return await self._fail(held, ctx, exc.message)

    async def _fail(self, held: state.Claim, ctx: ClipContext | None, message: str) -> RunResult:
        await asyncio.to_thread(state.finish_failed, self.db, held, message)
        await self.tell(held.publication, ctx, f"failed: {message}")
        return self._result(held, PublicationState.failed, message)

    @staticmethod
    def _result(held: state.Claim, st: PublicationState, message: str, url: str | None = None) -> RunResult:
        pub = held.publication
        return RunResult(
            publication_id=held.id,
            clip_id=pub.clip_id,
            platform=pub.platform,
            state=st.value,
            message=message,
            remote_url=url,
        )


async def run_due_publications(
    db: Database,
    storage: Storage,
    settings: Settings,
    notify: Notify,
    *,
    platforms: Iterable[str] | None = None,
    now: datetime | None = None,
    sleep: Sleep = asyncio.sleep,
    notify_guild: GuildNotify | None = None,
) -> list[RunResult]:
    """Publish everything due now (and reconcile what is unconfirmed); returns what happened to each row.

    Safe to call from several places at once: each row is claimed by exactly one caller.
    """
    lease_now = await asyncio.to_thread(state.clock, db)
    now = max(now or lease_now, lease_now)
    wanted = list(platforms) if platforms is not None else None
    timeout = httpx.Timeout(settings.publish.http_timeout, connect=min(10.0, settings.publish.http_timeout))
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
        runner = Runner(
            db, storage, settings, notify, http, sleep=sleep, skew=now - lease_now, notify_guild=notify_guild
        )
        await runner.recover(now)
        due = await asyncio.to_thread(state.due_publications, db, now, wanted)
        results = []
        for pub in due:
            assert pub.id is not None
            result = await runner.run_one(pub.id, now)
            if result is not None:
                results.append(result)
        if wanted is None or "soundcloud" in wanted:
            # Catch up: clips published before a crash or a failed playlist call, deleted playlists.
            for guild_id in await asyncio.to_thread(playlist_guilds_pending, db):
                await runner.sync_playlist(guild_id)
        return results


def publication_table(db: Database, limit: int = 50) -> list[tuple[Publication, str]]:
    """Recent publications with their clip's title, for `jukebot publish status` and the bot."""
    with db.read() as s:
        rows = s.execute(
            select(Publication, Song.title)
            .join(Clip, Clip.id == Publication.clip_id)  # type: ignore[arg-type]
            .join(Song, Song.id == Clip.song_id)  # type: ignore[arg-type]
            .order_by(Publication.id.desc())  # type: ignore[union-attr]
            .limit(limit)
        ).all()
    return [(p, t or "") for p, t in rows]
