"""The field verification routes: photos from the officer's phone, and the verdict recorded with
its note, position and photos.

``POST /cases/{id}/photos`` takes one photo at a time (a phone on a weak signal sends what it
can, and a retry of the same bytes answers with the photo already kept);
``POST /cases/{id}/verification`` records the verdict and attaches the photos named;
``GET /cases/{id}/photos/{photo_id}`` serves a photo to those who may see the case.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ..auth import Principal
from ..models import Case, CasePhoto
from ..photos import EXTENSIONS, PhotoStore, display_name, dossier_copy
from ..queries import CaseDetail, PhotoView
from ..states import check_transition
from ..verification import (
    FieldPosition,
    PhotoNotAttachableError,
    add_photo,
    can_verify,
    check_verifying,
)
from ..verification import record_verification as record
from .common import (
    E401,
    E403,
    E404,
    E409,
    MAX_ID,
    CaseId,
    announce,
    case_out,
    load_visible,
    photo_url,
    visible_or_404,
)
from .deps import StateDep, UserDep, invalid
from .schemas import CaseOut, ErrorOut, PhotoOut, VerificationIn
from .uploads import PHOTO_FIELD, receive_photo

PhotoId = Annotated[int, Path(ge=1, le=MAX_ID, description="Photo id", examples=[7])]

E413 = {413: {"model": ErrorOut, "description": "The photo is larger than photo_max_bytes"}}
E415 = {
    415: {"model": ErrorOut, "description": "Not a multipart form, or not a JPEG/PNG/WebP image"}
}
E422 = {422: {"model": ErrorOut, "description": "The form or a photo id is not acceptable"}}

#: The upload's body as the OpenAPI document describes it (the route reads the stream itself).
PHOTO_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [PHOTO_FIELD],
                    "properties": {
                        PHOTO_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "One JPEG, PNG or WebP photo (its content decides)",
                        }
                    },
                }
            }
        },
    }
}

router = APIRouter(tags=["field verification"])


def photo_out(request: Request, photo: PhotoView) -> dict[str, Any]:
    """A photo's record with the URL it is served at."""
    return {**photo.to_dict(), "url": photo_url(request, photo.case_id, photo.id)}


def dossier_photos(detail: CaseDetail, store: PhotoStore) -> dict[int, tuple[bytes, str] | None]:
    """The field photos of a case's events, as the dossier embeds them (shrunk when large);
    None for a photo whose file is gone from the store."""
    out: dict[int, tuple[bytes, str] | None] = {}
    for event in detail.events:
        for photo in event.photos:
            data = store.read(photo.sha256)
            out[photo.id] = None if data is None else dossier_copy(data, photo.media_type)
    return out


def _verifiable(session: Session, case_id: int, user: Principal, *, lock: bool) -> Case:
    """The case, if the user may see it (else 404), gives field verdicts (else 403) and the
    case awaits one (else 409)."""
    case = load_visible(session, case_id, user, lock=lock)
    if not can_verify(user.allowed_targets("verifying")):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a {user.role} may not add field photos: they go with a field verdict",
        )
    check_verifying(case, "field photos are added")
    return case


