"""What every route needs: the app's state, the authenticated user, and the case filters."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import StringConstraints
from sqlalchemy.orm import Session

from ..auth import Principal, authenticate
from ..db import TrackerDB
from ..photos import PhotoStore
from ..queries import CaseQuery
from ..sessions import SessionPolicy, resolve_session
from ..settings import TrackerSettings
from ..states import CaseState, Tag
from ..webhook import WebhookConfig, WebhookSender
from .basemap import Basemap
from .schemas import BBOX_PATTERN, NO_NUL

#: The review page's session cookie: it carries a server-side session's id, never the API token
#: (HttpOnly: page scripts never see it either).
COOKIE_NAME = "changedetect_session"
#: A cookie-authenticated write must carry this header. Browsers send cookies on cross-site
#: form posts but never let another origin set a custom header without a CORS preflight (which
#: this API never grants), so the header proves the request came from our own page. The cookie
#: is also SameSite=Strict: two independent defences against cross-site request forgery.
CSRF_HEADER = "X-Changedetect-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer cdt_...`")
_cookie = APIKeyCookie(
    name=COOKIE_NAME, auto_error=False, description="Session cookie set by `POST /login`"
)


@dataclass
class ApiState:
    """Everything the routes share, kept on ``app.state.tracker``."""

    db: TrackerDB
    now: Callable[[], dt.datetime]
    evidence_roots: tuple[Path, ...] | None
    webhook: WebhookConfig | None
    sender: WebhookSender | None
    cookie_secure: bool
    owns_db: bool
    photos: PhotoStore
    sessions: SessionPolicy
    basemap: Basemap | None = None
    settings: TrackerSettings = dataclasses.field(default_factory=TrackerSettings)


def get_state(request: Request) -> ApiState:
    """The app's :class:`ApiState`."""
    return request.app.state.tracker


StateDep = Annotated[ApiState, Depends(get_state)]


def read_session(state: StateDep) -> Iterator[Session]:
    """The request's read session: one per request, shared by the authentication and the
    route, closed when the request is done. Writes go through ``state.db.run_write`` instead
    (their own retried transaction)."""
    with state.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(read_session)]


def unauthorized(message: str) -> HTTPException:
    """401 with the challenge RFC 6750 asks for."""
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


def current_user(
    request: Request,
    state: StateDep,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The user of the request's bearer token (else of the session cookie); 401 without one."""
    now = state.now()
    if bearer is not None:
        user = authenticate(session, bearer.credentials, now=now)
        if user is None:
            raise unauthorized(
                "the API token is unknown, expired, revoked, or its user is disabled"
            )
        return user
    if not cookie:
        raise unauthorized("no API token: send `Authorization: Bearer <token>`")
    user = resolve_session(state.db, cookie, policy=state.sessions, now=now)
    if user is None:
        raise unauthorized(
            "the session has ended (logged out, expired or its token revoked): log in again"
        )
    if request.method not in SAFE_METHODS and not request.headers.get(CSRF_HEADER):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a write authenticated by the session cookie needs the {CSRF_HEADER} header",
        )
    return user


UserDep = Annotated[Principal, Depends(current_user)]


def invalid(location: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 for a value FastAPI's own validation cannot judge (same shape as its own)."""
    return RequestValidationError([{"loc": location, "msg": message, "type": "value_error"}])


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``west,south,east,north`` in WGS84 degrees → a tuple (422 with the reason otherwise)."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise invalid(
            ("query", "bbox"), f"{text!r} is not west,south,east,north: four numbers in degrees"
        )
    west, south, east, north = values
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise invalid(
            ("query", "bbox"),
            f"{text!r}: need -180 <= west <= east <= 180 and -90 <= south <= north <= 90",
        )
    return (west, south, east, north)


def _strings(values: list[str] | None) -> tuple[str, ...]:
    return tuple(v for v in (values or []) if v != "")


#: One free-text filter value (constraints per item: on a list, FastAPI would apply them to
#: the list itself).
Text = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)]


def case_filters(
    state: Annotated[
        list[CaseState] | None, Query(description="Lifecycle state (repeat for several)")
    ] = None,
    county: Annotated[
        list[Text] | None, Query(description="Assigned county (repeat for several)")
    ] = None,
    change_type: Annotated[
        list[Text] | None, Query(description="quarry, construction, vegetation_loss, other")
    ] = None,
    tier: Annotated[list[Text] | None, Query(description="Protection-zone tier")] = None,
    tag: Annotated[list[Tag] | None, Query(description="Known-site tag")] = None,
    aoi: Annotated[Text | None, Query(description="Only cases of this AOI")] = None,
    escalated: Annotated[bool | None, Query(description="Only escalated (true) or not")] = None,
    bbox: Annotated[
        str | None,
        Query(
            description="west,south,east,north (WGS84 degrees): cases whose box meets it",
            examples=["108.2,33.9,108.4,34.1"],
            max_length=200,
            pattern=BBOX_PATTERN,
        ),
    ] = None,
    detected_from: Annotated[
        dt.date | None, Query(description="With a detection on or after this day")
    ] = None,
    detected_to: Annotated[
        dt.date | None, Query(description="... and on or before this day")
    ] = None,
) -> CaseQuery:
    """The query-string filters as a :class:`CaseQuery` (422 with the reason when malformed)."""
    if detected_from and detected_to and detected_to < detected_from:
        raise invalid(
            ("query", "detected_to"),
            f"detected_to {detected_to} is before detected_from {detected_from}",
        )
    return CaseQuery(
        states=tuple(state or ()),
        counties=_strings(county),
        change_types=_strings(change_type),
        tiers=_strings(tier),
        tags=tuple(tag or ()),
        bbox=parse_bbox(bbox) if bbox else None,
        detected_from=detected_from,
        detected_to=detected_to,
        escalated=escalated,
        aoi=aoi or None,
    )


FiltersDep = Annotated[CaseQuery, Depends(case_filters)]


def scoped(query: CaseQuery, user: Principal) -> CaseQuery | None:
    """``query`` narrowed to what ``user`` may see; None when that is nothing at all."""
    scope = user.county_scope
    if scope is None:
        return query
    if query.counties and scope not in query.counties:
        return None
    return dataclasses.replace(query, counties=(scope,))
