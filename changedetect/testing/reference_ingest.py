"""The per-clue ingest as it was before ingest worked a chunk at a time: a reference to check
the chunked ingest against (same clues in, same outcomes and the same case rows out).

One clue at a time through the ORM: a bounding-box query per clue, each new case flushed for its
id. Kept only for :mod:`tests.tracker.test_ingest_differential`; the ledger's ingest is
:func:`changedetect.tracker.ingest`.
"""

from __future__ import annotations

import datetime as dt

from shapely.geometry.base import BaseGeometry
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..tracker import ClueOutcome, IngestReport
from ..tracker.clock import utc_now
from ..tracker.clues import Clue, ClueInput, load_clues
from ..tracker.db import TrackerDB, lock_for_case_writes
from ..tracker.geometry import area_m2, bbox, from_wkb, overlap_share, to_wkb, union
from ..tracker.models import CHIP_CHANGE, Case, CaseEvent, Detection
from ..tracker.settings import TrackerSettings
from ..tracker.sites import apply_site_tags
from ..tracker.spatial import footprint_meets
from ..tracker.states import OPEN_STATES, SUPPRESSING_STATES, at_least, priority_rank
from ..tracker.working_set import jsonable


def reference_ingest(
    target: TrackerDB | Session,
    clues: ClueInput,
    *,
    now: dt.datetime | None = None,
    settings: TrackerSettings | None = None,
    actor: str = "ingest",
    chunk_clues: int = 250,
) -> IngestReport:
    """Ingest clue by clue, in committed chunks of ``chunk_clues`` (no pauses between them)."""
    now = utc_now(now)
    batch = load_clues(clues)
    settings = settings or TrackerSettings()
    report = IngestReport(batch.source, rejected=list(batch.rejected))
    ordered = sorted(batch.clues, key=lambda c: (c.detected_on, c.clue_id))

    def work(session: Session, chunk: list[Clue]) -> IngestReport:
        return _ingest_in(
            session, chunk, source=batch.source, now=now, settings=settings, actor=actor
        )

    if not isinstance(target, TrackerDB):
        report.outcomes.extend(work(target, ordered).outcomes)
        return report
    for start in range(0, len(ordered), chunk_clues):
        chunk = ordered[start : start + chunk_clues]
        part = target.run_write(lambda session, chunk=chunk: work(session, chunk))
        report.outcomes.extend(part.outcomes)
    return report


def _ingest_in(
    session: Session,
    clues: list[Clue],
    *,
    source: str | None,
    now: dt.datetime,
    settings: TrackerSettings,
    actor: str,
) -> IngestReport:
    lock_for_case_writes(session)
    report = IngestReport(source)
    seen = _known_clue_ids(session, [c.clue_id for c in clues])
    for clue in clues:
        if clue.clue_id in seen:
            report.outcomes.append(ClueOutcome(clue.clue_id, "unchanged", seen[clue.clue_id]))
            continue
        outcome = _ingest_one(session, clue, now=now, settings=settings, actor=actor)
        seen[clue.clue_id] = outcome.case_id
        report.outcomes.append(outcome)
    return report


def _known_clue_ids(session: Session, clue_ids: list[str]) -> dict[str, int | None]:
    known: dict[str, int | None] = {}
    for start in range(0, len(clue_ids), 500):  # stay under bound-parameter limits
        chunk = clue_ids[start : start + 500]
        rows = session.execute(
            select(Detection.clue_id, Detection.case_id).where(Detection.clue_id.in_(chunk))
        )
        known.update({clue_id: case_id for clue_id, case_id in rows})
    return known


def overlapping_cases(
    session: Session, geom: BaseGeometry, settings: TrackerSettings
) -> list[tuple[float, Case]]:
    """Cases (any state) whose footprint overlaps ``geom`` by the dedup rule, best first.

    The candidates come from SQL (PostGIS ``ST_Intersects`` on PostgreSQL, the bounding boxes
    on SQLite: :func:`.spatial.footprint_meets`); the share is measured here, alike on both.
    """
    dialect = session.get_bind().dialect.name
    candidates = session.scalars(
        select(Case)
        .where(footprint_meets(Case, Case.geom_union, geom, dialect))
        # PostgreSQL: a transition racing this ingest finishes first and we read its state
        .with_for_update()
    ).all()
    matches = []
    for case in candidates:
        share = overlap_share(geom, from_wkb(case.geom_union))
        if share >= settings.min_overlap:
            matches.append((share, case))
    # largest overlap first; the newer case wins a tie (it is the one people work on)
    matches.sort(key=lambda m: (-m[0], -m[1].id))
    return matches