@router.post(
    "/cases/{case_id}/photos",
    status_code=status.HTTP_201_CREATED,
    response_model=PhotoOut,
    summary="Upload one photo taken on site, for the verdict still to be recorded",
    responses={
        200: {"model": PhotoOut, "description": "These bytes were already a photo of the case"},
        201: {"description": "The photo, kept"},
        **E401,
        **E403,
        **E404,
        **E409,
        **E413,
        **E415,
        **E422,
    },
    openapi_extra=PHOTO_FORM,
)
async def upload_photo(
    case_id: CaseId, request: Request, response: Response, user: UserDep, state: StateDep
) -> Any:
    """Only for users who may see the case and give its field verdict, while it is verifying:
    checked before a byte of the photo is read. The content must decode as JPEG, PNG or WebP
    (415 otherwise, whatever the file's name or Content-Type) and be at most photo_max_bytes
    (413, as soon as the upload passes it)."""

    def permitted() -> None:
        with state.db.session() as session:
            _verifiable(session, case_id, user, lock=False)

    await run_in_threadpool(permitted)
    stored, filename = await receive_photo(request, state.photos, state.settings.photo_max_bytes)

    def keep(session: Session) -> tuple[PhotoView, bool]:
        _verifiable(session, case_id, user, lock=True)  # again: it may have moved meanwhile
        return add_photo(
            session,
            case_id,
            stored,
            filename=display_name(filename),
            actor=user.name,
            now=state.now(),
        )

    photo, created = await run_in_threadpool(state.db.run_write, keep)
    if not created:
        response.status_code = status.HTTP_200_OK
    return photo_out(request, photo)


@router.get(
    "/cases/{case_id}/photos/{photo_id}",
    response_class=FileResponse,
    summary="A field photo of the case",
    responses={
        200: {
            "description": "The photo as uploaded",
            "content": {
                media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in EXTENSIONS
            },
        },
        **E401,
        **E404,
    },
)
def photo_file(case_id: CaseId, photo_id: PhotoId, user: UserDep, state: StateDep) -> Any:
    """404 for a case the user may not see and for a photo that is not the case's. Served
    under its recorded media type, never sniffed, never cached."""
    with state.db.session() as session:
        visible_or_404(session, case_id, user)
        photo = session.scalars(
            select(CasePhoto).where(CasePhoto.id == photo_id, CasePhoto.case_id == case_id)
        ).one_or_none()
    path = state.photos.path_of(photo.sha256) if photo is not None else None
    if photo is None or path is None or not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no photo {photo_id} available for case {case_id}"
        )
    return FileResponse(
        path,
        media_type=photo.media_type,
        # a name of our making: the phone's file name is for display, never for a header
        filename=f"case-{case_id}-photo-{photo_id}.{EXTENSIONS[photo.media_type]}",
        content_disposition_type="inline",
        headers={
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


@router.post(
    "/cases/{case_id}/verification",
    response_model=CaseOut,
    summary="Record the field verdict with the officer's note, position and photos",
    responses={**E401, **E403, **E404, **E409, **E422},
)
def verification(case_id: CaseId, body: VerificationIn, user: UserDep, state: StateDep) -> Any:
    """The verdict moves the case out of verifying like a transition (409 from any other
    state; 403 when the role may not give it). The position, its time and the photos (uploaded
    to this case before, not yet attached: 422 otherwise) are recorded on the verdict's event,
    all or nothing."""
    now = state.now()
    where = body.position
    position = FieldPosition(where.lat, where.lon, where.accuracy_m, where.taken_at, where.source)

    def work(session: Session) -> dict[str, Any]:
        case = load_visible(session, case_id, user)
        current = case.state
        check_transition(case.id, current, body.verdict)  # InvalidTransitionError → 409
        if not user.may_transition(current, body.verdict):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a {user.role} may not move case {case_id} from {current} to {body.verdict}",
            )
        try:
            summary, event_id = record(
                session,
                case_id,
                body.verdict,
                actor=user.name,
                position=position,
                note=body.note,
                photo_ids=body.photo_ids,
                now=now,
            )
        except PhotoNotAttachableError as exc:
            raise invalid(("body", "photo_ids"), str(exc)) from None
        announce(
            state,
            session,
            case_id,
            "case.transitioned",
            user,
            now,
            {
                "from_state": current,
                "to_state": body.verdict,
                "comment": body.note,
                "field_record": {
                    "event_id": event_id,
                    "position": {**where.model_dump(mode="json")},
                    "photo_ids": list(dict.fromkeys(body.photo_ids)),
                },
            },
        )
        return summary.to_dict()

    out = state.db.run_write(work)
    if state.sender is not None:
        state.sender.notify()
    return case_out(out, user)
