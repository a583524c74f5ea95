"""The synthetic scene: chunk-independent, deterministic, and its truth is really in the pixels."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from shapely.geometry import shape

from changedetect.config import SyntheticSourceConfig
from changedetect.errors import MissingBandError, SourceError
from changedetect.io.sources import ImagerySource
from changedetect.io.sources.synthetic import SyntheticSource
from changedetect.models import TimeWindow
from changedetect.testing.synthetic import (
    BANDS,
    LC_CROP,
    LC_FOREST,
    LC_WATER,
    MMU_M2,
    PlantedChange,
    SyntheticScene,
    acquisition_dates,
    truth_geojson,
    write_truth_geojson,
)

BEFORE = TimeWindow(dt.date(2024, 4, 1), dt.date(2024, 6, 30))
AFTER = TimeWindow(dt.date(2025, 4, 1), dt.date(2025, 6, 30))
ALL = [*BANDS, "SCL"]
CLOUDY = (8, 9, 10)


def make_grid(height: int = 1200, width: int = 1200) -> GeoBox:
    return GeoBox((height, width), Affine(10, 0, 500000, 0, -10, 4400000), "EPSG:32650")


@pytest.fixture(scope="module")
def grid() -> GeoBox:
    return make_grid()


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource(SyntheticSourceConfig(seed=42))


@pytest.fixture(scope="module")
def scene(source: SyntheticSource, grid: GeoBox) -> SyntheticScene:
    return source.scene(grid)


@pytest.fixture(scope="module")
def truth(source: SyntheticSource, grid: GeoBox) -> list[PlantedChange]:
    return source.truth(grid, BEFORE, AFTER)


def clear_days(scene: SyntheticScene, window: TimeWindow) -> list[dt.date]:
    days = [
        d
        for d in acquisition_dates(window, 10)
        if scene.cloud_fraction(d) == 0 and scene.nodata_fraction(d) == 0
    ]
    assert days, f"no clear acquisition in {window}"
    return days


def ndvi(x: dict[str, np.ndarray]) -> np.ndarray:
    return (x["B08"] - x["B04"]) / (x["B08"] + x["B04"])


def ndbi(x: dict[str, np.ndarray]) -> np.ndarray:
    return (x["B11"] - x["B08"]) / (x["B11"] + x["B08"])


def pixel_window(geom: shapely.Geometry, grid: GeoBox, pad: int = 2) -> tuple[int, int, int, int]:
    """Row/col range (exclusive ends) covering a CRS geometry."""
    inv = ~grid.transform
    minx, miny, maxx, maxy = geom.bounds
    c0, r0 = inv @ (minx, maxy)
    c1, r1 = inv @ (maxx, miny)
    return (
        max(int(math.floor(r0)) - pad, 0),
        min(int(math.ceil(r1)) + pad, grid.height),
        max(int(math.floor(c0)) - pad, 0),
        min(int(math.ceil(c1)) + pad, grid.width),
    )


def inside(geom: shapely.Geometry, grid: GeoBox, win: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels of the window whose centre lies in `geom`."""
    r0, r1, c0, c1 = win
    x, y = grid.coords["x"].values, grid.coords["y"].values
    return shapely.contains_xy(geom, x[None, c0:c1], y[r0:r1, None])


def mean_in(change: PlantedChange, grid: GeoBox, scene: SyntheticScene, day: dt.date, fn) -> float:
    """Mean of `fn` over the pixels well inside the change (mixed edge pixels left out)."""
    core = change.geometry.buffer(-5.0)
    geom = core if core.area > 200 else change.geometry
    win = pixel_window(change.geometry, grid)
    mask = inside(geom, grid, win)
    assert mask.any(), change.id
    out = scene.render(day, (win[0], win[1]), (win[2], win[3]), ALL)
    return float(np.nanmean(fn(out)[mask]))


# -- the dataset contract ---------------------------------------------------------------------


