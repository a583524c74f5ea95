"""The JSON/GeoJSON/CSV endpoints: cases, transitions, assignment, reports, health, login."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ..auth import Principal, authenticate
from ..errors import CaseNotFoundError, InvalidTransitionError, TrackerError
from ..lifecycle import reassign, transition
from ..migrate import current_revision
from ..models import Case
from ..queries import (
    MAX_PAGE,
    CaseDetail,
    CasePage,
    EventView,
    cases_geojson,
    get_case,
    known_counties,
    list_cases,
    load_case,
)
from ..report import monthly_report
from ..states import CASE_STATES, check_transition
from ..webhook import enqueue_case_event
from .deps import (
    COOKIE_NAME,
    ApiState,
    FiltersDep,
    StateDep,
    Text,
    UserDep,
    scoped,
    unauthorized,
)
from .schemas import (
    MONTH_PATTERN,
    AssignIn,
    CaseDetailOut,
    CaseOut,
    CasePageOut,
    ErrorOut,
    FeatureCollectionOut,
    Health,
    LoginIn,
    Me,
    MonthlyReportOut,
    TransitionIn,
)

#: Case ids are 32-bit on PostgreSQL; a larger id cannot exist (and would overflow the driver).
MAX_ID = 2**31 - 1
CaseId = Annotated[int, Path(ge=1, le=MAX_ID, description="Case id", examples=[42])]

E401 = {401: {"model": ErrorOut, "description": "No token, or an unknown/revoked one"}}
E403 = {403: {"model": ErrorOut, "description": "The user's role may not do this"}}
E404 = {404: {"model": ErrorOut, "description": "No such case visible to this user"}}
E409 = {409: {"model": ErrorOut, "description": "The case's current state does not allow it"}}

router = APIRouter()


class GeoJSONResponse(JSONResponse):
    """RFC 7946 media type, so QGIS and browsers know what they get."""

    media_type = "application/geo+json"


def not_found(case_id: int) -> HTTPException:
    """The one answer for a missing case and for a case outside the user's county: the two
    must be indistinguishable, or the 404 would reveal that the other county's case exists."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"case {case_id} not found")


def visible_or_404(session: Session, case_id: int, user: Principal) -> None:
    """404 unless the case exists and the user may see it. Visibility first, with one small
    query: a foreign case then costs the same as a missing one, so not even the answer's
    timing tells them apart."""
    assigned = session.execute(select(Case.assigned_county).where(Case.id == case_id)).one_or_none()
    if assigned is None or not user.can_see(assigned[0]):
        raise not_found(case_id)


def visible_case_detail(session: Session, case_id: int, user: Principal, now: Any) -> CaseDetail:
    """The case's whole history, or 404 (:func:`visible_or_404`; also when it was deleted in
    between)."""
    visible_or_404(session, case_id, user)
    try:
        return get_case(session, case_id, now=now)
    except CaseNotFoundError:
        raise not_found(case_id) from None


def case_out(summary: dict[str, Any], user: Principal) -> dict[str, Any]:
    """A summary dict plus what the user may do to the case now."""
    return {**summary, "allowed_transitions": user.allowed_targets(summary["state"])}


def me_out(user: Principal, state: ApiState) -> Me:
    """The user and its permissions (what the review page draws its buttons from), and the
    counties a case can be assigned to when the user may assign."""
    transitions = {s: user.allowed_targets(s) for s in CASE_STATES}
    counties: list[str] = []
    if user.can_assign:
        with state.db.session() as session:
            counties = known_counties(session)
    return Me(
        name=user.name,
        role=user.role,  # type: ignore[arg-type]
        county=user.county_scope,
        transitions={s: t for s, t in transitions.items() if t},  # type: ignore[misc]
        can_assign=user.can_assign,
        counties=counties,
        photo_max_bytes=state.settings.photo_max_bytes,
    )


# --- health and identity ----------------------------------------------------------------------


