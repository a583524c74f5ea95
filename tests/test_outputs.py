"""The analysis stage end to end on an in-memory scene: clues, GeoJSON, COG, chips."""

import csv
import io
import json

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from scipy import ndimage
from shapely.geometry import box, shape
from shapely.geometry.polygon import LinearRing

from changedetect.algorithms.clues import load_clue_model, object_features
from changedetect.algorithms.patch_pixels import PatchPixels
from changedetect.config import DetectionConfig
from changedetect.errors import NoClearViewError, NoValidDataError
from changedetect.io.sinks.chips import PANEL_GAP
from changedetect.io.sinks.geojson import rfc7946_geometry
from changedetect.io.sinks.rasters import mask_score_to_patches, scratch_profile, write_cog
from changedetect.models import TimeWindow
from changedetect.navigation import wgs84_to_gcj02
from changedetect.pipeline import AnalysisOptions, analyse
from changedetect.testing.memory import MemorySource
from tests.factories import AFTER_DAY, BEFORE_DAY, ROCK, forest_scene, make_grid, paint

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]
WINDOWS = (TimeWindow(BEFORE_DAY, BEFORE_DAY), TimeWindow(AFTER_DAY, AFTER_DAY))


def run_scene(tmp_path, before, after, grid, chunk=64, name="t", detection=None):
    source = MemorySource(grid, {BEFORE_DAY: before, AFTER_DAY: after})
    b = source.load(source.search(grid, WINDOWS[0]), BANDS, grid, chunk)
    a = source.load(source.search(grid, WINDOWS[1]), BANDS, grid, chunk)
    options = AnalysisOptions(name, detection or DetectionConfig(), chips=True, chip_size=64)
    return analyse(b, a, grid, *WINDOWS, options, tmp_path / name)


@pytest.fixture
def quarry_result(tmp_path):
    grid = make_grid(200, 200)
    before, after = forest_scene(grid.shape.yx, 1), forest_scene(grid.shape.yx, 2)
    yy, xx = np.mgrid[:200, :200]
    quarry = ((yy - 70) ** 2 + (xx - 64) ** 2) < 20**2  # straddles chunk borders at 64
    paint(after, quarry, ROCK)
    # a cloud over another corner on the after date, flagged in SCL
    for scene, scl_value in ((before, 4), (after, 4)):
        scene["SCL"] = np.full(grid.shape.yx, scl_value, np.uint8)
    after["SCL"][150:190, 150:190] = 9
    for b in ROCK:
        after[b][150:190, 150:190] = 0.7
    # no data at all in a strip
    for b in ROCK:
        after[b][:, :5] = np.nan
    return run_scene(tmp_path, before, after, grid), quarry


def test_one_clue_for_the_quarry_across_chunks(quarry_result):
    result, quarry = quarry_result
    assert len(result.clues) == 1
    clue = result.clues[0]
    assert clue.change_type == "quarry"
    assert clue.area_m2 == pytest.approx(quarry.sum() * 100, rel=0.1)
    assert clue.confidence_level == "high"
    assert clue.d_ndvi < -0.3


def test_confidence_is_the_clue_models_probability(quarry_result):
    result, _ = quarry_result
    model = load_clue_model()
    (clue,), (patch,) = result.clues, result.patches
    assert clue.model == model.tag
    assert clue.confidence == pytest.approx(float(model.probability(object_features(patch))[0]))


def test_min_confidence_drops_the_less_likely_clues_and_their_pixels(tmp_path):
    grid = make_grid(200, 200)
    before, after = forest_scene(grid.shape.yx, 1), forest_scene(grid.shape.yx, 2)
    yy, xx = np.mgrid[:200, :200]
    big = ((yy - 60) ** 2 + (xx - 60) ** 2) < 18**2
    small = (np.abs(yy - 150) < 3) & (np.abs(xx - 150) < 4)  # 5 x 7 px: a small, weak-looking site
    paint(after, big | small, ROCK)
    everything = run_scene(tmp_path, before, after, grid, name="all")
    assert len(everything.clues) == 2
    low, high = sorted(c.confidence for c in everything.clues)
    assert low < high
    cut = (low + high) / 2
    kept = run_scene(
        tmp_path, before, after, grid, name="cut", detection=DetectionConfig(min_confidence=cut)
    )
    assert [c.confidence for c in kept.clues] == [pytest.approx(high)]
    with rasterio.open(kept.files["change"]) as src:
        score = np.nan_to_num(src.read(1))
    assert (score[big] > 0).mean() > 0.9 and not (score[small] > 0).any()
    doc = json.loads(kept.files["clues"].read_text())
    assert len(doc["features"]) == 1


