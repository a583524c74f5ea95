"""Ingest and deduplication: repeats, growth, shifts, suppression over false alarms, relapses."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import shapely
from sqlalchemy import func, select

from changedetect.models import PatchClue
from changedetect.tracker import (
    ClueFormatError,
    TrackerSettings,
    clue_statuses,
    get_case,
    ingest,
    parse_clues,
    transition,
)
from changedetect.tracker.geometry import from_wkb
from changedetect.tracker.models import Case, Detection
from tests.factories import NOW, area_m2, collection, feature, rect

DAY2 = NOW + dt.timedelta(days=10)


def counts(report):
    return (report.created, report.updated, report.suppressed, report.unchanged)


def n_rows(db, model) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def close_as(db, case_id: int, state: str) -> None:
    steps = {
        "false_alarm": ["verifying", "false_alarm"],
        "compliant": ["verifying", "compliant"],
        "closed": ["verifying", "violation", "rectifying", "closed"],
    }[state]
    for step in steps:
        transition(db, case_id, step, actor="county", now=NOW)


def test_same_clues_twice_change_nothing(db):
    fc = collection([feature(f"a{i}", rect(i * 300.0, 0, 70)) for i in range(4)])
    first = ingest(db, fc, now=NOW)
    assert counts(first) == (4, 0, 0, 0)
    with db.session() as s:
        before = [(c.id, c.updated_at, c.geom_union) for c in s.scalars(select(Case))]
    second = ingest(db, fc, now=DAY2)
    assert counts(second) == (0, 0, 0, 4)
    assert [o.case_id for o in second.outcomes] == [o.case_id for o in first.outcomes]
    with db.session() as s:
        after = [(c.id, c.updated_at, c.geom_union) for c in s.scalars(select(Case))]
    assert after == before
    assert n_rows(db, Detection) == 4


def test_duplicate_clue_inside_one_batch_is_stored_once(db):
    f = feature("dup", rect(0, 0, 70))
    report = ingest(db, collection([f, f]), now=NOW)
    assert counts(report) == (1, 0, 0, 1)
    assert n_rows(db, Detection) == 1


def test_grown_patch_updates_its_case(db):
    small, big = rect(0, 0, 60), rect(0, 0, 120)
    (case_id,) = [
        o.case_id for o in ingest(db, collection([feature("g1", small)]), now=NOW).outcomes
    ]
    report = ingest(db, collection([feature("g2", big, "2025-07-03")]), now=DAY2)
    assert counts(report) == (0, 1, 0, 0)
    assert report.outcomes[0].case_id == case_id
    with db.session() as s:
        case = s.get(Case, case_id)
        detail = get_case(s, case_id, now=DAY2)
    assert from_wkb(case.geom_first).equals_exact(small, 1e-9)
    assert from_wkb(case.geom_latest).equals_exact(big, 1e-9)
    assert case.area_m2 == pytest.approx(120 * 120, rel=0.01)
    assert (case.first_detected_on, case.last_detected_on) == (
        dt.date(2025, 6, 23),
        dt.date(2025, 7, 3),
    )
    history = [(d.clue_id, d.detected_on.isoformat(), d.area_m2) for d in detail.detections]
    # areas are measured on the ellipsoid; the squares are drawn in UTM grid metres, which
    # this far (2.75°) from the zone's central meridian are 0.04 % longer than ground metres
    assert history == [
        ("g1", "2025-06-23", pytest.approx(3600, rel=0.002)),
        ("g2", "2025-07-03", pytest.approx(14400, rel=0.002)),
    ]
    assert detail.case.detections == 2
    assert case.updated_at == DAY2


def test_shifted_overlapping_patch_joins_the_case_and_grows_it(db):
    first, shifted = rect(0, 0, 100), rect(40, 20, 100)  # 60 % x 80 % = 48 % overlap
    (case_id,) = [
        o.case_id for o in ingest(db, collection([feature("s1", first)]), now=NOW).outcomes
    ]
    report = ingest(db, collection([feature("s2", shifted, "2025-07-03")]), now=DAY2)
    assert counts(report) == (0, 1, 0, 0) and report.outcomes[0].case_id == case_id
    with db.session() as s:
        case = s.get(Case, case_id)
    union = shapely.union(first, shifted)
    assert case.area_m2 == pytest.approx(area_m2(union), rel=0.01)
    assert case.area_m2 == pytest.approx(2 * 100 * 100 - 60 * 80, rel=0.01)
    assert (case.min_lon, case.min_lat, case.max_lon, case.max_lat) == pytest.approx(union.bounds)


def test_disjoint_or_barely_touching_patch_opens_a_new_case(db):
    ingest(db, collection([feature("x1", rect(0, 0, 100))]), now=NOW)
    disjoint = ingest(db, collection([feature("x2", rect(150, 0, 100), "2025-07-03")]), now=DAY2)
    # 20 m × 100 m = 20 % of the smaller patch: below the 30 % rule
    sliver = ingest(db, collection([feature("x3", rect(80, 0, 100), "2025-07-03")]), now=DAY2)
    assert counts(disjoint) == (1, 0, 0, 0)
    assert counts(sliver) == (1, 0, 0, 0)
    assert n_rows(db, Case) == 3


def test_overlap_is_judged_against_the_smaller_patch(db):
    """A small clue inside a big case belongs to it, though it covers little of the case."""
    (big,) = [
        o.case_id for o in ingest(db, collection([feature("b", rect(0, 0, 400))]), now=NOW).outcomes
    ]
    report = ingest(db, collection([feature("s", rect(50, 50, 40), "2025-07-03")]), now=DAY2)
    assert counts(report) == (0, 1, 0, 0) and report.outcomes[0].case_id == big
    stricter = TrackerSettings(min_overlap=0.9)
    report = ingest(
        db, collection([feature("t", rect(380, 0, 40), "2025-07-04")]), now=DAY2, settings=stricter
    )
    assert counts(report) == (1, 0, 0, 0)  # half of it lies outside: not 90 %


@pytest.mark.parametrize("verdict", ["false_alarm", "compliant"])
def test_clue_over_a_false_alarm_is_suppressed_unless_grown(db, verdict):
    (old,) = [
        o.case_id for o in ingest(db, collection([feature("f1", rect(0, 0, 60))]), now=NOW).outcomes
    ]
    close_as(db, old, verdict)
    # the same ground again, slightly bigger (1.17×): suppressed, kept in the old case's history
    same = ingest(db, collection([feature("f2", rect(0, 0, 65), "2025-07-03")]), now=DAY2)
    assert counts(same) == (0, 0, 1, 0)
    assert same.outcomes[0].case_id == old
    assert ingest(db, collection([feature("f2", rect(0, 0, 65))]), now=DAY2).unchanged == 1
    with db.session() as s:
        detail = get_case(s, old, now=DAY2)
        assert s.get(Case, old).state == verdict
    assert [(d.clue_id, d.suppressed) for d in detail.detections] == [("f1", False), ("f2", True)]
    assert detail.case.detections == 1  # suppressed sightings do not count as detections
    # 100 m × 60 m = 6000 m²: 1.67× the old 3600 m² and +2400 m² — grown materially
    grown = ingest(db, collection([feature("f3", rect(0, 0, 100, 60), "2025-07-13")]), now=DAY2)
    assert counts(grown) == (1, 0, 0, 0)
    outcome = grown.outcomes[0]
    assert outcome.linked_case_id == old
    with db.session() as s:
        new = s.get(Case, outcome.case_id)
        assert (new.state, new.linked_case_id, new.link_reason) == ("issued", old, "regrowth")
    # and the next night's clue goes to the new, open case
    after = ingest(db, collection([feature("f4", rect(0, 0, 100, 60), "2025-07-23")]), now=DAY2)
    assert counts(after) == (0, 1, 0, 0) and after.outcomes[0].case_id == outcome.case_id


def test_growth_needs_both_the_factor_and_the_added_area(db):
    # 20 m × 20 m = 400 m²; 30 m × 30 m = 900 m² is 2.25× but only +500 m² (< 0.1 ha)
    (old,) = [
        o.case_id for o in ingest(db, collection([feature("t1", rect(0, 0, 20))]), now=NOW).outcomes
    ]
    close_as(db, old, "false_alarm")
    assert ingest(db, collection([feature("t2", rect(0, 0, 30))]), now=DAY2).suppressed == 1
    # 60 m × 60 m: +3200 m² and 9×
    assert ingest(db, collection([feature("t3", rect(0, 0, 60))]), now=DAY2).created == 1


def test_clue_over_a_rectified_and_closed_case_opens_a_relapse(db):
    (old,) = [
        o.case_id
        for o in ingest(
            db, collection([feature("r1", rect(0, 0, 80), priority="normal")]), now=NOW
        ).outcomes
    ]
    close_as(db, old, "closed")
    report = ingest(
        db, collection([feature("r2", rect(5, 5, 80), "2025-08-01", priority="normal")]), now=DAY2
    )
    assert counts(report) == (1, 0, 0, 0)
    with db.session() as s:
        new = s.get(Case, report.outcomes[0].case_id)
        detail = get_case(s, new.id, now=DAY2)
    assert (new.linked_case_id, new.link_reason) == (old, "relapse")
    assert detail.case.relapse
    assert new.priority == "high"  # a relapse is never routine
    assert "relapse of case" in detail.events[0].comment


def test_clue_overlapping_two_cases_updates_the_best_overlap(db):
    ingest(
        db, collection([feature("L", rect(0, 0, 100)), feature("R", rect(110, 0, 100))]), now=NOW
    )
    # 60..180 m: 40 % of L, 70 % of R — both above the rule; R wins
    report = ingest(db, collection([feature("M", rect(60, 0, 120, 100), "2025-07-03")]), now=DAY2)
    with db.session() as s:
        right = s.scalars(select(Detection).where(Detection.clue_id == "R")).one().case_id
    assert counts(report) == (0, 1, 0, 0) and report.outcomes[0].case_id == right


def test_case_records_evidence_and_clue_attributes(db, tmp_path):
    path = tmp_path / "night" / "clues.geojson"
    path.parent.mkdir()
    path.write_text(
        json.dumps(
            collection(
                [
                    feature(
                        "e1",
                        rect(0, 0, 60),
                        county="Huyi",
                        zone_tier="general_control",
                        change_type="construction",
                        confidence=0.66,
                    )
                ]
            )
        )
    )
    report = ingest(db, path, now=NOW)
    assert report.source == str(path.resolve())
    with db.session() as s:
        detail = get_case(s, report.outcomes[0].case_id, now=NOW)
    c = detail.case
    assert (c.assigned_county, c.county, c.zone_tier, c.change_type, c.confidence) == (
        "Huyi",
        "Huyi",
        "general_control",
        "construction",
        0.66,
    )
    chips = [str(path.parent / "chips" / f"e1_{w}.png") for w in ("before", "after")]
    assert detail.evidence == {"geojson": [str(path.resolve())], "chips": chips}
    assert detail.detections[0].chip_change is None  # a clue from before the change chip
    assert detail.detections[0].geometry["type"] == "Polygon"
    assert c.aoi == "test-aoi"


def test_ingest_accepts_pipeline_patch_clues(db):
    geom = rect(0, 0, 70)
    clue = PatchClue(
        clue_id="pc1",
        aoi="a",
        detected_at="2025-06-23",
        before=["2024-04-01", "2024-06-30"],
        after=["2025-04-01", "2025-06-30"],
        geometry_wgs84=geom,
        area_m2=4900.0,
        centroid=(geom.centroid.x, geom.centroid.y),
        change_type="quarry",
        confidence=0.9,
        confidence_level="high",
        d_ndvi=-0.3,
        d_bsi=0.2,
        d_ndbi=0.1,
        county="Zhouzhi",
        priority="urgent",
        chip_before="chips/pc1_before.png",
        chip_change="chips/pc1_change.png",
    )
    report = ingest(db, [clue], source="/data/night/clues.geojson", now=NOW)
    assert counts(report) == (1, 0, 0, 0)
    with db.session() as s:
        detail = get_case(s, report.outcomes[0].case_id, now=NOW)
    assert detail.case.priority == "urgent"
    assert detail.detections[0].chip_before == "/data/night/chips/pc1_before.png"
    # the NDVI-change chip resolved alike, kept in the detection's properties
    assert detail.detections[0].chip_change == "/data/night/chips/pc1_change.png"
    assert "/data/night/chips/pc1_change.png" in detail.evidence["chips"]
    with db.session() as s:
        properties = s.scalar(select(Detection.properties).where(Detection.clue_id == "pc1"))
    assert properties["chip_change"] == "/data/night/chips/pc1_change.png"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f["properties"].pop("clue_id") and f.pop("id"), "clue_id' is missing"),
        (lambda f: f["properties"].update(detected_at="June"), "not a date"),
        (lambda f: f.update(geometry=None), "geometry is missing"),
        (lambda f: f.update(geometry={"type": "Point", "coordinates": [1, 2]}), "no polygon area"),
        (lambda f: f["properties"].update(confidence=3), "outside 0-1"),
        (lambda f: f["properties"].update(priority="asap"), "priority 'asap'"),
        (lambda f: f["properties"].update(area_m2="big"), "not a number"),
        (lambda f: f["properties"].update(alert_status="maybe"), "alert_status 'maybe'"),
    ],
)
def test_malformed_clues_are_set_aside_with_their_reason(sqlite_db, mutate, message):
    good = feature("ok", rect(0, 0, 60))
    bad = feature("bad", rect(300, 0, 60))
    mutate(bad)
    report = ingest(sqlite_db, collection([good, bad]), now=NOW)
    assert [o.clue_id for o in report.outcomes] == ["ok"]
    (reject,) = report.rejected
    assert reject.index == 1 and message in reject.reason
    assert n_rows(sqlite_db, Case) == 1
    # the strict readers still refuse the file, naming the clue
    with pytest.raises(ClueFormatError, match=message):
        parse_clues(collection([good, bad]))


def test_unreadable_clue_files_are_clear_errors(sqlite_db, tmp_path):
    with pytest.raises(ClueFormatError, match="does not exist"):
        ingest(sqlite_db, tmp_path / "missing.geojson")
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    with pytest.raises(ClueFormatError, match="not readable JSON"):
        ingest(sqlite_db, broken)
    notfc = tmp_path / "feature.geojson"
    notfc.write_text(json.dumps(feature("x", rect(0, 0, 50))))
    with pytest.raises(ClueFormatError, match="not a GeoJSON FeatureCollection"):
        ingest(sqlite_db, notfc)


def test_naive_now_is_refused(sqlite_db):
    with pytest.raises(ValueError, match="naive datetime"):
        ingest(sqlite_db, collection([]), now=dt.datetime(2025, 1, 1))


def test_clue_statuses_for_the_pipeline(db):
    (old,) = [
        o.case_id for o in ingest(db, collection([feature("k1", rect(0, 0, 60))]), now=NOW).outcomes
    ]
    close_as(db, old, "false_alarm")
    ingest(
        db, collection([feature("k2", rect(0, 0, 60)), feature("k3", rect(900, 0, 60))]), now=DAY2
    )
    with db.session() as s:
        statuses = clue_statuses(s, ["k1", "k2", "k3", "never-seen"])
    assert statuses == {"k1": "false_alarm", "k2": "suppressed", "k3": "issued"}


def test_items_that_are_not_clues_are_refused(sqlite_db):
    with pytest.raises(ClueFormatError, match="item #0 is a int, not a GeoJSON Feature"):
        ingest(sqlite_db, [42], now=NOW)


def test_the_tracker_follows_the_alert_state(db):
    def night(day, *features, settings=None):
        report = ingest(db, collection(list(features)), now=day, settings=settings)
        return {o.clue_id: o.action for o in report.outcomes}

    quarry, wet, other = rect(0, 0, 60), rect(900, 0, 60), rect(1800, 0, 60)
    # first sighting: probable, held back (nothing stored, so a re-ingest holds it again)
    assert night(NOW, feature("q1", quarry, alert_status="probable")) == {"q1": "held"}
    assert night(NOW, feature("q1", quarry, alert_status="probable")) == {"q1": "held"}
    assert n_rows(db, Case) == 0 and n_rows(db, Detection) == 0
    # confirmed later: the case opens; a probable clue over it then updates it
    assert night(DAY2, feature("q2", quarry, alert_status="confirmed")) == {"q2": "created"}
    later = DAY2 + dt.timedelta(days=10)
    assert night(later, feature("q3", quarry, alert_status="probable")) == {"q3": "updated"}
    # a dropped alert never opens a case, even where probable ones may
    issuing = TrackerSettings(issue_probable=True)
    assert night(later, feature("w1", wet, alert_status="dropped"), settings=issuing) == {
        "w1": "held"
    }
    assert night(later, feature("o1", other, alert_status="probable"), settings=issuing) == {
        "o1": "created"
    }
    # clues from runs that do not follow alerts are taken as confirmed
    assert night(later, feature("n1", rect(2700, 0, 60))) == {"n1": "created"}
    assert n_rows(db, Case) == 3


def test_the_ingest_export_stays_the_function_after_its_module_loads():
    """Loading the ``ingest`` module through another export must not hide the function."""
    import subprocess
    import sys

    code = "from changedetect.tracker import ClueOutcome, ingest; print(callable(ingest))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
