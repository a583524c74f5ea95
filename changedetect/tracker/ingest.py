"""Ingest: a night's clues into cases, deduplicated against the ledger.

For each clue not seen before (its ``clue_id`` is the key), in detection-date order:

1. cases whose footprint overlaps it — intersection ≥ ``min_overlap`` (30 %) of the smaller of
   the two, measured in the clue's UTM zone — are its matches;
2. an **open** match (largest overlap first) is **updated**: a new detection row, the footprint
   grows to the union, the latest geometry becomes the clue's;
3. else a match closed as ``false_alarm`` / ``compliant`` **suppresses** the clue (kept as a
   suppressed detection of that case, so history shows it) — unless the patch has grown
   materially (area ≥ ``regrowth_factor`` × and ≥ ``regrowth_min_added_m2`` more than the old
   footprint), which opens a new case linked to the old one (``regrowth``);
4. else a match ``closed`` after rectification means the site was disturbed again: a new case
   linked to it (``relapse``, priority at least high);
5. else a new case is **created**.

Clues are checked before any is stored (:mod:`.clues`): one that the ledger cannot hold is set
aside in ``IngestReport.rejected`` with its reason, and the rest go in.

The clues go in as committed chunks, each a transaction holding the ledger's case-write lock
(see :mod:`.db`) for about :data:`CHUNK_SECONDS`: a night of twenty thousand clues never holds
the lock long enough to keep a person's transition waiting for more than a chunk. Within a
chunk the work is done in memory and written in bulk (:mod:`.working_set`): the candidate cases
of all its clues read in a few queries, each clue decided in order against them, then one
executemany per table. ``detections.clue_id`` is unique, so re-ingesting a night, or two
processes ingesting it at once, gives one case per site and one detection per clue; and an
ingest stopped part-way (a crash, a database error) leaves whole chunks behind: run it again
and the clues already stored are skipped while the rest go in as they would have, in the same
order.
"""

from __future__ import annotations

import datetime as dt
import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from shapely.geometry.base import BaseGeometry
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..memory import set_aside_from_gc
from .clock import utc_now
from .clues import Clue, ClueInput, RejectedClue, load_clues
from .db import TrackerDB, lock_for_case_writes
from .geometry import area_m2, bbox, from_wkb, overlap_share, to_wkb
from .models import Case, CaseEvent, Detection
from .settings import TrackerSettings
from .sites import apply_site_tags
from .spatial import footprint_meets
from .states import OPEN_STATES, SUPPRESSING_STATES, at_least, priority_rank
from .working_set import WorkingCase, WorkingSet, detection_values, one_of

ClueAction = Literal["created", "updated", "suppressed", "unchanged", "held"]

#: How long one committed chunk should hold the case-write lock: short enough that a person's
#: write waits a second or so at most (it goes in between two chunks), long enough that SQLite's
#: hand-off pause between chunks (:data:`~.db.SQLITE_HANDOFF_S`, 0.12 s) costs about a tenth of
#: the ingest's time whatever its speed. Chunk sizes follow the measured pace.
CHUNK_SECONDS = 1.0
#: Clues in the first chunk, before the pace is known.
CHUNK_CLUES = 250
#: Bounds of a paced chunk: a slow start does not make chunks of a few clues, a fast one does
#: not hold thousands of clues' cases in memory at once.
MIN_CHUNK_CLUES = 50
MAX_CHUNK_CLUES = 5000


@dataclass(frozen=True)
class ClueOutcome:
    """What happened to one clue."""

    clue_id: str
    action: ClueAction
    case_id: int | None
    linked_case_id: int | None = None
    note: str = ""


@dataclass
class IngestReport:
    """Per-clue outcomes of one :func:`ingest`, with counts."""

    source: str | None
    outcomes: list[ClueOutcome] = field(default_factory=list)
    rejected: list[RejectedClue] = field(default_factory=list)
    """Clues set aside, not stored: each with the one reason why."""

    def _count(self, action: str) -> int:
        return sum(1 for o in self.outcomes if o.action == action)

    @property
    def created(self) -> int:
        """Clues that opened a new case."""
        return self._count("created")

    @property
    def updated(self) -> int:
        """Clues that added a detection to an open case."""
        return self._count("updated")

    @property
    def suppressed(self) -> int:
        """Clues over a case closed as false alarm / compliant that did not grow enough."""
        return self._count("suppressed")

    @property
    def unchanged(self) -> int:
        """Clues already in the ledger (re-ingested)."""
        return self._count("unchanged")

    @property
    def held(self) -> int:
        """Clues of probable alerts held back until confirmed, and of dropped alerts."""
        return self._count("held")

    @property
    def stored(self) -> int:
        """Clues written to the ledger by this ingest (created, updated or suppressed)."""
        return self.created + self.updated + self.suppressed

    def summary(self) -> str:
        """One line for people."""
        return (
            f"{len(self.outcomes) + len(self.rejected)} clues: {self.created} created, "
            f"{self.updated} updated, {self.suppressed} suppressed, {self.unchanged} unchanged, "
            f"{self.held} held, {len(self.rejected)} rejected"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "created": self.created,
            "updated": self.updated,
            "suppressed": self.suppressed,
            "unchanged": self.unchanged,
            "held": self.held,
            "rejected": len(self.rejected),
            "outcomes": [asdict(o) for o in self.outcomes],
            "rejects": [
                {"index": r.index, "clue_id": r.clue_id, "reason": r.reason} for r in self.rejected
            ],
        }


