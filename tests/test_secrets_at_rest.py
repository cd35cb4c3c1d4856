"""Issue #14, defect 4: X/SoundCloud logins sat in plain text in the database (and its WAL), files 0644.
Now: tokens encrypted with a Fernet key (JUKEBOT_TOKEN_KEY, else one generated 0600 beside the data),
plain rows from before still load and migration 0004 encrypts them, the data folder is 0700 and its
files 0600, and `jukebot doctor` warns on loose modes. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from db import migrate
from db.cli import Status, check_private_files
from db.database import Database
from db.secrets import PREFIX, key_file_for
from db.settings import Settings, get_settings
from db.storage import Storage
from publisher.errors import Outcome, PublishError
from publisher.oauth import TokenSet
from publisher.tokens import load_token, save_token

ACCESS, REFRESH = "sc-access-7f3a9c1e55d04b6e", "sc-refresh-0b8d2f6a91c34e77"


@pytest.fixture
def token_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("JUKEBOT_TOKEN_KEY", key)
    get_settings.cache_clear()
    yield key
    get_settings.cache_clear()


def _tokens() -> TokenSet:
    return TokenSet(
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        scope="non-expiring",
        token_type="bearer",
    )


def _raw(db: Database) -> tuple[str, str | None]:
    with db.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT access_token, refresh_token FROM oauth_tokens")).one()
    return row[0], row[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_tokens_are_encrypted_at_rest(db: Database, token_key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    save_token(db, "soundcloud", _tokens())
    access, refresh = _raw(db)
    assert access.startswith(PREFIX) and refresh is not None and refresh.startswith(PREFIX)
    assert ACCESS not in access and REFRESH not in refresh
    stored = load_token(db, "soundcloud")
    assert stored is not None and (stored.access_token, stored.refresh_token) == (ACCESS, REFRESH)
    if db.sqlite_file is not None:  # nor in the file or its write-ahead log
        for file in db.sqlite_file.parent.glob(db.sqlite_file.name + "*"):
            assert ACCESS.encode() not in file.read_bytes() and REFRESH.encode() not in file.read_bytes()
    assert ACCESS not in caplog.text and REFRESH not in caplog.text


def test_plain_rows_from_before_load_and_the_migration_encrypts_them(
    empty_database_url: str, token_key: str
) -> None:
    db = Database(empty_database_url)
    try:
        migrate.upgrade(db, "0003")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO oauth_tokens (provider, access_token, refresh_token, token_type, scope, "
                    "created_at, updated_at) VALUES ('soundcloud', :a, :r, 'bearer', '', :t, :t)"
                ),
                {"a": ACCESS, "r": REFRESH, "t": datetime.now(UTC)},
            )
        migrate.upgrade(db)
        access, refresh = _raw(db)
        assert access.startswith(PREFIX) and refresh is not None and refresh.startswith(PREFIX)
        stored = load_token(db, "soundcloud")
        assert stored is not None and (stored.access_token, stored.refresh_token) == (ACCESS, REFRESH)
        with db.engine.begin() as conn:  # a plain row (written before encryption) still loads
            conn.execute(sa.text("UPDATE oauth_tokens SET access_token = :a"), {"a": ACCESS})
        stored = load_token(db, "soundcloud")
        assert stored is not None and stored.access_token == ACCESS
        with db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE oauth_tokens SET access_token = :a"), {"a": access})
        migrate.downgrade(db, "0003")
        assert _raw(db) == (ACCESS, REFRESH)
    finally:
        db.dispose()


def test_a_login_saved_with_another_key_asks_for_the_key_or_a_new_login(
    db: Database, token_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_token(db, "x", _tokens())
    monkeypatch.setenv("JUKEBOT_TOKEN_KEY", Fernet.generate_key().decode())
    get_settings.cache_clear()
    with pytest.raises(PublishError) as err:
        load_token(db, "x")
    assert err.value.outcome is Outcome.auth
    assert "another key" in err.value.message and "jukebot publish auth x" in err.value.message


def test_without_a_configured_key_one_is_made_0600_beside_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUKEBOT_TOKEN_KEY", raising=False)
    get_settings.cache_clear()
    db = Database(f"sqlite:///{tmp_path / 'data' / 'jukebot.db'}")
    try:
        migrate.upgrade(db)
        save_token(db, "soundcloud", _tokens())
        key = key_file_for(db.sqlite_file)
        assert key.parent == tmp_path / "data" and _mode(key) == 0o600
        assert _raw(db)[0].startswith(PREFIX)
        check = check_private_files(Settings(database_url=db.url.render_as_string(), _env_file=None))  # type: ignore[call-arg]
        assert f"the key generated in {key}" in check.detail
    finally:
        db.dispose()
        get_settings.cache_clear()


def test_the_data_folder_is_0700_and_its_files_0600(tmp_path: Path, token_key: str) -> None:
    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'jukebot.db'}")
    try:
        migrate.upgrade(db)
        save_token(db, "soundcloud", _tokens())  # a write: the WAL and its index exist now
        files = [data / "jukebot.db", data / "jukebot.db-wal", data / "jukebot.db-shm"]
        assert all(f.exists() for f in files)
        assert _mode(data) == 0o700 and [_mode(f) for f in files] == [0o600] * 3
    finally:
        db.dispose()
    storage = Storage(tmp_path / "media")
    storage.write_bytes("songs/1/clip.wav", b"RIFF")
    assert _mode(tmp_path / "media") == 0o700 and _mode(tmp_path / "media" / "songs" / "1") == 0o700
    assert _mode(tmp_path / "media" / "songs" / "1" / "clip.wav") == 0o600


def test_doctor_warns_on_loose_modes(tmp_path: Path, token_key: str) -> None:
    data = tmp_path / "data"
    db = Database(f"sqlite:///{data / 'jukebot.db'}")
    migrate.upgrade(db)
    db.dispose()
    settings = Settings(
        database_url=f"sqlite:///{data / 'jukebot.db'}", storage_url=str(tmp_path / "media"), _env_file=None
    )  # type: ignore[call-arg]
    Storage(settings.storage.storage_url)
    check = check_private_files(settings)
    assert check.status is Status.ok and "JUKEBOT_TOKEN_KEY" in check.detail
    data.chmod(0o755)
    (data / "jukebot.db").chmod(0o644)
    check = check_private_files(settings)
    assert check.status is Status.warn
    assert f"{data} (755)" in check.detail and f"{data / 'jukebot.db'} (644)" in check.detail
    assert "chmod" in check.fix
