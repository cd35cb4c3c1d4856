"""The sections of the settings, one idea each, and the validated types their choices use.

Every field is also known by its flat name, the one the settings had when they were a single class:
`JUKEBOT_<FLAT NAME>` is its environment variable and `Settings(<flat name>=...)` still sets it. A
section's flat name is its `prefix` plus the field name, except for the fields listed in `unprefixed`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

VideoStyle = Literal["waves", "spectrum"]
AudioFormat = Literal["flac", "mp3", "opus", "wav"]
Sharing = Literal["public", "private"]

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class VideoSize(NamedTuple):
    width: int
    height: int

    def __str__(self) -> str:  # the form it is written in (and the one render keys use)
        return f"{self.width}x{self.height}"


def _parse_size(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # a (width, height) pair from Python
    m = _SIZE.match(value)
    if not m or int(m[1]) <= 0 or int(m[2]) <= 0:
        raise ValueError(f"must look like 1280x720 (WIDTHxHEIGHT in pixels), not {value!r}")
    return VideoSize(int(m[1]), int(m[2]))


def _check_device(value: Any) -> Any:
    if isinstance(value, str) and not _DEVICE.match(value.strip()):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N (e.g. cuda:1), not {value!r}")
    return value.strip() if isinstance(value, str) else value


VideoSizeText = Annotated[VideoSize, BeforeValidator(_parse_size)]
Device = Annotated[str, BeforeValidator(_check_device)]


class Section(BaseModel):
    """A group of settings; `flat_names()` maps each field to its old flat name."""

    model_config = ConfigDict(
        extra="forbid", validate_default=True, protected_namespaces=(), hide_input_in_errors=True
    )

    prefix: ClassVar[str] = ""
    unprefixed: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def flat_name(cls, field: str) -> str:
        return field if field in cls.unprefixed else cls.prefix + field

    @classmethod
    def flat_names(cls) -> dict[str, str]:
        return {cls.flat_name(field): field for field in cls.model_fields}


class StorageSettings(Section):
    """Where processes meet: the database and the storage."""

    database_url: str = "sqlite:///./data/jukebot.db"
    storage_url: str = "./data"


class EngineSettings(Section):
    """Which Jukebox model runs where, and where its weights come from."""

    model: str = "demo"  # demo | 1b_lyrics | 5b_lyrics | 5b | path to a custom model folder
    device: Device = "auto"
    model_cache_dir: Path = Path("~/.cache/jukebot/models").expanduser()
    model_mirrors: list[str] = Field(
        default_factory=lambda: [
            "https://openaipublic.azureedge.net/",
            "https://openaipublic.blob.core.windows.net/",
        ]
    )
    model_url: str | None = None  # a user-given mirror (URL or local folder), tried first
    # Upsample levels 1 and 0 interleaved (engine.sampling.pipeline.upsample): the same codes. Off
    # until a GPU measures it faster than one level after the other (bench/song_e2e.py).
    interleave_levels: bool = False


class QueueSettings(Section):
    """How workers lease, renew and retry jobs."""

    lease_seconds: float = 300.0
    heartbeat_seconds: float = 30.0
    poll_seconds: float = 2.0
    max_attempts: int = 3
    max_reclaims: int = 10


class DiscordSettings(Section):
    """The bot's connection to Discord and how often it talks to it."""

    prefix = "discord_"
    unprefixed = frozenset(
        {
            "start_worker",
            "bot_watch_seconds",
            "status_edit_seconds",
            "request_rate_count",
            "request_rate_seconds",
            "post_retry_seconds",
            "post_max_attempts",
            "same_press_seconds",
        }
    )

    token: SecretStr | None = None
    api_base: str | None = None  # e.g. a local fake Discord in tests
    gateway_url: str | None = None
    guild_id: int | None = None  # sync commands to this guild instantly
    start_worker: bool = True  # `jukebot bot` on SQLite also starts a worker child process
    bot_watch_seconds: float = 2.0  # how often the bot looks at the jobs table
    status_edit_seconds: float = 3.0  # at most one progress edit per song this often
    request_rate_count: int = 3  # requests (generate/continue) a member may make ...
    request_rate_seconds: float = 60.0  # ... within this many seconds
    post_retry_seconds: float = 30.0  # a drafts or clip post no channel took is tried again after this ...
    post_max_attempts: int = 5  # ... this many times in all, then the song ends and the moderators are told
    same_press_seconds: float = (
        10.0  # a member's second press of one Continue button this soon: the same song
    )


