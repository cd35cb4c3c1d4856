"""Secrets at rest: platform logins are encrypted in the database, and jukebot's files are private.

Tokens are stored as `fernet:<Fernet token>` (AES-128-CBC + HMAC-SHA256, from `cryptography`). The
key is JUKEBOT_TOKEN_KEY when set (required when processes on several machines share PostgreSQL);
otherwise one is generated once and kept, mode 0600, beside the data: next to the SQLite file, or in
`~/.local/share/jukebot/` for a server database. A value without the prefix is from before
encryption: it is still read, and migration 0004 encrypts such rows.

The key file, like every file jukebot keeps, is private to its user (db/private_files.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from db.private_files import private_file, private_folder

PREFIX = "fernet:"
KEY_FILE = "token.key"
SERVER_KEY_FOLDER = Path("~/.local/share/jukebot")


class SecretsError(RuntimeError):
    """A stored secret that cannot be read with this key, or a key that cannot be used."""


@dataclass(frozen=True)
class KeySource:
    description: str  # for doctor: where the key comes from
    generated: Path | None  # the key file, when jukebot made it


def key_file_for(sqlite_path: Path | None) -> Path:
    folder = sqlite_path.parent if sqlite_path is not None else SERVER_KEY_FOLDER.expanduser()
    return folder / KEY_FILE


def _read_or_create_key(path: Path) -> bytes:
    private_folder(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        private_file(path)
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as f:  # created 0600; two processes racing: one creates, the other reads
        f.write(key + b"\n")
    return key


class TokenCipher:
    def __init__(self, key: bytes | str, source: KeySource) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SecretsError(
                "JUKEBOT_TOKEN_KEY is not a Fernet key (32 url-safe base64 bytes); make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
            ) from None
        self.source = source

    def encrypt(self, value: str | None) -> str | None:
        if value is None or value.startswith(PREFIX):
            return value
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, value: str | None, *, what: str = "a stored secret") -> str | None:
        if value is None or not value.startswith(PREFIX):
            return value  # stored before encryption (migration 0004 encrypts these)
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretsError(
                f"{what} was encrypted with another key than {self.source.description}. Set "
                "JUKEBOT_TOKEN_KEY to the key it was saved with, or log in again."
            ) from None


@lru_cache(maxsize=16)
def _cipher(configured: str | None, sqlite_path: Path | None) -> TokenCipher:
    if configured:
        return TokenCipher(configured, KeySource("JUKEBOT_TOKEN_KEY", None))
    path = key_file_for(sqlite_path)
    try:
        key = _read_or_create_key(path)
    except OSError as exc:
        raise SecretsError(
            f"cannot create or read the token key {path}: {exc.strerror or exc}; set JUKEBOT_TOKEN_KEY."
        ) from None
    return TokenCipher(key, KeySource(f"the key generated in {path}", path))


def token_cipher(sqlite_path: Path | None, configured: str | None = None) -> TokenCipher:
    """The cipher for a database (`sqlite_path`: its file, None for a server database). The key is
    `configured` (JUKEBOT_TOKEN_KEY) when given, else the generated key file beside the data."""
    resolved = sqlite_path.expanduser().resolve() if sqlite_path is not None else None
    return _cipher(configured or None, resolved)