def test_source_meets_protocol_and_dataset_contract(source: SyntheticSource, grid: GeoBox) -> None:
    assert isinstance(source, ImagerySource)
    assert source.name == "synthetic"
    acquisitions = source.search(grid, BEFORE)
    days = [a.datetime.date() for a in acquisitions]
    assert days == sorted(days) and len(days) == 9
    assert all(BEFORE.contains(d) for d in days)
    assert all((d - dt.date(2020, 1, 1)).days % 10 == 0 for d in days)
    assert [a.id for a in acquisitions] == [f"SYN_{d:%Y%m%d}" for d in days]
    assert all(0 <= a.cloud_cover <= 100 and a.source == "synthetic" for a in acquisitions)

    ds = source.load(acquisitions[:2], ALL, grid, 512)
    assert dict(ds.sizes) == {"time": 2, "y": 1200, "x": 1200}
    for band in BANDS:
        assert ds[band].dtype == np.float32
        assert ds[band].dims == ("time", "y", "x")
        assert ds[band].data.chunks == ((1, 1), (512, 512, 176), (512, 512, 176))
    assert ds["SCL"].dtype == np.uint8
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert list(ds["acquisition"].values) == [a.id for a in acquisitions[:2]]
    np.testing.assert_array_equal(ds["x"].values, grid.coords["x"].values)
    np.testing.assert_array_equal(ds["y"].values, grid.coords["y"].values)
    assert ds.odc.geobox == grid
    block = ds.isel(time=0, y=slice(0, 300), x=slice(0, 300)).compute()
    for band in BANDS:
        values = block[band].values
        finite = values[np.isfinite(values)]
        assert finite.min() >= 0.0 and finite.max() <= 1.0
        # no data is NaN and SCL 0, together
        np.testing.assert_array_equal(np.isnan(values), block["SCL"].values == 0)


def test_load_rejects_unknown_bands_and_foreign_acquisitions(
    source: SyntheticSource, grid: GeoBox
) -> None:
    acquisitions = source.search(grid, BEFORE)[:1]
    with pytest.raises(MissingBandError, match="B05"):
        source.load(acquisitions, ["B04", "B05"], grid, 256)
    foreign = [type(acquisitions[0])("X", acquisitions[0].datetime, "local")]
    with pytest.raises(SourceError, match="synthetic"):
        source.load(foreign, ["B04"], grid, 256)
    empty = source.load([], ["B04", "SCL"], grid, 256)
    assert empty.sizes["time"] == 0


def test_acquisition_dates_count_from_the_epoch() -> None:
    window = TimeWindow(dt.date(2019, 12, 20), dt.date(2020, 1, 25))
    assert acquisition_dates(window, 10) == [
        dt.date(2019, 12, 22),
        dt.date(2020, 1, 1),
        dt.date(2020, 1, 11),
        dt.date(2020, 1, 21),
    ]


# -- chunking and seeds -----------------------------------------------------------------------


def test_values_do_not_depend_on_chunk_size(source: SyntheticSource, grid: GeoBox) -> None:
    acquisitions = source.search(grid, BEFORE)
    cloudy = max(acquisitions, key=lambda a: a.cloud_cover or 0)  # clouds, shadows and all
    assert (cloudy.cloud_cover or 0) > 10
    window = {"y": slice(200, 700), "x": slice(150, 650)}
    small = source.load([cloudy], ALL, grid, 256).isel(window).compute()
    large = source.load([cloudy], ALL, grid, 512).isel(window).compute()
    for name in ALL:
        np.testing.assert_array_equal(small[name].values, large[name].values, err_msg=name)


def test_same_seed_same_scene_other_seed_other_scene(grid: GeoBox) -> None:
    day = dt.date(2024, 5, 9)
    a = SyntheticScene(600, 600, seed=7).render(day, (0, 300), (0, 300), ALL)
    b = SyntheticScene(600, 600, seed=7).render(day, (0, 300), (0, 300), ALL)
    c = SyntheticScene(600, 600, seed=8).render(day, (0, 300), (0, 300), ALL)
    for name in ALL:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(np.nan_to_num(a["B08"]), np.nan_to_num(c["B08"]))
    small = make_grid(600, 600)
    ta = SyntheticScene(600, 600, seed=7).planted(small)
    tb = SyntheticScene(600, 600, seed=7).planted(small)
    tc = SyntheticScene(600, 600, seed=8).planted(small)
    assert [(t.id, t.start, t.geometry.wkt) for t in ta] == [
        (t.id, t.start, t.geometry.wkt) for t in tb
    ]
    assert [t.geometry.wkt for t in ta] != [t.geometry.wkt for t in tc]


def test_tiny_grid_still_renders() -> None:
    source = SyntheticSource(SyntheticSourceConfig(seed=3))
    small = make_grid(40, 70)
    ds = source.load(source.search(small, BEFORE)[:2], ALL, small, 64).compute()
    assert dict(ds.sizes) == {"time": 2, "y": 40, "x": 70}
    assert isinstance(source.truth(small, BEFORE, AFTER), list)  # may hold nothing this small


# -- the truth --------------------------------------------------------------------------------


