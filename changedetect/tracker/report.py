"""Monthly report per county: issued, verified, overdue, closed, and a timeliness ranking.

For month M (calendar month, UTC) and each assigned county:

- ``issued``: cases opened during M;
- ``verified``: cases whose first verdict (compliant / false alarm / violation) fell in M;
- ``verified_on_time``: those of them verified on or before their deadline;
- ``overdue``: cases still awaiting verification past their deadline at the end of M (or now,
  for the running month);
- ``closed``: cases that reached a final state (compliant, false alarm, closed) during M;
- ``on_time_share`` = verified_on_time / verified, ``median_days_to_verify`` over the cases
  verified in M; ``rank`` orders counties by on-time share (higher first), then median days
  (fewer first), then fewer overdue; counties that verified nothing in M are unranked.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .clock import utc_now
from .errors import TrackerError
from .models import Case

UNASSIGNED = "(unassigned)"

CSV_COLUMNS = (
    "month",
    "county",
    "issued",
    "verified",
    "verified_on_time",
    "overdue",
    "closed",
    "on_time_share",
    "median_days_to_verify",
    "rank",
)


@dataclass(frozen=True)
class CountyMonth:
    """One county's line of the monthly report."""

    county: str
    issued: int
    verified: int
    verified_on_time: int
    overdue: int
    closed: int
    on_time_share: float | None
    median_days_to_verify: float | None
    rank: int | None


@dataclass(frozen=True)
class MonthlyReport:
    """The report for one month: a line per county, ranked first."""

    month: str
    start: dt.datetime
    end: dt.datetime
    rows: tuple[CountyMonth, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "month": self.month,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "counties": [asdict(r) for r in self.rows],
        }

    def to_csv(self) -> str:
        """The report as CSV text (one row per county, header first)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in self.rows:
            writer.writerow(
                [
                    self.month,
                    r.county,
                    r.issued,
                    r.verified,
                    r.verified_on_time,
                    r.overdue,
                    r.closed,
                    "" if r.on_time_share is None else f"{r.on_time_share:.3f}",
                    "" if r.median_days_to_verify is None else f"{r.median_days_to_verify:.1f}",
                    "" if r.rank is None else r.rank,
                ]
            )
        return buffer.getvalue()


def parse_month(month: str | dt.date) -> tuple[str, dt.datetime, dt.datetime]:
    """``YYYY-MM`` (or a date in the month) → (label, start, end) in UTC, end exclusive."""
    if isinstance(month, dt.date):
        year, mon = month.year, month.month
    else:
        found = re.fullmatch(r"(\d{4})-(\d{2})", month.strip())
        if not found or not 1 <= int(found.group(2)) <= 12:
            raise TrackerError(f"month {month!r} is not YYYY-MM (e.g. 2025-06)")
        year, mon = int(found.group(1)), int(found.group(2))
    start = dt.datetime(year, mon, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=dt.UTC)
    return f"{year:04d}-{mon:02d}", start, end


def monthly_report(
    session: Session, month: str | dt.date, *, now: dt.datetime | None = None
) -> MonthlyReport:
    """The per-county report for ``month`` (see the module docstring for the definitions)."""
    label, start, end = parse_month(month)
    now = utc_now(now)
    cutoff = min(end, now)
    # every case that could count: opened before the month ended and not finished before it
    cases = session.execute(
        select(
            Case.assigned_county,
            Case.created_at,
            Case.deadline,
            Case.verified_at,
            Case.closed_at,
        ).where(
            Case.created_at < end,
            or_(Case.closed_at.is_(None), Case.closed_at >= start),
        )
    ).all()
    tallies: dict[str, dict[str, Any]] = {}

    def tally(county: str | None) -> dict[str, Any]:
        return tallies.setdefault(
            county or UNASSIGNED,
            {"issued": 0, "verified": 0, "on_time": 0, "overdue": 0, "closed": 0, "days": []},
        )

    for county, created, deadline, verified, closed in cases:
        if start <= created < end:
            tally(county)["issued"] += 1
        if verified is not None and start <= verified < end:
            t = tally(county)
            t["verified"] += 1
            t["on_time"] += verified <= deadline
            t["days"].append((verified - created).total_seconds() / 86400.0)
        if closed is not None and start <= closed < end:
            tally(county)["closed"] += 1
        # still waiting for its verdict at the cutoff (a verdict sets verified_at) and late
        waiting = verified is None or verified > cutoff
        if created < cutoff and deadline < cutoff and waiting:
            tally(county)["overdue"] += 1

    rows = []
    for county, t in tallies.items():
        share = t["on_time"] / t["verified"] if t["verified"] else None
        median = statistics.median(t["days"]) if t["days"] else None
        rows.append((county, t, share, median))
    ranked = sorted(
        (r for r in rows if r[2] is not None),
        key=lambda r: (-(r[2] or 0.0), r[3] or 0.0, r[1]["overdue"], r[0]),
    )
    ranks = {r[0]: i + 1 for i, r in enumerate(ranked)}
    unranked = sorted((r for r in rows if r[2] is None), key=lambda r: r[0])
    out = tuple(
        CountyMonth(
            county=county,
            issued=t["issued"],
            verified=t["verified"],
            verified_on_time=t["on_time"],
            overdue=t["overdue"],
            closed=t["closed"],
            on_time_share=None if share is None else round(share, 4),
            median_days_to_verify=None if median is None else round(median, 2),
            rank=ranks.get(county),
        )
        for county, t, share, median in [*ranked, *unranked]
    )
    return MonthlyReport(label, start, end, out)
