"""The same season of earlier years: the before side of a seasonal baseline.

Comparing a summer acquisition with a spring composite finds the harvest and the green-up; comparing
it with the same weeks of the years before finds what the season does not explain (as OPERA
DIST-ALERT's multi-year baseline does).
"""

from __future__ import annotations

import datetime as dt

from .models import TimeWindow


def years_back(day: dt.date, years: int) -> dt.date:
    """`day` `years` years earlier (29 February becomes the 28th)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def same_season(first: dt.date, last: dt.date, *, days: int, years: int) -> list[TimeWindow]:
    """For each of the `years` years before, the dates [first - days, last + days] of that year,
    oldest first; each ends before `first`, so no window reaches the dates being analysed."""
    if last < first:
        raise ValueError(f"last {last} is before first {first}")
    if days < 0 or years < 1:
        raise ValueError(f"days must be >= 0 and years >= 1, got {days} and {years}")
    limit = first - dt.timedelta(days=1)
    windows = []
    for k in range(years, 0, -1):
        start = years_back(first, k) - dt.timedelta(days=days)
        end = min(years_back(last, k) + dt.timedelta(days=days), limit)
        if start <= end:
            windows.append(TimeWindow(start, end))
    return windows
