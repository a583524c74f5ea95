"""Serving the tracker with uvicorn, in one process or several.

One Python process runs one request's Python at a time, so on a machine with several cores the
API answers more requests per second with several worker processes (uvicorn ``workers``). Each
worker builds its own app from the same options: the parent puts them in the environment
(:data:`OPTIONS_ENV`, and the database URL in ``$CHANGEDETECT_DB``, where a URL already may be)
and uvicorn's workers call :func:`app_from_environment`. The parent first builds the app once
itself, so a wrong option fails before any worker starts, with the same message as with one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastapi import FastAPI

from ..db import resolve_db_url
from ..settings import API_BUSY_WAIT_S, DB_ENV_VAR, DB_FILE_ENV_VAR
from .basemap import Basemap

#: The serve options a worker process reads (JSON of :class:`ServeOptions`; no secret in it).
OPTIONS_ENV = "CHANGEDETECT_SERVE_OPTIONS"


@dataclass(frozen=True)
class ServeOptions:
    """What ``tracker serve`` passes to the app, apart from the database and the webhook (both
    come from the environment, where their secrets already are)."""

    evidence_roots: list[str] = field(default_factory=list)
    cookie_secure: bool = False
    busy_wait_s: float = API_BUSY_WAIT_S
    basemap_url: str | None = None
    basemap_attribution: str = ""
    photo_dir: str | None = None

    @property
    def basemap(self) -> Basemap | None:
        return Basemap(self.basemap_url, self.basemap_attribution) if self.basemap_url else None

    def build(self, db: object | None = None) -> FastAPI:
        """The app for these options, on ``db`` (an open TrackerDB) or ``$CHANGEDETECT_DB``."""
        from ..webhook import WebhookConfig
        from .app import create_app

        return create_app(
            db if db is not None else resolve_db_url(None),  # type: ignore[arg-type]
            evidence_roots=self.evidence_roots or None,
            webhook=WebhookConfig.from_env(),
            cookie_secure=self.cookie_secure,
            busy_wait_s=self.busy_wait_s,
            basemap=self.basemap,
            photo_dir=self.photo_dir,
        )


def app_from_environment() -> FastAPI:
    """The app of a worker process (uvicorn's ``factory=True`` target)."""
    raw = os.environ.get(OPTIONS_ENV)
    options = ServeOptions(**json.loads(raw)) if raw else ServeOptions()
    return options.build()


def serve(
    options: ServeOptions,
    db_url: str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    open_db: Callable[[str], object],
    announce: Callable[[str], None] = print,
) -> None:
    """Run the API until interrupted: in this process, or in ``workers`` worker processes."""
    import uvicorn

    db = open_db(db_url)  # opened (and a SQLite file migrated) once, here
    try:
        app = options.build(db)  # every option checked before anything listens
        announce(
            f"serving the tracker API on http://{host}:{port} (review page: /review)"
            + (f" with {workers} worker processes" if workers > 1 else "")
        )
        basemap = options.basemap
        if basemap is not None:
            # the origin only: the URL's query may hold the tile service's key
            announce(f"the review page's map loads basemap tiles from {basemap.origin}")
        if workers == 1:
            uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=True)
            return
    finally:
        db.close()  # type: ignore[attr-defined]
    os.environ.pop(DB_FILE_ENV_VAR, None)  # the workers take the URL the parent resolved
    os.environ[DB_ENV_VAR] = db_url
    os.environ[OPTIONS_ENV] = json.dumps(asdict(options))
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="info",
        proxy_headers=True,
    )


def evidence_folders(values: list[str] | None) -> list[str]:
    """Evidence roots as absolute paths (a worker may start in another working directory)."""
    return [str(Path(v).resolve()) for v in values or []]
