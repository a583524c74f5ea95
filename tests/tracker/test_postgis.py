"""PostGIS on PostgreSQL: footprint columns, spatial matching in the GiST indexes, the QGIS view;
and the same decisions as SQLite's bounding boxes for the same nights."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text

from changedetect.tracker import (
    TrackerDatabaseError,
    TrackerDB,
    get_case,
    import_sites,
    ingest,
    transition,
    upgrade,
)
from changedetect.tracker.api import create_app
from changedetect.tracker.auth import add_user, create_token
from changedetect.tracker.ingest import overlapping_cases
from changedetect.tracker.models import Case, CaseTag
from changedetect.tracker.settings import TrackerSettings
from changedetect.tracker.sites import SiteRecord, sites_near

from .helpers import NOW, collection, feature, rect

LATER = NOW + dt.timedelta(days=10)


def _plan(session, sql: str, **params) -> str:
    """The plan PostgreSQL would use for ``sql`` were the tables big (no sequential scan)."""
    session.execute(text("SET LOCAL enable_seqscan = off"))
    return "\n".join(r[0] for r in session.execute(text(f"EXPLAIN {sql}"), params))


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[TrackerDB]:
    tracker = TrackerDB.open(pg_url)
    yield tracker
    tracker.close()


def test_clue_candidates_come_from_the_gist_index(pg_db):
    """New on PostgreSQL: ST_Intersects finds a clue's candidate cases (and a footprint's known
    sites) through the GiST indexes; the bounding-box query before could use none."""
    night = collection([feature(f"g{i}", rect(i * 400.0, 0, 80)) for i in range(5)])
    import_sites(pg_db, [SiteRecord("quarry 1", "permit", rect(0, 0, 200))], now=NOW)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(pg_db.engine, "before_cursor_execute", record)
    try:
        assert ingest(pg_db, night, now=NOW).created == 5
    finally:
        event.remove(pg_db.engine, "before_cursor_execute", record)
    lookups = [s for s in statements if s.lstrip().startswith("SELECT cases.id")]
    assert lookups and all("ST_Intersects(cases.geom_union" in s for s in lookups)
    assert not any("cases.max_lon >=" in s for s in statements)

    clue = rect(10, 10, 60)
    settings = TrackerSettings()
    with pg_db.session() as s, s.begin():
        [(share, case)] = overlapping_cases(s, clue, settings)
        assert case.detections[0].clue_id == "g0" and share == pytest.approx(1.0)
        assert [site.name for site in sites_near(s, clue)] == ["quarry 1"]
        assert sites_near(s, rect(1200, 0, 60)) == []
        wkb = shapely.to_wkb(clue)
        for table, column in (("cases", "geom_union"), ("known_sites", "geometry")):
            plan = _plan(
                s,
                f"SELECT id FROM {table} WHERE ST_Intersects({column}, ST_GeomFromWKB(:wkb, 4326))",
                wkb=wkb,
            )
            assert f"ix_{table}_{column}" in plan


def _scenario(url: str) -> tuple[list[tuple], list[tuple]]:
    """Three nights over known sites, with verdicts between: every path of the dedup rule.

    Returns the outcomes of every clue and the ledger's cases as they end."""
    settings = TrackerSettings()
    with TrackerDB.open(url) as db:
        import_sites(
            db,
            [
                SiteRecord("licensed pit", "permit", rect(-50, -50, 300)),
                SiteRecord("replanted slope", "restoration", rect(1900, -50, 300)),
            ],
            now=NOW,
            settings=settings,
        )
        # an L-shaped patch: a clue in the corner its bounding box spans meets the box only
        ell = shapely.union(rect(3000, 0, 200, 40), rect(3000, 0, 40, 200))
        night1 = [
            feature("a1", rect(0, 0, 80)),  # inside the permit
            feature("b1", rect(400, 0, 80)),
            feature("c1", rect(800, 0, 80)),
            feature("d1", rect(1200, 0, 80)),
            feature("e1", rect(1600, 0, 80)),
            feature("f1", rect(2000, 0, 80)),  # in the restoration site
            feature("g1", rect(200, -10, 60)),  # across the permit's edge
            feature("l1", ell),
        ]
        outcomes = ingest(db, collection(night1), now=NOW, settings=settings).outcomes
        ids = {o.clue_id: o.case_id for o in outcomes}
        actor = "ana.lyst"
        for key, path in {
            "b1": ["verifying", "false_alarm"],
            "c1": ["verifying", "compliant"],
            "d1": ["verifying", "violation", "rectifying", "closed"],
        }.items():
            for state in path:
                transition(db, ids[key], state, actor=actor, now=NOW)
        night2 = [
            feature("a2", rect(10, 5, 80), "2025-07-03"),  # update, still permitted
            feature("b2", rect(405, 0, 70), "2025-07-03"),  # suppressed by the false alarm
            feature("c2", rect(790, -10, 400), "2025-07-03"),  # grew far: regrowth
            feature("d2", rect(1205, 5, 80), "2025-07-03"),  # disturbed again: relapse
            feature(
                "e2", rect(1660, 60, 80), "2025-07-03"
            ),  # overlaps e1 by a corner (6 %): a case of its own
            feature("l2", rect(3100, 100, 60), "2025-07-03"),  # in the L's empty corner
            feature("f2", rect(2010, 10, 90), "2025-07-03"),
        ]
        night3 = [
            feature("a3", rect(5, 0, 85), "2025-07-13"),
            feature("f3", rect(2020, 0, 80), "2025-07-13"),
            feature("l3", rect(3010, 10, 50), "2025-07-13"),
        ]
        for clues in (night2, night3):
            outcomes += ingest(db, collection(clues), now=LATER, settings=settings).outcomes
        with db.session() as s:
            cases = [
                (
                    c.id,
                    c.state,
                    c.priority,
                    c.link_reason,
                    c.linked_case_id,
                    round(c.area_m2, 3),
                    c.geom_union,
                    tuple(s.scalars(select(CaseTag.tag).where(CaseTag.case_id == c.id))),
                )
                for c in s.scalars(select(Case).order_by(Case.id))
            ]
    return [(o.clue_id, o.action, o.case_id, o.linked_case_id, o.note) for o in outcomes], cases


