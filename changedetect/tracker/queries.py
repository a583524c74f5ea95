"""Read side of the ledger: case lists with filters and paging, a case with its history,
GeoJSON export. Results are frozen dataclasses with ``to_dict()`` (JSON-ready) for the API.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session, defer, selectinload

from ..navigation import navigation
from .clock import utc_now
from .errors import CaseNotFoundError, TrackerError
from .geometry import from_wkb, to_geojson
from .models import Case, CaseEvent, CasePhoto, CaseTag, Detection
from .states import AWAITING_VERIFICATION, CASE_STATES

#: Largest page :func:`list_cases` serves.
MAX_PAGE = 1000


def _iso(value: dt.date | dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class CaseQuery:
    """Filters for :func:`list_cases` (all optional; a sequence means "any of these")."""

    states: Sequence[str] = ()
    counties: Sequence[str] = ()
    """Matched against the assigned county."""
    change_types: Sequence[str] = ()
    tiers: Sequence[str] = ()
    tags: Sequence[str] = ()
    bbox: tuple[float, float, float, float] | None = None
    """(west, south, east, north) in WGS84: cases whose bounding box meets it."""
    detected_from: dt.date | None = None
    """Cases with a (non-suppressed) detection on or after this day ..."""
    detected_to: dt.date | None = None
    """... and on or before this day (both bounds apply to the same detection)."""
    escalated: bool | None = None
    aoi: str | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.states if s not in CASE_STATES]
        if unknown:
            raise TrackerError(
                f"unknown state filter {', '.join(unknown)}: use {', '.join(CASE_STATES)}"
            )
        if self.bbox is not None:
            west, south, east, north = self.bbox
            if not (west <= east and south <= north):
                raise TrackerError(f"bbox {self.bbox} is not (west, south, east, north)")
        if self.detected_from and self.detected_to and self.detected_to < self.detected_from:
            raise TrackerError(
                f"detection date range {self.detected_from}..{self.detected_to} is empty"
            )


@dataclass(frozen=True)
class CaseSummary:
    """A case as a list row."""

    id: int
    state: str
    aoi: str | None
    county: str | None
    assigned_county: str | None
    zone: str | None
    zone_tier: str | None
    change_type: str
    confidence: float
    confidence_level: str | None
    priority: str
    escalated: bool
    overdue: bool
    tags: tuple[str, ...]
    linked_case_id: int | None
    link_reason: str | None
    site_id: int | None
    area_m2: float
    centroid: tuple[float, float]
    first_detected_on: dt.date
    last_detected_on: dt.date
    detections: int
    deadline: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    verified_at: dt.datetime | None
    closed_at: dt.datetime | None

    @property
    def relapse(self) -> bool:
        """Whether the case re-opens a site that had been rectified and closed."""
        return self.link_reason == "relapse"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (dates as ISO strings)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, dt.date | dt.datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        out["area_m2"] = round(self.area_m2, 1)
        out["relapse"] = self.relapse
        out.update(navigation(*self.centroid, self.area_m2, f"case {self.id}"))
        return out


@dataclass(frozen=True)
class DetectionView:
    """One night that saw the case."""

    clue_id: str
    detected_on: dt.date
    area_m2: float
    confidence: float
    change_type: str
    suppressed: bool
    source: str | None
    chip_before: str | None
    chip_after: str | None
    ingested_at: dt.datetime
    geometry: dict[str, Any]
    chip_change: str | None = None
    """The NDVI-change chip (None for clues from runs before it was drawn)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "clue_id": self.clue_id,
            "detected_on": self.detected_on.isoformat(),
            "area_m2": round(self.area_m2, 1),
            "confidence": self.confidence,
            "change_type": self.change_type,
            "suppressed": self.suppressed,
            "source": self.source,
            "chip_before": self.chip_before,
            "chip_after": self.chip_after,
            "chip_change": self.chip_change,
            "ingested_at": self.ingested_at.isoformat(),
            "geometry": self.geometry,
        }


