"""The cases: the list, the GeoJSON layer, one case's history, transitions and assignment."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from ..errors import CaseNotFoundError, InvalidTransitionError, TrackerError
from ..lifecycle import reassign, transition
from ..queries import (
    MAX_PAGE,
    CasePage,
    EventView,
    cases_geojson,
    list_cases,
)
from ..states import check_transition
from .common import (
    E401,
    E403,
    E404,
    E409,
    CaseId,
    announce,
    case_out,
    load_visible,
    not_found,
    photo_url,
    visible_case_detail,
)
from .deps import (
    FiltersDep,
    SessionDep,
    StateDep,
    UserDep,
    scoped,
)
from .schemas import (
    AssignIn,
    CaseDetailOut,
    CaseOut,
    CasePageOut,
    FeatureCollectionOut,
    TransitionIn,
)

router = APIRouter()


class GeoJSONResponse(JSONResponse):
    """RFC 7946 media type, so QGIS and browsers know what they get."""

    media_type = "application/geo+json"


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
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9, description="Cases to skip")] = 0,
) -> Any:
    """Escalated and overdue cases first, then by priority and deadline. Officers see only
    their county's cases (a ``county`` filter cannot widen that)."""
    query = scoped(filters, user)
    if query is None:
        page = CasePage((), 0, limit, offset)
    else:
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
    session: SessionDep,
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
def case_detail(
    case_id: CaseId, request: Request, user: UserDep, state: StateDep, session: SessionDep
) -> Any:
    """The case's whole history. Evidence chips are linked as API URLs (checked per user),
    never as server paths."""
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
        case = load_visible(session, case_id, user)
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
        announce(
            state,
            session,
            case_id,
            "case.transitioned",
            user,
            now,
            {"from_state": current, "to_state": body.to, "comment": body.comment},
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
        case = load_visible(session, case_id, user)
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
        announce(
            state,
            session,
            case_id,
            "case.assigned",
            user,
            now,
            {"from_county": previous, "to_county": county, "comment": body.comment},
        )
        return summary.to_dict()

    out = state.db.run_write(work)
    if state.sender is not None:
        state.sender.notify()
    return case_out(out, user)
