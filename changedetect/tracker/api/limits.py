"""Request body limits, enforced before anything reads the body.

FastAPI reads (and buffers) a request's whole body before it resolves the route's
dependencies, authentication included, so without a limit an anonymous client could make the
server hold any amount of memory just to be told 401. :class:`BodySizeLimit` sits in front of
the application and answers 413 itself: at once when ``Content-Length`` announces too much, and
as soon as the counted chunks pass the limit when the body streams without one (chunked
transfer encoding). It never buffers: chunks pass through as they come.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .uploads import FRAMING_ALLOWANCE

#: Every JSON body this API takes (a transition, an assignment, a login) is a few hundred bytes.
DEFAULT_MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class RouteBodyLimit:
    """A larger (or smaller) limit for one method and path pattern, e.g. a photo upload, and
    how its 413 explains it (default: :func:`too_large_message`)."""

    method: str
    path: re.Pattern[str]
    max_bytes: int
    message: str | None = None


def photo_upload_limit(photo_max_bytes: int) -> RouteBodyLimit:
    """The limit of ``POST /cases/{case_id}/photos``: the photo plus its multipart framing.

    The route checks the photo itself as it streams; this refuses a body announced too large
    before authentication even runs, in the same words as the route.
    """
    return RouteBodyLimit(
        "POST",
        re.compile(r"/cases/[^/]+/photos/?"),
        photo_max_bytes + FRAMING_ALLOWANCE,
        f"the photo is larger than {photo_max_bytes:,} bytes (the tracker's photo_max_bytes)",
    )


class BodyTooLargeError(HTTPException):
    """A streamed body passed its limit while the application was reading it.

    An :class:`HTTPException`, so FastAPI's body reading lets it through unchanged (it turns
    any other error into a 400) and the app's error handler answers it like any other.
    """

    def __init__(self, message: str) -> None:
        super().__init__(413, message, headers={"Connection": "close"})


def too_large_message(max_bytes: int) -> str:
    """The 413 detail: what the limit is, in the units people think in."""
    if max_bytes >= 1024 * 1024 and max_bytes % (1024 * 1024) == 0:
        size = f"{max_bytes // (1024 * 1024)} MiB"
    elif max_bytes >= 1024 and max_bytes % 1024 == 0:
        size = f"{max_bytes // 1024} KiB"
    else:
        size = f"{max_bytes} bytes"
    return f"the request body is larger than {size}, the most this endpoint accepts"


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _declared_length(scope: Scope) -> int | None:
    """The ``Content-Length`` of the request; None without one. ValueError when malformed."""
    values = [v for k, v in scope["headers"] if k.lower() == b"content-length"]
    if not values:
        return None
    lengths = {int(v.decode("latin-1").strip()) for v in values}  # ValueError on nonsense
    if len(lengths) != 1 or min(lengths) < 0:
        raise ValueError("conflicting or negative Content-Length")
    return lengths.pop()


class BodySizeLimit:
    """Pure ASGI middleware: 413 for any request body over its route's limit.

    ``routes`` are checked in order; a request matching none of them gets ``default_max_bytes``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        routes: Sequence[RouteBodyLimit] = (),
    ) -> None:
        self.app = app
        self.default_max_bytes = default_max_bytes
        self.routes = tuple(routes)

    def limit_for(self, method: str, path: str) -> tuple[int, str]:
        """The most bytes a ``method path`` request body may have, and the 413's message."""
        for route in self.routes:
            if route.method == method and route.path.fullmatch(path):
                return route.max_bytes, route.message or too_large_message(route.max_bytes)
        return self.default_max_bytes, too_large_message(self.default_max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, message = self.limit_for(scope["method"], _route_path(scope))
        try:
            declared = _declared_length(scope)
        except ValueError:
            refuse = JSONResponse(
                {"detail": "the Content-Length header is not a single whole number"},
                status_code=400,
                headers={"Connection": "close"},
            )
            await refuse(scope, receive, send)
            return
        if declared is not None and declared > limit:
            error = BodyTooLargeError(message)
            await JSONResponse({"detail": error.detail}, 413, headers=error.headers)(
                scope, receive, send
            )
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(message)
            return event

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLargeError as exc:
            # normally answered by the app's error handler; this covers a reader outside it
            if started:
                raise
            await JSONResponse({"detail": exc.detail}, 413, headers=exc.headers)(
                scope, receive, send
            )
