"""Security headers on every answer, the JSON API's as much as the pages'.

An API answer can still end up in a browser (a link opened in a tab, a page of another site
framing or fetching it), so each one says how it may be treated: not sniffed into HTML, not
framed, not stored in caches (answers carry case locations and officers' names), no referrer
leaked onward, and a content policy that lets a JSON document load nothing at all. A route that
serves a page sets its own policy (the review page and dossier with nonces, the API docs);
whatever a route sets is kept.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Nothing may load, run, frame or be framed: right for JSON, CSV and images.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", API_CSP),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    # authenticated answers hold case data: no browser or proxy keeps a copy
    ("Cache-Control", "no-store"),
)


class SecurityHeaders:
    """Pure ASGI middleware adding :data:`SECURITY_HEADERS` where the answer lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
