"""The cases one ingest chunk works on: read in a few queries, changed in memory, written in bulk.

Ingest decides clue by clue (:mod:`.ingest`), and each decision must see what the clues before
it in the chunk did: a case opened or grown by the previous clue is the next clue's candidate.
A :class:`WorkingSet` keeps those cases in memory for the whole chunk instead of asking the
database per clue:

1. :func:`candidate_cases` reads every case a clue of the chunk may meet, in one query per
   few hundred envelopes of nearby clues (PostgreSQL: ``ST_Intersects`` in the GiST index, rows
   locked ``FOR UPDATE`` so a transition racing the ingest finishes first and the ingest reads
   its state; SQLite: the bounding boxes). A case no clue of the chunk meets at the start
   cannot come to meet one later: cases only grow by the clues that match them.
2. Clues grow, suppress over and open cases in memory, in order; each growth and opening
   records a *step* (the footprint and day at that moment) for the site rules.
3. :meth:`WorkingSet.tag` reads the known sites near all steps' footprints in one go and
   replays the site rules step by step, so tags, priorities and ``tags`` events come out as if
   each step had been judged on its own.
4. :meth:`WorkingSet.write` stores it all with one executemany per table: new cases inserted
   with the ids the database would have given them one by one (drawn beforehand), grown cases
   updated by primary key, detections, tags and events inserted.

Rows come out as the per-clue ORM ingest wrote them, ids included (new cases, detections and
events are numbered in the order the clues made them).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Result,
    Row,
    any_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from .clues import Clue
from .geometry import area_m2, bbox, box_envelopes, from_wkb, to_wkb, union
from .models import CHIP_CHANGE, Case, CaseEvent, CaseTag, Detection
from .settings import TrackerSettings
from .sites import SiteMatch, effective_priority, match_site_shapes, site_shapes_near, tags_comment
from .spatial import box_meets
from .states import at_least, priority_rank

_CASES = Case.__table__
_DETECTIONS = Detection.__table__
_EVENTS = CaseEvent.__table__
_TAGS = CaseTag.__table__

Box = tuple[float, float, float, float]

#: What ingest reads of a candidate case: what matching needs and what a growth may change.
_CASE_COLUMNS = (
    "id",
    "state",
    "geom_union",
    "min_lon",
    "min_lat",
    "max_lon",
    "max_lat",
    "first_detected_on",
    "last_detected_on",
    "change_type",
    "confidence",
    "confidence_level",
    "clue_priority",
    "priority",
    "priority_rank",
    "site_id",
    "zone",
    "zone_tier",
    "county",
    "aoi",
    "assigned_county",
)
#: Boxes per candidate query: four bound parameters each, well under every engine's limit.
_BOXES_PER_QUERY = 200
#: Case ids per ``IN`` list.
_IDS_PER_QUERY = 500
#: Cases opened in a chunk sort after every stored case, in the order they were opened (their
#: ids will be the next ones): the "newer case wins a tie" rule holds before they have ids.
_NEW_RANK = 1 << 62


def candidate_cases(session: Session, bboxes: Sequence[Box]) -> list[Row[Any]]:
    """Every case (any state) whose bounding box meets one of ``bboxes`` (min_lon, min_lat,
    max_lon, max_lat), oldest first, with the columns ingest works on.

    It may return more: nearby boxes are asked for by their common envelope, and callers
    filter by the exact box. On PostgreSQL the rows are locked until the transaction ends: a
    transition racing the ingest finishes first and the ingest reads its state.
    """
    found = {
        row.id: row
        for batch in _cases_meeting_boxes(session, box_envelopes(bboxes))
        for row in batch
    }
    return [found[key] for key in sorted(found)]


def _cases_meeting_boxes(session: Session, boxes: list[Box]) -> Iterator[Result[Any]]:
    """One query per few hundred boxes, a condition per box."""
    columns = [_CASES.c[name] for name in _CASE_COLUMNS]
    dialect = session.get_bind().dialect.name
    for start in range(0, len(boxes), _BOXES_PER_QUERY):
        meets_any = or_(
            *(
                box_meets(_CASES, _CASES.c.geom_union, box, dialect)
                for box in boxes[start : start + _BOXES_PER_QUERY]
            )
        )
        yield session.execute(select(*columns).where(meets_any).with_for_update())


@dataclass(eq=False)
class WorkingCase:
    """A case as the chunk sees it: a stored one (read by :func:`candidate_cases`) or one
    opened by a clue of the chunk (``id`` None until written)."""

    id: int | None
    rank: int
    state: str
    values: dict[str, Any]
    """Column values as the row will hold them (all columns for a new case; those ingest reads
    for a stored one), except ``geom_union`` (kept as :attr:`geom`)."""
    stored: dict[str, Any] | None = None
    """A stored case's values as read, to write back only what changed (None: a new case)."""
    tags: dict[str, tuple[int | None, dt.datetime]] | None = None
    """Tag → (site id, added at); None until read (a stored case's tags are read when first
    judged)."""
    stored_tags: dict[str, tuple[int | None, dt.datetime]] | None = None
    _wkb: bytes | None = None
    _geom: BaseGeometry | None = None
    _area: float | None = None
    grown: bool = False
    slot: int = -1
    """Its row in the working set's box array."""

    @property
    def geom(self) -> BaseGeometry:
        """The footprint (``geom_union``), read from its WKB when first needed."""
        if self._geom is None:
            assert self._wkb is not None
            self._geom = from_wkb(self._wkb)
        return self._geom

    @property
    def area(self) -> float:
        """The footprint's area (m², geodesic), measured when first needed."""
        if self._area is None:
            self._area = area_m2(self.geom)
        return self._area

    @property
    def bounds(self) -> Box:
        v = self.values
        return (v["min_lon"], v["min_lat"], v["max_lon"], v["max_lat"])

    def set_footprint(self, geom: BaseGeometry) -> None:
        """The footprint becomes ``geom``, with its area and bounding box."""
        self._geom, self._wkb, self._area = geom, None, area_m2(geom)
        self.values["area_m2"] = self._area
        (
            self.values["min_lon"],
            self.values["min_lat"],
            self.values["max_lon"],
            self.values["max_lat"],
        ) = bbox(geom)

    def footprint_wkb(self) -> bytes:
        return self._wkb if self._wkb is not None else to_wkb(self.geom)

    def changes(self) -> dict[str, Any]:
        """A stored case's columns that differ from what was read (the footprint if grown)."""
        assert self.stored is not None
        changed = {k: v for k, v in self.values.items() if self.stored.get(k, _UNSET) != v}
        if self.grown:
            changed["geom_union"] = self.footprint_wkb()
        return changed


