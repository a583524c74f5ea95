"""The field verification record: what an officer records on site, kept in the case's history.

A verification is the verdict transition out of ``verifying`` (compliant, false alarm or
violation), its note, where the officer stood (:class:`FieldPosition`, recorded as the event's
:class:`~.models.EventPosition`) and the photos taken there. Photos are uploaded first, one by
one (:func:`add_photo`: a phone on a weak signal sends them as it can), and attached to the
verdict's event when the verdict is recorded (:func:`record_verification`), all in one
transaction with the transition.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .clock import utc_now
from .db import TrackerDB
from .errors import InvalidTransitionError, TrackerError
from .lifecycle import check_actor, record_transition, run
from .models import POSITION_SOURCES, Case, CasePhoto, EventPosition
from .photos import StoredPhoto
from .queries import CaseSummary, PhotoView, load_case, summarize
from .states import VERDICT_STATES

#: The state a case is verified in: photos are taken and verdicts given only then.
VERIFYING = "verifying"
#: Most photos one verdict carries (a phone form, not an archive upload).
MAX_PHOTOS_PER_VERDICT = 50


class PhotoNotAttachableError(TrackerError):
    """A verdict named a photo that is not an unattached photo of its case."""


class CaseNotVerifyingError(InvalidTransitionError):
    """Field photos were sent for a case that is not awaiting its field verdict (its state does
    not allow it, as for a transition)."""


@dataclass(frozen=True)
class FieldPosition:
    """The officer's position on site: WGS84 degrees, the fix's claimed radius in metres (None
    when typed in by hand), and the time the phone took it by its own clock (kept as given)."""

    lat: float
    lon: float
    accuracy_m: float | None
    taken_at: dt.datetime
    source: str = "device"

    def __post_init__(self) -> None:
        for name in ("lat", "lon"):
            if not math.isfinite(getattr(self, name)):
                raise TrackerError(f"position {name} must be a finite number of degrees")
        if not -90.0 <= self.lat <= 90.0:
            raise TrackerError(f"position lat {self.lat} is outside -90..90 degrees")
        if not -180.0 <= self.lon <= 180.0:
            raise TrackerError(f"position lon {self.lon} is outside -180..180 degrees")
        if self.accuracy_m is not None and not (
            math.isfinite(self.accuracy_m) and self.accuracy_m >= 0
        ):
            raise TrackerError(f"position accuracy {self.accuracy_m} m is not a finite radius ≥ 0")
        if self.taken_at.tzinfo is None:
            raise TrackerError("position taken_at needs a time zone (e.g. 2025-07-02T10:31:05Z)")
        if self.source not in POSITION_SOURCES:
            raise TrackerError(
                f"position source {self.source!r}: use one of {', '.join(POSITION_SOURCES)}"
            )


def can_verify(role_targets: Sequence[str]) -> bool:
    """Whether a user whose role may move a ``verifying`` case to ``role_targets`` gives field
    verdicts (and so may add the photos that go with them)."""
    return any(t in VERDICT_STATES for t in role_targets)


def check_verifying(case: Case, what: str) -> None:
    """:class:`CaseNotVerifyingError` unless the case awaits its field verdict."""
    if case.state != VERIFYING:
        raise CaseNotVerifyingError(
            f"case {case.id} is {case.state}: {what} only while it is {VERIFYING}"
        )


def add_photo(
    target: TrackerDB | Session,
    case_id: int,
    stored: StoredPhoto,
    *,
    filename: str | None,
    actor: str,
    now: dt.datetime | None = None,
) -> tuple[PhotoView, bool]:
    """Record a photo (already in the store) for a case being verified; (its view, whether it
    is new). The same bytes sent again for the same case give the photo recorded the first
    time: a phone retrying an upload must not double the evidence."""
    actor = check_actor(actor)
    now = utc_now(now)

    def work(session: Session) -> tuple[PhotoView, bool]:
        case = load_case(session, case_id, for_update=True)
        same = session.scalars(
            select(CasePhoto).where(CasePhoto.case_id == case_id, CasePhoto.sha256 == stored.sha256)
        ).one_or_none()
        if same is not None:
            return PhotoView.of(same), False
        check_verifying(case, "photos are added")
        facts = stored.facts
        photo = CasePhoto(
            case_id=case_id,
            sha256=stored.sha256,
            media_type=facts.media_type,
            byte_size=stored.byte_size,
            width=facts.width,
            height=facts.height,
            filename=filename,
            uploaded_by=actor,
            uploaded_at=now,
            exif_lat=facts.exif_lat,
            exif_lon=facts.exif_lon,
            exif_taken_at=facts.exif_taken_at,
        )
        session.add(photo)
        session.flush()
        return PhotoView.of(photo), True

    return run(target, work)


def _photos_to_attach(session: Session, case_id: int, photo_ids: Sequence[int]) -> list[CasePhoto]:
    wanted = list(dict.fromkeys(photo_ids))  # a repeated id is the same photo
    if len(wanted) > MAX_PHOTOS_PER_VERDICT:
        raise PhotoNotAttachableError(
            f"{len(wanted)} photos given: a verdict carries at most {MAX_PHOTOS_PER_VERDICT}"
        )
    if not wanted:
        return []
    found = {
        p.id: p
        for p in session.scalars(
            select(CasePhoto).where(CasePhoto.id.in_(wanted)).with_for_update()
        )
    }
    photos = []
    for photo_id in wanted:
        photo = found.get(photo_id)
        # a photo of another case gets the same answer as a missing one: which cases have
        # which photos is not for this request to learn
        if photo is None or photo.case_id != case_id:
            raise PhotoNotAttachableError(
                f"photo {photo_id} is not a photo of case {case_id}: upload it to this case "
                f"first (POST /cases/{case_id}/photos)"
            )
        if photo.event_id is not None:
            raise PhotoNotAttachableError(
                f"photo {photo_id} already documents another event of case {case_id}"
            )
        photos.append(photo)
    return photos


def record_verification(
    target: TrackerDB | Session,
    case_id: int,
    verdict: str,
    *,
    actor: str,
    position: FieldPosition,
    note: str | None = None,
    photo_ids: Sequence[int] = (),
    now: dt.datetime | None = None,
) -> tuple[CaseSummary, int]:
    """Record the field verdict of a ``verifying`` case with the officer's note, position and
    photos; (the case's summary, the verdict event's id). Nothing is recorded if any part is
    refused: a verdict whose photos cannot be attached is not half kept."""
    actor = check_actor(actor)
    now = utc_now(now)
    if verdict not in VERDICT_STATES:
        raise TrackerError(
            f"{verdict!r} is not a field verdict: use one of {', '.join(sorted(VERDICT_STATES))}"
        )

    def work(session: Session) -> tuple[CaseSummary, int]:
        case = load_case(session, case_id, for_update=True)
        event = record_transition(session, case, verdict, actor=actor, comment=note, now=now)
        photos = _photos_to_attach(session, case_id, photo_ids)
        session.add(
            EventPosition(
                event_id=event.id,
                lat=position.lat,
                lon=position.lon,
                accuracy_m=position.accuracy_m,
                taken_at=position.taken_at,
                source=position.source,
            )
        )
        for photo in photos:
            photo.event_id = event.id
        session.flush()
        return summarize(case, now=now), event.id

    return run(target, work)
