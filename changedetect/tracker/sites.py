"""Known sites: registries of permitted mines/quarries and of sites under ecological restoration.

A clue (or a case's footprint) is matched against the sites valid on its detection day:

- inside valid permit boundaries (≥ ``permit_inside_min`` of its area) → ``permitted``, and its
  priority drops to ``low``: it is probably the licensed activity;
- overlapping a valid permit but not inside it → ``outside_permit`` (mining across the licensed
  boundary), priority at least ``high``;
- overlapping a site under restoration → ``restoration_breach``, priority at least ``high``.

"Overlapping" means at least ``site_overlap_min`` of the clue's area, so a shared border does not
count. All shares are measured in the clue's UTM zone.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..grids import WGS84, reproject_geometry
from .db import TrackerDB, lock_for_case_writes
from .errors import SiteRegistryError
from .geometry import (
    area_m2,
    bbox,
    box_envelopes,
    from_wkb,
    local_epsg,
    polygonal,
    project,
    to_wkb,
)
from .models import Case, CaseEvent, CaseTag, KnownSite
from .settings import TrackerSettings
from .spatial import box_meets, footprint_meets
from .states import OPEN_STATES, at_least, priority_rank

SITE_KINDS: tuple[str, ...] = ("permit", "restoration")


@dataclass(frozen=True)
class SiteRecord:
    """One registry entry: a named permit or restoration site, its boundary and validity."""

    name: str
    kind: str
    geometry: BaseGeometry
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None


@dataclass
class SiteImportReport:
    """What :func:`import_sites` did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    retagged_cases: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people."""
        return (
            f"sites: {self.created} created, {self.updated} updated, {self.unchanged} unchanged; "
            f"{len(self.retagged_cases)} open cases re-tagged"
        )


@dataclass(frozen=True)
class SiteMatch:
    """The tags a footprint earns from the known sites, with the site behind each tag."""

    tags: dict[str, int]

    @property
    def site_id(self) -> int | None:
        """The site that matters most: a breached restoration site, else the permit."""
        for tag in ("restoration_breach", "outside_permit", "permitted"):
            if tag in self.tags:
                return self.tags[tag]
        return None


def _date(value: Any, where: str) -> dt.date | None:
    """A registry date field (string, date, datetime, numpy datetime64, empty) → date."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return None
        value = value.astype("datetime64[D]").item()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        raise SiteRegistryError(f"{where} is {value!r}, not a date YYYY-MM-DD") from None


def read_sites(
    path: str | Path,
    *,
    name_field: str = "name",
    kind_field: str = "kind",
    valid_from_field: str = "valid_from",
    valid_to_field: str = "valid_to",
    kind: str | None = None,
) -> list[SiteRecord]:
    """Read a registry (GeoJSON, GeoPackage, anything GDAL reads), reprojected to WGS84.

    ``kind`` fills in the kind for a file without a ``kind`` field (e.g. a permits-only layer).
    """
    path = Path(path)
    if not path.exists():
        raise SiteRegistryError(f"sites file {path} does not exist")
    try:
        meta, _, wkb, field_data = pyogrio.raw.read(path)
    except Exception as exc:  # pyogrio raises several unrelated types for unreadable files
        raise SiteRegistryError(f"cannot read sites file {path}: {exc}") from None
    fields = list(meta["fields"])
    if name_field not in fields:
        raise SiteRegistryError(
            f"sites file {path} has no field {name_field!r} (fields: {fields}); "
            "name the site-name field with --name-field"
        )
    if kind is None and kind_field not in fields:
        raise SiteRegistryError(
            f"sites file {path} has no field {kind_field!r} (fields: {fields}); "
            "pass --kind permit or --kind restoration"
        )
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else WGS84

    def column(name: str) -> Sequence[Any]:
        return field_data[fields.index(name)] if name in fields else [None] * len(wkb)

    records = []
    rows = zip(
        column(name_field),
        column(kind_field),
        column(valid_from_field),
        column(valid_to_field),
        wkb,
        strict=True,
    )
    for i, (name, raw_kind, start, end, geom_wkb) in enumerate(rows):
        where = f"sites file {path} feature #{i}"
        site_kind = kind if kind is not None else (str(raw_kind) if raw_kind is not None else "")
        if site_kind not in SITE_KINDS:
            raise SiteRegistryError(
                f"{where}: kind is {raw_kind!r}; use one of {', '.join(SITE_KINDS)}"
            )
        if name is None or not str(name).strip():
            raise SiteRegistryError(f"{where}: field {name_field!r} is empty")
        geom = None if geom_wkb is None else shapely.from_wkb(geom_wkb)
        geom = None if geom is None else polygonal(reproject_geometry(geom, crs, WGS84))
        if geom is None or geom.is_empty:
            raise SiteRegistryError(f"{where} ({name}): boundary is missing or has no area")
        valid_from = _date(start, f"{where}: {valid_from_field}")
        valid_to = _date(end, f"{where}: {valid_to_field}")
        if valid_from and valid_to and valid_to < valid_from:
            raise SiteRegistryError(f"{where} ({name}): valid_to {valid_to} is before valid_from")
        records.append(SiteRecord(str(name).strip(), site_kind, geom, valid_from, valid_to))
    return records


