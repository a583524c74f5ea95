"""What the routes share: id bounds, documented error answers, visibility checks, URLs, the
webhook's case events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Path, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..auth import Principal
from ..errors import CaseNotFoundError
from ..models import Case
from ..queries import (
    CaseDetail,
    get_case,
    load_case,
)
from ..webhook import enqueue_case_event
from .deps import ApiState
from .schemas import (
    ErrorOut,
)

#: Case ids are 32-bit on PostgreSQL; a larger id cannot exist (and would overflow the driver).
MAX_ID = 2**31 - 1
CaseId = Annotated[int, Path(ge=1, le=MAX_ID, description="Case id", examples=[42])]

E401 = {
    401: {
        "model": ErrorOut,
        "description": "No token, or an unknown/expired/revoked one (or an ended session)",
    }
}
E403 = {403: {"model": ErrorOut, "description": "The user's role may not do this"}}
E404 = {404: {"model": ErrorOut, "description": "No such case visible to this user"}}
E409 = {409: {"model": ErrorOut, "description": "The case's current state does not allow it"}}


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


def announce(
    state: ApiState,
    session: Session,
    case_id: int,
    kind: str,
    user: Principal,
    now: Any,
    details: dict[str, Any],
) -> None:
    """Queue a case event for the webhook, in the request's transaction; nothing without one."""
    if state.webhook is not None:
        enqueue_case_event(session, case_id, kind, now=now, actor=user.name, details=details)


def case_out(summary: dict[str, Any], user: Principal) -> dict[str, Any]:
    """A summary dict plus what the user may do to the case now."""
    return {**summary, "allowed_transitions": user.allowed_targets(summary["state"])}


def photo_url(request: Request, case_id: int, photo_id: int) -> str:
    """The API URL a field photo is served at (checked per user, like the chips)."""
    return f"{request.scope.get('root_path', '')}/cases/{case_id}/photos/{photo_id}"


def load_visible(session: Session, case_id: int, user: Principal, *, lock: bool = True) -> Any:
    """The case (locked for this write unless ``lock`` is false), or 404 when the user may not
    see it."""
    try:
        case = load_case(session, case_id, for_update=lock)
    except CaseNotFoundError:
        raise not_found(case_id) from None
    if not user.can_see(case.assigned_county):
        raise not_found(case_id)
    return case