def test_truth_holds_a_few_dozen_changes_of_every_type(truth: list[PlantedChange]) -> None:
    assert 25 <= len(truth) <= 60
    types = {t.change_type for t in truth}
    assert types == {"quarry", "construction", "vegetation_loss"}
    assert all(BEFORE.end < t.start < AFTER.start for t in truth)
    assert len({t.id for t in truth}) == len(truth)
    small = [t for t in truth if t.below_mmu]
    assert 1 <= len(small) <= 8
    assert all(t.area_m2 < MMU_M2 for t in small)
    assert all(t.area_m2 >= MMU_M2 for t in truth if not t.below_mmu)
    big = [t.area_m2 for t in truth if not t.below_mmu]
    assert min(big) < 2000 and max(big) > 50000
    for t in truth:
        assert t.geometry.is_valid and t.geometry.geom_type == "Polygon"
        assert math.isclose(t.geometry.area, t.area_m2, rel_tol=1e-6)


def test_grown_quarries_hold_only_the_new_ground(truth: list[PlantedChange]) -> None:
    grown = [t for t in truth if t.grew_from is not None]
    assert grown
    for t in grown:
        assert t.change_type == "quarry"
        assert t.geometry.intersection(t.grew_from).area < 1.0
        assert t.geometry.distance(t.grew_from) < 1.0  # it adjoins the old pit


def test_truth_depends_on_the_windows(source: SyntheticSource, grid: GeoBox) -> None:
    everything = source.planted(grid)
    late = source.truth(grid, TimeWindow(dt.date(2024, 4, 1), dt.date(2024, 11, 1)), AFTER)
    assert 0 < len(late) < len(source.truth(grid, BEFORE, AFTER))
    assert all(t.start > dt.date(2024, 11, 1) for t in late)
    old = [t for t in everything if t.start < BEFORE.start]
    assert old, "the scene needs a history of older disturbances"


def test_source_for_other_windows_plants_changes_between_them() -> None:
    before = TimeWindow(dt.date(2022, 5, 1), dt.date(2022, 6, 15))
    after = TimeWindow(dt.date(2022, 9, 1), dt.date(2022, 10, 15))
    source = SyntheticSource.for_windows(before, after, SyntheticSourceConfig(seed=5))
    small = make_grid(400, 400)
    truth = source.truth(small, before, after)
    assert truth
    assert all(before.end < t.start < after.start for t in truth)
    assert source.truth(small, BEFORE, AFTER) == []
    with pytest.raises(ValueError, match="two days"):
        SyntheticSource.for_windows(before, TimeWindow(dt.date(2022, 6, 16), dt.date(2022, 7, 1)))


def test_truth_geojson_is_wgs84_one_feature_per_change(
    truth: list[PlantedChange], grid: GeoBox, tmp_path
) -> None:
    fc = truth_geojson(truth, grid)
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == len(truth)
    json.dumps(fc)  # serialisable as is
    for feature, change in zip(fc["features"], truth, strict=True):
        props = feature["properties"]
        assert props["id"] == change.id
        assert props["change_type"] == change.change_type
        assert props["start"] == change.start.isoformat()
        assert props["below_mmu"] == change.below_mmu
        assert props["area_m2"] == pytest.approx(change.area_m2, abs=0.1)
        geom = shape(feature["geometry"])
        lon, lat = geom.centroid.x, geom.centroid.y
        # UTM 50N, easting 500-512 km, northing 4388-4400 km: about 117 E, 39.7 N
        assert 116.9 < lon < 117.2 and 39.6 < lat < 39.8
        assert geom.exterior.is_ccw  # RFC 7946 right-hand rule
        if change.grew_from is not None:
            assert shape(props["grew_from"]).is_valid
    path = write_truth_geojson(tmp_path / "truth" / "truth.geojson", truth, grid)
    assert json.loads(path.read_text())["features"][0]["id"] == truth[0].id


# -- the truth is really in the pixels --------------------------------------------------------


def test_quarries_turn_green_ground_into_bright_bare_rock(
    scene: SyntheticScene, grid: GeoBox, truth: list[PlantedChange]
) -> None:
    before, after = clear_days(scene, BEFORE)[-1], clear_days(scene, AFTER)[-1]
    quarries = [t for t in truth if t.change_type == "quarry" and not t.below_mmu]
    assert quarries
    for q in quarries:
        nd_b = mean_in(q, grid, scene, before, ndvi)
        nd_a = mean_in(q, grid, scene, after, ndvi)
        bright = mean_in(q, grid, scene, after, lambda x: (x["B02"] + x["B03"] + x["B04"]) / 3)
        red_over_blue = mean_in(q, grid, scene, after, lambda x: x["B04"] - x["B02"])
        assert nd_b > 0.55 and nd_a < 0.25 and nd_b - nd_a > 0.4, q.id
        assert bright > 0.15 and red_over_blue > 0.02, q.id