def ingest(
    target: TrackerDB | Session,
    clues: ClueInput,
    *,
    source: str | Path | None = None,
    now: dt.datetime | None = None,
    settings: TrackerSettings | None = None,
    actor: str = "ingest",
    chunk_clues: int | None = None,
    on_chunk: Callable[[Session, IngestReport], None] | None = None,
) -> IngestReport:
    """Ingest clues (a ``clues.geojson`` path, a FeatureCollection, Features or PatchClues).

    Clues the ledger cannot store are not stored: they come back in ``report.rejected``
    (:func:`~changedetect.tracker.rejects.write_rejects` sets them aside in a file). A path
    that is not a readable FeatureCollection raises :class:`ClueFormatError`.

    With a :class:`TrackerDB`, the clues go in as transactions of ``chunk_clues`` each (None:
    as many as take about :data:`CHUNK_SECONDS`), every one committed before the next begins
    and retried on conflicts with concurrent writers;
    ``on_chunk(session, chunk_report)`` runs inside each, so what it writes commits with that
    chunk. With a :class:`Session`, everything runs inside the caller's transaction (the
    caller commits, and owns retries).

    ``source`` labels where the clues came from (the GeoJSON path: relative chip paths are
    resolved against its folder); for a path argument it is the path itself.
    """
    if chunk_clues is not None and chunk_clues < 1:
        raise ValueError(f"chunk_clues must be at least 1, got {chunk_clues}")
    now = utc_now(now)
    # what lives through the whole ingest (the input, the clues, the report) is set aside from
    # the cyclic garbage collector: with a night's hundreds of thousands of containers, each of
    # its full collections walked them all again, a third of the ingest's time. A chunk's own
    # objects are collected as usual; everything is handed back at the end.
    with set_aside_from_gc():
        return _ingest(
            target,
            clues,
            source=source,
            now=now,
            settings=settings or TrackerSettings(),
            actor=actor,
            chunk_clues=chunk_clues,
            on_chunk=on_chunk,
        )


def _ingest(
    target: TrackerDB | Session,
    clues: ClueInput,
    *,
    source: str | Path | None,
    now: dt.datetime,
    settings: TrackerSettings,
    actor: str,
    chunk_clues: int | None,
    on_chunk: Callable[[Session, IngestReport], None] | None,
) -> IngestReport:
    batch = load_clues(clues, source=source)
    gc.freeze()
    report = IngestReport(batch.source, rejected=list(batch.rejected))
    # oldest night first, so a case's first/latest geometry follow time even in a backfill;
    # the same order on every run, so a re-run after a stop continues where the stop was
    ordered = sorted(batch.clues, key=lambda c: (c.detected_on, c.clue_id))

    def work(session: Session, chunk: list[Clue]) -> IngestReport:
        part = _ingest_in(
            session, chunk, source=batch.source, now=now, settings=settings, actor=actor
        )
        if on_chunk is not None:
            on_chunk(session, part)
        return part

    if not isinstance(target, TrackerDB):
        report.outcomes.extend(work(target, ordered).outcomes)
        return report
    position, size = 0, chunk_clues or CHUNK_CLUES
    while position < len(ordered):
        if position:
            target.let_waiting_writers_in()  # a transition posted meanwhile goes in here
            gc.freeze()  # the chunks done (their outcomes) live on too
        chunk = ordered[position : position + size]
        started = time.monotonic()
        part = target.run_write(lambda session, chunk=chunk: work(session, chunk))
        report.outcomes.extend(part.outcomes)
        position += len(chunk)
        if chunk_clues is None:
            size = paced_chunk_size(len(chunk), time.monotonic() - started)
    target.refresh_statistics()
    return report


