"""``GET /health``: liveness and database reachability, for load balancers and monitors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..migrate import current_revision
from .deps import (
    StateDep,
)
from .schemas import (
    Health,
)

router = APIRouter()


@router.get(
    "/health",
    response_model=Health,
    tags=["meta"],
    summary="Liveness and database reachability (no token needed)",
    responses={503: {"model": Health, "description": "The database cannot be reached"}},
)
def health(state: StateDep) -> Any:
    """``ok`` when the database answers; 503 otherwise (the URL is never shown)."""
    try:
        with state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        revision = current_revision(state.db.engine)
    except Exception:  # any failure to reach the database is "unreachable"
        body = Health(status="error", database="unreachable").model_dump()
        return JSONResponse(body, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Health(status="ok", database="ok", schema_revision=revision)
