"""What can go wrong when publishing, sorted by what the state machine must do about it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class Outcome(StrEnum):
    retry = "retry"  # clearly not accepted (429, 5xx before the final post, connection refused): try later
    permanent = "permanent"  # the platform said no (4xx with its reason): trying again gives the same answer
    unclear = (
        "unclear"  # the final post may have been accepted (timeout, reset, 5xx after sending): look first
    )
    auth = (
        "auth"  # our login is gone (401 after a refresh, refresh token refused): a person must re-authorise
    )


class PublishError(Exception):
    """A failed call to a platform, with the platform's own message and what to do next."""

    def __init__(
        self,
        message: str,
        outcome: Outcome,
        *,
        status: int | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome
        self.status = status
        self.retry_at = retry_at

    def __repr__(self) -> str:
        return f"PublishError({self.message!r}, {self.outcome}, status={self.status})"


class NotConfigured(PublishError):
    """Credentials for a platform are missing."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Outcome.auth)