class LimitsSettings(Section):
    """What one request may ask for and how many songs a member or server may have."""

    max_seconds: float = 60.0
    min_seconds: float = 1.0
    default_seconds: float = 10.0
    max_drafts: int = 4
    default_drafts: int = 3
    max_lyrics_chars: int = 4000
    max_upload_bytes: int = 50 * 1024 * 1024
    max_prime_seconds: float = 30.0
    songs_per_day: int = 10
    max_queued_per_member: int = 2
    max_running_per_guild: int = 4


class ScheduleSettings(Section):
    """The server's day: when votes close and the daily song is picked (per-server overridable)."""

    vote_window_minutes: float = 30.0
    daily_time: str = "18:00"
    timezone: str = "UTC"


class LyricsSettings(Section):
    """The text model (any OpenAI-compatible server) that writes and checks lyrics."""

    prefix = "lyrics_"
    unprefixed = frozenset({"openai_api_key", "openai_base_url", "moderation"})

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    model: str | None = None
    moderation: bool = False
    blocklist: list[str] = Field(default_factory=list)
    timeout: float = 90.0  # seconds one request to the text model may take (streaming included)
    attempts: int = 3  # tries per draft (timeouts, 429, 5xx, unusable replies)
    max_retry_after: float = 30.0  # longest Retry-After we wait; longer means "busy, try later"
    drafts_per_member_hour: int = 6  # drafts (text-model calls) one member may ask for per hour
    drafts_per_guild_day: int = 60  # ... and one server per day (0: no limit)


class XSettings(Section):
    """Posting to X: the API, the app's credentials and the video we render."""

    prefix = "x_"

    api_base: str = "https://api.x.com"
    consumer_key: SecretStr | None = None
    consumer_secret: SecretStr | None = None
    access_token: SecretStr | None = None
    access_token_secret: SecretStr | None = None
    client_id: SecretStr | None = None  # OAuth 2.0 user context (alternative to 1.0a)
    client_secret: SecretStr | None = None  # OAuth 2.0 confidential client (bots get one)
    authorize_url: str = "https://x.com/i/oauth2/authorize"
    upload_chunk_bytes: int = 4 * 1024 * 1024
    video_size: VideoSizeText = VideoSize(1280, 720)
    video_style: VideoStyle = "waves"


class SoundCloudSettings(Section):
    """Uploading to SoundCloud: the API, the app's credentials and the audio we send."""

    prefix = "soundcloud_"

    api_base: str = "https://api.soundcloud.com"
    auth_base: str = "https://secure.soundcloud.com"
    client_id: SecretStr | None = None
    client_secret: SecretStr | None = None
    sharing: Sharing = "public"
    format: AudioFormat = "flac"  # flac is lossless; SoundCloud transcodes anyway


class PublishSettings(Section):
    """When and how clips are published, retried and captioned, on every platform."""

    prefix = "publish_"
    unprefixed = frozenset({"channel_tag", "caption_templates", "oauth_redirect_uri", "token_key"})

    times: dict[str, str] = Field(default_factory=lambda: {"x": "19:00", "soundcloud": "19:30"})
    channel_tag: str = "#jukebot"
    caption_templates: dict[str, str] = Field(default_factory=dict)  # see publisher/captions.py
    oauth_redirect_uri: str = "http://127.0.0.1:8976/callback"  # registered with X and SoundCloud apps
    max_attempts: int = 3
    retry_seconds: float = 120.0  # first retry after a clear failure; x4 each time, capped at 1 h
    reconcile_seconds: float = 60.0  # after an unclear outcome, look on the platform this much later
    lease_seconds: float = 300.0  # a sending runner's lease; it expires only if its heartbeat stops
    heartbeat_seconds: float = 30.0  # how often a sending runner renews its lease
    http_timeout: float = 60.0
    rate_limit_wait: float = 60.0  # wait for a rate-limit reset up to this long, else reschedule
    featured_days: int = 2  # the scheduled fire picks up featured clips of the last N days
    # The servers whose moderators may publish to the operator's X/SoundCloud account (Publish button,
    # daily clip's uploads), as a JSON list of guild ids; empty: publishing from nowhere (the owner can
    # also allow a server with /owner publish allow).
    guilds: list[int] = Field(default_factory=list)
    # Moderate captions (the moderation endpoint and the blocklist) before scheduling an upload; unset:
    # on when more than one server shares the account (a member of one server writes on the others' page).
    caption_moderation: bool | None = None
    # Fernet key for the X/SoundCloud logins stored in the database (db/secrets.py); unset: one is
    # generated beside the data. Set it when processes on several machines share PostgreSQL.
    token_key: SecretStr | None = None
