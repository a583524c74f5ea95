"""One bad clue is set aside with one clear reason; the rest of its file is stored.

Each bad clue below once failed a whole file (PostgreSQL: a raw DataError with every SQL
parameter printed; GEOS exceptions; NOT NULL on cases.area_m2) or was stored wrong (SQLite kept
over-long text; a 359.8° wide polygon; a world of area 0).
"""

from __future__ import annotations

import json
import math

import pytest
import shapely
from shapely.geometry import box, mapping
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from changedetect.tracker import ingest
from changedetect.tracker.geometry import EARTH_AREA_M2, area_m2
from changedetect.tracker.limits import max_length
from changedetect.tracker.models import Case, Detection
from tests.factories import NOW, collection, feature, rect


def polygon(*ring: tuple[float, float]) -> dict:
    return {"type": "Polygon", "coordinates": [[list(p) for p in (*ring, ring[0])]]}


def bad_clue(**props) -> dict:
    """A clue Feature beside the good one, with ``props`` replacing its properties."""
    f = feature("bad", rect(300, 0, 60))
    f["properties"].update(props)
    f.pop("id")
    return f


def authalic_sin(lat_deg: float) -> float:
    """sin of the authalic latitude on WGS84: the share of a hemisphere's area below lat_deg."""
    e = math.sqrt(0.00669437999014)

    def q(phi: float) -> float:
        s = math.sin(phi)
        return (1 - e * e) * (
            s / (1 - e * e * s * s) - math.log((1 - e * s) / (1 + e * s)) / (2 * e)
        )

    return q(math.radians(lat_deg)) / q(math.pi / 2)


def stored_and_rejected(db, bad: dict) -> tuple[list[str], str]:
    """Ingest a good clue and ``bad``: what was stored, and the reason ``bad`` was set aside."""
    report = ingest(db, collection([feature("good", rect(0, 0, 60)), bad]), now=NOW)
    with db.session() as s:
        stored = sorted(s.scalars(select(Detection.clue_id)))
    assert [r.index for r in report.rejected] == [1], report.rejected
    return stored, report.rejected[0].reason


def test_text_limits_come_from_the_ledger_columns():
    assert max_length("change_type") == Case.__table__.c.change_type.type.length == 40
    assert max_length("clue_id") == Detection.__table__.c.clue_id.type.length
    assert max_length("county") == 200
    assert max_length("chip_before") is None  # a Text column: no limit


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        (
            {"change_type": "x" * 75},
            "change_type is 75 characters long; the ledger keeps at most 40",
        ),
        ({"clue_id": "bad\x00id"}, "clue_id holds a control character (U+0000 NUL) at position 3"),
        ({"clue_id": "c" * 201}, "clue_id is 201 characters long; the ledger keeps at most 200"),
        ({"county": "Z" * 201}, "county is 201 characters long"),
        ({"zone_tier": "red\nline"}, "zone_tier holds a control character (U+000A"),
        ({"aoi": "qinling\ud800"}, "aoi is not valid Unicode text (a lone surrogate"),
        ({"chip_after": "chips/a\x00.png"}, "chip_after holds a control character (U+0000 NUL)"),
    ],
)
def test_text_the_database_would_refuse_or_mangle_is_set_aside(db, props, reason):
    bad = bad_clue(**props)
    stored, why = stored_and_rejected(db, bad)
    assert stored == ["good"]
    assert reason in why


BAD_GEOMETRIES = [
    (
        polygon((108.25, 34.0), (108.26, 34.0), (math.nan, 34.01)),
        "coordinate (nan, 34.01) is not a finite number",
    ),
    (
        polygon((108.25, 34.0), (math.inf, 34.0), (108.26, 34.01)),
        "coordinate (inf, 34.0) is not a finite number",
    ),
    (
        polygon((500000, 3762000), (500100, 3762000), (500100, 3762100)),
        "not longitude/latitude in degrees (projected metres?)",
    ),
    (polygon((10, 94), (11, 94), (11, 95)), "latitude 94.0 is outside -90..90"),
    (polygon((361, 4), (362, 4), (362, 5)), "longitude 361.0 is outside -180..180"),
    (
        polygon((179.9, 50.0), (-179.9, 50.0), (-179.9, 50.1), (179.9, 50.1)),
        "a ring spans 359.8° of longitude (-179.9 to 179.9): a polygon crossing the "
        "antimeridian must be split there into a MultiPolygon (RFC 7946 §3.1.9)",
    ),
    (polygon((108.25, 34.0), (108.26, 34.0), (108.27, 34.0)), "has no polygon area"),
    ({"type": "Point", "coordinates": [108.25, 34.0]}, "has no polygon area"),
    ({"type": "Polygon", "coordinates": [[["a", "b"]]]}, "geometry cannot be read"),
]


