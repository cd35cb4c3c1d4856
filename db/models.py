"""The tables. A job row is the contract between the bot and the GPU workers.

Times are timezone-aware UTC. Enum-like columns are plain strings (portable across SQLite and
PostgreSQL, and readable in a SQL shell); the allowed values live in the StrEnums below.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Dialect, Index, UniqueConstraint, text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """DateTime(timezone=True) that always hands back aware UTC datetimes.

    SQLite has no time zone type: SQLAlchemy stores the wall time and returns a naive datetime, so
    `row.run_at < utcnow()` would raise on SQLite only. This stores UTC on both dialects and returns
    aware UTC on both, so the same code and the same string comparisons work everywhere.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # naive means UTC in this code base
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = True, **kw: Any) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, **kw))


def _created() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


def _json() -> Any:
    return Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class SongStatus(StrEnum):
    queued = "queued"
    drafting = "drafting"
    voting = "voting"
    upsampling = "upsampling"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
    rerolled = (
        "rerolled"  # its vote was replaced by a reroll's drafts (the song that has it as rerolled_from)
    )


class JobKind(StrEnum):
    draft = "draft"
    upsample = "upsample"
    continue_ = "continue"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"  # retries exhausted or a permanent error
    cancelled = "cancelled"


class PublicationState(StrEnum):
    scheduled = "scheduled"
    publishing = "publishing"
    published = "published"
    failed = "failed"
    unconfirmed = "unconfirmed"


class User(SQLModel, table=True):
    __tablename__ = "users"
    id: int | None = Field(default=None, primary_key=True)
    discord_id: int = Field(sa_column=Column(BigInteger, unique=True, nullable=False))
    name: str = ""
    created_at: datetime = _created()


class GuildConfig(SQLModel, table=True):
    """Per-guild settings a moderator can change from Discord."""

    __tablename__ = "guild_configs"
    guild_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    drafts_channel_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    clips_channel_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    daily_channel_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    mod_channel_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    moderator_role_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    songs_per_day: int | None = None
    max_running: int | None = None
    vote_window_minutes: float | None = None
    daily_time: str | None = None
    timezone: str | None = None
    daily_allow_unvoted: bool | None = None  # may a clip nobody voted for be the daily clip
    publish_allowed: bool | None = None  # the bot owner's word (/owner publish); None: JUKEBOT_PUBLISH_GUILDS


class Song(SQLModel, table=True):
    """One request: what to sing, and where it stands."""

    __tablename__ = "songs"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    guild_id: int | None = Field(default=None, sa_column=Column(BigInteger, index=True))
    channel_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    status_message_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    # the level-1 preview posted while level 0 renders (null: none, or replaced by the clip)
    preview_message_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    status: str = Field(default=SongStatus.queued, index=True)
    title: str = ""
    model: str = "demo"
    artist: str
    genre: str
    lyrics: str = ""
    seconds: float
    seed: int
    n_drafts: int = 3
    temperature: float = 0.0  # the drafts' sampling temperature; 0: not chosen, the model's recommendation
    parent_clip_id: int | None = None  # continuation of this clip (no FK: songs and clips refer both ways)
    prime_key: str | None = None  # storage key of an uploaded prime audio file
    prime_seconds: float | None = None
    # Where the new music starts, in seconds of the parent clip (the song keeps the clip up to it)
    # or of the uploaded file (the stored part ends there; the worker primes on the stored part).
    # None: from the clip's end.
    prime_at: float | None = None
    # A reroll: the same recipe as this song with a new seed (its drafts replace that song's vote).
    rerolled_from_song_id: int | None = Field(default=None, index=True)
    vote_closes_at: datetime | None = _ts()
    winner_draft_id: int | None = None
    error: str | None = None
    # The request's idempotency key (its interaction, or its button press): a retried or doubled
    # request finds the song it already made.
    request_key: str | None = Field(default=None, unique=True)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class Job(SQLModel, table=True):
    """The queue. Claimed with a lease; every write by a worker is fenced by lease_token."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "kind", "status", "run_at"),
        UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
    )
    id: int | None = Field(default=None, primary_key=True)
    kind: str
    song_id: int | None = Field(default=None, foreign_key="songs.id", index=True)
    payload: dict[str, Any] = _json()
    status: str = Field(default=JobStatus.queued)
    priority: int = 0
    run_at: datetime = _created()
    attempts: int = 0
    max_attempts: int = 3
    reclaims: int = 0
    max_reclaims: int = 10
    lease_owner: str | None = None
    lease_token: int = 0  # the fencing token: incremented on every claim
    lease_expires_at: datetime | None = _ts()
    heartbeat_at: datetime | None = _ts()
    cancel_requested: bool = False
    progress: dict[str, Any] = _json()
    checkpoint_key: str | None = None
    result: dict[str, Any] = _json()
    last_error: str | None = None
    idempotency_key: str | None = None
    created_at: datetime = _created()
    updated_at: datetime = _created()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()


class Draft(SQLModel, table=True):
    __tablename__ = "drafts"
    __table_args__ = (UniqueConstraint("song_id", "index", name="uq_drafts_song_index"),)
    id: int | None = Field(default=None, primary_key=True)
    song_id: int = Field(foreign_key="songs.id", index=True)
    index: int
    audio_key: str  # level-2 preview (wav)
    codes_key: str  # level-2 codes (.npy)
    waveform_key: str | None = None
    seconds: float = 0.0
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    created_at: datetime = _created()


class Clip(SQLModel, table=True):
    """A finished, upsampled draft of a song: the vote's winner, and any draft chosen again after it."""

    __tablename__ = "clips"
    __table_args__ = (UniqueConstraint("song_id", "draft_id", name="uq_clips_song_draft"),)
    id: int | None = Field(default=None, primary_key=True)
    song_id: int = Field(foreign_key="songs.id", index=True)
    draft_id: int | None = Field(
        default=None, foreign_key="drafts.id"
    )  # None only for clips made before 0008
    audio_key: str  # level-0 wav
    mp3_key: str | None = None
    codes_key: str  # all three levels (.npz), for continuation
    waveform_key: str | None = None
    lrc_key: str | None = None  # timed lyrics (LRC) of a lyric model's clip
    alignment_key: str | None = None  # alignment.json: each sung character's time
    seconds: float = 0.0
    channel_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    created_at: datetime = _created()


