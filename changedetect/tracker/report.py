"""The monthly 通报 per county: the cases of a detection month, how each county dealt with them,
and a timeliness ranking.

A case belongs to the month it was first detected in (the satellite saw it then; the night it was
ingested does not matter). For month M and each assigned county, over the cases first detected
in M, as they stand when the report is made (``now``):

- ``issued``: the cases (each clue that opened a case was issued to its county);
- ``verified``: those with a field verdict (compliant / false alarm / violation);
- ``verified_on_time``: those verified on or before their deadline;
- ``violations``: those whose verdict was a violation (under rectification or closed since);
- ``rectified``: violations rectified and closed;
- ``overdue``: those still awaiting their verdict past the deadline;
- ``relapses``: those that re-opened a site rectified and closed before;
- ``closed``: those in a final state (compliant, false alarm, rectified and closed);
- ``on_time_share`` = verified_on_time / the cases due (verified, or past their deadline), so
  that leaving cases unverified lowers it; ``median_days_to_verify`` from ingest to verdict;
  ``rank`` orders counties by on-time share (higher first), then median days (fewer first),
  then fewer overdue; a county with nothing due yet is unranked, and so are the cases assigned to
  no county.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .clock import utc_now
from .errors import TrackerError
from .models import Case
from .states import FINAL_STATES

#: States a case is in once its verdict was a violation.
VIOLATION_STATES = frozenset({"violation", "rectifying", "closed"})
_COUNTS = (
    "issued",
    "verified",
    "on_time",
    "violations",
    "rectified",
    "overdue",
    "relapses",
    "closed",
)

UNASSIGNED = "(unassigned)"

CSV_COLUMNS = (
    "month",
    "county",
    "issued",
    "verified",
    "verified_on_time",
    "violations",
    "rectified",
    "overdue",
    "relapses",
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
    violations: int
    rectified: int
    overdue: int
    relapses: int
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
                    r.violations,
                    r.rectified,
                    r.overdue,
                    r.relapses,
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
    """The per-county report of the cases first detected in ``month`` (see the module doc)."""
    label, start, end = parse_month(month)
    now = utc_now(now)
    cases = session.execute(
        select(
            Case.assigned_county,
            Case.state,
            Case.created_at,
            Case.deadline,
            Case.verified_at,
            Case.link_reason,
        ).where(Case.first_detected_on >= start.date(), Case.first_detected_on < end.date())
    ).all()
    tallies: dict[str, dict[str, Any]] = {}
    for county, state, created, deadline, verified, link_reason in cases:
        t = tallies.setdefault(
            county or UNASSIGNED,
            {k: 0 for k in _COUNTS} | {"due": 0, "days": []},
        )
        t["issued"] += 1
        verified = verified if verified is not None and verified <= now else None
        if verified is not None:
            t["verified"] += 1
            t["on_time"] += verified <= deadline
            t["days"].append((verified - created).total_seconds() / 86400.0)
        elif deadline < now:
            t["overdue"] += 1
        t["due"] += verified is not None or deadline < now
        t["violations"] += state in VIOLATION_STATES
        t["rectified"] += state == "closed"
        t["relapses"] += link_reason == "relapse"
        t["closed"] += state in FINAL_STATES

    rows = []
    for county, t in tallies.items():
        share = t["on_time"] / t["due"] if t["due"] else None
        median = statistics.median(t["days"]) if t["days"] else None
        rows.append((county, t, share, median))
    # the unassigned cases are no county's record
    ranked = sorted(
        (r for r in rows if r[2] is not None and r[0] != UNASSIGNED),
        key=lambda r: (-(r[2] or 0.0), r[3] or 0.0, r[1]["overdue"], r[0]),
    )
    ranks = {r[0]: i + 1 for i, r in enumerate(ranked)}
    unranked = sorted((r for r in rows if r[0] not in ranks), key=lambda r: r[0])
    out = tuple(
        CountyMonth(
            county=county,
            issued=t["issued"],
            verified=t["verified"],
            verified_on_time=t["on_time"],
            violations=t["violations"],
            rectified=t["rectified"],
            overdue=t["overdue"],
            relapses=t["relapses"],
            closed=t["closed"],
            on_time_share=None if share is None else round(share, 4),
            median_days_to_verify=None if median is None else round(median, 2),
            rank=ranks.get(county),
        )
        for county, t, share, median in [*ranked, *unranked]
    )
    return MonthlyReport(label, start, end, out)
