"""db.retry_after: the one reader of rate-limit headers (lyrics, X, SoundCloud)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from db.retry_after import rate_limit_reset, retry_after_seconds

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)}, 30.0),
        ({"retry-after": format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True)}, 0.0),
        ({"retry-after": "Wed, 99 Foo 2026 25:61:00 GMT"}, None),
        ({"retry-after": "soon-ish"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == expected
    assert retry_after_seconds(httpx.Headers({k.upper(): v for k, v in headers.items()}), now=NOW) == expected


def test_rate_limit_reset_prefers_the_bucket_reset() -> None:
    assert rate_limit_reset({"x-rate-limit-reset": "1800000100", "retry-after": "5"}, now=NOW) == 1800000100
    assert rate_limit_reset({"x-rate-limit-reset": "later", "retry-after": "5"}, now=NOW) == NOW + 5
    assert rate_limit_reset({"retry-after": "not a date"}, now=NOW) is None
    assert rate_limit_reset(None, now=NOW) is None