def test_geojson_is_rfc7946_and_readable(quarry_result):
    result, _ = quarry_result
    path = result.files["clues"]
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection"
    assert "crs" not in doc  # RFC 7946: WGS84 only, no crs member
    feature = doc["features"][0]
    for key in (
        "clue_id",
        "aoi",
        "detected_at",
        "before",
        "after",
        "area_m2",
        "centroid",
        "change_type",
        "confidence",
        "confidence_level",
        "d_ndvi",
        "d_bsi",
        "d_ndbi",
        "zone",
        "zone_tier",
        "county",
        "priority",
        "chip_before",
        "chip_after",
        "chip_change",
        "status",
        "model",
    ):
        assert key in feature["properties"], key
    ring = feature["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    assert LinearRing(ring).is_ccw  # right-hand rule: exterior counter-clockwise
    lon, lat = ring[0]
    assert 108 < lon < 109 and 33 < lat < 34  # UTM 49N grid near (108.8E, 33.9N)
    assert shape(feature["geometry"]).is_valid
    info = pyogrio.read_info(path)
    assert info["features"] == 1
    assert "4326" in info["crs"]


def test_list_properties_are_also_written_as_scalars(quarry_result):
    # GeoPackage and Shapefile have no list fields: an export keeps the scalars
    result, _ = quarry_result
    (feature,) = json.loads(result.files["clues"].read_text())["features"]
    props = feature["properties"]
    assert [props["before_start"], props["before_end"]] == props["before"]
    assert [props["after_start"], props["after_end"]] == props["after"]
    assert [props["centroid_lon"], props["centroid_lat"]] == props["centroid"]


def test_each_clue_carries_what_an_officer_navigates_by(quarry_result):
    result, _ = quarry_result
    (feature,) = json.loads(result.files["clues"].read_text())["features"]
    props = feature["properties"]
    assert props["area_ha"] == pytest.approx(props["area_m2"] / 1e4, abs=1e-4)
    assert props["area_mu"] == pytest.approx(props["area_m2"] * 15 / 1e4, abs=0.01)
    gcj = wgs84_to_gcj02(*props["centroid"])
    assert props["centroid_gcj02"] == pytest.approx(gcj, abs=1e-6)
    # GCJ-02 is a few hundred metres off WGS84 in China: the point Amap must be given
    assert 1e-3 < abs(props["centroid_gcj02"][0] - props["centroid"][0]) < 1e-2
    position = props["link_amap"].split("position=")[1].split("&")[0]
    assert [float(v) for v in position.split(",")] == pytest.approx(gcj, abs=2e-6)
    assert props["link_geo"] == f"geo:{props['centroid'][1]:.6f},{props['centroid'][0]:.6f}"


def test_geojson_geometry_is_valid_after_its_coordinates_are_rounded():
    # two parts 4e-8 degrees apart: valid, but rounded to 7 decimals they would share an edge
    geom = shapely.MultiPolygon(
        [box(108.0, 34.0, 108.001, 34.001), box(108.00100004, 34.0, 108.002, 34.001)]
    )
    assert geom.is_valid
    written = shape(rfc7946_geometry(geom))
    assert written.is_valid, shapely.is_valid_reason(written)
    assert written.area == pytest.approx(geom.area, rel=1e-4)
    for part in shapely.get_parts(written):
        assert part.exterior.is_ccw
        assert np.array_equal(np.round(part.exterior.coords, 7), part.exterior.coords)
    # outlines that rounding cannot break are written exactly as rounded, ring order kept
    squares = shapely.MultiPolygon(
        [box(108.0, 34.0, 108.001, 34.001), box(108.001, 34.001, 108.002, 34.002)]
    )
    assert rfc7946_geometry(squares) == shapely.geometry.mapping(
        shapely.transform(squares, lambda xy: np.round(xy, 7))
    )


def test_change_raster_is_a_cog_with_zero_and_nodata(quarry_result):
    result, quarry = quarry_result
    with rasterio.open(result.files["change"]) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.crs.to_epsg() == 32649
        score = src.read(1)
    assert np.isnan(score[:, :5]).all()  # no data on the after date
    assert np.isnan(score[152:188, 152:188]).all()  # masked cloud
    assert (score[quarry & np.isfinite(score)] > 0.5).mean() > 0.9
    outside = ~quarry & np.isfinite(score)
    assert (score[outside] == 0).mean() > 0.99


def test_chips_written(quarry_result):
    result, _ = quarry_result
    clue = result.clues[0]
    from PIL import Image

    assert clue.chip_change == f"chips/{clue.clue_id}_change.png"
    feature = json.loads(result.files["clues"].read_text())["features"][0]
    assert feature["properties"]["chip_change"] == clue.chip_change
    sizes = set()
    for rel in (clue.chip_before, clue.chip_after, clue.chip_change):
        width, height = Image.open(result.out_dir / rel).size
        # two panels side by side (true and false colour; the change and its legend), each at
        # least the chip size
        assert height >= 64 and width == 2 * height + PANEL_GAP
        sizes.add((width, height))
    assert len(sizes) == 1  # the three chips of a clue line up
    before = np.asarray(Image.open(result.out_dir / clue.chip_before).convert("RGB")).astype(float)
    after = np.asarray(Image.open(result.out_dir / clue.chip_after).convert("RGB")).astype(float)
    change = np.asarray(Image.open(result.out_dir / clue.chip_change).convert("RGB")).astype(int)
    # the chip centres on the patch: bright rock after, dark forest before (true colour)
    n = before.shape[0]
    centre = (slice(n * 2 // 5, n * 3 // 5), slice(n * 2 // 5, n * 3 // 5))
    assert after[centre].mean() > before[centre].mean() + 60
    # forest cleared to rock: vegetation lost, red-brown on the change chip
    red, green = change[centre][..., 0], change[centre][..., 1]
    assert (red > green + 40).mean() > 0.95


def test_no_change_gives_no_clue(tmp_path):
    grid = make_grid(128, 128)
    result = run_scene(
        tmp_path, forest_scene(grid.shape.yx, 5), forest_scene(grid.shape.yx, 6), grid
    )
    assert result.clues == []
    assert json.loads(result.files["clues"].read_text())["features"] == []


def test_all_cloud_scene_is_a_clear_error_and_writes_nothing(tmp_path):
    grid = make_grid(96, 96)
    before, after = forest_scene(grid.shape.yx, 5), forest_scene(grid.shape.yx, 6)
    before["SCL"] = np.full(grid.shape.yx, 4, np.uint8)
    after["SCL"] = np.full(grid.shape.yx, 9, np.uint8)
    with pytest.raises(NoClearViewError, match="every after-window acquisition .* under cloud"):
        run_scene(tmp_path, before, after, grid, name="cloudy")
    assert not (tmp_path / "cloudy").exists()
    assert not list(tmp_path.glob(".work-*"))
    # a before window under cloud is not a night to skip: the config needs another window
    before["SCL"], after["SCL"] = after["SCL"], before["SCL"]
    with pytest.raises(NoValidDataError, match="no pixel has valid data on both dates") as err:
        run_scene(tmp_path, before, after, grid, name="cloudy")
    assert not isinstance(err.value, NoClearViewError)


def test_rerun_is_idempotent(tmp_path, quarry_result):
    result, _ = quarry_result
    first = result.files["clues"].read_bytes()
    grid = result.grid
    before, after = forest_scene(grid.shape.yx, 1), forest_scene(grid.shape.yx, 2)
    yy, xx = np.mgrid[:200, :200]
    paint(after, ((yy - 70) ** 2 + (xx - 64) ** 2) < 20**2, ROCK)
    again = run_scene(tmp_path, before, after, grid, chunk=100)
    assert again.clues[0].clue_id == result.clues[0].clue_id
    assert again.clues[0].area_m2 == result.clues[0].area_m2  # same patch whatever the chunking
    assert len(json.loads(first)["features"]) == 1


def test_exports_beside_the_geojson_open_in_a_spreadsheet_google_earth_a_gps_and_gis(
    quarry_result, tmp_path
):
    result, _ = quarry_result
    (feature,) = json.loads(result.files["clues"].read_text())["features"]
    props = feature["properties"]
    # the spreadsheet: UTF-8 with a byte-order mark, flat columns
    raw = result.files["csv"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    (row,) = csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))
    assert row["clue_id"] == props["clue_id"] and float(row["area_mu"]) == props["area_mu"]
    assert [float(row["gcj02_lon"]), float(row["gcj02_lat"])] == props["centroid_gcj02"]
    # GIS: the same geometry as clues.geojson, valid, with the flat fields
    meta, _, geometry, fields = pyogrio.raw.read(result.files["gpkg"])
    values = dict(zip(meta["fields"], (f[0] for f in fields), strict=True))
    assert values["clue_id"] == props["clue_id"] and values["area_m2"] == props["area_m2"]
    polygon = shapely.from_wkb(geometry[0])
    assert polygon.is_valid and polygon.equals(shape(feature["geometry"]))
    # Google Earth / 奥维: a named placemark with the outline
    meta, _, geometry, fields = pyogrio.raw.read(result.files["kml"])
    assert fields[meta["fields"].tolist().index("Name")][0] == props["clue_id"]
    assert shapely.from_wkb(geometry[0]).equals(shape(feature["geometry"]))
    # a handheld GPS: a waypoint at the centroid, in WGS84
    meta, _, geometry, fields = pyogrio.raw.read(result.files["gpx"], layer="waypoints")
    point = shapely.from_wkb(geometry[0])
    assert [point.x, point.y] == pytest.approx(props["centroid"], abs=1e-9)
    assert fields[meta["fields"].tolist().index("name")][0] == props["clue_id"]
    # a night computed again writes the same bytes (no time stamp, no temporary name inside)
    from changedetect.io.sinks.exports import write_exports

    again = write_exports(result.clues, tmp_path)
    for name, path in again.items():
        assert path.read_bytes() == result.files[name].read_bytes(), name


def test_a_night_without_clues_writes_empty_exports(tmp_path):
    from changedetect.io.sinks.exports import write_exports

    files = write_exports([], tmp_path)
    assert list(csv.reader(io.StringIO(files["csv"].read_text("utf-8-sig"))))[0][0] == "clue_id"
    for name, layer in (("gpkg", None), ("kml", None), ("gpx", "waypoints")):
        assert len(pyogrio.raw.read(files[name], layer=layer)[2]) == 0, name


def test_the_changed_pixels_values_wait_in_the_scratch_and_go_with_it(tmp_path, monkeypatch):
    import changedetect.pipeline as pipeline

    held = []
    patch_statistics = pipeline.patch_statistics

    def spied(pixels, flat_index, values, derive=None):
        # the pass spilled them to the run's scratch folder: read from files, not held
        folder = values["score"].path.parent
        held.append((folder, sorted(p.name for p in folder.iterdir())))
        assert folder.parent.name.startswith(".work-") and folder.parent.parent == tmp_path
        return patch_statistics(pixels, flat_index, values, derive=derive)

    monkeypatch.setattr(pipeline, "patch_statistics", spied)
    grid = make_grid(120, 120)
    before, after = forest_scene(grid.shape.yx, 1), forest_scene(grid.shape.yx, 2)
    yy, xx = np.mgrid[:120, :120]
    paint(after, ((yy - 60) ** 2 + (xx - 60) ** 2) < 15**2, ROCK)
    result = run_scene(tmp_path, before, after, grid, name="spilled")
    assert len(result.clues) == 1
    ((folder, files),) = held
    assert len(files) == 15 and "score.raw" in files
    assert not folder.exists() and not list(tmp_path.glob(".work-*"))

    # a run that fails after the pass leaves nothing behind either
    def broken(*args, **kwargs):
        raise RuntimeError("broken after the pass")

    monkeypatch.setattr(pipeline, "build_patches", broken)
    with pytest.raises(RuntimeError, match="broken after the pass"):
        run_scene(tmp_path, before, after, grid, name="failed")
    assert len(held) == 2
    assert not held[1][0].exists() and not list(tmp_path.glob(".work-*"))


def test_geojson_written_feature_by_feature_is_the_collection_dumped_whole(tmp_path):
    from changedetect.io.sinks.geojson import clues_feature_collection, write_clues_geojson
    from changedetect.models import PatchClue

    ring = box(108.1, 34.1, 108.2, 34.2)
    shapes = [
        ring,
        ring.difference(box(108.14, 34.14, 108.16, 34.16)),  # a hole
        shapely.MultiPolygon([box(108.3, 34.3, 108.31, 34.31), box(108.32, 34.3, 108.33, 34.31)]),
    ]
    clues = [
        PatchClue(
            clue_id=f"t-20250623-{i:08x}",
            aoi="t",
            detected_at="2025-06-23",
            before=["2025-05-01", "2025-05-31"],
            after=["2025-06-01", "2025-06-23"],
            geometry_wgs84=geom,
            area_m2=1234.5 * (i + 1),
            centroid=(108.123456789, 34.987654321),
            change_type="quarry",
            confidence=0.91,
            confidence_level="high",
            d_ndvi=-0.41,
            d_bsi=0.22,
            d_ndbi=float("nan"),
            zone='秦岭 "core"\nzone' if i == 1 else None,  # non-ASCII, a quote, a newline
            county="长安区" if i else None,
        )
        for i, geom in enumerate(shapes)
    ]
    for n in (0, 1, 3):
        written = write_clues_geojson(clues[:n], tmp_path / f"c{n}.geojson").read_bytes()
        whole = json.dumps(clues_feature_collection(clues[:n]), ensure_ascii=False, indent=1)
        assert written == whole.encode("utf-8"), n
        assert len(json.loads(written)["features"]) == n


def test_the_change_cog_keeps_the_score_and_packs_its_zeros_tightly(tmp_path):
    # 2.5 % of the pixels in patches of noisy scores, zeros around them, a strip of no data
    rng = np.random.default_rng(1)
    in_patches = ndimage.binary_dilation(rng.random((1024, 1024)) < 0.0004, iterations=5)
    score = np.zeros(in_patches.shape, np.float32)
    score[in_patches] = rng.uniform(0.5, 1.0, int(in_patches.sum()))
    score[:, :40] = np.nan
    grid = make_grid(*score.shape)
    scratch = tmp_path / "score.tif"
    with rasterio.open(scratch, "w", **scratch_profile(grid, 1, "float32", np.nan)) as dst:
        dst.write(score, 1)
    cog = write_cog(scratch, tmp_path / "change.tif")
    with rasterio.open(cog) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        np.testing.assert_array_equal(src.read(1), score)
    # 141 kB; 193 kB with the floating-point predictor
    assert cog.stat().st_size < 165_000


def test_score_masked_to_patches_window_by_window_is_the_rule_over_the_whole_raster(tmp_path):
    rng = np.random.default_rng(5)
    shape = (70, 50)
    score = rng.choice(
        np.float32([0.0, -0.0, np.nan, 0.4, -0.3]), shape, p=[0.6, 0.1, 0.2, 0.05, 0.05]
    )
    score[16:32] = np.where(rng.random((16, 50)) < 0.5, np.float32(0.0), np.float32(np.nan))
    score[32:48] = -0.0  # nothing to change but the sign of zero
    labels = np.zeros(shape, np.int32)
    labels[2:9, 3:12] = 1
    labels[50:66, 30:45] = 2  # across windows
    labels[20:25, 0:5] = 3  # in the rows of only 0 and NaN
    pixels = PatchPixels.from_raster(labels, 3)
    patch_score = np.float32([0.0, 0.7, 0.2, 0.9])
    path = tmp_path / "score.tif"
    profile = scratch_profile(make_grid(*shape), 1, "float32", np.nan)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(score, 1)
    mask_score_to_patches(path, pixels, patch_score, block_rows=16)
    inside = labels > 0
    expected = np.where(inside | np.isnan(score), score, np.float32(0.0))
    weak = inside & ~(score > 0)
    expected[weak] = patch_score[labels[weak]]
    with rasterio.open(path) as src:
        got = src.read(1)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
