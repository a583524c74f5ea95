"""Known sites: permits and restoration registries, and how clues are matched against them."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyogrio.raw
import pytest
import shapely
from pyproj import Transformer

from changedetect.tracker import (
    SiteRecord,
    SiteRegistryError,
    get_case,
    import_sites,
    ingest,
    read_sites,
)
from changedetect.tracker.models import Case, KnownSite
from tests.factories import NOW, UTM, collection, feature, rect

PERMIT = rect(0, 0, 400)  # a 16 ha licensed quarry
RESTORATION = rect(1000, 0, 300)


def registry(tmp_path, *, valid_to="2030-12-31"):
    path = tmp_path / "sites.geojson"
    features = [
        {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(PERMIT),
            "properties": {
                "name": "Huayang quarry",
                "kind": "permit",
                "valid_from": "2020-01-01",
                "valid_to": valid_to,
            },
        },
        {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(RESTORATION),
            "properties": {
                "name": "Old mine restoration",
                "kind": "restoration",
                "valid_from": "2022-03-01",
                "valid_to": None,
            },
        },
    ]
    path.write_text(json.dumps(collection(features)))
    return path


def ingest_one(db, geom, clue_id="c", day="2025-06-23", priority="normal"):
    report = ingest(db, collection([feature(clue_id, geom, day, priority=priority)]), now=NOW)
    with db.session() as s:
        return get_case(s, report.outcomes[0].case_id, now=NOW).case


def test_read_sites_geojson(tmp_path):
    records = read_sites(registry(tmp_path))
    assert [(r.name, r.kind, r.valid_from, r.valid_to) for r in records] == [
        ("Huayang quarry", "permit", dt.date(2020, 1, 1), dt.date(2030, 12, 31)),
        ("Old mine restoration", "restoration", dt.date(2022, 3, 1), None),
    ]
    assert records[0].geometry.equals_exact(PERMIT, 1e-9)


def test_read_sites_geopackage_in_a_projected_crs(tmp_path):
    """A GeoPackage in UTM with real date fields and no kind field (``kind`` given)."""
    to_utm = Transformer.from_crs(4326, UTM, always_xy=True)
    utm = shapely.transform(PERMIT, lambda xy: np.column_stack(to_utm.transform(*xy.T)))
    path = tmp_path / "permits.gpkg"
    pyogrio.raw.write(
        path,
        np.array([shapely.to_wkb(utm)], dtype=object),
        [
            np.array(["Huayang quarry"], dtype=object),
            np.array(["2020-01-01"], dtype="datetime64[D]"),
        ],
        ["name", "valid_from"],
        driver="GPKG",
        geometry_type="Polygon",
        crs=f"EPSG:{UTM}",
    )
    (record,) = read_sites(path, kind="permit")
    assert (record.name, record.kind, record.valid_from, record.valid_to) == (
        "Huayang quarry",
        "permit",
        dt.date(2020, 1, 1),
        None,
    )
    assert record.geometry.equals_exact(PERMIT, 1e-7)


def test_import_is_idempotent_and_updates_by_kind_and_name(db, tmp_path):
    path = registry(tmp_path)
    first = import_sites(db, path, now=NOW)
    assert (first.created, first.updated, first.unchanged) == (2, 0, 0)
    again = import_sites(db, path, now=NOW)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    renewed = import_sites(db, registry(tmp_path, valid_to="2035-12-31"), now=NOW)
    assert (renewed.created, renewed.updated, renewed.unchanged) == (0, 1, 1)
    with db.session() as s:
        permit = s.query(KnownSite).filter_by(kind="permit").one()
        assert permit.valid_to == dt.date(2035, 12, 31)
        assert permit.area_m2 == pytest.approx(160_000, rel=0.01)
        assert s.query(KnownSite).count() == 2


def test_clue_inside_a_valid_permit_is_permitted_and_low_priority(db, tmp_path):
    import_sites(db, registry(tmp_path), now=NOW)
    case = ingest_one(db, rect(100, 100, 80), priority="high")
    assert case.tags == ("permitted",)
    assert case.priority == "low"
    assert case.site_id is not None


def test_clue_across_a_permit_boundary_is_outside_permit(db, tmp_path):
    import_sites(db, registry(tmp_path), now=NOW)
    case = ingest_one(db, rect(350, 100, 100), priority="normal")  # half inside, half beyond
    assert case.tags == ("outside_permit",)
    assert case.priority == "high"


def test_clue_outside_every_site_is_untagged(db, tmp_path):
    import_sites(db, registry(tmp_path), now=NOW)
    # beside the permit, sharing its eastern border: touching is not overlapping
    case = ingest_one(db, rect(400, 100, 100), priority="normal")
    assert case.tags == ()
    assert case.priority == "normal"


def test_an_expired_permit_permits_nothing(db, tmp_path):
    import_sites(db, registry(tmp_path, valid_to="2024-12-31"), now=NOW)
    case = ingest_one(db, rect(100, 100, 80), priority="high")
    assert case.tags == ()
    assert case.priority == "high"


def test_new_bare_soil_on_a_restoration_site_is_a_breach(db, tmp_path):
    import_sites(db, registry(tmp_path), now=NOW)
    inside = ingest_one(db, rect(1100, 100, 60), "r1", priority="low")
    across = ingest_one(db, rect(1280, 100, 60), "r2", priority="urgent")
    assert inside.tags == ("restoration_breach",) and inside.priority == "high"
    assert across.tags == ("restoration_breach",) and across.priority == "urgent"


def test_growing_across_the_permit_boundary_changes_the_tag(db, tmp_path):
    import_sites(db, registry(tmp_path), now=NOW)
    case = ingest_one(db, rect(300, 100, 80), "g1")
    assert case.tags == ("permitted",)
    grown = ingest_one(db, rect(300, 100, 160), "g2", day="2025-07-03")
    assert grown.id == case.id
    assert grown.tags == ("outside_permit",) and grown.priority == "high"
    with db.session() as s:
        events = [e for e in get_case(s, case.id, now=NOW).events if e.kind == "tags"]
    assert "permitted → outside_permit" in events[-1].comment


def test_importing_a_registry_retags_open_cases(db, tmp_path):
    case = ingest_one(db, rect(100, 100, 80), priority="high")
    assert case.tags == ()
    report = import_sites(db, registry(tmp_path), now=NOW)
    assert report.retagged_cases == [case.id]
    with db.session() as s:
        refreshed = s.get(Case, case.id)
        assert (refreshed.tag_names, refreshed.priority) == (["permitted"], "low")


def test_import_records_directly(sqlite_db):
    report = import_sites(sqlite_db, [SiteRecord("A", "restoration", RESTORATION)], now=NOW)
    assert report.created == 1


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"name": "x", "kind": "mine"}, "kind is 'mine'"),
        ({"name": "", "kind": "permit"}, "field 'name' is empty"),
        ({"name": "x", "kind": "permit", "valid_from": "soon"}, "not a date"),
        (
            {"name": "x", "kind": "permit", "valid_from": "2025-01-02", "valid_to": "2025-01-01"},
            "before valid_from",
        ),
    ],
)
def test_bad_registries_are_clear_errors(tmp_path, props, message):
    path = tmp_path / "bad.geojson"
    path.write_text(
        json.dumps(
            collection(
                [
                    {
                        "type": "Feature",
                        "geometry": shapely.geometry.mapping(PERMIT),
                        "properties": props,
                    }
                ]
            )
        )
    )
    with pytest.raises(SiteRegistryError, match=message):
        read_sites(path)


def test_missing_fields_and_files_are_clear_errors(tmp_path):
    with pytest.raises(SiteRegistryError, match="does not exist"):
        read_sites(tmp_path / "none.gpkg")
    path = tmp_path / "nokind.geojson"
    path.write_text(
        json.dumps(
            collection(
                [
                    {
                        "type": "Feature",
                        "geometry": shapely.geometry.mapping(PERMIT),
                        "properties": {"title": "x"},
                    }
                ]
            )
        )
    )
    with pytest.raises(SiteRegistryError, match="no field 'name'"):
        read_sites(path)
    with pytest.raises(SiteRegistryError, match="--kind permit"):
        read_sites(path, name_field="title")