def test_construction_looks_built_up(
    scene: SyntheticScene, grid: GeoBox, truth: list[PlantedChange]
) -> None:
    before, after = clear_days(scene, BEFORE)[-1], clear_days(scene, AFTER)[-1]
    sites = [t for t in truth if t.change_type == "construction" and not t.below_mmu]
    assert sites
    drops = []
    for site in sites:
        nd_b = mean_in(site, grid, scene, before, ndvi)
        nd_a = mean_in(site, grid, scene, after, ndvi)
        nb_b = mean_in(site, grid, scene, before, ndbi)
        nb_a = mean_in(site, grid, scene, after, ndbi)
        assert nd_a < 0.2 and nb_a > 0.0, site.id
        assert nb_a > nb_b or nd_b < 0.3, site.id  # NDBI up, unless it was bare field already
        drops.append(nd_b - nd_a)
    assert np.median(drops) > 0.4


def test_vegetation_loss_drops_ndvi(
    scene: SyntheticScene, grid: GeoBox, truth: list[PlantedChange]
) -> None:
    before, after = clear_days(scene, BEFORE)[-1], clear_days(scene, AFTER)[-1]
    losses = [t for t in truth if t.change_type == "vegetation_loss" and not t.below_mmu]
    assert losses
    for loss in losses:
        nd_b = mean_in(loss, grid, scene, before, ndvi)
        nd_a = mean_in(loss, grid, scene, after, ndvi)
        assert nd_b > 0.6 and nd_b - nd_a > 0.25, loss.id


def test_clouds_are_flagged_and_shadows_darken(
    source: SyntheticSource, scene: SyntheticScene
) -> None:
    days = acquisition_dates(BEFORE, 10) + acquisition_dates(AFTER, 10)
    cloudy = min(days, key=lambda d: abs(scene.cloud_fraction(d) - 0.3))  # shadows off the clouds
    clear = clear_days(scene, BEFORE)[0]
    rows, cols = (0, 1200), (0, 1200)
    out = scene.render(cloudy, rows, cols, ALL)
    ref = scene.render(clear, rows, cols, ALL)
    scl = out["SCL"]
    flagged = np.isin(scl, CLOUDY)
    assert flagged.mean() > 0.05
    thick = scl == 9
    assert thick.any() and np.nanmean(out["B02"][thick]) > 0.35
    # a cloud's spectrum is flat: blue about as bright as NIR
    assert abs(np.nanmean(out["B02"][thick]) - np.nanmean(out["B08"][thick])) < 0.1
    very_bright = out["B02"] > 0.35
    assert np.isin(scl[very_bright], CLOUDY).mean() > 0.95
    shadow = scl == 3
    assert shadow.any()
    assert np.nanmean(out["B08"][shadow]) < 0.7 * np.nanmean(ref["B08"][shadow])


def test_water_has_scl_6_and_no_nir(scene: SyntheticScene) -> None:
    day = clear_days(scene, BEFORE)[0]
    out = scene.render(day, (0, 1200), (0, 1200), ["B08", "SCL"])
    water = out["SCL"] == 6
    assert water.mean() > 0.005
    assert np.nanmean(out["B08"][water]) < 0.05
    lc = scene.landcover(day, (0, 1200), (0, 1200))
    assert (water == (lc == LC_WATER)).mean() > 0.999


def test_reservoir_level_differs_between_years(scene: SyntheticScene) -> None:
    b, a = clear_days(scene, BEFORE)[0], clear_days(scene, AFTER)[0]
    wet_b = (scene.landcover(b, (0, 1200), (0, 1200)) == LC_WATER).sum()
    wet_a = (scene.landcover(a, (0, 1200), (0, 1200)) == LC_WATER).sum()
    assert abs(int(wet_b) - int(wet_a)) > 3000  # hectares of exposed shore in one year


def test_cropland_varies_within_a_window_and_between_years(scene: SyntheticScene) -> None:
    rows, cols = (0, 1200), (0, 1200)
    days = acquisition_dates(BEFORE, 10)
    lc = scene.landcover(days[0], rows, cols)
    crop, forest = lc == LC_CROP, lc == LC_FOREST
    assert crop.mean() > 0.1 and forest.mean() > 0.3

    def surface_ndvi(day: dt.date) -> np.ndarray:
        s = scene.surface(day, rows, cols)
        return (s[3] - s[2]) / (s[3] + s[2])

    first, last = surface_ndvi(days[0]), surface_ndvi(days[-1])
    assert np.mean(np.abs(last - first)[crop]) > 0.15
    # different fields differ: harvest and sowing dates vary per field
    assert np.std(last[crop]) > 0.1
    next_year = surface_ndvi(days[-1].replace(year=2025))
    changed = np.abs(next_year - last)[crop] > 0.3
    assert 0.02 < changed.mean() < 0.6
