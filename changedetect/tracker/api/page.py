"""The morning review page (``GET /review``) and the files it loads (``/static``).

The page is rendered from ``templates/review.html``; its CSS and scripts (Leaflet for the map
of the cases among them, in ``static/vendor/``) are files in ``static/`` served by the app
itself: no CDN, no web font, nothing fetched from outside the app, so it works on an offline
network. The Content Security Policy allows scripts and styles from this origin only (no inline
code at all); only a configured :class:`~.basemap.Basemap` adds its tile server's origin, for
images. The scripts render with ``textContent``/DOM calls, never ``innerHTML``, so nothing from
a case can become markup.

The page names its static files with a content fingerprint (``/static/review.js?v=3f2a…``):
such a URL always means the same bytes, so browsers keep it for a year, while a new release's
page names new URLs and is never paired with an old script. A request without the current
fingerprint is answered ``no-cache`` (revalidated by ETag).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from .basemap import Basemap
from .deps import CSRF_HEADER, StateDep

HERE = Path(__file__).resolve().parent
TEMPLATE_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
#: Where the app mounts :class:`StaticAssets`.
STATIC_PATH = "/static"

#: A fingerprinted URL's bytes never change: keep them as long as HTTP caches go.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Anything else may change with a release: ask each time (an ETag makes that a cheap 304).
REVALIDATE = "no-cache"


def fingerprint(path: Path) -> str:
    """The first 12 hex digits of the file's SHA-256: enough to tell releases apart."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class StaticAssets(StaticFiles):
    """The page's files, served with ``nosniff`` and cached by fingerprint (module docstring)."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        super().__init__(directory=directory)
        self.root = directory
        self.fingerprints = {
            path.relative_to(directory).as_posix(): fingerprint(path)
            for path in sorted(directory.rglob("*"))
            if path.is_file()
        }

    def url(self, name: str, root_path: str = "") -> str:
        """The fingerprinted URL of the static file ``name`` (relative to the static folder)."""
        try:
            version = self.fingerprints[name]
        except KeyError:
            raise LookupError(
                f"the review page names {name!r}, not a file in {self.root}"
            ) from None
        return f"{root_path}{STATIC_PATH}/{name}?v={version}"

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        name = Path(full_path).relative_to(self.root.resolve()).as_posix()
        asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("v", [None])[-1]
        current = asked is not None and asked == self.fingerprints.get(name)
        response.headers["Cache-Control"] = IMMUTABLE if current else REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


#: One set of static files for every app: they are the package's own, fixed at install.
ASSETS = StaticAssets()

templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(("html",)),
        # a variable the template names but the route does not pass is an error, not ""
        undefined=StrictUndefined,
    )
)

router = APIRouter()


def review_csp(basemap: Basemap | None = None) -> str:
    """The page's Content Security Policy: everything from this app only, nothing inline; and
    the basemap's tiles from its one origin, when a basemap is configured."""
    images = "'self'" if basemap is None else f"'self' {basemap.origin}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


@router.get("/review", response_class=HTMLResponse, tags=["review"], summary="The review page")
def review_page(request: Request, state: StateDep) -> HTMLResponse:
    """The page itself needs no token: it asks for one (login form) when the API says 401."""
    root_path = request.scope.get("root_path", "")
    return templates.TemplateResponse(
        request,
        "review.html",
        {
            "asset": lambda name: ASSETS.url(name, root_path),
            "csrf_header": CSRF_HEADER,
            "basemap": state.basemap,
        },
        headers={
            "Content-Security-Policy": review_csp(state.basemap),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )
