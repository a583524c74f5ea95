"""Who is asking: ``/me``, and ``/login``/``/logout`` for the review page's session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.orm import Session

from ..auth import Principal
from ..queries import (
    known_counties,
)
from ..sessions import end_session, start_session
from ..states import CASE_STATES
from .common import (
    E401,
)
from .deps import (
    COOKIE_NAME,
    ApiState,
    SessionDep,
    StateDep,
    UserDep,
    unauthorized,
)
from .schemas import (
    LoginIn,
    Me,
)

router = APIRouter()


def me_out(user: Principal, state: ApiState, session: Session) -> Me:
    """The user and its permissions (what the review page draws its buttons from), and the
    counties a case can be assigned to when the user may assign."""
    transitions = {s: user.allowed_targets(s) for s in CASE_STATES}
    counties: list[str] = []
    if user.can_assign:
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


@router.get(
    "/me",
    response_model=Me,
    tags=["auth"],
    summary="The token's user and what it may do",
    responses={**E401},
)
def me(user: UserDep, state: StateDep, session: SessionDep) -> Me:
    """Who the token belongs to, its county scope, and the transitions its role allows."""
    return me_out(user, state, session)


@router.post(
    "/login",
    response_model=Me,
    tags=["auth"],
    summary="Exchange a token for a session cookie (the review page)",
    responses={**E401},
)
def login(body: LoginIn, response: Response, state: StateDep, session: SessionDep) -> Me:
    """Checks the token and opens a server-side session; the HttpOnly, SameSite=Strict cookie
    carries only the session's id. The session ends after a spell without requests, at its
    absolute end, on logout, or when the token is revoked."""
    started = start_session(state.db, body.token, policy=state.sessions, now=state.now())
    if started is None:
        raise unauthorized("the API token is unknown, expired, revoked, or its user is disabled")
    user = started.user
    response.set_cookie(
        COOKIE_NAME,
        started.session_id,
        max_age=int(state.sessions.lifetime.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=state.cookie_secure,
        path="/",
    )
    return me_out(user, state, session)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["auth"],
    summary="End the session and clear its cookie",
)
def logout(request: Request, state: StateDep) -> Response:
    """Deletes the session on the server, so its cookie stops working even if it was copied
    (the API token itself stays valid: revoke it with the CLI). Without a session, nothing to
    end: still 204."""
    session_id = request.cookies.get(COOKIE_NAME)
    if session_id:
        end_session(state.db, session_id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=state.cookie_secure
    )
    return response