def import_sites(
    target: TrackerDB | Session,
    sites: str | Path | Iterable[SiteRecord],
    *,
    now: dt.datetime | None = None,
    settings: TrackerSettings | None = None,
) -> SiteImportReport:
    """Create or update sites (keyed by kind and name) and re-tag the open cases they touch.

    Importing the same registry twice changes nothing.
    """
    source = str(Path(sites).resolve()) if isinstance(sites, str | Path) else None
    records = read_sites(sites) if isinstance(sites, str | Path) else list(sites)
    now = now or dt.datetime.now(dt.UTC)
    settings = settings or TrackerSettings()

    def work(session: Session) -> SiteImportReport:
        return _import_in(session, records, source=source, now=now, settings=settings)

    if isinstance(target, TrackerDB):
        return target.run_write(work)
    return work(target)


def _import_in(
    session: Session,
    records: list[SiteRecord],
    *,
    source: str | None,
    now: dt.datetime,
    settings: TrackerSettings,
) -> SiteImportReport:
    lock_for_case_writes(session)  # site changes re-tag cases: keep ingests out meanwhile
    report = SiteImportReport()
    touched: list[BaseGeometry] = []
    for record in records:
        wkb = to_wkb(record.geometry)
        existing = session.scalars(
            select(KnownSite).where(KnownSite.kind == record.kind, KnownSite.name == record.name)
        ).one_or_none()
        values = {
            "valid_from": record.valid_from,
            "valid_to": record.valid_to,
            "geometry": wkb,
            "area_m2": area_m2(record.geometry),
        }
        values.update(
            zip(("min_lon", "min_lat", "max_lon", "max_lat"), bbox(record.geometry), strict=True)
        )
        if existing is None:
            session.add(
                KnownSite(
                    name=record.name,
                    kind=record.kind,
                    source=source,
                    imported_at=now,
                    **values,
                )
            )
            report.created += 1
        elif (
            existing.valid_from == record.valid_from
            and existing.valid_to == record.valid_to
            and from_wkb(existing.geometry).equals(record.geometry)
        ):
            report.unchanged += 1
            continue
        else:
            touched.append(from_wkb(existing.geometry))
            for key, value in values.items():
                setattr(existing, key, value)
            existing.source, existing.imported_at = source, now
            report.updated += 1
        touched.append(record.geometry)
    session.flush()
    if touched:
        report.retagged_cases = _retag_open_cases(session, touched, now=now, settings=settings)
    return report


def _retag_open_cases(
    session: Session,
    geometries: list[BaseGeometry],
    *,
    now: dt.datetime,
    settings: TrackerSettings,
) -> list[int]:
    # a case meeting none of the changed boundaries (old or new) keeps the tags it has
    touched = shapely.union_all(geometries)
    dialect = session.get_bind().dialect.name
    cases = session.scalars(
        select(Case).where(
            Case.state.in_(OPEN_STATES), footprint_meets(Case, Case.geom_union, touched, dialect)
        )
    ).all()
    changed = []
    for case in cases:
        if apply_site_tags(session, case, now=now, settings=settings, actor="sites import"):
            changed.append(case.id)
    return changed


def sites_near(session: Session, geom: BaseGeometry) -> list[KnownSite]:
    """Sites that may overlap ``geom`` (the SQL pre-filter: :func:`.spatial.footprint_meets`),
    oldest first."""
    dialect = session.get_bind().dialect.name
    condition = footprint_meets(KnownSite, KnownSite.geometry, geom, dialect)
    # a fixed order: of two permits the patch shares equally, the older one is named
    return list(session.scalars(select(KnownSite).where(condition).order_by(KnownSite.id)))


@dataclass(frozen=True)
class SiteShape:
    """A known site as matching needs it, its boundary read once (for matching many
    footprints against the same sites in memory)."""

    id: int
    kind: str
    geometry: BaseGeometry
    bounds: tuple[float, float, float, float]
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None

    def valid_on(self, day: dt.date) -> bool:
        """Whether the registration covers ``day`` (open ends are unbounded)."""
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day <= self.valid_to
        )

    def meets(self, bounds: tuple[float, float, float, float]) -> bool:
        """Whether the site's bounding box meets ``bounds`` (what :func:`sites_near` asks SQL)."""
        minx, miny, maxx, maxy = bounds
        min_lon, min_lat, max_lon, max_lat = self.bounds
        return max_lon >= minx and min_lon <= maxx and max_lat >= miny and min_lat <= maxy


