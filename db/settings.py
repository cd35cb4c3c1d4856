"""Settings for every jukebot process, read from the environment (prefix JUKEBOT_) and an optional .env.

Secrets are SecretStr so they never show up in logs or reprs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JUKEBOT_", env_file=".env", extra="ignore")

    # Where processes meet: the database and the storage.
    database_url: str = "sqlite:///./data/jukebot.db"
    storage_url: str = "./data"

    # Engine
    model: str = "demo"  # demo | 1b_lyrics | 5b_lyrics | 5b | path to a custom model folder
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    model_cache_dir: Path = Path("~/.cache/jukebot/models").expanduser()
    model_mirrors: list[str] = Field(
        default_factory=lambda: [
            "https://openaipublic.azureedge.net/",
            "https://openaipublic.blob.core.windows.net/",
        ]
    )
    model_url: str | None = None  # a user-given mirror (URL or local folder), tried first

    # Queue
    lease_seconds: float = 300.0
    heartbeat_seconds: float = 30.0
    poll_seconds: float = 2.0
    max_attempts: int = 3
    max_reclaims: int = 10

    # Discord
    discord_token: SecretStr | None = None
    discord_api_base: str | None = None  # e.g. a local fake Discord in tests
    discord_gateway_url: str | None = None
    discord_guild_id: int | None = None  # sync commands to this guild instantly
    start_worker: bool = True  # `jukebot bot` on SQLite also starts a worker child process
    bot_watch_seconds: float = 2.0  # how often the bot looks at the jobs table
    status_edit_seconds: float = 3.0  # at most one progress edit per song this often
    post_retry_seconds: float = 30.0  # a drafts or clip post no channel took is tried again after this ...
    post_max_attempts: int = 5  # ... this many times in all, then the song ends and the moderators are told
    request_rate_count: int = 3  # requests (generate/continue) a member may make ...
    request_rate_seconds: float = 60.0  # ... within this many seconds
    same_press_seconds: float = (
        10.0  # a member's second press of one Continue button this soon: the same song
    )

    # Limits
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
    vote_window_minutes: float = 30.0
    daily_time: str = "18:00"
    timezone: str = "UTC"

    # Lyrics (any OpenAI-compatible server)
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    lyrics_model: str | None = None
    moderation: bool = False
    lyrics_blocklist: list[str] = Field(default_factory=list)
    lyrics_timeout: float = 90.0  # seconds one request to the text model may take (streaming included)
    lyrics_attempts: int = 3  # tries per draft (timeouts, 429, 5xx, unusable replies)
    lyrics_max_retry_after: float = 30.0  # longest Retry-After we wait; longer means "busy, try later"
    lyrics_drafts_per_member_hour: int = 6  # drafts (text-model calls) one member may ask for per hour
    lyrics_drafts_per_guild_day: int = 60  # ... and one server per day (0: no limit)

    # Publishing
    x_api_base: str = "https://api.x.com"
    x_consumer_key: SecretStr | None = None
    x_consumer_secret: SecretStr | None = None
    x_access_token: SecretStr | None = None
    x_access_token_secret: SecretStr | None = None
    x_client_id: SecretStr | None = None  # OAuth 2.0 user context (alternative to 1.0a)
    soundcloud_api_base: str = "https://api.soundcloud.com"
    soundcloud_auth_base: str = "https://secure.soundcloud.com"
    soundcloud_client_id: SecretStr | None = None
    soundcloud_client_secret: SecretStr | None = None
    # The servers whose moderators may publish to the operator's X/SoundCloud account (Publish button,
    # daily clip's uploads), as a JSON list of guild ids; empty: publishing from nowhere.
    publish_guilds: list[int] = Field(default_factory=list)
    # Moderate captions (the moderation endpoint and the blocklist) before scheduling an upload; unset:
    # on when more than one server shares the account (a member of one server writes on the others' page).
    publish_caption_moderation: bool | None = None
    publish_times: dict[str, str] = Field(default_factory=lambda: {"x": "19:00", "soundcloud": "19:30"})
    channel_tag: str = "#jukebot"
    x_client_secret: SecretStr | None = None  # OAuth 2.0 confidential client (bots get one)
    x_authorize_url: str = "https://x.com/i/oauth2/authorize"
    oauth_redirect_uri: str = "http://127.0.0.1:8976/callback"  # registered with X and SoundCloud apps
    x_upload_chunk_bytes: int = 4 * 1024 * 1024
    x_video_size: str = "1280x720"
    x_video_style: str = "waves"  # waves | spectrum
    soundcloud_sharing: str = "public"  # public | private
    soundcloud_format: str = "flac"  # flac (lossless, SoundCloud transcodes anyway) | mp3 | opus | wav
    caption_templates: dict[str, str] = Field(default_factory=dict)  # see publisher/captions.py
    publish_max_attempts: int = 3
    publish_retry_seconds: float = 120.0  # first retry after a clear failure; x4 each time, capped at 1 h
    publish_reconcile_seconds: float = 60.0  # after an unclear outcome, look on the platform this much later
    publish_lease_seconds: float = 300.0  # a sending runner's lease; it expires only if its heartbeat stops
    publish_heartbeat_seconds: float = 30.0  # how often a sending runner renews its lease
    publish_http_timeout: float = 60.0
    publish_rate_limit_wait: float = 60.0  # wait for a rate-limit reset up to this long, else reschedule
    publish_featured_days: int = 2  # the scheduled fire picks up featured clips of the last N days
    # Fernet key for the X/SoundCloud logins stored in the database (db/secrets.py); unset: one is
    # generated beside the data. Set it when processes on several machines share PostgreSQL.
    token_key: SecretStr | None = None


@lru_cache
def get_settings() -> Settings:
    return Settings()