@pytest.mark.parametrize(("geometry", "reason"), BAD_GEOMETRIES)
def test_geometry_that_is_not_a_wgs84_patch_is_set_aside(sqlite_db, geometry, reason):
    bad = feature("bad", rect(300, 0, 60))
    bad["geometry"] = geometry
    stored, why = stored_and_rejected(sqlite_db, bad)
    assert stored == ["good"]
    assert reason in why


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        ({"detected_at": None}, "detected_at is None, not a date YYYY-MM-DD"),
        ({"detected_at": 20250623}, "detected_at is 20250623, not a date"),
        ({"confidence": "0.8"}, "property 'confidence' is '0.8', not a number"),
        ({"confidence": True}, "property 'confidence' is True, not a number"),
        ({"area_m2": math.nan}, "property 'area_m2' is nan, not a finite number"),
        ({"change_type": 7}, "property 'change_type' is 7, not text"),
        ({"county": ["Zhouzhi"]}, "property 'county' is ['Zhouzhi'], not text"),
        ({"clue_id": "   "}, "property 'clue_id' is missing"),
    ],
)
def test_properties_of_the_wrong_type_are_set_aside(sqlite_db, props, reason):
    bad = bad_clue(**props)
    stored, why = stored_and_rejected(sqlite_db, bad)
    assert stored == ["good"]
    assert reason in why


def test_a_split_antimeridian_polygon_is_stored_with_both_halves(sqlite_db):
    split = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[179.999, 50.0], [180.0, 50.0], [180.0, 50.001], [179.999, 50.001], [179.999, 50.0]]],
            [
                [
                    [-180.0, 50.0],
                    [-179.999, 50.0],
                    [-179.999, 50.001],
                    [-180.0, 50.001],
                    [-180.0, 50.0],
                ]
            ],
        ],
    }
    f = feature("dateline", rect(0, 0, 60))
    f["geometry"] = split
    report = ingest(sqlite_db, collection([f]), now=NOW)
    assert report.created == 1 and not report.rejected
    with sqlite_db.session() as s:
        case = s.scalars(select(Case)).one()
    # two 0.001° squares at 50° N: 2 × 71.7 m × 111.2 m, not a band round the globe
    assert case.area_m2 == pytest.approx(2 * 71.7 * 111.2, rel=0.01)
    assert (case.min_lon, case.max_lon) == (-180.0, 180.0)


def test_a_self_crossing_ring_is_repaired_not_rejected(sqlite_db):
    f = feature("bowtie", rect(0, 0, 60))
    f["geometry"] = polygon((108.25, 34.0), (108.26, 34.01), (108.26, 34.0), (108.25, 34.01))
    report = ingest(sqlite_db, collection([f]), now=NOW)
    assert report.created == 1 and not report.rejected
    with sqlite_db.session() as s:
        assert s.scalars(select(Case.area_m2)).one() > 0


def test_a_whole_world_polygon_has_the_area_of_the_world(sqlite_db):
    f = feature("world", rect(0, 0, 60))
    f["geometry"] = mapping(box(-180, -90, 180, 90))
    report = ingest(sqlite_db, collection([f]), now=NOW)
    assert report.created == 1 and not report.rejected
    with sqlite_db.session() as s:
        world = s.scalars(select(Case.area_m2)).one()
    assert world == pytest.approx(510_065_621_724_088, rel=1e-6)  # the WGS84 ellipsoid


@pytest.mark.parametrize(
    ("geom", "share_of_earth"),
    [
        (box(-180, -90, 180, 90), 1.0),
        (box(-180, -89, 180, 89), authalic_sin(89)),
        (box(0, -90, 90, 0), 1 / 8),
        (box(-180, 60, 180, 90), (1 - authalic_sin(60)) / 2),
        (box(0, -80, 170, 80), 170 / 360 * authalic_sin(80)),
    ],
)
def test_areas_are_right_for_polygons_of_planetary_size(geom, share_of_earth):
    # RFC 7946 edges run along the parallels: the share of the ellipsoid between them
    assert area_m2(geom) / EARTH_AREA_M2 == pytest.approx(share_of_earth, rel=1e-4)
    assert area_m2(shapely.reverse(geom)) == pytest.approx(area_m2(geom))  # orientation