@router.get(
    "/health",
    response_model=Health,
    tags=["meta"],
    summary="Liveness and database reachability (no token needed)",
    responses={503: {"model": Health, "description": "The database cannot be reached"}},
)
def health(state: StateDep) -> Any:
    """``ok`` when the database answers; 503 otherwise (the URL is never shown)."""
    try:
        with state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        revision = current_revision(state.db.engine)
    except Exception:  # any failure to reach the database is "unreachable"
        body = Health(status="error", database="unreachable").model_dump()
        return JSONResponse(body, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Health(status="ok", database="ok", schema_revision=revision)


@router.get(
    "/me",
    response_model=Me,
    tags=["auth"],
    summary="The token's user and what it may do",
    responses={**E401},
)
def me(user: UserDep, state: StateDep) -> Me:
    """Who the token belongs to, its county scope, and the transitions its role allows."""
    return me_out(user, state)


@router.post(
    "/login",
    response_model=Me,
    tags=["auth"],
    summary="Exchange a token for an HttpOnly session cookie (the review page)",
    responses={**E401},
)
def login(body: LoginIn, response: Response, state: StateDep) -> Me:
    """Checks the token and sets it as an HttpOnly, SameSite=Strict cookie for the page."""
    with state.db.session() as session:
        user = authenticate(session, body.token)
    if user is None:
        raise unauthorized("the API token is unknown, revoked, or its user is disabled")
    response.set_cookie(
        COOKIE_NAME,
        body.token,
        max_age=12 * 3600,
        httponly=True,
        samesite="strict",
        secure=state.cookie_secure,
        path="/",
    )
    return me_out(user, state)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["auth"],
    summary="Clear the session cookie",
)
def logout(state: StateDep) -> Response:
    """Forget the cookie (the token itself stays valid: revoke it with the CLI)."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=state.cookie_secure
    )
    return response


# --- cases ------------------------------------------------------------------------------------


@router.get(
    "/cases",
    response_model=CasePageOut,
    tags=["cases"],
    summary="Cases matching the filters, most pressing first, paged",
    responses={**E401},
)
def cases(
    filters: FiltersDep,
    user: UserDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9, description="Cases to skip")] = 0,
) -> Any:
    """Escalated and overdue cases first, then by priority and deadline. Officers see only
    their county's cases (a ``county`` filter cannot widen that)."""
    query = scoped(filters, user)
    if query is None:
        page = CasePage((), 0, limit, offset)
    else:
        with state.db.session() as session:
            page = list_cases(session, query, limit=limit, offset=offset, now=state.now())
    out = page.to_dict()
    out["items"] = [case_out(item, user) for item in out["items"]]
    return out


@router.get(
    "/cases.geojson",
    response_model=FeatureCollectionOut,
    tags=["cases"],
    summary="Matching cases as an RFC 7946 FeatureCollection (for QGIS)",
    responses={
        200: {"description": "A FeatureCollection (WGS84); each Feature's id is the case id"},
        **E401,
    },
    # the success body is application/geo+json (app.py moves the documented media type there;
    # a response_class would also relabel the JSON error answers)
    openapi_extra={"x-media-type": GeoJSONResponse.media_type},
)
def cases_geojson_route(
    filters: FiltersDep,
    user: UserDep,
    state: StateDep,
    request: Request,
    geometry: Annotated[
        Literal["union", "latest", "first"],
        Query(description="Footprint: union of every detection, the latest, or the first"),
    ] = "union",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")] = MAX_PAGE,
    offset: Annotated[int, Query(ge=0, le=10**9, description="Cases to skip")] = 0,
) -> Any:
    """Same filters and order as ``GET /cases``, a page at a time (a request's cost stays bounded
    however many cases there are). The collection carries ``numberMatched`` and
    ``numberReturned``, and while more cases follow, a ``links`` entry with ``rel: next`` (also
    sent as a ``Link`` header) whose URL asks for the next page."""
    query = scoped(filters, user)
    if query is None:
        collection: dict[str, Any] = {
            "type": "FeatureCollection",
            "features": [],
            "numberMatched": 0,
            "numberReturned": 0,
        }
    else:
        with state.db.session() as session:
            collection = cases_geojson(
                session, query, now=state.now(), geometry=geometry, limit=limit, offset=offset
            )
    headers = {}
    if offset + collection["numberReturned"] < collection["numberMatched"]:
        following = str(request.url.include_query_params(offset=offset + limit, limit=limit))
        collection["links"] = [
            {"rel": "next", "href": following, "type": GeoJSONResponse.media_type}
        ]
        headers["Link"] = f'<{following}>; rel="next"'
    return GeoJSONResponse(collection, headers=headers)


def _chip_url(request: Request, case_id: int, which: str, clue_id: str) -> str:
    root = request.scope.get("root_path", "")
    return f"{root}/cases/{case_id}/chips/{which}?clue_id={quote(clue_id, safe='')}"


def photo_url(request: Request, case_id: int, photo_id: int) -> str:
    """The API URL a field photo is served at (checked per user, like the chips)."""
    return f"{request.scope.get('root_path', '')}/cases/{case_id}/photos/{photo_id}"


def event_out(request: Request, case_id: int, event: EventView) -> dict[str, Any]:
    """An event of the case, its photos linked as API URLs."""
    out = event.to_dict()
    for photo in out["photos"]:
        photo["url"] = photo_url(request, case_id, photo["id"])
    return out