@dataclass(frozen=True)
class PositionView:
    """Where the officer stood when recording an event: the phone's fix and its clock."""

    lat: float
    lon: float
    accuracy_m: float | None
    taken_at: dt.datetime
    source: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "lat": self.lat,
            "lon": self.lon,
            "accuracy_m": self.accuracy_m,
            "taken_at": self.taken_at.isoformat(),
            "source": self.source,
        }


@dataclass(frozen=True)
class PhotoView:
    """A field photo of a case (its bytes are in the photo store, by ``sha256``)."""

    id: int
    case_id: int
    event_id: int | None
    sha256: str
    media_type: str
    byte_size: int
    width: int
    height: int
    filename: str | None
    uploaded_by: str
    uploaded_at: dt.datetime
    exif_lat: float | None
    exif_lon: float | None
    exif_taken_at: str | None

    @classmethod
    def of(cls, photo: CasePhoto) -> PhotoView:
        """The view of a :class:`CasePhoto` row."""
        return cls(
            id=photo.id,
            case_id=photo.case_id,
            event_id=photo.event_id,
            sha256=photo.sha256,
            media_type=photo.media_type,
            byte_size=photo.byte_size,
            width=photo.width,
            height=photo.height,
            filename=photo.filename,
            uploaded_by=photo.uploaded_by,
            uploaded_at=photo.uploaded_at,
            exif_lat=photo.exif_lat,
            exif_lon=photo.exif_lon,
            exif_taken_at=photo.exif_taken_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "case_id": self.case_id,
            "event_id": self.event_id,
            "sha256": self.sha256,
            "media_type": self.media_type,
            "byte_size": self.byte_size,
            "width": self.width,
            "height": self.height,
            "filename": self.filename,
            "uploaded_by": self.uploaded_by,
            "uploaded_at": self.uploaded_at.isoformat(),
            "exif_lat": self.exif_lat,
            "exif_lon": self.exif_lon,
            "exif_taken_at": self.exif_taken_at,
        }


@dataclass(frozen=True)
class EventView:
    """One recorded event (creation, transition, escalation, tag change, reassignment); a field
    verdict also has the officer's position and the photos taken on site."""

    at: dt.datetime
    actor: str
    kind: str
    from_state: str | None
    to_state: str | None
    comment: str | None
    id: int | None = None
    position: PositionView | None = None
    photos: tuple[PhotoView, ...] = ()

    @classmethod
    def of(cls, event: CaseEvent) -> EventView:
        """The view of a :class:`CaseEvent` row (its position and photos loaded)."""
        where = event.position
        return cls(
            at=event.at,
            actor=event.actor,
            kind=event.kind,
            from_state=event.from_state,
            to_state=event.to_state,
            comment=event.comment,
            id=event.id,
            position=None
            if where is None
            else PositionView(where.lat, where.lon, where.accuracy_m, where.taken_at, where.source),
            photos=tuple(PhotoView.of(p) for p in event.photos),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "kind": self.kind,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "comment": self.comment,
            "position": None if self.position is None else self.position.to_dict(),
            "photos": [p.to_dict() for p in self.photos],
        }


@dataclass(frozen=True)
class CaseDetail:
    """A case with its geometries, detection history, events and evidence files."""

    case: CaseSummary
    geometry_first: dict[str, Any]
    geometry_latest: dict[str, Any]
    geometry_union: dict[str, Any]
    detections: tuple[DetectionView, ...]
    events: tuple[EventView, ...]

    @property
    def evidence(self) -> dict[str, list[str]]:
        """Chip and GeoJSON paths of every detection, oldest first, without repeats."""
        out: dict[str, list[str]] = {"geojson": [], "chips": []}
        for d in self.detections:
            for key, path in (
                ("geojson", d.source),
                ("chips", d.chip_before),
                ("chips", d.chip_after),
                ("chips", d.chip_change),
            ):
                if path and path not in out[key]:
                    out[key].append(path)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            **self.case.to_dict(),
            "geometry_first": self.geometry_first,
            "geometry_latest": self.geometry_latest,
            "geometry_union": self.geometry_union,
            "detection_history": [d.to_dict() for d in self.detections],
            "events": [e.to_dict() for e in self.events],
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class CasePage:
    """One page of :func:`list_cases`, with the total number of matching cases."""

    items: tuple[CaseSummary, ...]
    total: int
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
            "items": [c.to_dict() for c in self.items],
        }