def test_both_engines_decide_alike(sqlite_url, pg_url):
    """The same nights give the same outcomes and ledger on SQLite (bounding boxes + shapely)
    and PostgreSQL (PostGIS + shapely). Holds before PostGIS too: it guards the change."""
    sqlite_outcomes, sqlite_cases = _scenario(sqlite_url)
    pg_outcomes, pg_cases = _scenario(pg_url)
    actions = {o[0]: o[1] for o in sqlite_outcomes}
    assert actions["b2"] == "suppressed" and actions["a2"] == "updated"
    assert {actions["c2"], actions["d2"], actions["l2"], actions["e2"]} == {"created"}
    assert pg_outcomes == sqlite_outcomes
    assert pg_cases == sqlite_cases


def test_cases_open_in_qgis(pg_db, tmp_path):
    """New: QGIS finds the cases as a MultiPolygon layer in EPSG:4326 (``cases_map``), and the
    footprint PostGIS gives of a case is the one the API gives."""
    night = collection(
        [
            feature("q1", rect(0, 0, 80)),
            feature("q2", shapely.union(rect(500, 0, 60), rect(700, 0, 60))),  # two parts
        ]
    )
    ids = [o.case_id for o in ingest(pg_db, night, now=NOW).outcomes]
    with pg_db.session() as s:
        layers = s.execute(
            text(
                "SELECT f_table_name, f_geometry_column, srid, type FROM geometry_columns "
                "WHERE f_table_name IN ('cases', 'cases_map', 'detections', 'known_sites')"
            )
        ).all()
        geojson = dict(
            s.execute(
                text(
                    "SELECT id, ST_AsGeoJSON(ST_ForcePolygonCCW(geom_union), 7) FROM cases "
                    "WHERE ST_Equals(geom_union, (SELECT geom FROM cases_map m "
                    "WHERE m.id = cases.id))"
                )
            ).all()
        )
    assert set(layers) == {
        ("cases_map", "geom", 4326, "MULTIPOLYGON"),
        ("cases", "geom_union", 4326, "GEOMETRY"),
        ("cases", "geom_latest", 4326, "GEOMETRY"),
        ("cases", "geom_first", 4326, "GEOMETRY"),
        ("detections", "geometry", 4326, "GEOMETRY"),
        ("known_sites", "geometry", 4326, "GEOMETRY"),
    }
    add_user(pg_db, "q.analyst", "analyst", now=NOW)
    token = {"Authorization": f"Bearer {create_token(pg_db, 'q.analyst', now=NOW)}"}
    app = create_app(pg_db, now=NOW, photo_dir=tmp_path / "photos")
    with TestClient(app) as client:
        for case_id in ids:
            body = client.get(f"/cases/{case_id}", headers=token).json()
            assert json.loads(geojson[case_id]) == body["geometry_union"]
    with pg_db.session() as s:
        assert get_case(s, ids[1], now=NOW).geometry_union["type"] == "MultiPolygon"


def test_migration_says_who_must_enable_postgis(pg_server):
    """New: a database without PostGIS, whose role may not create it, is refused at 0006 with
    the statement a DBA must run; the schema before it needs no PostGIS."""
    if pg_server.fixed_url is not None:
        pytest.skip("needs a server it may create a database on")
    url = pg_server.create_database("nopostgis", postgis=False)
    upgrade(url, "0005")
    with pytest.raises(TrackerDatabaseError, match=r"run `CREATE EXTENSION postgis;`") as info:
        upgrade(url)
    assert "may not enable it" in str(info.value)
    assert pg_server.password not in str(info.value)
    pg_server.psql("CREATE EXTENSION postgis", database=url.rsplit("/", 1)[1])  # the DBA
    upgrade(url)
    with TrackerDB.open(url) as db:
        assert ingest(db, collection([feature("p1", rect(0, 0, 60))]), now=NOW).created == 1
