"""Time and interval parameters of API queries.

Times are accepted as ISO 8601 (``2026-11-21T08:00:00Z``), epoch milliseconds (``1763712000000``),
``now``, or relative to now (``-15m``, ``-6h``, ``-7d``). Intervals are ``10s``, ``1m``, ``15m``,
``1h``, ``1d`` or milliseconds.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Final

from fastapi import HTTPException, status

__all__ = ["parse_interval", "parse_time"]

_UNITS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION: Final = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_RELATIVE: Final = re.compile(r"^-(\d+)(ms|s|m|h|d)$")
#: Smallest aggregation interval accepted.
MIN_INTERVAL_MS: Final = 1000


def _bad(name: str, value: str, expected: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name}={value!r} is not {expected}"
    )


def parse_time(value: str | None, default_ms: int, name: str = "time") -> int:
    """A time parameter as epoch milliseconds.

    Raises:
        HTTPException: 422 with what is accepted.
    """
    if value is None or value == "":
        return default_ms
    value = value.strip()
    now_ms = int(time.time() * 1000)
    if value == "now":
        return now_ms
    if match := _RELATIVE.match(value):
        return now_ms - int(match.group(1)) * _UNITS[match.group(2)]
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(name, value, "ISO 8601, epoch ms, 'now' or like '-6h'") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_interval(value: str | None) -> int | None:
    """An aggregation interval in milliseconds (``None`` = raw points).

    Raises:
        HTTPException: 422 for a malformed or too small interval.
    """
    if value is None or value in {"", "raw"}:
        return None
    value = value.strip()
    if value.isdigit():
        interval = int(value)
    elif match := _DURATION.match(value):
        interval = int(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise _bad("interval", value, "like '10s', '1m', '1h', '1d' or milliseconds")
    if interval < MIN_INTERVAL_MS:
        raise _bad("interval", value, f"at least {MIN_INTERVAL_MS} ms")
    return interval