_UNSET = object()


@dataclass(frozen=True)
class _Step:
    """A case's footprint at one moment of the chunk, to be judged against the known sites."""

    case: WorkingCase
    geom: BaseGeometry
    day: dt.date
    clue_priority: str
    created: dict[str, Any] | None = None
    """The ``created`` event's row, when this step opened the case."""


@dataclass
class WorkingSet:
    """The cases of one chunk in memory, with what the chunk will write."""

    cases: list[WorkingCase] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)
    detections: list[tuple[WorkingCase, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[WorkingCase, dict[str, Any]]] = field(default_factory=list)
    _boxes: np.ndarray = field(default_factory=lambda: np.empty((16, 4)))
    _opened: int = 0

    @classmethod
    def load(cls, session: Session, bboxes: Sequence[Box]) -> WorkingSet:
        """The cases ``bboxes`` may match (see :func:`candidate_cases`)."""
        work = cls()
        for row in candidate_cases(session, bboxes):
            values = row._asdict()
            case_id, state, wkb = values.pop("id"), values.pop("state"), values.pop("geom_union")
            work._add(WorkingCase(case_id, case_id, state, values, stored=dict(values), _wkb=wkb))
        return work

    def _add(self, case: WorkingCase) -> None:
        case.slot = len(self.cases)
        if case.slot == len(self._boxes):
            self._boxes = np.concatenate([self._boxes, np.empty_like(self._boxes)])
        self._boxes[case.slot] = case.bounds
        self.cases.append(case)

    def near(self, bounds: Box) -> list[WorkingCase]:
        """The cases whose bounding box meets ``bounds``, now."""
        minx, miny, maxx, maxy = bounds
        boxes = self._boxes[: len(self.cases)]
        hit = (
            (boxes[:, 2] >= minx)
            & (boxes[:, 0] <= maxx)
            & (boxes[:, 3] >= miny)
            & (boxes[:, 1] <= maxy)
        )
        return [self.cases[i] for i in np.flatnonzero(hit)]

    def matches(
        self, geom: BaseGeometry, geom_area: float, min_overlap: float
    ) -> list[tuple[float, WorkingCase]]:
        """Cases (any state) whose footprint overlaps ``geom`` by the dedup rule, best first:
        largest overlap first, the newer case on a tie."""
        found = []
        for case in self.near(bbox(geom)):
            share = _overlap_share(geom, geom_area, case.geom, case.area)
            if share >= min_overlap:
                found.append((share, case))
        found.sort(key=lambda m: (-m[0], -m[1].rank))
        return found

    def grow(self, case: WorkingCase, clue: Clue, clue_area: float, *, now: dt.datetime) -> None:
        """``clue`` joins open ``case``: a detection, the union footprint, newer attributes."""
        wkb = to_wkb(clue.geometry)
        self.detections.append((case, detection_values(clue, clue_area, wkb, now, False)))
        case.set_footprint(union(case.geom, clue.geometry))
        case.grown = True
        self._boxes[case.slot] = case.bounds
        v = case.values
        if clue.detected_on >= v["last_detected_on"]:
            v["geom_latest"] = wkb
            v["last_detected_on"] = clue.detected_on
            v["change_type"] = clue.change_type  # the newest look at the site says what it is now
        if clue.detected_on < v["first_detected_on"]:
            v["geom_first"] = wkb
            v["first_detected_on"] = clue.detected_on
        if clue.confidence > v["confidence"]:
            v["confidence"], v["confidence_level"] = clue.confidence, clue.confidence_level
        v["clue_priority"] = at_least(v["clue_priority"], clue.priority)
        for attr in ("zone", "zone_tier", "county", "aoi"):
            if v[attr] is None:
                v[attr] = getattr(clue, attr)
        if v["assigned_county"] is None:
            v["assigned_county"] = clue.county
        v["updated_at"] = now
        self._step(case)

    def suppress(
        self, case: WorkingCase, clue: Clue, clue_area: float, *, now: dt.datetime
    ) -> None:
        """``clue`` re-saw closed ``case``: kept as its suppressed detection, nothing else."""
        wkb = to_wkb(clue.geometry)
        self.detections.append((case, detection_values(clue, clue_area, wkb, now, True)))

    def open(
        self,
        clue: Clue,
        clue_area: float,
        *,
        now: dt.datetime,
        settings: TrackerSettings,
        actor: str,
        linked: WorkingCase | None = None,
        reason: str | None = None,
    ) -> WorkingCase:
        """A new case from ``clue`` (linked to the older ``linked`` case for ``reason``)."""
        # a site disturbed again after rectification is an enforcement matter however small
        clue_priority = at_least(clue.priority, "high") if reason == "relapse" else clue.priority
        wkb = to_wkb(clue.geometry)
        values: dict[str, Any] = {
            "aoi": clue.aoi,
            "change_type": clue.change_type,
            "confidence": clue.confidence,
            "confidence_level": clue.confidence_level,
            "clue_priority": clue_priority,
            "priority": clue_priority,
            "priority_rank": priority_rank(clue_priority),
            "zone": clue.zone,
            "zone_tier": clue.zone_tier,
            "county": clue.county,
            "assigned_county": clue.county,
            "escalated": False,
            "linked_case_id": None if linked is None else linked.id,
            "link_reason": reason,
            "site_id": None,
            "geom_first": wkb,
            "geom_latest": wkb,
            "first_detected_on": clue.detected_on,
            "last_detected_on": clue.detected_on,
            "deadline": now + dt.timedelta(days=settings.deadline_days),
            "created_at": now,
            "updated_at": now,
            "verified_at": None,
            "closed_at": None,
        }
        case = WorkingCase(None, _NEW_RANK + self._opened, "issued", values, tags={})
        self._opened += 1
        case.set_footprint(clue.geometry)
        case._wkb = wkb  # the footprint is the clue's own geometry: its WKB is at hand
        self._add(case)
        self.detections.append((case, detection_values(clue, clue_area, wkb, now, False)))
        comment = f"opened from clue {clue.clue_id}"
        if linked is not None:
            if linked.id is None:
                raise AssertionError("a case opened in this chunk is open: nothing links to it")
            comment += f"; {reason} of case {linked.id} ({linked.state})"
        self._step(case, created=_event(now, actor, "created", comment, to_state="issued"))
        return case

    def _step(self, case: WorkingCase, created: dict[str, Any] | None = None) -> None:
        v = case.values
        self.steps.append(
            _Step(case, case.geom, v["last_detected_on"], v["clue_priority"], created)
        )

    # --- known sites -----------------------------------------------------------------------

    def tag(
        self, session: Session, *, now: dt.datetime, settings: TrackerSettings, actor: str
    ) -> None:
        """Judge every step's footprint against the known sites, in order: tags, site and
        priority of each case, with a ``tags`` event where its tags changed."""
        if not self.steps:
            return
        sites = site_shapes_near(session, [bbox(step.geom) for step in self.steps])
        self._read_tags(session)
        for step in self.steps:
            case = step.case
            if step.created is not None:
                self.events.append((case, step.created))
            match = (
                match_site_shapes(sites, step.geom, step.day, settings) if sites else SiteMatch({})
            )
            assert case.tags is not None
            before, after = set(case.tags), set(match.tags)
            # a kept tag keeps its date and names the site that earns it now
            case.tags = {
                tag: (match.tags[tag], added)
                for tag, (_, added) in case.tags.items()
                if tag in after
            }
            for name in sorted(after - before):
                case.tags[name] = (match.tags[name], now)
            case.values["site_id"] = match.site_id
            case.values["priority"] = effective_priority(step.clue_priority, after)
            case.values["priority_rank"] = priority_rank(case.values["priority"])
            if before != after:
                comment = tags_comment(before, after, case.values["priority"])
                self.events.append((case, _event(now, actor, "tags", comment)))

    def _read_tags(self, session: Session) -> None:
        stored = {step.case.id: step.case for step in self.steps if step.case.tags is None}
        ids = sorted(k for k in stored if k is not None)
        for case in stored.values():
            case.tags, case.stored_tags = {}, {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            rows = session.execute(
                select(_TAGS.c.case_id, _TAGS.c.tag, _TAGS.c.site_id, _TAGS.c.added_at).where(
                    one_of(session, _TAGS.c.case_id, ids[start : start + _IDS_PER_QUERY])
                )
            )
            for case_id, tag, site_id, added_at in rows:
                case = stored[case_id]
                assert case.tags is not None and case.stored_tags is not None
                case.tags[tag] = case.stored_tags[tag] = (site_id, added_at)

    # --- writing ---------------------------------------------------------------------------

    def write(self, session: Session) -> None:
        """Store the chunk's work: new cases (ids in the order opened), changed cases,
        detections, tags and events."""
        opened = [case for case in self.cases if case.id is None]
        if opened:
            _insert_cases(session, opened)
        self._write_changed_cases(session)
        if self.detections:
            session.execute(
                insert(_DETECTIONS),
                [{"case_id": case.id, **values} for case, values in self.detections],
            )
        self._write_tags(session)
        if self.events:
            session.execute(
                insert(_EVENTS), [{"case_id": case.id, **values} for case, values in self.events]
            )

    def _write_changed_cases(self, session: Session) -> None:
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for case in self.cases:
            if case.stored is None:
                continue
            changed = case.changes()
            if changed:
                by_columns[tuple(sorted(changed))].append(
                    {"case_pk": case.id, **{f"new_{k}": v for k, v in changed.items()}}
                )
        for columns, rows in by_columns.items():
            statement = (
                update(_CASES)
                .where(_CASES.c.id == bindparam("case_pk"))
                .values(
                    {name: bindparam(f"new_{name}", type_=_CASES.c[name].type) for name in columns}
                )
            )
            session.execute(statement, rows)

    def _write_tags(self, session: Session) -> None:
        changed = [
            case
            for case in self.cases
            if case.tags is not None and case.tags != (case.stored_tags or {})
        ]
        stored_ids = [case.id for case in changed if case.stored_tags]
        for start in range(0, len(stored_ids), _IDS_PER_QUERY):
            batch = stored_ids[start : start + _IDS_PER_QUERY]
            session.execute(delete(_TAGS).where(one_of(session, _TAGS.c.case_id, batch)))
        rows = [
            {"case_id": case.id, "tag": tag, "site_id": site_id, "added_at": added_at}
            for case in changed
            for tag, (site_id, added_at) in sorted((case.tags or {}).items())
        ]
        if rows:
            session.execute(insert(_TAGS), rows)


def _insert_cases(session: Session, opened: list[WorkingCase]) -> None:
    """Insert the cases opened in the chunk, numbered in the order they were opened."""
    ids = _next_case_ids(session, len(opened))
    for case, new_id in zip(opened, ids, strict=True):
        case.id = new_id
    # ids known beforehand, the rows go as a plain executemany: a RETURNING insert of thousands
    # of rows is built as one huge statement, slow to assemble and (psycopg) to parse
    session.execute(
        insert(_CASES),
        [
            {"id": case.id, "state": case.state, "geom_union": case.footprint_wkb(), **case.values}
            for case in opened
        ],
    )


def _next_case_ids(session: Session, count: int) -> list[int]:
    """The ids the next ``count`` cases get, the same the database would give one by one."""
    if session.get_bind().dialect.name == "postgresql":
        return list(
            session.scalars(
                text(
                    "SELECT nextval(pg_get_serial_sequence('cases', 'id')) "
                    "FROM generate_series(1, :n) ORDER BY 1"
                ),
                {"n": count},
            )
        )
    # SQLite gives a new row the largest id so far plus one (no AUTOINCREMENT); the write lock
    # is held (BEGIN IMMEDIATE), and elsewhere a racing writer makes the insert fail, not reuse
    top = session.scalar(select(func.max(_CASES.c.id))) or 0
    return list(range(top + 1, top + 1 + count))


def one_of(session: Session, column: ColumnElement[Any], values: Sequence[Any]) -> Any:
    """``column IN values``; on PostgreSQL as one array parameter (``= ANY``), as psycopg
    parses a statement of hundreds of placeholders slowly, again on every call."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def _overlap_share(a: BaseGeometry, a_area: float, b: BaseGeometry, b_area: float) -> float:
    """:func:`~.geometry.overlap_share` with both areas known already."""
    smaller = min(a_area, b_area)
    if smaller <= 0.0:
        return 0.0
    return min(1.0, area_m2(shapely.intersection(a, b)) / smaller)


def _event(
    now: dt.datetime, actor: str, kind: str, comment: str, *, to_state: str | None = None
) -> dict[str, Any]:
    return {
        "at": now,
        "actor": actor,
        "kind": kind,
        "from_state": None,
        "to_state": to_state,
        "comment": comment,
    }


def detection_values(
    clue: Clue, clue_area: float, wkb: bytes, now: dt.datetime, suppressed: bool
) -> dict[str, Any]:
    """The ``detections`` row of ``clue`` (without its case)."""
    properties = jsonable(clue.properties)
    if clue.chip_change is not None:
        # the change chip has no column of its own (a migration for one more path is not worth
        # it): the properties keep it, resolved as the columns keep the before/after chips
        properties[CHIP_CHANGE] = clue.chip_change
    return {
        "clue_id": clue.clue_id,
        "detected_on": clue.detected_on,
        "area_m2": clue_area,
        "confidence": clue.confidence,
        "change_type": clue.change_type,
        "geometry": wkb,
        "properties": properties,
        "source": clue.source,
        "chip_before": clue.chip_before,
        "chip_after": clue.chip_after,
        "suppressed": suppressed,
        "ingested_at": now,
    }


def jsonable(value: Any) -> Any:
    """Clue properties as plain JSON (PatchClue properties may hold numpy scalars)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, dt.date | Path):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    def finite(obj: Any) -> Any:
        # JSON has no NaN or infinity, and PostgreSQL's json type refuses them: stored as null
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if isinstance(obj, dict):
            return {k: finite(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [finite(v) for v in obj]
        return obj

    encoded = json.dumps(value, default=default)
    decoded = json.loads(encoded)
    # only a non-finite float writes NaN or Infinity: without either there is nothing to clear
    return finite(decoded) if "NaN" in encoded or "Infinity" in encoded else decoded
