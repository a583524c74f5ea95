"""``/docs``: Swagger UI served from the app itself, never from a CDN.

FastAPI's default docs page loads Swagger UI from a public CDN, which leaks who reads the API
docs and breaks on networks without internet access (county offices, field tablets behind a
VPN). This follows FastAPI's recipe for self-hosting the docs' JavaScript and CSS; the assets
come from the ``fastapi-offline`` package (Swagger UI 5, which reads the OpenAPI 3.1 document
FastAPI writes). ReDoc, a second CDN page, is not offered: ``/openapi.json`` feeds any viewer.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _assets_dir() -> str:
    return str(files("fastapi_offline").joinpath("static"))


def _policy(html: str) -> str:
    """A content policy allowing this page's own assets and its one inline start-up script
    (by hash), and nothing from anywhere else."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def install_docs(app: FastAPI) -> None:
    """Add ``/docs`` and its assets to an app built with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(directory=_assets_dir()), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # the validator badge would send the document to a public validation service
            swagger_ui_parameters={"validatorUrl": None},
        )
        html = bytes(page.body).decode()
        return HTMLResponse(html, headers={"Content-Security-Policy": _policy(html)})