def overdue_clause(now: dt.datetime) -> ColumnElement[bool]:
    """SQL: still awaiting verification and past the deadline."""
    return and_(Case.state.in_(AWAITING_VERIFICATION), Case.deadline < now)


def summarize(case: Case, *, now: dt.datetime, detections: int | None = None) -> CaseSummary:
    """A :class:`Case` row → :class:`CaseSummary` (``now`` decides ``overdue``)."""
    centroid = from_wkb(case.geom_union).centroid
    if detections is None:
        detections = sum(1 for d in case.detections if not d.suppressed)
    return CaseSummary(
        id=case.id,
        state=case.state,
        aoi=case.aoi,
        county=case.county,
        assigned_county=case.assigned_county,
        zone=case.zone,
        zone_tier=case.zone_tier,
        change_type=case.change_type,
        confidence=case.confidence,
        confidence_level=case.confidence_level,
        priority=case.priority,
        escalated=case.escalated,
        overdue=case.state in AWAITING_VERIFICATION and case.deadline < now,
        tags=tuple(case.tag_names),
        linked_case_id=case.linked_case_id,
        link_reason=case.link_reason,
        site_id=case.site_id,
        area_m2=case.area_m2,
        centroid=(round(centroid.x, 6), round(centroid.y, 6)),
        first_detected_on=case.first_detected_on,
        last_detected_on=case.last_detected_on,
        detections=detections,
        deadline=case.deadline,
        created_at=case.created_at,
        updated_at=case.updated_at,
        verified_at=case.verified_at,
        closed_at=case.closed_at,
    )