@router.get(
    "/cases/{case_id}",
    response_model=CaseDetailOut,
    tags=["cases"],
    summary="One case with its footprints, detections and events",
    responses={**E401, **E404},
)
def case_detail(case_id: CaseId, request: Request, user: UserDep, state: StateDep) -> Any:
    """The case's whole history. Evidence chips are linked as API URLs (checked per user),
    never as server paths."""
    with state.db.session() as session:
        detail = visible_case_detail(session, case_id, user, state.now())
    out = case_out(detail.case.to_dict(), user)
    history = []
    for d in detail.detections:
        item = d.to_dict()
        for which in ("before", "after", "change"):
            has = getattr(d, f"chip_{which}") is not None
            item[f"chip_{which}_url"] = (
                _chip_url(request, case_id, which, d.clue_id) if has else None
            )
        history.append(item)
    out.update(
        geometry_first=detail.geometry_first,
        geometry_latest=detail.geometry_latest,
        geometry_union=detail.geometry_union,
        detection_history=history,
        events=[event_out(request, case_id, e) for e in detail.events],
    )
    return out


def _load_visible(session: Session, case_id: int, user: Principal) -> Any:
    try:
        case = load_case(session, case_id, for_update=True)
    except CaseNotFoundError:
        raise not_found(case_id) from None
    if not user.can_see(case.assigned_county):
        raise not_found(case_id)
    return case


@router.post(
    "/cases/{case_id}/transitions",
    response_model=CaseOut,
    tags=["cases"],
    summary="Move a case to another state (recorded with the token's user as actor)",
    responses={**E401, **E403, **E404, **E409},
)
def case_transition(case_id: CaseId, body: TransitionIn, user: UserDep, state: StateDep) -> Any:
    """409 when the lifecycle does not allow the move from the case's current state; 403 when
    it does but the user's role may not make it."""
    now = state.now()

    def work(session: Session) -> dict[str, Any]:
        case = _load_visible(session, case_id, user)
        current = case.state
        check_transition(case.id, current, body.to)  # InvalidTransitionError → 409
        if not user.may_transition(current, body.to):
            allowed = user.allowed_targets(current)
            hint = f"it may move it to {', '.join(allowed)}" if allowed else "it may not move it"
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a {user.role} may not move case {case_id} from {current} to {body.to}; {hint}",
            )
        summary = transition(
            session, case_id, body.to, actor=user.name, comment=body.comment, now=now
        )
        if state.webhook is not None:
            enqueue_case_event(
                session,
                case_id,
                "case.transitioned",
                now=now,
                actor=user.name,
                details={"from_state": current, "to_state": body.to, "comment": body.comment},
            )
        return summary.to_dict()

    try:
        out = state.db.run_write(work)
    except InvalidTransitionError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if state.sender is not None:
        state.sender.notify()
    return case_out(out, user)


@router.post(
    "/cases/{case_id}/assign",
    response_model=CaseOut,
    tags=["cases"],
    summary="Hand a case to another county (analysts)",
    responses={**E401, **E403, **E404, **E409},
)
def case_assign(case_id: CaseId, body: AssignIn, user: UserDep, state: StateDep) -> Any:
    """Only analysts reassign. A case in a final state is not reassigned (409), nor one that
    another analyst reassigned after the caller saw it (``expected_county``: 409)."""
    if not user.can_assign:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {user.role} may not reassign cases")
    now = state.now()
    county = body.county.strip()

    def work(session: Session) -> dict[str, Any]:
        case = _load_visible(session, case_id, user)
        previous = case.assigned_county
        if "expected_county" in body.model_fields_set and body.expected_county != previous:
            now_with = f"assigned to {previous}" if previous else "unassigned"
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"case {case_id} is {now_with} now, not as expected "
                f"({body.expected_county or 'unassigned'}): reload it and decide again",
            )
        try:
            summary = reassign(
                session, case_id, county, actor=user.name, comment=body.comment, now=now
            )
        except CaseNotFoundError:
            raise not_found(case_id) from None
        except TrackerError as exc:  # a final case: the lifecycle refuses, not the input
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        if state.webhook is not None:
            enqueue_case_event(
                session,
                case_id,
                "case.assigned",
                now=now,
                actor=user.name,
                details={"from_county": previous, "to_county": county, "comment": body.comment},
            )
        return summary.to_dict()

    out = state.db.run_write(work)
    if state.sender is not None:
        state.sender.notify()
    return case_out(out, user)


# --- reports ----------------------------------------------------------------------------------

Month = Annotated[
    str,
    Query(pattern=MONTH_PATTERN, description="Calendar month YYYY-MM (UTC)", examples=["2025-06"]),
]
CountyFilter = Annotated[
    list[Text] | None,
    Query(description="Only these counties' lines (repeat for several)", examples=[["Zhouzhi"]]),
]


def _report(state: ApiState, user: Principal, month: str, counties: list[str] | None) -> Any:
    with state.db.session() as session:
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
def report_json(month: Month, user: UserDep, state: StateDep, county: CountyFilter = None) -> Any:
    """Officers get their own county's line only."""
    return _report(state, user, month, county).to_dict()


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
def report_csv(month: Month, user: UserDep, state: StateDep, county: CountyFilter = None) -> Any:
    """Same figures as ``/reports/monthly``, as a download."""
    report = _report(state, user, month, county)
    return Response(
        report.to_csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="report-{report.month}.csv"'},
    )
