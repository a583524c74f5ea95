"""The one place that reads the clock: every service function takes ``now`` for testability."""

from __future__ import annotations

import datetime as dt


def utc_now(now: dt.datetime | None = None) -> dt.datetime:
    """``now`` (which must be timezone-aware) in UTC, or the current UTC time."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now.isoformat()} given: pass an aware datetime")
    return now.astimezone(dt.UTC)
