"""Protection zones: reading GeoJSON / GeoPackage, attaching zone, tier and county to clues."""

import json

import numpy as np
import pyogrio
import pytest
import shapely
from shapely.geometry import box, mapping

from changedetect.config import ZonesConfig
from changedetect.errors import ConfigError
from changedetect.grids import WGS84, reproject_geometry
from changedetect.io.zones import ZoneIndex, load_zones
from changedetect.models import TimeWindow
from changedetect.pipeline import AnalysisOptions, analyse
from changedetect.testing.memory import MemorySource
from tests.factories import AFTER_DAY, BEFORE_DAY, ROCK, forest_scene, make_grid, paint

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def grid_box_wgs84(grid, rows, cols):
    t = grid.transform
    x0, y0 = t @ (cols[0], rows[0])
    x1, y1 = t @ (cols[1], rows[1])
    return reproject_geometry(
        box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), grid.crs, WGS84
    )


def write_zones(path, features):
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_geojson_and_geopackage_read_alike(tmp_path):
    geom = box(108.0, 34.0, 108.1, 34.1)
    feature = {
        "type": "Feature",
        "geometry": mapping(geom),
        "properties": {"name": "Core", "tier": "red_line_core", "county": "Zhouzhi"},
    }
    gj = write_zones(tmp_path / "z.geojson", [feature])
    gpkg = tmp_path / "z.gpkg"
    pyogrio.raw.write(
        gpkg,
        np.array([shapely.to_wkb(geom)], dtype=object),
        [np.array(["Core"]), np.array(["red_line_core"]), np.array(["Zhouzhi"])],
        fields=["name", "tier", "county"],
        geometry_type="Polygon",
        crs="EPSG:4326",
    )
    for path in (gj, gpkg):
        (zone,) = load_zones(ZonesConfig(path=path))
        assert (zone.name, zone.tier, zone.county) == ("Core", "red_line_core", "Zhouzhi")
        assert zone.geometry.equals(geom)


def test_projected_zone_layer_is_reprojected(tmp_path):
    grid = make_grid()
    wgs = grid_box_wgs84(grid, (0, 100), (0, 100))
    utm = reproject_geometry(wgs, WGS84, grid.crs)
    gpkg = tmp_path / "utm.gpkg"
    pyogrio.raw.write(
        gpkg,
        np.array([shapely.to_wkb(utm)], dtype=object),
        [np.array(["A"])],
        fields=["name"],
        geometry_type="Polygon",
        crs="EPSG:32649",
    )
    (zone,) = load_zones(ZonesConfig(path=gpkg))
    assert zone.geometry.symmetric_difference(wgs).area < 1e-10
    assert zone.tier is None and zone.county is None


def test_missing_name_field_is_a_clear_error(tmp_path):
    path = write_zones(
        tmp_path / "z.geojson",
        [{"type": "Feature", "geometry": mapping(box(0, 0, 1, 1)), "properties": {"title": "x"}}],
    )
    with pytest.raises(ConfigError, match="name_field 'name' is not a field"):
        load_zones(ZonesConfig(path=path))


def test_clues_carry_zone_and_limit_to_zones(tmp_path):
    grid = make_grid(200, 200)
    before, after = forest_scene(grid.shape.yx, 1), forest_scene(grid.shape.yx, 2)
    inside = np.zeros(grid.shape.yx, bool)
    inside[30:60, 30:60] = True
    outside = np.zeros(grid.shape.yx, bool)
    outside[140:170, 140:170] = True
    paint(after, inside | outside, ROCK)
    zone_geom = grid_box_wgs84(grid, (0, 100), (0, 100))
    path = write_zones(
        tmp_path / "zones.geojson",
        [
            {
                "type": "Feature",
                "geometry": mapping(zone_geom),
                "properties": {
                    "name": "Qinling core",
                    "tier": "red_line_core",
                    "county": "Zhouzhi",
                },
            }
        ],
    )
    zones = ZoneIndex(load_zones(ZonesConfig(path=path)))
    source = MemorySource(grid, {BEFORE_DAY: before, AFTER_DAY: after})
    windows = TimeWindow(BEFORE_DAY, BEFORE_DAY), TimeWindow(AFTER_DAY, AFTER_DAY)
    b = source.load(source.search(grid, windows[0]), BANDS, grid, 64)
    a = source.load(source.search(grid, windows[1]), BANDS, grid, 64)
    options = AnalysisOptions("z", chips=False, chip_size=64)
    result = analyse(b, a, grid, *windows, options, tmp_path / "all", zones=zones)
    by_zone = {c.zone: c for c in result.clues}
    assert set(by_zone) == {"Qinling core", None}
    core = by_zone["Qinling core"]
    assert (core.zone_tier, core.county, core.priority) == ("red_line_core", "Zhouzhi", "urgent")
    assert by_zone[None].priority == "normal"
    limited = analyse(
        b, a, grid, *windows, options, tmp_path / "limited", zones=zones, limit_to_zones=True
    )
    assert [c.zone for c in limited.clues] == ["Qinling core"]
    doc = json.loads((tmp_path / "limited" / "clues.geojson").read_text())
    assert len(doc["features"]) == 1
    import rasterio

    with rasterio.open(tmp_path / "limited" / "change.tif") as src:
        score = src.read(1)
    assert (score[35:55, 35:55] > 0).all()
    assert (score[145:165, 145:165] == 0).all()  # the clue outside the zones is not published
