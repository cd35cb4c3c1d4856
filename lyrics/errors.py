"""Errors of the lyrics package. Every message is meant to be shown to a musician as is:
no tracebacks, no URLs with credentials, no API keys.
"""

from __future__ import annotations


class LyricsError(Exception):
    """Base class. `str(err)` is a plain sentence fit for a Discord reply or a terminal."""

    @property
    def message(self) -> str:
        return str(self)


class LyricsInputError(LyricsError, ValueError):
    """The request or the written lyrics cannot be used (empty prompt, nothing singable, ...)."""


class LyricsUnavailable(LyricsError):
    """No text model is configured, so lyrics cannot be drafted (written lyrics still work)."""


class LyricsModelError(LyricsError):
    """The text model failed: out of retries, or a permanent error (bad key, unknown model)."""

    def __init__(self, message: str, *, kind: str, attempts: int) -> None:
        super().__init__(message)
        self.kind = kind  # timeout | rate_limited | server_error | malformed | connection | refused | ...
        self.attempts = attempts


class LyricsRejected(LyricsError):
    """Moderation (the moderation endpoint or the server's blocklist) did not allow the lyrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ModerationUnavailable(LyricsError):
    """Moderation is switched on but the moderation endpoint could not be reached."""
