"""Queries for the API: filters, ordering, paging, a case's history, GeoJSON, monthly report."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
import shapely
from shapely.geometry import shape
from sqlalchemy import select, update

from changedetect.navigation import wgs84_to_gcj02
from changedetect.testing.ledger import synthetic_night
from changedetect.tracker import (
    CaseNotFoundError,
    CaseQuery,
    TrackerError,
    cases_geojson,
    get_case,
    ingest,
    list_cases,
    monthly_report,
    reassign,
    transition,
)
from changedetect.tracker.models import Case
from changedetect.tracker.queries import overdue_clause
from changedetect.tracker.states import AWAITING_VERIFICATION
from tests.factories import NOW, collection, feature, rect


def day(n: int) -> dt.datetime:
    return NOW + dt.timedelta(days=n)


@pytest.fixture
def ledger(db):
    """Six cases in two counties, of several types, tiers, priorities and nights."""
    specs = [
        # clue, x, night, county, type, tier, priority
        ("a", 0, "2025-06-03", "Zhouzhi", "quarry", "red_line_core", "urgent"),
        ("b", 500, "2025-06-13", "Zhouzhi", "construction", "red_line_core", "high"),
        ("c", 1000, "2025-06-23", "Huyi", "vegetation_loss", "general_control", "normal"),
        ("d", 1500, "2025-06-23", "Huyi", "quarry", "general_control", "low"),
        ("e", 2000, "2025-07-03", "Huyi", "construction", "general_control", "normal"),
        ("f", 20000, "2025-07-03", None, "other", None, "normal"),
    ]
    ids = {}
    for clue, x, night, county, kind, tier, priority in specs:
        f = feature(
            clue,
            rect(x, 0, 60),
            night,
            county=county,
            change_type=kind,
            zone_tier=tier,
            priority=priority,
        )
        ids[clue] = ingest(db, collection([f]), now=NOW).outcomes[0].case_id
    return ids


def ids_of(page):
    return [c.id for c in page.items]


def test_filters(db, ledger):
    with db.session() as s:

        def q(**kw):
            return {c.id for c in list_cases(s, CaseQuery(**kw), now=NOW).items}

        assert q(counties=["Zhouzhi"]) == {ledger["a"], ledger["b"]}
        assert q(change_types=["quarry"]) == {ledger["a"], ledger["d"]}
        assert q(tiers=["general_control"]) == {ledger["c"], ledger["d"], ledger["e"]}
        assert q(detected_from=dt.date(2025, 6, 13), detected_to=dt.date(2025, 6, 23)) == {
            ledger["b"],
            ledger["c"],
            ledger["d"],
        }
        assert q(detected_from=dt.date(2025, 7, 1)) == {ledger["e"], ledger["f"]}
        west, south, east, north = rect(900, -10, 700, 80).bounds  # covers c and d only
        assert q(bbox=(west, south, east, north)) == {ledger["c"], ledger["d"]}
        assert q(states=["issued"]) == set(ledger.values())
        assert q(states=["verifying"]) == set()
        assert q(aoi="test-aoi", counties=["Huyi"], change_types=["quarry"]) == {ledger["d"]}


def test_state_filter_and_bad_queries(db, ledger):
    transition(db, ledger["c"], "verifying", actor="x", now=NOW)
    with db.session() as s:
        page = list_cases(s, CaseQuery(states=["verifying", "violation"]), now=NOW)
    assert ids_of(page) == [ledger["c"]]
    with pytest.raises(TrackerError, match="unknown state filter done"):
        CaseQuery(states=["done"])
    with pytest.raises(TrackerError, match="not \\(west, south, east, north\\)"):
        CaseQuery(bbox=(10, 0, 0, 1))
    with db.session() as s, pytest.raises(TrackerError, match="limit 0"):
        list_cases(s, limit=0)


def test_order_and_pagination(db, ledger):
    with db.session() as s:
        everything = list_cases(s, now=NOW)
        pages = [list_cases(s, limit=2, offset=o, now=NOW) for o in (0, 2, 4)]
    # nothing overdue yet: by priority, then deadline (all equal), then id
    expected = [ledger[k] for k in ("a", "b", "c", "e", "f", "d")]
    assert ids_of(everything) == expected
    assert [i for p in pages for i in ids_of(p)] == expected
    assert {p.total for p in pages} == {6}
    assert [len(p.items) for p in pages] == [2, 2, 2]


def test_case_detail_and_reassignment(db, ledger):
    ingest(db, collection([feature("a2", rect(10, 5, 60), "2025-06-13")]), now=day(1))
    reassign(db, ledger["a"], "Huyi", actor="province", comment="border site", now=day(2))
    with db.session() as s:
        detail = get_case(s, ledger["a"], now=day(2))
        with pytest.raises(CaseNotFoundError):
            get_case(s, 999)
    data = detail.to_dict()
    assert data["assigned_county"] == "Huyi" and data["county"] == "Zhouzhi"
    assert [d["clue_id"] for d in data["detection_history"]] == ["a", "a2"]
    assert [e["kind"] for e in data["events"]] == ["created", "assigned"]
    assert data["events"][1]["comment"] == "assigned Zhouzhi → Huyi: border site"
    assert shape(data["geometry_union"]).area > shape(data["geometry_first"]).area
    assert data["detections"] == 2


def test_geojson_export(db, ledger):
    transition(db, ledger["b"], "verifying", actor="x", now=NOW)
    with db.session() as s:
        fc = cases_geojson(s, CaseQuery(counties=["Zhouzhi"]), now=NOW)
        latest = cases_geojson(s, now=NOW, geometry="latest")
        with pytest.raises(TrackerError, match="geometry 'box'"):
            cases_geojson(s, geometry="box")
    assert fc["type"] == "FeatureCollection"
    assert [f["id"] for f in fc["features"]] == [ledger["a"], ledger["b"]]
    props = fc["features"][1]["properties"]
    assert (props["state"], props["assigned_county"], props["tags"]) == ("verifying", "Zhouzhi", "")
    # list properties also as scalars: GeoPackage and Shapefile exports have no list fields
    assert [props["centroid_lon"], props["centroid_lat"]] == props["centroid"]
    # what the officer navigates by: GCJ-02 for Amap, mu, links
    gcj = wgs84_to_gcj02(*props["centroid"])
    assert props["centroid_gcj02"] == pytest.approx(gcj, abs=1e-6)
    assert props["area_mu"] == pytest.approx(props["area_m2"] / 666.667, abs=0.01)
    position = props["link_amap"].split("position=")[1].split("&")[0]
    assert [float(v) for v in position.split(",")] == pytest.approx(gcj, abs=2e-6)
    assert props["link_geo"].startswith("geo:")
    geom = shape(fc["features"][0]["geometry"])
    assert geom.equals_exact(rect(0, 0, 60), 1e-6)
    # RFC 7946: exterior rings counter-clockwise, lon/lat order
    assert shapely.Polygon(fc["features"][0]["geometry"]["coordinates"][0]).exterior.is_ccw
    assert 108 < geom.centroid.x < 109 and 33 < geom.centroid.y < 35
    assert len(latest["features"]) == 6


def test_monthly_report_counts_the_cases_of_their_detection_month(db, ledger):
    # June's cases (all ingested on July 1st, deadline day 30): Zhouzhi verifies both on time (3
    # and 5 days), one a violation it rectifies; Huyi verifies one (10 days) and leaves one
    # unverified past its deadline
    transition(db, ledger["a"], "verifying", actor="z", now=day(1))
    transition(db, ledger["a"], "false_alarm", actor="z", now=day(3))
    transition(db, ledger["b"], "verifying", actor="z", now=day(1))
    transition(db, ledger["b"], "violation", actor="z", now=day(5))
    transition(db, ledger["b"], "rectifying", actor="z", now=day(8))
    transition(db, ledger["b"], "closed", actor="z", now=day(20))
    transition(db, ledger["c"], "verifying", actor="h", now=day(2))
    transition(db, ledger["c"], "compliant", actor="h", now=day(10))
    transition(db, ledger["d"], "verifying", actor="h", now=day(2))
    with db.session() as s:
        june = monthly_report(s, "2025-06", now=day(45))
    rows = {r.county: r for r in june.rows}
    assert set(rows) == {"Zhouzhi", "Huyi"}  # e and f were detected in July
    z, h = rows["Zhouzhi"], rows["Huyi"]
    assert (z.issued, z.verified, z.verified_on_time, z.violations, z.rectified) == (2, 2, 2, 1, 1)
    assert (z.overdue, z.relapses, z.closed) == (0, 0, 2)
    assert (z.on_time_share, z.median_days_to_verify, z.rank) == (1.0, 4.0, 1)
    assert (h.issued, h.verified, h.verified_on_time, h.violations, h.overdue) == (2, 1, 1, 0, 1)
    # leaving d unverified past its deadline counts against Huyi
    assert (h.on_time_share, h.median_days_to_verify, h.rank, h.closed) == (0.5, 10.0, 2, 1)
    assert [r.county for r in june.rows] == ["Zhouzhi", "Huyi"]

    # the same month seen later: d verified late, a violation
    transition(db, ledger["d"], "violation", actor="h", now=day(40))
    with db.session() as s:
        june = monthly_report(s, dt.date(2025, 6, 15), now=day(45))
        july = monthly_report(s, "2025-07", now=day(45))
    h = {r.county: r for r in june.rows}["Huyi"]
    assert (h.verified, h.verified_on_time, h.violations, h.overdue) == (2, 1, 1, 0)
    assert (h.on_time_share, h.median_days_to_verify) == (0.5, 25.0)
    rows = {r.county: r for r in july.rows}
    assert (rows["Huyi"].issued, rows["Huyi"].overdue, rows["Huyi"].rank) == (1, 1, 1)
    unassigned = rows["(unassigned)"]
    assert (unassigned.issued, unassigned.overdue, unassigned.rank) == (1, 1, None)  # not ranked

    # a clue over b's rectified and closed site in August re-opens it: a relapse of August
    ingest(db, collection([feature("g", rect(500, 0, 60), "2025-08-10")]), now=day(41))
    with db.session() as s:
        august = monthly_report(s, "2025-08", now=day(45))
    (row,) = august.rows
    assert (row.county, row.issued, row.relapses, row.overdue) == ("Zhouzhi", 1, 1, 0)
    assert row.rank is None  # nothing due yet

    table = list(csv.DictReader(io.StringIO(june.to_csv())))
    assert table[0].keys() >= {"county", "issued", "violations", "rectified", "relapses", "rank"}
    huyi = next(r for r in table if r["county"] == "Huyi")
    assert (huyi["month"], huyi["verified"], huyi["violations"], huyi["on_time_share"]) == (
        "2025-06",
        "2",
        "1",
        "0.500",
    )


@pytest.mark.parametrize("month", ["2025-13", "2025/07", "July"])
def test_bad_month_is_a_clear_error(sqlite_db, month):
    with sqlite_db.session() as s, pytest.raises(TrackerError, match="is not YYYY-MM"):
        monthly_report(s, month)


def test_every_page_is_a_slice_of_the_one_list_order(db):
    """Urgent (escalated, or overdue before the flag is set) first, then priority, deadline, id:
    however the page is cut and whatever the filter, the pages join into that one order."""
    first = ingest(db, synthetic_night(30, prefix="a"), now=NOW).outcomes
    second = ingest(db, synthetic_night(30, start=30, prefix="b"), now=day(10)).outcomes
    ids = [o.case_id for o in first + second]
    for case_id in ids[::4]:
        if case_id not in ids[1::5]:
            transition(db, case_id, "verifying", actor="ana.lyst", now=day(1))
    for case_id in ids[1::5]:
        transition(db, case_id, "verifying", actor="ana.lyst", now=day(1))
        transition(db, case_id, "violation", actor="zhou.officer", now=day(2))
    with db.write() as s:  # a few escalated by an earlier night, overdue or not
        s.execute(update(Case).where(Case.id.in_(ids[2::9])).values(escalated=True))
    later = day(35)  # the first night's open cases are overdue now, the second night's are not
    with db.session() as s:
        rows = s.execute(
            select(
                Case.id, Case.escalated, Case.state, Case.deadline, Case.priority_rank
            ).add_columns(overdue_clause(later))
        ).all()
        assert {r.state for r in rows} >= {"issued", "verifying", "violation"}
        overdue = [r for r in rows if r.state in AWAITING_VERIFICATION and r.deadline < later]
        assert 0 < len(overdue) < len(rows) and any(r.escalated for r in rows)
        for query in (CaseQuery(), CaseQuery(counties=["Huyi"]), CaseQuery(states=["issued"])):
            expected = [
                r.id
                for r in sorted(
                    (r for r in rows if _matches(query, s, r.id)),
                    key=lambda r: (
                        not (
                            r.escalated or (r.state in AWAITING_VERIFICATION and r.deadline < later)
                        ),
                        r.priority_rank,
                        r.deadline,
                        r.id,
                    ),
                )
            ]
            for limit in (1, 4, 7, 50):
                got = []
                for offset in range(0, len(expected) + limit, limit):
                    page = list_cases(s, query, limit=limit, offset=offset, now=later)
                    assert page.total == len(expected)
                    got += [c.id for c in page.items]
                assert got == expected, (query, limit)


def _matches(query: CaseQuery, session, case_id: int) -> bool:
    case = session.get(Case, case_id)
    return (not query.counties or case.assigned_county in query.counties) and (
        not query.states or case.state in query.states
    )
