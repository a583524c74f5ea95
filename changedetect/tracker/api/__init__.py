"""The tracker's HTTP API (FastAPI) and its review page.

``create_app(db_url | TrackerDB, *, now=...)`` builds the app; serve it with
``changedetect tracker serve`` (uvicorn) or any ASGI server. Endpoints: ``/cases`` (filters,
paging), ``/cases.geojson``, ``/cases/{id}`` (history), ``/cases/{id}/transitions``,
``/cases/{id}/assign``, ``/cases/{id}/chips/{before|after|change}``, ``/reports/monthly`` (JSON) and
``/reports/monthly.csv``, ``/health``, ``/me``, ``/login``, ``/logout``, ``/review`` (the page) and ``/static`` (its files).
Who may do what: :mod:`changedetect.tracker.auth`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # FastAPI and the app load on first use, not whenever the command line is built
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
