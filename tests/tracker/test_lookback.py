"""Look-back: rectified sites and restoration sites re-examined with a fake night's measure."""

from __future__ import annotations

import datetime as dt

import pytest
import shapely

from changedetect.tracker import (
    SiteRecord,
    SiteSignal,
    TrackerError,
    get_case,
    import_sites,
    ingest,
    list_cases,
    look_back,
    transition,
)
from changedetect.tracker.models import Case
from tests.factories import NOW, collection, feature, rect

QUARRY = rect(0, 0, 100)  # 1 ha
RESTORED = rect(2000, 0, 200)  # 4 ha


class FakeMeasure:
    """Answers per footprint: the signal of the first registered site the footprint meets."""

    def __init__(self) -> None:
        self.signals: list[tuple[object, SiteSignal | None]] = []
        self.calls = 0

    def set(self, geom, signal: SiteSignal | None) -> None:
        self.signals = [(g, s) for g, s in self.signals if not g.equals(geom)] + [(geom, signal)]

    def __call__(self, footprint):
        self.calls += 1
        for geom, signal in self.signals:
            if shapely.intersects(geom, footprint):
                return signal
        return SiteSignal(0.0, 0.0, 0.0)


def closed_case(db) -> int:
    report = ingest(db, collection([feature("q1", QUARRY, priority="normal")]), now=NOW)
    case_id = report.outcomes[0].case_id
    for step in ("verifying", "violation", "rectifying", "closed"):
        transition(db, case_id, step, actor="county", now=NOW)
    return case_id


def day(n: int) -> dt.datetime:
    return NOW + dt.timedelta(days=n)


def test_a_rectified_site_disturbed_again_opens_a_linked_relapse(db):
    old = closed_case(db)
    measure = FakeMeasure()
    measure.set(QUARRY, SiteSignal(bare_fraction=0.05, built_fraction=0.0, ndvi_change=0.05))
    calm = look_back(db, measure, day(1))
    assert (calm.examined, calm.relapses) == (1, [])
    measure.set(QUARRY, SiteSignal(bare_fraction=0.08, built_fraction=0.02))  # +5 points: noise
    assert look_back(db, measure, day(2)).relapses == []
    measure.set(QUARRY, SiteSignal(bare_fraction=0.35, built_fraction=0.05, ndvi_change=-0.3))
    report = look_back(db, measure, day(3))
    (relapse,) = report.relapses
    assert (relapse.target, relapse.linked_case_id) == (f"case:{old}", old)
    assert relapse.baseline == pytest.approx(0.05)
    with db.session() as s:
        new = get_case(s, relapse.case_id, now=day(3))
    c = new.case
    assert (c.state, c.linked_case_id, c.link_reason, c.relapse) == ("issued", old, "relapse", True)
    assert c.priority == "high"
    assert c.assigned_county == "Zhouzhi" and c.change_type == "quarry"
    assert new.detections[0].clue_id == f"lookback-case-{old}-{day(3).date()}"
    assert new.geometry_union["type"] == "Polygon"
    # the relapse case now carries the site: the old case is not examined again
    again = look_back(db, measure, day(4))
    assert again.relapses == [] and again.examined == 0


def test_same_night_twice_opens_nothing_new(db):
    closed_case(db)
    measure = FakeMeasure()
    measure.set(QUARRY, SiteSignal(0.6, 0.1, ndvi_change=-0.4))  # no baseline: fresh disturbance
    first = look_back(db, measure, day(1))
    assert len(first.relapses) == 1
    assert look_back(db, measure, day(1)).relapses == []
    with db.session() as s:
        assert s.query(Case).count() == 2


def test_without_a_baseline_bare_ground_alone_is_not_a_relapse(db):
    closed_case(db)
    measure = FakeMeasure()
    measure.set(QUARRY, SiteSignal(0.6, 0.0, ndvi_change=0.0))  # bare, but nothing was lost
    assert look_back(db, measure, day(1)).relapses == []


def test_no_signal_skips_the_target(db):
    closed_case(db)
    measure = FakeMeasure()
    measure.set(QUARRY, None)
    report = look_back(db, measure, day(1))
    assert (report.examined, report.no_signal, report.relapses) == (1, 1, [])


def test_restoration_site_with_new_bare_soil_opens_a_breach_case(db):
    import_sites(db, [SiteRecord("Old mine restoration", "restoration", RESTORED)], now=NOW)
    measure = FakeMeasure()
    measure.set(RESTORED, SiteSignal(0.10, 0.0, ndvi_change=0.02))
    assert look_back(db, measure, day(1)).relapses == []
    measure.set(RESTORED, SiteSignal(0.25, 0.0, ndvi_change=-0.2))  # +15 points of 4 ha = 0.6 ha
    (relapse,) = look_back(db, measure, day(2)).relapses
    assert relapse.site_id is not None and relapse.linked_case_id is None
    with db.session() as s:
        c = get_case(s, relapse.case_id, now=day(2)).case
    assert c.tags == ("restoration_breach",)
    assert c.priority == "high"
    assert c.site_id == relapse.site_id
    # while the breach case is open the site is not re-judged
    measure.set(RESTORED, SiteSignal(0.5, 0.0))
    assert look_back(db, measure, day(3)).relapses == []


def test_a_restoration_breach_from_a_clue_is_linked_by_the_next_relapse(db):
    import_sites(db, [SiteRecord("Old mine restoration", "restoration", RESTORED)], now=NOW)
    report = ingest(db, collection([feature("b1", rect(2050, 50, 60))]), now=NOW)
    breach = report.outcomes[0].case_id
    for step in ("verifying", "false_alarm"):
        transition(db, breach, step, actor="county", now=day(1))
    measure = FakeMeasure()
    measure.set(RESTORED, SiteSignal(0.1, 0.0))
    assert look_back(db, measure, day(2)).relapses == []
    measure.set(RESTORED, SiteSignal(0.3, 0.05))
    (relapse,) = look_back(db, measure, day(3)).relapses
    assert relapse.linked_case_id == breach


def test_look_back_escalates_overdue_cases(db):
    ingest(db, collection([feature("o1", rect(5000, 0, 60))]), now=NOW)
    report = look_back(db, FakeMeasure(), day(31))
    assert len(report.escalated) == 1
    with db.session() as s:
        assert list_cases(s, now=day(31)).items[0].escalated


def test_measure_runs_outside_the_write_transaction(sqlite_db):
    """Imagery work must not hold the ledger's write lock: another writer can go meanwhile."""
    closed_case(sqlite_db)

    def measure(footprint):
        # would wait for the lock (and time out) if look_back held it while measuring
        ingest(sqlite_db, collection([feature("during", rect(9000, 0, 60))]), now=NOW)
        return SiteSignal(0.0, 0.0)

    look_back(sqlite_db, measure, day(1))
    with sqlite_db.session() as s:
        assert s.query(Case).count() == 2


@pytest.mark.parametrize(
    "bad", [dict(bare_fraction=1.2, built_fraction=0), dict(bare_fraction=0, built_fraction=-0.1)]
)
def test_signal_is_validated(bad):
    with pytest.raises(TrackerError, match="within 0-1"):
        SiteSignal(**bad)
