"""The monthly report (通报) per county, as JSON and as CSV."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from ..auth import Principal
from ..report import monthly_report
from .common import (
    E401,
)
from .deps import (
    ApiState,
    SessionDep,
    StateDep,
    Text,
    UserDep,
)
from .schemas import (
    MONTH_PATTERN,
    MonthlyReportOut,
)

router = APIRouter()


Month = Annotated[
    str,
    Query(pattern=MONTH_PATTERN, description="Calendar month YYYY-MM (UTC)", examples=["2025-06"]),
]
CountyFilter = Annotated[
    list[Text] | None,
    Query(description="Only these counties' lines (repeat for several)", examples=[["Zhouzhi"]]),
]


def _report(
    session: Session, state: ApiState, user: Principal, month: str, counties: list[str] | None
) -> Any:
    report = monthly_report(session, month, now=state.now())
    # an officer gets its own county's line (the rank still compares it with every county)
    rows = [r for r in report.rows if user.county_scope in (None, r.county)]
    if counties:
        rows = [r for r in rows if r.county in counties]
    return dataclasses.replace(report, rows=tuple(rows))


@router.get(
    "/reports/monthly",
    response_model=MonthlyReportOut,
    tags=["reports"],
    summary="Per-county figures of the cases first detected in a month: issued, verified (on "
    "time), violations, rectified, overdue, relapses, closed, rank",
    responses={**E401},
)
def report_json(
    month: Month,
    user: UserDep,
    state: StateDep,
    session: SessionDep,
    county: CountyFilter = None,
) -> Any:
    """Officers get their own county's line only."""
    return _report(session, state, user, month, county).to_dict()


@router.get(
    "/reports/monthly.csv",
    tags=["reports"],
    summary="The monthly report as CSV (one row per county)",
    response_class=Response,
    responses={
        200: {
            "description": "CSV with a header row",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "month,county,issued,verified,verified_on_time,overdue,closed,"
                    "on_time_share,median_days_to_verify,rank\n"
                    "2025-06,Zhouzhi,3,2,2,0,1,1.000,5.0,1\n",
                }
            },
        },
        **E401,
    },
)
def report_csv(
    month: Month,
    user: UserDep,
    state: StateDep,
    session: SessionDep,
    county: CountyFilter = None,
) -> Any:
    """Same figures as ``/reports/monthly``, as a download."""
    report = _report(session, state, user, month, county)
    return Response(
        report.to_csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="report-{report.month}.csv"'},
    )