def site_shapes_near(
    session: Session, boxes: Sequence[tuple[float, float, float, float]]
) -> list[SiteShape]:
    """The sites whose bounding box meets any of ``boxes`` (min_lon, min_lat, max_lon, max_lat),
    oldest first; maybe a few more (nearby boxes are asked for by their envelope)."""
    found: dict[int, SiteShape] = {}
    table = KnownSite.__table__
    dialect = session.get_bind().dialect.name
    boxes = box_envelopes(boxes)
    for start in range(0, len(boxes), _BOXES_PER_QUERY):
        meets_any = or_(
            *(
                box_meets(table, table.c.geometry, box, dialect)
                for box in boxes[start : start + _BOXES_PER_QUERY]
            )
        )
        rows = session.execute(
            select(
                table.c.id,
                table.c.kind,
                table.c.geometry,
                table.c.min_lon,
                table.c.min_lat,
                table.c.max_lon,
                table.c.max_lat,
                table.c.valid_from,
                table.c.valid_to,
            ).where(meets_any)
        )
        for row in rows:
            if row.id not in found:
                found[row.id] = SiteShape(
                    row.id,
                    row.kind,
                    from_wkb(row.geometry),
                    (row.min_lon, row.min_lat, row.max_lon, row.max_lat),
                    row.valid_from,
                    row.valid_to,
                )
    return [found[key] for key in sorted(found)]


#: Boxes per site query: four bound parameters each, well under every engine's limit.
_BOXES_PER_QUERY = 200


def match_sites(
    session: Session,
    geom: BaseGeometry,
    day: dt.date,
    settings: TrackerSettings,
) -> SiteMatch:
    """Tags that ``geom`` (WGS84) earns from the sites valid on ``day``."""
    candidates = [
        (s.id, s.kind, from_wkb(s.geometry)) for s in sites_near(session, geom) if s.valid_on(day)
    ]
    return _match(candidates, geom, settings)


def match_site_shapes(
    sites: Iterable[SiteShape],
    geom: BaseGeometry,
    day: dt.date,
    settings: TrackerSettings,
) -> SiteMatch:
    """What :func:`match_sites` finds, among ``sites`` (any superset of the sites near ``geom``,
    oldest first) instead of by a query."""
    bounds = geom.bounds
    candidates = [(s.id, s.kind, s.geometry) for s in sites if s.meets(bounds) and s.valid_on(day)]
    return _match(candidates, geom, settings)


def _match(
    candidates: list[tuple[int, str, BaseGeometry]],
    geom: BaseGeometry,
    settings: TrackerSettings,
) -> SiteMatch:
    if not candidates:
        return SiteMatch({})
    epsg = local_epsg(geom)
    footprint = project(geom, epsg)
    total = footprint.area
    if total <= 0.0:
        return SiteMatch({})
    tags: dict[str, int] = {}
    permits: list[tuple[float, int, BaseGeometry]] = []
    restoration: list[tuple[float, int]] = []
    for site_id, kind, site_geom in candidates:
        boundary = project(site_geom, epsg)
        share = shapely.intersection(footprint, boundary).area / total
        if share < settings.site_overlap_min:
            continue
        if kind == "restoration":
            restoration.append((share, site_id))
        else:
            permits.append((share, site_id, boundary))
    if restoration:
        tags["restoration_breach"] = max(restoration)[1]
    if permits:
        # adjacent permits of one operator may together contain the patch: judge their union
        covered = shapely.intersection(footprint, shapely.union_all([p[2] for p in permits]))
        inside = covered.area / total >= settings.permit_inside_min
        tags["permitted" if inside else "outside_permit"] = max(permits, key=lambda p: p[0])[1]
    return SiteMatch(tags)


def effective_priority(clue_priority: str, tags: Iterable[str]) -> str:
    """The case priority after the site rules."""
    tags = set(tags)
    if tags & {"restoration_breach", "outside_permit"}:
        return at_least(clue_priority, "high")
    if "permitted" in tags:
        return "low"
    return clue_priority


def apply_site_tags(
    session: Session,
    case: Case,
    *,
    now: dt.datetime,
    settings: TrackerSettings,
    actor: str,
) -> bool:
    """Re-derive ``case``'s site tags and priority from its footprint; True if they changed.

    A change is recorded as a ``tags`` event, so the history shows why a priority moved.
    """
    match = match_sites(session, from_wkb(case.geom_union), case.last_detected_on, settings)
    before = set(case.tag_names)
    after = set(match.tags)
    for tag in list(case.tags):
        if tag.tag not in after:
            case.tags.remove(tag)
        else:
            tag.site_id = match.tags[tag.tag]
    for name in sorted(after - before):
        case.tags.append(CaseTag(tag=name, site_id=match.tags[name], added_at=now))
    case.site_id = match.site_id
    case.priority = effective_priority(case.clue_priority, after)
    case.priority_rank = priority_rank(case.priority)
    if before == after:
        return False
    session.add(
        CaseEvent(
            case=case,
            at=now,
            actor=actor,
            kind="tags",
            comment=tags_comment(before, after, case.priority),
        )
    )
    return True


def tags_comment(before: Iterable[str], after: Iterable[str], priority: str) -> str:
    """The comment of a ``tags`` event: the tags before and after, and the priority now."""
    return (
        f"tags {', '.join(sorted(before)) or 'none'} → {', '.join(sorted(after)) or 'none'}"
        f"; priority {priority}"
    )