def paced_chunk_size(clues: int, seconds: float) -> int:
    """The next chunk's size, after a chunk of ``clues`` took ``seconds``: as many clues as
    take about :data:`CHUNK_SECONDS` at that pace, growing at most fourfold a chunk."""
    pace = clues / max(seconds, 1e-3)
    size = min(int(pace * CHUNK_SECONDS), 4 * clues)
    return max(MIN_CHUNK_CLUES, min(MAX_CHUNK_CLUES, size))


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
    session.flush()  # a caller's pending changes are in the rows read below
    seen: dict[str, WorkingCase | int | None] = dict(
        _known_clue_ids(session, [c.clue_id for c in clues])
    )
    fresh = [c for c in clues if c.clue_id not in seen]
    work = WorkingSet.load(
        session, [bbox(c.geometry) for c in fresh if c.alert_status != "dropped"]
    )
    decided: list[_Decision] = []
    for clue in clues:
        if clue.clue_id in seen:
            decided.append(_Decision(clue.clue_id, "unchanged", seen[clue.clue_id]))
            continue
        decision = _decide(work, clue, now=now, settings=settings, actor=actor)
        seen[clue.clue_id] = decision.case
        decided.append(decision)
    work.tag(session, now=now, settings=settings, actor=actor)
    work.write(session)
    session.expire_all()  # ORM objects the caller holds reload what was written around them
    return IngestReport(source, [d.outcome() for d in decided])


def _known_clue_ids(session: Session, clue_ids: list[str]) -> dict[str, int | None]:
    known: dict[str, int | None] = {}
    for start in range(0, len(clue_ids), 500):  # stay under bound-parameter limits
        chunk = clue_ids[start : start + 500]
        rows = session.execute(
            select(Detection.clue_id, Detection.case_id).where(
                one_of(session, Detection.clue_id, chunk)
            )
        )
        known.update({clue_id: case_id for clue_id, case_id in rows})
    return known


def overlapping_cases(
    session: Session, geom: BaseGeometry, settings: TrackerSettings
) -> list[tuple[float, Case]]:
    """Cases (any state) whose footprint overlaps ``geom`` by the dedup rule, best first: one
    geometry's matches as ingest finds them, through the ORM (ingest itself matches a whole
    chunk at once, :func:`.working_set.candidate_cases`).

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


@dataclass(frozen=True)
class _Decision:
    """A clue's outcome before the chunk is written (a case opened here has no id yet)."""

    clue_id: str
    action: ClueAction
    case: WorkingCase | int | None
    linked: WorkingCase | None = None
    note: str = ""

    def outcome(self) -> ClueOutcome:
        case_id = self.case.id if isinstance(self.case, WorkingCase) else self.case
        linked_id = None if self.linked is None else self.linked.id
        return ClueOutcome(self.clue_id, self.action, case_id, linked_id, self.note)


def _decide(
    work: WorkingSet,
    clue: Clue,
    *,
    now: dt.datetime,
    settings: TrackerSettings,
    actor: str,
) -> _Decision:
    """One clue against the chunk's cases, by the rules of the module docstring."""
    if clue.alert_status == "dropped":
        note = "its alert was dropped: the newest clear view shows the ground as before"
        return _Decision(clue.clue_id, "held", None, note=note)
    clue_area = area_m2(clue.geometry)
    matches = work.matches(clue.geometry, clue_area, settings.min_overlap)

    for _, case in matches:
        if case.state in OPEN_STATES:
            work.grow(case, clue, clue_area, now=now)
            return _Decision(clue.clue_id, "updated", case)

    if clue.alert_status == "probable" and not settings.issue_probable:
        note = "its alert is probable: held until later clear acquisitions confirm it"
        return _Decision(clue.clue_id, "held", None, note=note)

    def open_linked(old: WorkingCase, reason: str) -> WorkingCase:
        return work.open(
            clue, clue_area, now=now, settings=settings, actor=actor, linked=old, reason=reason
        )

    for _, old in matches:
        if old.state in SUPPRESSING_STATES:
            old_area = old.area  # a closed case does not grow: its stored footprint's area
            grown = (
                clue_area >= settings.regrowth_factor * old_area
                and clue_area - old_area >= settings.regrowth_min_added_m2
            )
            if not grown:
                work.suppress(old, clue, clue_area, now=now)
                note = f"over case {old.id} closed as {old.state}"
                return _Decision(clue.clue_id, "suppressed", old.id, note=note)
            new = open_linked(old, "regrowth")
            note = (
                f"grew from {old_area:.0f} to {clue_area:.0f} m² over case {old.id} ({old.state})"
            )
            return _Decision(clue.clue_id, "created", new, old, note)

    for _, old in matches:
        if old.state == "closed":
            new = open_linked(old, "relapse")
            note = f"disturbed again after case {old.id} was rectified and closed"
            return _Decision(clue.clue_id, "created", new, old, note)

    new = work.open(clue, clue_area, now=now, settings=settings, actor=actor)
    return _Decision(clue.clue_id, "created", new)


def _detection(clue: Clue, clue_area: float, now: dt.datetime, *, suppressed: bool) -> Detection:
    return Detection(**detection_values(clue, clue_area, to_wkb(clue.geometry), now, suppressed))


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
    """Open one case from ``clue`` through the ORM, tagged by the known sites (look-back opens
    relapses this way, one at a time; ingest opens many in bulk through its working set)."""
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
    session.flush()  # the id, for the caller
    apply_site_tags(session, case, now=now, settings=settings, actor=actor)
    return case