def test_areas_of_small_patches_and_holes():
    # 0.001° × 0.001° at 34° N: 92.5 m × 110.9 m
    assert area_m2(box(108, 34, 108.001, 34.001)) == pytest.approx(10247.5, rel=1e-4)
    holed = shapely.Polygon(box(0, 0, 1, 1).exterior, [box(0.25, 0.25, 0.75, 0.75).exterior])
    assert area_m2(holed) == pytest.approx(0.75 * area_m2(box(0, 0, 1, 1)), rel=1e-3)


def test_one_clue_id_with_two_contents_sets_both_aside(db):
    first = feature("twice", rect(0, 0, 60))
    second = feature("twice", rect(900, 0, 60))  # same id, another place
    same = feature("copied", rect(2000, 0, 60))
    report = ingest(
        db, collection([first, feature("alone", rect(4000, 0, 60)), second, same, same]), now=NOW
    )
    reasons = {r.index: r.reason for r in report.rejected}
    assert sorted(reasons) == [0, 2]
    assert "clue_id 'twice' is given 2 times with different geometry or properties" in reasons[0]
    assert reasons[0] == reasons[2]
    # identical copies are one clue: stored once
    assert sorted((o.clue_id, o.action) for o in report.outcomes) == [
        ("alone", "created"),
        ("copied", "created"),
        ("copied", "unchanged"),
    ]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Detection)) == 2


def test_non_finite_extra_properties_are_stored_as_null(db):
    f = feature("nan-ndvi", rect(0, 0, 60), d_ndvi=math.nan, d_bsi=math.inf)
    assert ingest(db, collection([f]), now=NOW).created == 1
    with db.session() as s:
        props = s.scalars(select(Detection.properties)).one()
    assert props["d_ndvi"] is None and props["d_bsi"] is None


def test_database_errors_never_carry_the_values_bound_to_them(db):
    secret = "hunter2-" + "x" * 60  # too long for varchar(40) on PostgreSQL
    with pytest.raises(DBAPIError) as info, db.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO detections (change_type, clue_id) VALUES (:kind, :clue)"),
            {"kind": secret, "clue": "leak-test"},
        )
    assert "INSERT INTO detections" in str(info.value)  # the statement, for diagnosis
    assert "hunter2" not in str(info.value) and "leak-test" not in str(info.value)
    assert "hidden" in str(info.value)


def test_the_rejects_file_keeps_each_feature_with_its_reason(tmp_path):
    from changedetect.tracker.clues import read_clue_batch
    from changedetect.tracker.rejects import default_rejects_path, write_rejects

    path = tmp_path / "clues.geojson"
    bad = feature("nan", rect(300, 0, 60))
    bad["geometry"] = polygon((108.25, 34.0), (108.26, 34.0), (math.nan, 34.01))
    long_kind = feature("long", rect(600, 0, 60), change_type="k" * 41)
    path.write_text(json.dumps(collection([feature("ok", rect(0, 0, 60)), bad, long_kind, 42])))
    batch = read_clue_batch(path)
    assert [c.clue_id for c in batch.clues] == ["ok"]
    target = default_rejects_path(path)
    assert target == tmp_path / "clues.rejects.geojson"
    assert write_rejects(target, batch.rejected) == target
    rejects = json.loads(target.read_text(), parse_constant=pytest.fail)  # strict JSON
    assert rejects["type"] == "FeatureCollection"
    nan, long, number = rejects["features"]
    assert nan["properties"]["clue_id"] == "nan" and nan["geometry"] is None
    assert nan["properties"]["geometry_as_given"]["coordinates"][0][2] == ["NaN", 34.01]
    assert "not a finite number" in nan["properties"]["reject_reason"]
    assert long["geometry"] == bad_free(long_kind["geometry"])
    assert long["properties"]["change_type"] == "k" * 41
    assert "change_type is 41 characters long" in long["properties"]["reject_reason"]
    assert number["properties"] == {
        "item_as_given": 42,
        "reject_reason": "not a GeoJSON Feature",
    }
    # fixed and ingested again: no rejects, and yesterday's file is gone
    assert write_rejects(target, []) is None and not target.exists()


def bad_free(geometry: dict) -> dict:
    """A geometry as JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(geometry))