def _filtered(query: CaseQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if query.states:
        where.append(Case.state.in_(list(query.states)))
    if query.counties:
        where.append(Case.assigned_county.in_(list(query.counties)))
    if query.change_types:
        where.append(Case.change_type.in_(list(query.change_types)))
    if query.tiers:
        where.append(Case.zone_tier.in_(list(query.tiers)))
    if query.aoi:
        where.append(Case.aoi == query.aoi)
    if query.escalated is not None:
        where.append(Case.escalated.is_(query.escalated))
    if query.tags:
        where.append(exists().where(CaseTag.case_id == Case.id, CaseTag.tag.in_(list(query.tags))))
    if query.bbox is not None:
        west, south, east, north = query.bbox
        where += [
            Case.max_lon >= west,
            Case.min_lon <= east,
            Case.max_lat >= south,
            Case.min_lat <= north,
        ]
    if query.detected_from or query.detected_to:
        conds = [Detection.case_id == Case.id, Detection.suppressed.is_(False)]
        if query.detected_from:
            conds.append(Detection.detected_on >= query.detected_from)
        if query.detected_to:
            conds.append(Detection.detected_on <= query.detected_to)
        where.append(exists().where(*conds))
    return where


def list_cases(
    session: Session,
    query: CaseQuery | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
    now: dt.datetime | None = None,
) -> CasePage:
    """Cases matching ``query``: escalated (or overdue) first, then by priority, then deadline."""
    now = utc_now(now)
    query = query or CaseQuery()
    if not 1 <= limit <= MAX_PAGE:
        raise TrackerError(f"limit {limit} is outside 1..{MAX_PAGE}")
    if offset < 0:
        raise TrackerError(f"offset {offset} is negative")
    where = _filtered(query)
    total = session.scalar(select(func.count()).select_from(Case).where(*where)) or 0
    ids = _page_ids(session, where, limit=limit, offset=offset, now=now)
    loaded = {
        c.id: c
        for c in session.scalars(
            select(Case)
            .where(Case.id.in_(ids))
            # a list row needs the union footprint only (its centroid), not the other two
            .options(selectinload(Case.tags), defer(Case.geom_first), defer(Case.geom_latest))
        )
    }
    rows = [loaded[i] for i in ids]
    counts = _detection_counts(session, ids)
    items = tuple(summarize(c, now=now, detections=counts.get(c.id, 0)) for c in rows)
    return CasePage(items, int(total), limit, offset)


def _page_ids(
    session: Session,
    where: list[ColumnElement[bool]],
    *,
    limit: int,
    offset: int,
    now: dt.datetime,
) -> list[int]:
    """The ids of one page in list order, without sorting whole rows.

    The order is urgent (escalated, or overdue but not yet flagged by the nightly escalation)
    first, then priority, deadline and id. Urgency depends on the time of the request, so no
    index holds it; the two halves are asked for separately instead, each walked in the order of
    an index and stopped after the page (the urgent half is the short one in a working ledger).
    """
    order = (Case.priority_rank, Case.deadline, Case.id)
    wanted = offset + limit
    # the urgent cases from two indexes: the escalated ones walked in list order on
    # ix_cases_order and stopped after the page, the overdue ones not yet flagged taken from
    # ix_cases_state_deadline (without an ORDER BY, which would make a planner walk an ordered
    # index over every case to find the few) and sorted here; asked as one OR, the same walk
    flagged = session.execute(
        select(*order).where(*where, Case.escalated == True).order_by(*order).limit(wanted)  # noqa: E712 - SQL equality, indexable
    ).all()
    overdue = session.execute(select(*order, Case.escalated).where(*where, overdue_clause(now)))
    unflagged = sorted(tuple(row[:3]) for row in overdue if not row.escalated)
    merged = heapq.merge((tuple(row) for row in flagged), unflagged)
    head = [case_id for _, _, case_id in merged][:wanted]
    urgent = or_(Case.escalated, overdue_clause(now))
    ids = list(head[offset:])
    if len(head) < offset + limit:  # the urgent half ends within this page: all of it was read
        rest = session.scalars(
            select(Case.id)
            .where(*where, ~urgent)
            .order_by(*order)
            .limit(limit - len(ids))
            .offset(max(0, offset - len(head)))
        ).all()
        ids += rest
    return ids


def iter_cases(
    session: Session, query: CaseQuery | None = None, *, now: dt.datetime | None = None
) -> list[CaseSummary]:
    """Every case matching ``query``, in list order (pages through :func:`list_cases`)."""
    out: list[CaseSummary] = []
    offset = 0
    while True:
        page = list_cases(session, query, limit=MAX_PAGE, offset=offset, now=now)
        out.extend(page.items)
        offset += MAX_PAGE
        if offset >= page.total or not page.items:
            return out


def _detection_counts(session: Session, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(Detection.case_id, func.count())
        .where(Detection.case_id.in_(ids), Detection.suppressed.is_(False))
        .group_by(Detection.case_id)
    )
    return {case_id: int(n) for case_id, n in rows}


def clue_statuses(session: Session, clue_ids: Sequence[str]) -> dict[str, str]:
    """The tracker status of each clue already ingested: its case's state, or ``suppressed``.

    What the pipeline writes into a clue's ``status`` property; unknown clues are absent.
    """
    out: dict[str, str] = {}
    for start in range(0, len(clue_ids), 500):
        rows = session.execute(
            select(Detection.clue_id, Detection.suppressed, Case.state)
            .join(Case, Case.id == Detection.case_id)
            .where(Detection.clue_id.in_(list(clue_ids[start : start + 500])))
        )
        out.update({c: "suppressed" if s else state for c, s, state in rows})
    return out


def load_case(session: Session, case_id: int, *, for_update: bool = False) -> Case:
    """The case row, or :class:`CaseNotFoundError`."""
    stmt = select(Case).where(Case.id == case_id)
    if for_update:
        stmt = stmt.with_for_update()  # PostgreSQL row lock; SQLite holds the database lock
    found = session.scalars(stmt).one_or_none()
    if found is None:
        raise CaseNotFoundError(f"no case {case_id} in the tracker")
    return found


def known_counties(session: Session) -> list[str]:
    """Every county the ledger knows, sorted: those the clues fell in (from the zone layer) and
    those cases were assigned to. What a case can be reassigned to from the review page."""
    names = set(session.scalars(select(Case.county).where(Case.county.is_not(None))))
    names |= set(
        session.scalars(select(Case.assigned_county).where(Case.assigned_county.is_not(None)))
    )
    return sorted(names)


def get_case(session: Session, case_id: int, *, now: dt.datetime | None = None) -> CaseDetail:
    """A case with its geometries, full detection history (suppressed included) and events."""
    now = utc_now(now)
    found = session.scalars(
        select(Case)
        .where(Case.id == case_id)
        .options(
            selectinload(Case.tags),
            selectinload(Case.detections),
            selectinload(Case.events).selectinload(CaseEvent.position),
            selectinload(Case.events).selectinload(CaseEvent.photos),
        )
    ).one_or_none()
    if found is None:
        raise CaseNotFoundError(f"no case {case_id} in the tracker")
    detections = tuple(
        DetectionView(
            clue_id=d.clue_id,
            detected_on=d.detected_on,
            area_m2=d.area_m2,
            confidence=d.confidence,
            change_type=d.change_type,
            suppressed=d.suppressed,
            source=d.source,
            chip_before=d.chip_before,
            chip_after=d.chip_after,
            chip_change=d.chip_change,
            ingested_at=d.ingested_at,
            geometry=to_geojson(from_wkb(d.geometry)),
        )
        for d in found.detections
    )
    events = tuple(EventView.of(e) for e in found.events)
    return CaseDetail(
        case=summarize(found, now=now),
        geometry_first=to_geojson(from_wkb(found.geom_first)),
        geometry_latest=to_geojson(from_wkb(found.geom_latest)),
        geometry_union=to_geojson(from_wkb(found.geom_union)),
        detections=detections,
        events=events,
    )


def cases_geojson(
    session: Session,
    query: CaseQuery | None = None,
    *,
    now: dt.datetime | None = None,
    geometry: str = "union",
    limit: int | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """Matching cases as an RFC 7946 FeatureCollection (WGS84) for QGIS and web maps.

    ``geometry`` picks the footprint: ``union`` (everything seen), ``latest`` or ``first``.
    With ``limit``, one page of the list order from ``offset``, and the collection says how many
    cases matched and how many it holds (``numberMatched``/``numberReturned``, the members OGC API
    Features gives a page; RFC 7946 §6.1 allows such foreign members).
    """
    column = {"union": Case.geom_union, "latest": Case.geom_latest, "first": Case.geom_first}
    if geometry not in column:
        raise TrackerError(f"geometry {geometry!r} is not one of {', '.join(column)}")
    page = None
    if limit is None:
        summaries: Sequence[CaseSummary] = iter_cases(session, query, now=now)
    else:
        page = list_cases(session, query, limit=limit, offset=offset, now=now)
        summaries = page.items
    wkbs: dict[int, bytes] = {}
    for start in range(0, len(summaries), 500):
        ids = [s.id for s in summaries[start : start + 500]]
        rows = session.execute(select(Case.id, column[geometry]).where(Case.id.in_(ids)))
        wkbs.update((case_id, wkb) for case_id, wkb in rows)
    features = []
    for s in summaries:
        props = s.to_dict()
        # flat attributes: QGIS handles them best, and GeoPackage/Shapefile have no list fields
        props["tags"] = ",".join(s.tags)
        props["centroid_lon"], props["centroid_lat"] = s.centroid
        features.append(
            {
                "type": "Feature",
                "id": s.id,
                "geometry": to_geojson(from_wkb(wkbs[s.id])),
                "properties": props,
            }
        )
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if page is not None:
        collection.update(numberMatched=page.total, numberReturned=len(features))
    return collection
