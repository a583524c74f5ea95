"""Look-back: re-examine rectified sites and restoration sites with the night's evidence.

The nightly run calls :func:`look_back` with a ``measure`` that, given a WGS84 footprint,
returns a :class:`SiteSignal` computed from that night's imagery (bare / built share inside the
footprint and the vegetation change); in tests a fake measure stands in.

Targets are the cases ``closed`` after rectification and the restoration sites valid today.
Each night's measurement is stored (``site_observations``), and a target **relapses** when

- its bare/built share rose by ``relapse_min_growth`` over the lowest share recorded for it
  (since closure, or since the last case at a restoration site), and the added bare/built area
  is at least ``relapse_min_area_m2``; or
- with no earlier measurement, the night shows fresh disturbance: bare/built share ≥
  ``fresh_disturbance_fraction`` together with an NDVI drop ≤ ``fresh_ndvi_drop``.

A relapse opens a new case on the footprint, linked to the old case (``relapse``); a
restoration site's case is tagged ``restoration_breach`` and is high priority. While such a case
is open, its target is not examined again; a closed case that already has a relapse is left to
its successor. Finally overdue cases are flagged ``escalated``.

``measure`` runs outside any database transaction (imagery work must not hold the ledger's
write lock); the writes then happen in one retried transaction that re-checks every condition.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from shapely.geometry.base import BaseGeometry
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Exists

from .clock import utc_now
from .clues import Clue
from .db import TrackerDB, lock_for_case_writes
from .errors import TrackerError
from .geometry import area_m2, from_wkb
from .ingest import open_case
from .lifecycle import escalate_overdue
from .models import Case, CaseTag, KnownSite, SiteObservation
from .settings import TrackerSettings
from .states import OPEN_STATES


@dataclass(frozen=True)
class SiteSignal:
    """What the night's imagery says inside a footprint."""

    bare_fraction: float
    """Share of the footprint that is bare soil / rock (0–1)."""
    built_fraction: float
    """Share of the footprint that is built up (0–1)."""
    ndvi_change: float | None = None
    """Mean before→after NDVI change inside the footprint (negative: vegetation lost)."""

    def __post_init__(self) -> None:
        for name in ("bare_fraction", "built_fraction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise TrackerError(f"SiteSignal.{name} must be within 0-1, got {value}")
        if self.ndvi_change is not None and not math.isfinite(self.ndvi_change):
            raise TrackerError(f"SiteSignal.ndvi_change must be finite, got {self.ndvi_change}")

    @property
    def disturbed(self) -> float:
        """Bare plus built share, capped at 1."""
        return min(1.0, self.bare_fraction + self.built_fraction)


#: ``measure(footprint_wgs84)`` → the night's signal, or ``None`` when the night has no valid
#: imagery there (clouds, outside the scene): the target is then skipped, not judged.
Measure = Callable[[BaseGeometry], SiteSignal | None]


@dataclass(frozen=True)
class Relapse:
    """A relapse found by :func:`look_back`."""

    target: str
    case_id: int
    linked_case_id: int | None
    site_id: int | None
    disturbed: float
    baseline: float | None


@dataclass
class LookBackReport:
    """What one :func:`look_back` examined and found."""

    examined: int = 0
    no_signal: int = 0
    relapses: list[Relapse] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people."""
        return (
            f"look-back: {self.examined} footprints examined ({self.no_signal} without signal), "
            f"{len(self.relapses)} relapses, {len(self.escalated)} cases escalated"
        )


@dataclass(frozen=True)
class _Target:
    key: str  # "case:<id>" or "site:<id>"
    case_id: int | None
    site_id: int | None
    footprint: BaseGeometry


def look_back(
    db: TrackerDB | Session,
    measure: Measure,
    now: dt.datetime | None = None,
    *,
    settings: TrackerSettings | None = None,
    actor: str = "look-back",
) -> LookBackReport:
    """Re-examine closed cases and restoration sites; open relapse cases; escalate overdue ones.

    Running it twice on the same day measures nothing new and opens nothing new.
    """
    now = utc_now(now)
    settings = settings or TrackerSettings()
    today = now.date()
    if isinstance(db, TrackerDB):
        with db.session() as session:
            targets = _targets(session, today)
    else:
        targets = _targets(db, today)
    signals: dict[str, SiteSignal] = {}
    report = LookBackReport(examined=len(targets))
    for target in targets:
        signal = measure(target.footprint)
        if signal is None:
            report.no_signal += 1
        else:
            signals[target.key] = signal

    def work(session: Session) -> list[Relapse]:
        lock_for_case_writes(session)
        found = []
        for target in targets:
            if target.key in signals:
                relapse = _judge(session, target, signals[target.key], now, settings, actor)
                if relapse is not None:
                    found.append(relapse)
        return found

    if isinstance(db, TrackerDB):
        report.relapses = db.run_write(work)
    else:
        report.relapses = work(db)
    report.escalated = escalate_overdue(db, now=now)
    return report


def _has_relapse(case_id: int) -> Exists:
    successor = Case.__table__.alias("successor")
    return exists().where(
        successor.c.linked_case_id == case_id, successor.c.link_reason == "relapse"
    )


def _open_case_at_site(site_id: int) -> Exists:
    return exists().where(
        CaseTag.case_id == Case.id,
        CaseTag.tag == "restoration_breach",
        CaseTag.site_id == site_id,
        Case.state.in_(OPEN_STATES),
    )


def _targets(session: Session, today: dt.date) -> list[_Target]:
    """Footprints to examine today (read only)."""
    targets = []
    for case in session.scalars(select(Case).where(Case.state == "closed").order_by(Case.id)):
        if not session.scalar(select(_has_relapse(case.id))):
            targets.append(_Target(f"case:{case.id}", case.id, None, from_wkb(case.geom_union)))
    sites = session.scalars(
        select(KnownSite).where(KnownSite.kind == "restoration").order_by(KnownSite.id)
    )
    for site in sites:
        if site.valid_on(today) and not session.scalar(select(_open_case_at_site(site.id))):
            targets.append(_Target(f"site:{site.id}", None, site.id, from_wkb(site.geometry)))
    return targets


def _baseline(session: Session, target: _Target) -> float | None:
    """Lowest bare/built share recorded for the target since its last case (None: no record)."""
    stmt = select(func.min(SiteObservation.disturbed)).where(SiteObservation.target == target.key)
    if target.site_id is not None:
        last_case = session.scalar(
            select(func.max(Case.created_at))
            .join(CaseTag, CaseTag.case_id == Case.id)
            .where(CaseTag.tag == "restoration_breach", CaseTag.site_id == target.site_id)
        )
        if last_case is not None:
            stmt = stmt.where(SiteObservation.observed_on >= last_case.date())
    return session.scalar(stmt)


def _judge(
    session: Session,
    target: _Target,
    signal: SiteSignal,
    now: dt.datetime,
    settings: TrackerSettings,
    actor: str,
) -> Relapse | None:
    today = now.date()
    # re-check under the lock: another process may have acted since the targets were read
    if target.case_id is not None:
        old = session.get(Case, target.case_id)
        if old is None or old.state != "closed" or session.scalar(select(_has_relapse(old.id))):
            return None
    else:
        old = None
        assert target.site_id is not None
        if session.scalar(select(_open_case_at_site(target.site_id))):
            return None
    already = session.scalar(
        select(SiteObservation.id).where(
            SiteObservation.target == target.key, SiteObservation.observed_on == today
        )
    )
    if already is not None:
        return None  # measured today already: a rerun of the same night changes nothing
    baseline = _baseline(session, target)
    observation = SiteObservation(
        target=target.key,
        observed_on=today,
        bare_fraction=signal.bare_fraction,
        built_fraction=signal.built_fraction,
        ndvi_change=signal.ndvi_change,
        disturbed=signal.disturbed,
    )
    session.add(observation)
    if not _relapsed(signal, baseline, area_m2(target.footprint), settings):
        return None
    if old is None:  # a restoration site: link to the last case there, if any
        old = session.scalars(
            select(Case)
            .join(CaseTag, CaseTag.case_id == Case.id)
            .where(CaseTag.site_id == target.site_id)
            .order_by(Case.created_at.desc(), Case.id.desc())
            .limit(1)
        ).first()
    clue = _relapse_clue(target, signal, baseline, old, today)
    new = open_case(
        session,
        clue,
        area_m2(target.footprint),
        now=now,
        settings=settings,
        actor=actor,
        linked=old,
        reason="relapse" if old is not None else None,
    )
    observation.relapse_case_id = new.id
    return Relapse(
        target.key, new.id, old.id if old else None, target.site_id, signal.disturbed, baseline
    )


def _relapsed(
    signal: SiteSignal, baseline: float | None, footprint_m2: float, settings: TrackerSettings
) -> bool:
    if baseline is None:
        return (
            signal.ndvi_change is not None
            and signal.ndvi_change <= settings.fresh_ndvi_drop
            and signal.disturbed >= settings.fresh_disturbance_fraction
            and signal.disturbed * footprint_m2 >= settings.relapse_min_area_m2
        )
    growth = signal.disturbed - baseline
    return (
        growth >= settings.relapse_min_growth
        and growth * footprint_m2 >= settings.relapse_min_area_m2
    )


def _relapse_clue(
    target: _Target,
    signal: SiteSignal,
    baseline: float | None,
    old: Case | None,
    today: dt.date,
) -> Clue:
    """The look-back's evidence, shaped as a clue so a relapse case has a detection row too."""
    growth = signal.disturbed - (baseline or 0.0)
    return Clue(
        # unique per target and night: the detection key keeps a rerun from doubling it
        clue_id=f"lookback-{target.key.replace(':', '-')}-{today.isoformat()}",
        aoi=old.aoi if old else None,
        detected_on=today,
        geometry=target.footprint,
        area_m2=area_m2(target.footprint),
        change_type=old.change_type if old else "other",
        confidence=round(min(1.0, 0.5 + growth), 3),
        confidence_level="medium",
        zone=old.zone if old else None,
        zone_tier=old.zone_tier if old else None,
        county=old.assigned_county if old else None,
        priority="high",
        properties={
            "look_back": target.key,
            "bare_fraction": signal.bare_fraction,
            "built_fraction": signal.built_fraction,
            "ndvi_change": signal.ndvi_change,
            "baseline_disturbed": baseline,
        },
    )
