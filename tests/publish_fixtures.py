"""Helpers shared by the publisher tests: test audio, clips in the database, fake servers, settings."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field

import numpy as np
from pydantic import SecretStr

from db import repo
from db.database import Database
from db.models import Clip
from db.settings import Settings
from db.storage import Storage
from publisher.oauth import TokenSet
from publisher.platforms import soundcloud_render_key, x_render_key
from publisher.tokens import save_token
from tests.fakes.soundcloud_server import FakeSoundCloud
from tests.fakes.x_server import FakeX

CLIP_GUILD = 5150  # the server make_clip's songs come from


def tone_wav(
    seconds: float = 2.0, rate: int = 44100, channels: int = 2, level: float = 0.3, seed: int = 0
) -> bytes:
    """A little melody with decaying notes and a touch of noise (more like music than a sine)."""
    t = np.arange(int(rate * seconds)) / rate
    notes = [220.0, 277.2, 329.6, 440.0, 329.6, 277.2]
    step = seconds / len(notes)
    sig = np.zeros_like(t)
    for i, f in enumerate(notes):
        tt = t - i * step
        env = np.exp(-np.clip(tt, 0, None) * 4) * (tt >= 0)
        sig += env * (np.sin(2 * np.pi * f * tt) + 0.4 * np.sin(4 * np.pi * f * tt))
    sig += 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    sig = sig / np.abs(sig).max() * level
    pcm = (np.repeat(sig[:, None], channels, axis=1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def make_clip(
    db: Database,
    storage: Storage,
    *,
    title: str = "Harbour Rain",
    seconds: float = 2.0,
    featured_on: str | None = None,
    model: str = "demo",
    discord_id: int = 111,
    seed: int = 0,
    guild_id: int = CLIP_GUILD,
) -> Clip:
    user = repo.get_or_create_user(db, discord_id, "alice")
    assert user.id is not None
    song = repo.create_song(
        db,
        user_id=user.id,
        artist="frank_sinatra",
        genre="jazz",
        seconds=seconds,
        seed=seed,
        lyrics="[Verse]\nI walked along the harbour road\nthe rain came down like silver",
        title=title,
        model=model,
        guild_id=guild_id,
    )
    assert song.id is not None
    key = f"songs/{song.id}/clip.wav"
    storage.write_bytes(key, tone_wav(seconds, seed=seed))
    clip = repo.add_clip(db, song.id, key, f"songs/{song.id}/codes.npz", seconds=seconds)
    with db.write() as s:
        row = s.get(Clip, clip.id)
        assert row is not None
        row.channel_id, row.message_id = 777, 888
        s.add(row)
    if featured_on:
        assert clip.id is not None
        assert repo.mark_featured(db, clip.id, featured_on)
    refreshed = repo.clip_by_id(db, clip.id)  # type: ignore[arg-type]
    assert refreshed is not None
    return refreshed


def seed_renders(
    storage: Storage, settings: Settings, clip_id: int | None, renders: dict[str, bytes]
) -> None:
    storage.write_bytes(x_render_key(settings, clip_id), renders["x"])
    storage.write_bytes(soundcloud_render_key(settings, clip_id), renders["soundcloud"])


def publish_settings(settings: Settings, fake_x: FakeX, fake_sc: FakeSoundCloud, **extra: object) -> Settings:
    update: dict[str, object] = {
        "x_api_base": fake_x.base_url,
        "x_consumer_key": SecretStr(fake_x.consumer_key),
        "x_consumer_secret": SecretStr(fake_x.consumer_secret),
        "x_access_token": SecretStr(fake_x.access_token),
        "x_access_token_secret": SecretStr(fake_x.access_token_secret),
        "soundcloud_api_base": fake_sc.base_url,
        "soundcloud_auth_base": fake_sc.base_url,
        "soundcloud_client_id": SecretStr(fake_sc.client_id),
        "soundcloud_client_secret": SecretStr(fake_sc.client_secret),
        "x_video_size": "320x180",
        "x_upload_chunk_bytes": 32 * 1024,
        "publish_http_timeout": 5.0,
        "publish_rate_limit_wait": 3.0,
        # make_clip's server may publish to the operator's (shared) accounts.
        "publish_guilds": [CLIP_GUILD],
    }
    update.update(extra)
    return settings.model_copy(update=update)


def login_soundcloud(db: Database, fake_sc: FakeSoundCloud) -> TokenSet:
    """Store a SoundCloud login as `jukebot publish auth soundcloud` would."""
    tokens = TokenSet.from_response(fake_sc.issue_tokens())
    save_token(db, "soundcloud", tokens)
    return tokens


@dataclass
class Notes:
    """A notify callback that keeps what moderators were told."""

    messages: list[str] = field(default_factory=list)

    async def __call__(self, message: str) -> None:
        self.messages.append(message)