def _ingest_one(
    session: Session,
    clue: Clue,
    *,
    now: dt.datetime,
    settings: TrackerSettings,
    actor: str,
) -> ClueOutcome:
    if clue.alert_status == "dropped":
        note = "its alert was dropped: the newest clear view shows the ground as before"
        return ClueOutcome(clue.clue_id, "held", None, note=note)
    clue_area = area_m2(clue.geometry)
    matches = overlapping_cases(session, clue.geometry, settings)

    for _, case in matches:
        if case.state in OPEN_STATES:
            _grow(case, clue, clue_area, now=now)
            apply_site_tags(session, case, now=now, settings=settings, actor=actor)
            return ClueOutcome(clue.clue_id, "updated", case.id)

    if clue.alert_status == "probable" and not settings.issue_probable:
        note = "its alert is probable: held until later clear acquisitions confirm it"
        return ClueOutcome(clue.clue_id, "held", None, note=note)

    for _, old in matches:
        if old.state in SUPPRESSING_STATES:
            old_area = area_m2(from_wkb(old.geom_union))
            grown = (
                clue_area >= settings.regrowth_factor * old_area
                and clue_area - old_area >= settings.regrowth_min_added_m2
            )
            if not grown:
                old.detections.append(_detection(clue, clue_area, now, suppressed=True))
                session.flush()
                note = f"over case {old.id} closed as {old.state}"
                return ClueOutcome(clue.clue_id, "suppressed", old.id, note=note)
            new = open_case(
                session,
                clue,
                clue_area,
                now=now,
                settings=settings,
                actor=actor,
                linked=old,
                reason="regrowth",
            )
            note = (
                f"grew from {old_area:.0f} to {clue_area:.0f} m² over case {old.id} ({old.state})"
            )
            return ClueOutcome(clue.clue_id, "created", new.id, old.id, note)

    for _, old in matches:
        if old.state == "closed":
            new = open_case(
                session,
                clue,
                clue_area,
                now=now,
                settings=settings,
                actor=actor,
                linked=old,
                reason="relapse",
            )
            note = f"disturbed again after case {old.id} was rectified and closed"
            return ClueOutcome(clue.clue_id, "created", new.id, old.id, note)

    new = open_case(session, clue, clue_area, now=now, settings=settings, actor=actor)
    return ClueOutcome(clue.clue_id, "created", new.id)


def _detection(clue: Clue, clue_area: float, now: dt.datetime, *, suppressed: bool) -> Detection:
    properties = jsonable(clue.properties)
    if clue.chip_change is not None:
        # the change chip has no column of its own (a migration for one more path is not worth
        # it): the properties keep it, resolved as the columns keep the before/after chips
        properties[CHIP_CHANGE] = clue.chip_change
    return Detection(
        clue_id=clue.clue_id,
        detected_on=clue.detected_on,
        area_m2=clue_area,
        confidence=clue.confidence,
        change_type=clue.change_type,
        geometry=to_wkb(clue.geometry),
        properties=properties,
        source=clue.source,
        chip_before=clue.chip_before,
        chip_after=clue.chip_after,
        suppressed=suppressed,
        ingested_at=now,
    )


def _set_footprint(case: Case, geom: BaseGeometry) -> None:
    case.geom_union = to_wkb(geom)
    case.area_m2 = area_m2(geom)
    case.min_lon, case.min_lat, case.max_lon, case.max_lat = bbox(geom)


def open_case(
    session: Session,
    clue: Clue,
    clue_area: float,
    *,
    now: dt.datetime,
    settings: TrackerSettings,
    actor: str,
    linked: Case | None = None,
    reason: str | None = None,
) -> Case:
    # a site disturbed again after rectification is an enforcement matter however small
    clue_priority = at_least(clue.priority, "high") if reason == "relapse" else clue.priority
    wkb = to_wkb(clue.geometry)
    case = Case(
        aoi=clue.aoi,
        state="issued",
        change_type=clue.change_type,
        confidence=clue.confidence,
        confidence_level=clue.confidence_level,
        clue_priority=clue_priority,
        priority=clue_priority,
        priority_rank=priority_rank(clue_priority),
        zone=clue.zone,
        zone_tier=clue.zone_tier,
        county=clue.county,
        assigned_county=clue.county,
        escalated=False,
        linked_case=linked,
        link_reason=reason,
        geom_first=wkb,
        geom_latest=wkb,
        first_detected_on=clue.detected_on,
        last_detected_on=clue.detected_on,
        deadline=now + dt.timedelta(days=settings.deadline_days),
        created_at=now,
        updated_at=now,
    )
    _set_footprint(case, clue.geometry)
    session.add(case)
    case.detections.append(_detection(clue, clue_area, now, suppressed=False))
    comment = f"opened from clue {clue.clue_id}"
    if linked is not None:
        comment += f"; {reason} of case {linked.id} ({linked.state})"
    case.events.append(
        CaseEvent(at=now, actor=actor, kind="created", to_state="issued", comment=comment)
    )
    session.flush()  # the id, for the outcome and for the next clue's overlap query
    apply_site_tags(session, case, now=now, settings=settings, actor=actor)
    return case


def _grow(case: Case, clue: Clue, clue_area: float, *, now: dt.datetime) -> None:
    case.detections.append(_detection(clue, clue_area, now, suppressed=False))
    _set_footprint(case, union(from_wkb(case.geom_union), clue.geometry))
    if clue.detected_on >= case.last_detected_on:
        case.geom_latest = to_wkb(clue.geometry)
        case.last_detected_on = clue.detected_on
        case.change_type = clue.change_type  # the newest look at the site says what it is now
    if clue.detected_on < case.first_detected_on:
        case.geom_first = to_wkb(clue.geometry)
        case.first_detected_on = clue.detected_on
    if clue.confidence > case.confidence:
        case.confidence, case.confidence_level = clue.confidence, clue.confidence_level
    case.clue_priority = at_least(case.clue_priority, clue.priority)
    for attr in ("zone", "zone_tier", "county", "aoi"):
        if getattr(case, attr) is None:
            setattr(case, attr, getattr(clue, attr))
    if case.assigned_county is None:
        case.assigned_county = clue.county
    case.updated_at = now