class DailyClip(SQLModel, table=True):
    """A server's clip of the day: one per server and day, and a clip is featured once."""

    __tablename__ = "daily_clips"
    guild_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    day: str = Field(primary_key=True)  # YYYY-MM-DD in the server's time zone
    clip_id: int = Field(foreign_key="clips.id", unique=True)
    created_at: datetime = _created()


DRAFT_VOTE = text("stage = 'draft'")
CLIP_VOTE = text("stage = 'clip'")


class Vote(SQLModel, table=True):
    """A member's vote: for one of a song's drafts (stage 'draft': one per member per song; changing
    it updates the row), or for one clip (stage 'clip': one per member per clip; a song may have
    several clips, each with its own votes)."""

    __tablename__ = "votes"
    __table_args__ = (
        Index(
            "uq_votes_member_song_draft",
            "song_id",
            "user_id",
            unique=True,
            sqlite_where=DRAFT_VOTE,
            postgresql_where=DRAFT_VOTE,
        ),
        Index(
            "uq_votes_member_clip",
            "clip_id",
            "user_id",
            unique=True,
            sqlite_where=CLIP_VOTE,
            postgresql_where=CLIP_VOTE,
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    song_id: int = Field(foreign_key="songs.id", index=True)
    user_id: int = Field(foreign_key="users.id")
    stage: str = "draft"
    draft_id: int | None = Field(default=None, foreign_key="drafts.id")
    clip_id: int | None = Field(default=None, foreign_key="clips.id", index=True)  # stage 'clip' only
    created_at: datetime = _created()
    updated_at: datetime = _created()


class Publication(SQLModel, table=True):
    """One upload of one clip to one platform. Never sent twice: see publisher/state.py."""

    __tablename__ = "publications"
    __table_args__ = (UniqueConstraint("clip_id", "platform", name="uq_publications_clip_platform"),)
    id: int | None = Field(default=None, primary_key=True)
    clip_id: int = Field(foreign_key="clips.id", index=True)
    platform: str  # discord | x | soundcloud
    state: str = Field(default=PublicationState.scheduled, index=True)
    scheduled_for: datetime = _created()
    attempts: int = 0
    max_attempts: int = 3
    caption: str = ""
    remote_id: str | None = None
    remote_url: str | None = None
    last_error: str | None = None
    created_at: datetime = _created()
    updated_at: datetime = _created()
    started_at: datetime | None = _ts()
    published_at: datetime | None = _ts()
    # A unique tag sent with the post (caption, description): the only thing reconciliation matches.
    marker: str | None = Field(default=None, unique=True, index=True)
    # The lease of the runner sending it (as on jobs): renewed by its heartbeat; the token fences writes.
    lease_token: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = _ts()
    # Whose login sent it (oauth_tokens.guild_id: 0 the operator's shared account, else the server's
    # own), fixed on the first send so a later look-up searches the account it went to.
    account_guild_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    # SoundCloud: the server's playlist this track was added to (publisher/playlists.py).
    playlist_id: str | None = None


class OAuthToken(SQLModel, table=True):
    """A platform login (SoundCloud; X over OAuth 2.0), one row per provider and account: guild_id 0
    is the operator's shared account, another id a server's own (publisher/accounts.py). Refresh
    tokens are single use there, so the row is replaced after every refresh before the access token
    is used: see publisher/tokens.py."""

    __tablename__ = "oauth_tokens"
    provider: str = Field(primary_key=True)  # soundcloud | x
    guild_id: int = Field(
        default=0, sa_column=Column(BigInteger, primary_key=True, autoincrement=False, server_default="0")
    )
    access_token: str
    refresh_token: str | None = None
    token_type: str = "bearer"
    scope: str = ""
    account: str | None = None  # the platform's name for the logged-in account, for display
    expires_at: datetime | None = _ts()
    created_at: datetime = _created()
    updated_at: datetime = _created()


class SoundCloudPlaylist(SQLModel, table=True):
    """A server's SoundCloud playlist (a "set"): every clip it publishes there is added once. Created
    on first use, in the account the server publishes with; work on it is leased, one runner at a time."""

    __tablename__ = "soundcloud_playlists"
    guild_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    account_guild_id: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    playlist_id: str | None = None  # None: not created yet (or deleted on SoundCloud, to be made again)
    url: str | None = None
    title: str | None = None  # the moderators' title; None: "<server name> - jukebot"
    guild_name: str = ""  # for the default title
    lease_owner: str | None = None
    lease_expires_at: datetime | None = _ts()
    created_at: datetime = _created()
    updated_at: datetime = _created()


ALL_TABLES = [
    User,
    GuildConfig,
    Song,
    Job,
    Draft,
    Clip,
    DailyClip,
    Vote,
    Publication,
    OAuthToken,
    SoundCloudPlaylist,
]
