"""The evidence the review page shows: a case's chips and its printable dossier.

(The page itself is :mod:`.page`.) Chips are served by
``GET /cases/{id}/chips/{before|after|change}``: the case must be visible to the user, the file
is the one a detection of that case names (the request never names a path), and the path must
resolve — symlinks followed — to an image file inside an evidence root: the folders given to
:func:`~changedetect.tracker.api.create_app`, or by default the folder of the ``clues.geojson``
the detection was ingested from (its chips sit beside it in ``chips/``). ``change`` is the
NDVI-change chip, which detections from runs before it was drawn do not have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..dossier import DOSSIER_CSP, render_dossier
from ..models import Detection, change_chip_of
from .common import E401, E404, MAX_ID, visible_case_detail, visible_or_404
from .deps import StateDep, UserDep
from .verification import dossier_photos

router = APIRouter()

#: Image types a chip may be; anything else is refused even inside an evidence root.
CHIP_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
#: A detection's chips: before and after (true | false colour), and the NDVI change.
ChipKind = Literal["before", "after", "change"]


def resolve_evidence(path: str, source: str | None, roots: tuple[Path, ...] | None) -> Path | None:
    """The chip file ``path`` names, if it is a readable image inside an allowed root; else None.

    ``path`` comes from the database (written at ingest from a clues file), which is still input
    we do not trust: a clue could name ``../../etc/shadow`` or a symlink could point out of the
    chips folder. Resolving first (``strict``: the file must exist) and then checking
    containment on the real path catches both.
    """
    candidate = Path(path)
    base = Path(source).parent if source else None
    if not candidate.is_absolute():
        if base is None:
            return None
        candidate = base / candidate
    allowed = roots if roots is not None else ((base,) if base is not None else ())
    try:
        real = candidate.resolve(strict=True)
        real_roots = [r.resolve(strict=True) for r in allowed]
    except (OSError, RuntimeError):  # missing file or root, or a symlink loop
        return None
    if real.suffix.lower() not in CHIP_TYPES or not real.is_file():
        return None
    if not any(real.is_relative_to(root) for root in real_roots):
        return None
    return real


@router.get(
    "/cases/{case_id}/chips/{which}",
    tags=["cases"],
    summary=(
        "The before, after or NDVI-change chip of a case (the latest detection's, or clue_id's)"
    ),
    response_class=FileResponse,
    responses={
        200: {
            "description": "The chip image, patch outline drawn",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **E401,
        **E404,
    },
)
def chip(
    case_id: Annotated[int, PathParam(ge=1, le=MAX_ID, description="Case id")],
    which: ChipKind,
    user: UserDep,
    state: StateDep,
    clue_id: Annotated[
        str | None, Query(max_length=200, description="A detection of the case (default: latest)")
    ] = None,
) -> FileResponse:
    """404 for a case the user may not see, and when the chip is missing or not allowed."""
    with state.db.session() as session:
        visible_or_404(session, case_id, user)
        found = _chip_on_record(session, case_id, which, clue_id)
    resolved = resolve_evidence(found[0], found[1], state.evidence_roots) if found else None
    if resolved is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no {which} chip available for case {case_id}"
        )
    return FileResponse(
        resolved,
        media_type=CHIP_TYPES[resolved.suffix.lower()],
        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def _chip_on_record(
    session: Session, case_id: int, which: ChipKind, clue_id: str | None
) -> tuple[str, str | None] | None:
    """(path, source) of the case's `which` chip: clue_id's, else the newest detection's that
    has one; the newest non-suppressed detection first, as it shows the site as it is now."""
    order = (Detection.suppressed, Detection.detected_on.desc(), Detection.id.desc())
    by_clue = () if clue_id is None else (Detection.clue_id == clue_id,)
    if which == "change":
        # kept in the properties (no column): a case has a handful of detections to look at
        rows = session.execute(
            select(Detection.properties, Detection.source)
            .where(Detection.case_id == case_id, *by_clue)
            .order_by(*order)
        )
        for properties, source in rows:
            path = change_chip_of(properties)
            if path is not None:
                return path, source
        return None
    column = Detection.chip_before if which == "before" else Detection.chip_after
    found = session.execute(
        select(column, Detection.source)
        .where(Detection.case_id == case_id, column.is_not(None), *by_clue)
        .order_by(*order)
        .limit(1)
    ).first()
    return (found[0], found[1]) if found else None


@router.get(
    "/cases/{case_id}/dossier",
    tags=["cases"],
    summary="The case's dossier for the enforcement file: one self-contained, printable page",
    # the errors are JSON like every other route's; only the dossier itself is HTML
    responses={
        200: {
            "description": "The dossier",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        **E401,
        **E404,
    },
)
def dossier(
    case_id: Annotated[int, PathParam(ge=1, le=MAX_ID, description="Case id")],
    user: UserDep,
    state: StateDep,
) -> HTMLResponse:
    """Chips inline, no script, no request: the page can be saved, printed or attached as is."""
    with state.db.session() as session:
        detail = visible_case_detail(session, case_id, user, state.now())
    # the newest detection that was not suppressed shows the site as it is now
    shown = sorted(detail.detections, key=lambda d: (d.suppressed, -d.detected_on.toordinal()))
    chips: dict[str, tuple[bytes, str]] = {}
    for which in ("before", "after", "change"):
        for d in shown:
            path = getattr(d, f"chip_{which}")
            found = resolve_evidence(path, d.source, state.evidence_roots) if path else None
            if found is not None:
                chips[which] = (found.read_bytes(), CHIP_TYPES[found.suffix.lower()])
                break
    photos = dossier_photos(detail, state.photos)
    page = render_dossier(detail, chips, now=state.now(), photos=photos)
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": DOSSIER_CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        },
    )
