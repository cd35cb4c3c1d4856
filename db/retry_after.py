"""How long a rate-limited HTTP service asks us to wait, read from its response headers.

One reader for every client (lyrics model, X, SoundCloud), so that a header we cannot read means
"not stated" everywhere instead of an exception in one place and a default in another:

- `retry-after-ms` (OpenAI): milliseconds;
- `retry-after` (RFC 9110): delta seconds or an HTTP date;
- `x-rate-limit-reset` (X): the epoch second at which the bucket refills.

Negative waits (a date in the past, a clock ahead of the server's) are 0; unreadable values are None.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

Headers = Mapping[str, str]


def _finite(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _http_date(value: str) -> float | None:
    """Epoch seconds of an HTTP date; None when it is not one (parsedate_to_datetime raises then)."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def retry_after_seconds(headers: Headers | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after`; None if absent or unreadable."""
    if not headers:
        return None
    now = time.time() if now is None else now
    ms = headers.get("retry-after-ms")
    if ms:
        value = _finite(ms.strip())
        if value is not None:
            return max(0.0, value / 1000)
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    seconds = _finite(raw)
    if seconds is not None:
        return max(0.0, seconds)
    when = _http_date(raw)
    return None if when is None else max(0.0, when - now)


def rate_limit_reset(headers: Headers | None, *, now: float | None = None) -> float | None:
    """Epoch seconds at which the limit lifts: `x-rate-limit-reset`, else now + Retry-After; None if
    neither is stated in a readable form."""
    if not headers:
        return None
    now = time.time() if now is None else now
    reset = headers.get("x-rate-limit-reset")
    if reset:
        value = _finite(reset.strip())
        if value is not None:
            return value
    wait = retry_after_seconds(headers, now=now)
    return None if wait is None else now + wait
