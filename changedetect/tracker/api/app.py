"""The application factory: :func:`create_app` wires the routes, errors and lifecycle."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.engine import make_url
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import ConfigError
from ..clock import utc_now
from ..db import TrackerDB
from ..errors import (
    CaseNotFoundError,
    ConcurrencyError,
    InvalidTransitionError,
    PhotoTooLargeError,
    TrackerDatabaseError,
    TrackerError,
    UnsupportedPhotoError,
)
from ..photos import PhotoStore
from ..sessions import SessionPolicy
from ..settings import API_BUSY_WAIT_S, TrackerSettings
from ..webhook import WebhookConfig, WebhookSender
from . import cases, health, identity, reports
from .basemap import Basemap
from .deps import ApiState
from .docs import install_docs
from .headers import SecurityHeaders
from .limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit, photo_upload_limit
from .page import ASSETS, STATIC_PATH
from .page import router as page_router
from .review import router as review_router
from .schemas import PATTERN_MESSAGES, ValidationErrorOut
from .verification import router as verification_router

#: The app's own files (templates, static assets): never a place for uploads.
APP_FILES = Path(__file__).resolve().parent

DESCRIPTION = """
The changedetect case ledger over HTTP: patch clues become cases that counties verify in the
field (`issued → verifying → compliant | false_alarm | violation`, `violation → rectifying →
closed`).

**Authentication**: `Authorization: Bearer <token>` (tokens come from
`changedetect tracker token create NAME`; they expire, 90 days by default, and can be revoked or
rotated). The review page logs in with `POST /login`, which opens a server-side session held by
an HttpOnly cookie; `POST /logout` ends it. Roles: `analyst` (every county, every transition,
reassignment), `officer` (its own county only: field verdicts and rectification progress),
`viewer` (read-only). A case outside an officer's county answers 404, as if it did not exist.

**Errors** are JSON `{"detail": "one line"}`; malformed requests answer 422 with `detail`
summarising and `errors` locating each problem. A write that finds the database busy with
another write (an ingest of clues) for more than a few seconds answers 503 with `Retry-After`:
nothing was changed, send it again then. A request body over 64 KiB (a field photo: over its own
limit) answers 413 before anything else is checked.
"""


#: FastAPI's 400 detail for a body it cannot decode at all (fastapi/routing.py).
BODY_PARSE_ERROR = "There was an error parsing the body"


def _location(loc: Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    issues = []
    for err in errors:
        loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            msg = f"the body is not valid JSON ({err.get('ctx', {}).get('error', msg)})"
        elif err.get("type") == "missing" and loc == ["body"]:
            msg = "a JSON body is required"
        elif err.get("type") == "string_pattern_mismatch":
            pattern = err.get("ctx", {}).get("pattern")
            msg = PATTERN_MESSAGES.get(pattern, msg)
        issues.append({"loc": loc, "msg": msg, "type": str(err.get("type", "value_error"))})
    summary = "; ".join(
        f"{_location(i['loc'])}: {i['msg']}" if i["loc"] else i["msg"] for i in issues
    )
    return ValidationErrorOut.model_validate(
        {"detail": summary or "invalid request", "errors": issues}
    ).model_dump()


def _install_error_handlers(app: FastAPI) -> None:
    """One error shape everywhere: ``{"detail": "..."}`` (422 adds ``errors``)."""

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(list(exc.errors())), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            # FastAPI's answer to a body that is not even text (bad UTF-8 ...): it is a
            # malformed body like any other, so the same 422 and a message that says what
            issue = {
                "loc": ["body"],
                "msg": "the body is not valid UTF-8 JSON",
                "type": "json_invalid",
            }
            return JSONResponse({"detail": f"body: {issue['msg']}", "errors": [issue]}, 422)
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(CaseNotFoundError)
    async def on_not_found(_: Request, exc: CaseNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": "case not found"}, status_code=404)

    @app.exception_handler(InvalidTransitionError)
    async def on_transition(_: Request, exc: InvalidTransitionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(PhotoTooLargeError)
    async def on_too_large(_: Request, exc: PhotoTooLargeError) -> JSONResponse:
        # the rest of the body is not read: tell the client not to send more on this connection
        return JSONResponse(
            {"detail": str(exc)},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            headers={"Connection": "close"},
        )

    @app.exception_handler(UnsupportedPhotoError)
    async def on_unsupported(_: Request, exc: UnsupportedPhotoError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
        )

    @app.exception_handler(ConcurrencyError)
    async def on_busy(_: Request, exc: ConcurrencyError) -> JSONResponse:
        # another writer (a night's ingest) holds the database: a short wait, not an outage
        retry_after = max(1, math.ceil(exc.retry_after_s))
        return JSONResponse(
            {
                "detail": "the tracker database is busy with another write (such as an "
                f"ingest of clues); nothing was changed, try again in {retry_after} s"
            },
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(retry_after)},
        )

    @app.exception_handler(TrackerDatabaseError)
    async def on_database(_: Request, exc: TrackerDatabaseError) -> JSONResponse:
        # the message is already redacted by the store; still, say little to the client
        return JSONResponse(
            {"detail": "the tracker database is unavailable, try again"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    @app.exception_handler(TrackerError)
    async def on_tracker(_: Request, exc: TrackerError) -> JSONResponse:
        # what the service layer refuses that request validation let through is bad input
        body = {"detail": str(exc), "errors": [{"loc": [], "msg": str(exc), "type": "value_error"}]}
        return JSONResponse(body, status_code=422)


def _document_media_types(app: FastAPI) -> None:
    """Move the documented 200 body of operations marked ``x-media-type`` to that media type.

    FastAPI documents a route's every response under its ``response_class`` media type, which
    would claim the JSON error answers of ``/cases.geojson`` are GeoJSON; so the route keeps
    the JSON default and its success body is relabelled here.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            for item in spec.get("paths", {}).values():
                for operation in item.values():
                    media_type = operation.pop("x-media-type", None)
                    content = operation.get("responses", {}).get("200", {}).get("content", {})
                    if media_type and "application/json" in content:
                        content[media_type] = content.pop("application/json")
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def photo_folder(
    tracker: TrackerDB, photo_dir: str | Path | None, evidence_roots: Iterable[Path] | None
) -> Path:
    """Where the field photos go: ``photo_dir``, or a ``photos`` folder beside a SQLite file.

    A PostgreSQL ledger (or an in-memory one) has no folder of its own, so it needs
    ``photo_dir``. The folder must not be inside anything the app serves files from (the
    evidence roots, the app's own files): photos are served only through their checked route.
    """
    if photo_dir is None:
        database = make_url(tracker.url).database if tracker.dialect == "sqlite" else None
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ConfigError(
                f"the tracker database ({tracker.dialect}) has no folder to keep field photos "
                "beside: give a photo folder (create_app(photo_dir=...), serve --photo-dir DIR)"
            )
        folder = Path(database).resolve().parent / "photos"
    else:
        folder = Path(photo_dir).resolve()
    for served in (APP_FILES, *(Path(r).resolve() for r in evidence_roots or ())):
        if folder.is_relative_to(served):
            raise ConfigError(
                f"photo folder {folder} is inside {served}, which the app serves files from: "
                "keep field photos in a folder of their own"
            )
    return folder


def create_app(
    db: str | TrackerDB | None = None,
    *,
    now: Callable[[], dt.datetime] | dt.datetime | None = None,
    evidence_roots: Iterable[str | Path] | None = None,
    webhook: WebhookConfig | None = None,
    webhook_interval_s: float = 30.0,
    cookie_secure: bool = False,
    migrate: bool = False,
    busy_wait_s: float = API_BUSY_WAIT_S,
    basemap: Basemap | None = None,
    photo_dir: str | Path | None = None,
    settings: TrackerSettings | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The tracker's HTTP API and review page.

    ``db`` is a URL (opened and checked to be at the current schema; ``migrate=True`` upgrades
    it first; None means ``$CHANGEDETECT_DB`` or the SQLite default) or an open
    :class:`TrackerDB`, which stays the caller's to close. ``now`` fixes the clock (a datetime,
    or a function returning one) for tests and replays. ``evidence_roots`` are the folders
    chips may be served from (default: each detection's clues-file folder). With ``webhook``,
    transitions and assignments are queued for it and a background sender delivers them while
    the app runs. ``cookie_secure`` marks the session cookie Secure (set it behind HTTPS).
    A write waits at most ``busy_wait_s`` for another writer (an ingest between two of its
    chunks) before answering 503 with ``Retry-After``.
    ``basemap`` is an online tile server for the review page's map; without one the map has no
    basemap and the page loads nothing from outside the app.
    ``photo_dir`` is where field photos are kept (default: ``photos/`` beside a SQLite file;
    required for PostgreSQL; see :func:`photo_folder`). ``settings`` gives the tracker's
    limits (``photo_max_bytes``) and the session lifetimes.
    Every other request body is limited to ``max_body_bytes``.
    """
    settings = settings or TrackerSettings()
    owns_db = not isinstance(db, TrackerDB)
    tracker = db if isinstance(db, TrackerDB) else TrackerDB.open(db, migrate=migrate)
    if isinstance(now, dt.datetime):
        fixed = utc_now(now)
        clock: Callable[[], dt.datetime] = lambda: fixed  # noqa: E731 - a constant clock
    elif now is None:
        clock = utc_now
    else:
        clock = now
    roots = None if evidence_roots is None else tuple(Path(r) for r in evidence_roots)
    try:
        photos = PhotoStore(photo_folder(tracker, photo_dir, roots))
    except BaseException:
        if owns_db:
            tracker.close()
        raise
    sender = WebhookSender(tracker, webhook, interval_s=webhook_interval_s) if webhook else None
    state = ApiState(
        # the routes' writes wait briefly for the lock, then answer 503 rather than hang
        db=tracker.with_busy_wait(busy_wait_s),
        now=clock,
        evidence_roots=roots,
        webhook=webhook,
        sender=sender,
        cookie_secure=cookie_secure,
        owns_db=owns_db,
        basemap=basemap,
        photos=photos,
        settings=settings,
        sessions=SessionPolicy.from_settings(settings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.sender is not None:
            state.sender.start()
        try:
            yield
        finally:
            if state.sender is not None:
                state.sender.stop()
            if state.owns_db:
                state.db.close()

    app = FastAPI(
        title="changedetect case tracker",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={422: {"model": ValidationErrorOut, "description": "Malformed request"}},
        docs_url=None,  # install_docs serves it without a CDN
        redoc_url=None,
    )
    app.state.tracker = state
    _install_error_handlers(app)
    _document_media_types(app)
    # one router per resource; their order is the order of the documentation's sections
    for resource in (health, identity, cases, reports):
        app.include_router(resource.router)
    app.include_router(review_router)
    app.include_router(verification_router)
    app.include_router(page_router)
    app.mount(STATIC_PATH, ASSETS, name="static")
    install_docs(app)
    # the last added runs first: the body limit wraps everything that could read a body, and
    # the headers wrap the limit's own 413s too (they only touch the answer, never the body)
    app.add_middleware(
        BodySizeLimit,
        default_max_bytes=max_body_bytes,
        routes=[photo_upload_limit(settings.photo_max_bytes)],
    )
    app.add_middleware(SecurityHeaders)
    return app
