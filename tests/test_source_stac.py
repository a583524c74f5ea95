"""STAC source: search through a fake STAC API, load real imagery (OSCD Bercy) through odc-stac into
the download cache, one reflectance across Sentinel-2 processing baselines, signing, retries and
clear errors. No network."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from changedetect.algorithms.composite import composite
from changedetect.config import SensorConfig, StacSourceConfig
from changedetect.errors import ConfigError, MissingBandError, RemoteServiceError, SourceError
from changedetect.io.sources.base import ImagerySource
from changedetect.io.sources.stac import (
    Radiometry,
    StacSource,
    asset_radiometry,
    grid_id,
    harmonise,
    solar_day,
    wgs84_bounds,
)
from changedetect.models import Acquisition, TimeWindow
from tests.factories import DATA

from .stac_fake import (
    EARTH_SEARCH_KEYS,
    PC_KEYS,
    REFLECTANCE_BANDS,
    FakeStacApi,
    city_grid,
    cut_assets,
    make_item,
    read_band,
    with_boa_offset,
    write_city_assets,
    write_cog,
)

CITY = DATA / "oscd" / "bercy"
COLLECTION = "sentinel-2-l2a"
BANDS = [*REFLECTANCE_BANDS, "SCL"]
L2A = SensorConfig()  # scale 1e-4, offset 0, nodata 0

DAY1 = dt.datetime(2016, 11, 30, 10, 57, 12)
DAY2 = dt.datetime(2017, 8, 29, 10, 50, 31)
CLOUDY = dt.datetime(2017, 3, 15, 10, 55, 0)

WINDOW_ALL = TimeWindow(dt.date(2016, 1, 1), dt.date(2017, 12, 31))
WINDOW_1 = TimeWindow(dt.date(2016, 11, 1), dt.date(2016, 12, 31))
WINDOW_2 = TimeWindow(dt.date(2017, 1, 1), dt.date(2017, 12, 31))

ID_WEST = "S2A_31UDQ_20161130_0_L2A"
ID_EAST = "S2A_31UEQ_20161130_0_L2A"
ID_DAY2 = "S2B_31UDQ_20170829_0_L2A"
ID_CLOUDY = "S2A_31UDQ_20170315_0_L2A"


@dataclass
class Scene:
    """The fake catalog's assets: the grid they share and band -> file for each date."""

    grid: GeoBox
    day1: dict[str, Path]
    day2: dict[str, Path]
    root: Path

    def expected(self, files: dict[str, Path], band: str) -> np.ndarray:
        """What the source must return for `band`: scaled DN, NaN where DN is 0 (SCL as is)."""
        dn = read_band(files[band])
        if band == "SCL":
            return dn
        return np.where(dn == 0, np.nan, dn * np.float32(1e-4)).astype(np.float32)


def _items(scene: Scene, collection: str, **kw: Any) -> list[dict[str, Any]]:
    """Day 1 as two overlapping tiles (west and east halves), day 2 whole, one cloudy day."""
    west, west_grid = cut_assets(scene.day1, scene.grid, (0, 0, 300, 170), scene.root / "west")
    east, east_grid = cut_assets(scene.day1, scene.grid, (0, 130, 300, 170), scene.root / "east")
    return [
        make_item(ID_WEST, DAY1, collection, west, west_grid, cloud_cover=10.0, **kw),
        make_item(ID_EAST, DAY1 + dt.timedelta(seconds=3), collection, east, east_grid,
                  cloud_cover=20.0, **kw),
        make_item(ID_DAY2, DAY2, collection, scene.day2, scene.grid, cloud_cover=5.0, **kw),
        make_item(ID_CLOUDY, CLOUDY, collection, scene.day2, scene.grid, cloud_cover=95.0, **kw),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    if not CITY.exists():
        pytest.skip(f"OSCD imagery not found at {CITY}")
    root = tmp_path_factory.mktemp("stac-assets")
    grid = city_grid(CITY, size=300)
    day1 = write_city_assets(CITY, "imgs_1", grid, root / "day1")
    day2 = write_city_assets(CITY, "imgs_2", grid, root / "day2")
    return Scene(grid, day1, day2, root)


@pytest.fixture(scope="module")
def server(scene: Scene) -> Iterator[FakeStacApi]:
    with FakeStacApi(page_size=2) as api:
        api.add_collection(COLLECTION, _items(scene, COLLECTION))
        # Planetary Computer style: asset keys B02..SCL and no raster:bands metadata.
        api.add_collection(
            "sentinel-2-l2a-pc",
            _items(scene, "sentinel-2-l2a-pc", keys=PC_KEYS, raster_bands=False),
        )
        # A private catalog whose hrefs only work once signed (see rewrite_hrefs below).
        api.add_collection("private", _items(scene, "private", href=lambda p: f"{UNSIGNED}{p}"))
        yield api


@pytest.fixture
def api(server: FakeStacApi) -> FakeStacApi:
    server.reset()
    return server


def make_source(
    api: FakeStacApi, cache: Path, *, sensor: SensorConfig = L2A, **kw: Any
) -> StacSource:
    options: dict[str, Any] = {
        "url": api.url,
        "collection": COLLECTION,
        "cache_dir": cache,
        "max_retries": 2,
        "timeout_s": 10.0,
        "requests_per_second": 1000.0,
    }
    options.update(kw)
    tile_px = options.pop("tile_px", 2048)
    return StacSource(StacSourceConfig(**options), sensor, tile_px=tile_px, retry_backoff_s=0.01)


def cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


# --- signers used through `source.signer` ------------------------------------------------------

UNSIGNED = "/unsigned-by-test"
#: (item id, whether the signer got it unsigned) for every call of the signers below.
SIGNED_ITEMS: list[tuple[str, bool]] = []


def _record(item: pystac.Item) -> None:
    unsigned = all(a.href.startswith(UNSIGNED) for a in item.assets.values())
    SIGNED_ITEMS.append((item.id, unsigned))


def rewrite_hrefs(item: pystac.Item) -> pystac.Item:
    """Like planetary_computer.sign: returns a signed copy (here: hrefs made readable)."""
    _record(item)
    signed = item.clone()
    for asset in signed.assets.values():
        asset.href = asset.href.removeprefix(UNSIGNED)
    return signed


def rewrite_hrefs_inplace(item: pystac.Item) -> None:
    """Like planetary_computer.sign_inplace: signs the item given and returns None."""
    _record(item)
    for asset in item.assets.values():
        asset.href = asset.href.removeprefix(UNSIGNED)


def not_an_item(item: pystac.Item) -> str:
    return item.id


# --- search ---------------------------------------------------------------------------------


def test_search_groups_days_filters_cloud_and_pages(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    source = make_source(api, tmp_path)
    assert isinstance(source, ImagerySource)
    assert source.name == "stac"

    found = source.search(scene.grid, WINDOW_ALL)

    # Two same-day tiles are one acquisition; the 95 % cloudy day is left out; oldest first.
    assert [a.id for a in found] == [f"{ID_WEST}+{ID_EAST}", ID_DAY2]
    assert [a.datetime for a in found] == [DAY1, DAY2]
    assert [a.cloud_cover for a in found] == [15.0, 5.0]
    assert all(a.source == "stac" for a in found)

    searches = [r for r in api.requests if r.path == "/search"]
    assert len(searches) == 2  # 3 matches at 2 a page: the next link was followed
    first = searches[0].body
    assert first is not None and searches[0].method == "POST"
    assert first["collections"] == [COLLECTION]
    assert first["query"] == {"eo:cloud_cover": {"lte": 60.0}}
    assert first["datetime"] == "2016-01-01T00:00:00Z/2017-12-31T23:59:59Z"
    # The bbox is the grid's extent in WGS84: it holds the grid corners, with no margin.
    left, bottom, right, top = scene.grid.boundingbox
    lons, lats = Transformer.from_crs(scene.grid.crs.proj, 4326, always_xy=True).transform(
        [left, right, left, right], [bottom, bottom, top, top]
    )
    west, south, east, north = first["bbox"]
    assert west == pytest.approx(min(lons), abs=1e-4) and west <= min(lons)
    assert east == pytest.approx(max(lons), abs=1e-4) and east >= max(lons)
    assert south == pytest.approx(min(lats), abs=1e-4) and south <= min(lats)
    assert north == pytest.approx(max(lats), abs=1e-4) and north >= max(lats)
    assert searches[1].body is not None and searches[1].body["token"] == "offset:2"


def test_search_by_window_and_cloud_limit(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    assert [a.id for a in make_source(api, tmp_path).search(scene.grid, WINDOW_1)] == [
        f"{ID_WEST}+{ID_EAST}"
    ]
    assert [a.id for a in make_source(api, tmp_path).search(scene.grid, WINDOW_2)] == [ID_DAY2]
    lax = make_source(api, tmp_path, max_cloud_cover=100.0).search(scene.grid, WINDOW_2)
    assert [a.id for a in lax] == [ID_CLOUDY, ID_DAY2]
    strict = make_source(api, tmp_path, max_cloud_cover=7.0).search(scene.grid, WINDOW_ALL)
    assert [a.id for a in strict] == [ID_DAY2]  # day 1 tiles have 10 % and 20 %


def test_get_only_api_is_searched_and_paged_by_get(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    api.search_methods = ["GET"]
    found = make_source(api, tmp_path).search(scene.grid, WINDOW_ALL)
    assert [a.id for a in found] == [f"{ID_WEST}+{ID_EAST}", ID_DAY2]
    searches = [r for r in api.requests if r.path == "/search"]
    assert [r.method for r in searches] == ["GET", "GET"]
    assert searches[0].args["collections"] == COLLECTION
    assert searches[1].args["token"] == "offset:2"


@pytest.mark.parametrize("dialect", ["filter", "none"])
def test_cloud_limit_in_each_api_dialect(
    scene: Scene, api: FakeStacApi, tmp_path: Path, dialect: str
) -> None:
    api.conformance = [c for c in api.conformance if not c.endswith("#query")]
    if dialect == "none":
        api.conformance = [c for c in api.conformance if not c.endswith("#filter")]
    found = make_source(api, tmp_path).search(scene.grid, WINDOW_2)
    assert [a.id for a in found] == [ID_DAY2]  # the cloudy item is dropped either way
    body = next(r.body for r in api.requests if r.path == "/search")
    assert body is not None and "query" not in body
    if dialect == "filter":
        assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 60.0]}
    else:
        assert "filter" not in body  # the server sent it, the source filtered it out


def test_unknown_collection_is_named(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    source = make_source(api, tmp_path, collection="sentinel-2-l2x")
    with pytest.raises(SourceError, match=r"no collection 'sentinel-2-l2x'.*sentinel-2-l2a"):
        source.search(scene.grid, WINDOW_ALL)


def test_static_catalog_is_refused(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    api.conformance = [c for c in api.conformance if "item-search" not in c]
    with pytest.raises(SourceError, match=r"does not offer STAC item search"):
        make_source(api, tmp_path).search(scene.grid, WINDOW_ALL)
    assert api.count() == 1  # the landing page only


def test_item_search_only_api_is_searched_and_loaded(
    scene: Scene, api: FakeStacApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The STAC API spec lets an API implement item search alone (conformance core +
    item-search, no /collections): what the search answers is all the source needs."""
    api.item_search_only()
    source = make_source(api, tmp_path)
    found = source.search(scene.grid, WINDOW_ALL)
    # the cloudy day is still left out: without query or filter the limit is checked here
    assert [a.id for a in found] == [f"{ID_WEST}+{ID_EAST}", ID_DAY2]
    ds = source.load(found, ["B04", "SCL"], scene.grid, chunk_size=128)
    for band in ("B04", "SCL"):
        np.testing.assert_array_equal(ds[band].values[0], scene.expected(scene.day1, band))
        np.testing.assert_array_equal(ds[band].values[1], scene.expected(scene.day2, band))
    assert not [r.path for r in api.requests if r.path.startswith("/collections")]

    # An empty answer cannot be told from a misspelt collection there: said, not refused.
    with caplog.at_level("WARNING", logger="changedetect.io.sources.stac"):
        assert (
            make_source(api, tmp_path, collection="sentinel-2-l2x").search(scene.grid, WINDOW_ALL)
            == []
        )
    assert "cannot check that collection 'sentinel-2-l2x' exists" in caplog.text
    assert not [r.path for r in api.requests if r.path.startswith("/collections")]


def test_requests_per_second_spaces_api_calls(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    source = make_source(api, tmp_path, requests_per_second=20.0)
    start = time.monotonic()
    source.search(scene.grid, WINDOW_ALL)
    elapsed = time.monotonic() - start
    assert api.count() == 3  # landing page, two search pages (items found: no collection lookup)
    assert elapsed >= 2 / 20.0 - 0.01


# --- load -----------------------------------------------------------------------------------


def test_load_equals_source_pixels_on_asset_grid(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    source = make_source(api, tmp_path)
    found = source.search(scene.grid, WINDOW_ALL)
    ds = source.load(found, BANDS, scene.grid, chunk_size=128)

    assert ds["B02"].dims == ("time", "y", "x")
    assert isinstance(ds["B02"].data, da.Array)
    assert ds["B02"].data.chunks[1:] == ((128, 128, 44), (128, 128, 44))
    assert ds.odc.geobox == scene.grid
    assert list(ds["acquisition"].values) == [a.id for a in found]
    assert ds["SCL"].dtype == np.uint8
    for band in REFLECTANCE_BANDS:
        assert ds[band].dtype == np.float32
        # Day 1 is fused from two tiles; no resampling anywhere: exact equality.
        np.testing.assert_array_equal(ds[band].values[0], scene.expected(scene.day1, band))
        np.testing.assert_array_equal(ds[band].values[1], scene.expected(scene.day2, band))
    np.testing.assert_array_equal(ds["SCL"].values[0], scene.expected(scene.day1, "SCL"))
    np.testing.assert_array_equal(ds["SCL"].values[1], scene.expected(scene.day2, "SCL"))
    assert 0.0 < float(ds["B04"].mean()) < 0.5  # scaled reflectance, not DN

    # The cache holds the stored numbers, one COG per acquisition, named by its key.
    files = cache_files(tmp_path)
    assert [p.name for p in files] == [
        "20161130_B02-B03-B04-B08-B11-B12-SCL.tif",
        "20170829_B02-B03-B04-B08-B11-B12-SCL.tif",
    ]
    assert files[0].parent.name == grid_id(scene.grid)
    with rasterio.open(files[0]) as cog:
        assert cog.dtypes[0] == "uint16" and cog.nodata == 0
        assert list(cog.descriptions) == BANDS
        np.testing.assert_array_equal(cog.read(3), read_band(scene.day1["B04"]))


def test_load_sub_window_of_assets(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    sub = scene.grid[40:190, 60:230]
    source = make_source(api, tmp_path)
    found = source.search(sub, WINDOW_1)
    ds = source.load(found, ["B04", "B08", "SCL"], sub, chunk_size=64)
    assert ds.sizes == {"time": 1, "y": 150, "x": 170}
    for band in ("B04", "B08", "SCL"):
        np.testing.assert_array_equal(
            ds[band].values[0], scene.expected(scene.day1, band)[40:190, 60:230]
        )


def test_large_grid_is_fetched_in_pieces(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    source = make_source(api, tmp_path, tile_px=128)
    found = source.search(scene.grid, WINDOW_1)
    ds = source.load(found, ["B02", "B11", "SCL"], scene.grid, chunk_size=100)
    for band in ("B02", "B11", "SCL"):
        np.testing.assert_array_equal(ds[band].values[0], scene.expected(scene.day1, band))
    files = cache_files(tmp_path)
    assert sum(p.suffix == ".tif" for p in files) == 9  # 3 x 3 pieces of at most 128 px
    assert [p.name for p in files if p.suffix == ".vrt"] == ["20161130_B02-B11-SCL.vrt"]


def test_other_asset_keys_through_config(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    # Planetary Computer names; its items carry no raster:bands, so types come from the defaults.
    source = make_source(api, tmp_path, collection="sentinel-2-l2a-pc", assets=dict(PC_KEYS))
    found = source.search(scene.grid, WINDOW_2)
    ds = source.load(found, BANDS, scene.grid, chunk_size=150)
    assert ds["SCL"].dtype == np.uint8
    for band in BANDS:
        np.testing.assert_array_equal(ds[band].values[0], scene.expected(scene.day2, band))


def test_unmapped_band_is_a_config_error(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    assets = {"B02": "blue", "B04": "red", "SCL": "scl"}
    source = make_source(api, tmp_path, assets=assets)
    found = source.search(scene.grid, WINDOW_2)
    with pytest.raises(ConfigError, match=r"no asset key for band\(s\) B08"):
        source.load(found, ["B02", "B04", "B08"], scene.grid, chunk_size=128)
    # SCL is optional: without a mapping it is left out, as for local files without one.
    source = make_source(api, tmp_path, assets={"B04": "red"})
    ds = source.load(source.search(scene.grid, WINDOW_2), ["B04", "SCL"], scene.grid, 128)
    assert list(ds.data_vars) == ["B04"]


def test_missing_asset_names_item_and_key(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    item = make_item("S2A_NO_SWIR22", DAY2, "incomplete", scene.day2, scene.grid)
    del item["assets"]["swir22"]
    api.add_collection("incomplete", [item])
    source = make_source(api, tmp_path, collection="incomplete")
    found = source.search(scene.grid, WINDOW_2)
    with pytest.raises(MissingBandError, match=r"S2A_NO_SWIR22.*no asset 'swir22' for band B12"):
        source.load(found, BANDS, scene.grid, chunk_size=128)
    assert cache_files(tmp_path) == []


# --- signing --------------------------------------------------------------------------------


@pytest.mark.parametrize("signer", ["rewrite_hrefs", "rewrite_hrefs_inplace"])
def test_signer_is_applied_to_each_item(
    scene: Scene, api: FakeStacApi, tmp_path: Path, signer: str
) -> None:
    SIGNED_ITEMS.clear()
    source = make_source(
        api, tmp_path, collection="private", signer=f"tests.test_source_stac:{signer}"
    )
    found = source.search(scene.grid, WINDOW_ALL)
    assert SIGNED_ITEMS == []  # signed when read, not when found (signatures expire)
    ds = source.load(found, ["B03", "SCL"], scene.grid, chunk_size=128)
    assert sorted(SIGNED_ITEMS) == sorted([(ID_WEST, True), (ID_EAST, True), (ID_DAY2, True)])
    np.testing.assert_array_equal(ds["B03"].values[0], scene.expected(scene.day1, "B03"))
    np.testing.assert_array_equal(ds["B03"].values[1], scene.expected(scene.day2, "B03"))
    np.testing.assert_array_equal(ds["SCL"].values[1], scene.expected(scene.day2, "SCL"))
    # The remembered items stay unsigned (signatures expire): a later fetch signs them afresh.
    SIGNED_ITEMS.clear()
    source.load(found[1:], ["B02"], scene.grid, chunk_size=128)
    assert SIGNED_ITEMS == [(ID_DAY2, True)]


def test_unsigned_private_assets_fail_clearly(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    source = make_source(api, tmp_path, collection="private")
    found = source.search(scene.grid, WINDOW_2)
    with pytest.raises(RemoteServiceError, match=rf"asset 'red' of STAC item {ID_DAY2}"):
        source.load(found, ["B04"], scene.grid, chunk_size=128)
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize(
    ("signer", "message"),
    [
        ("no_such_module_for_stac:sign", "cannot import module 'no_such_module_for_stac'"),
        ("changedetect.errors:no_such_function", "has no function 'no_such_function'"),
        ("changedetect.errors:__doc__", "has no function '__doc__'"),
    ],
)
def test_bad_signer_is_a_config_error(tmp_path: Path, signer: str, message: str) -> None:
    config = StacSourceConfig(url="http://127.0.0.1:9/", cache_dir=tmp_path, signer=signer)
    with pytest.raises(ConfigError, match=message):
        StacSource(config, L2A)


def test_signer_must_return_an_item(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    source = make_source(api, tmp_path, signer="tests.test_source_stac:not_an_item")
    found = source.search(scene.grid, WINDOW_2)
    with pytest.raises(ConfigError, match=r"returned str for STAC item"):
        source.load(found, ["B04"], scene.grid, chunk_size=128)


# --- cache ----------------------------------------------------------------------------------


def test_second_load_reads_only_the_cache(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    copies = tmp_path / "assets"
    shutil.copytree(scene.root / "day2", copies / "day2")
    files = {b: copies / "day2" / f"{b}.tif" for b in BANDS}
    api.add_collection("copied", [make_item("S2B_COPY", DAY2, "copied", files, scene.grid)])
    cache = tmp_path / "cache"
    source = make_source(api, cache, collection="copied")
    found = source.search(scene.grid, WINDOW_2)
    first = source.load(found, BANDS, scene.grid, chunk_size=128).compute()

    shutil.rmtree(copies)  # nothing remote is left to read
    api.reset()
    again = source.load(found, BANDS, scene.grid, chunk_size=128).compute()
    # A new source (the next night's run) given the same acquisitions needs no search either.
    fresh = make_source(api, cache, collection="copied").load(
        found, BANDS, scene.grid, chunk_size=64
    )
    assert api.count() == 0
    for band in BANDS:
        np.testing.assert_array_equal(again[band].values, first[band].values)
        np.testing.assert_array_equal(fresh[band].values, first[band].values)
    np.testing.assert_array_equal(first["B08"].values[0], scene.expected(scene.day2, "B08"))


def test_uncached_acquisition_from_elsewhere_is_refused(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    stranger = Acquisition(id="S2X_UNKNOWN", datetime=DAY2, source="stac")
    with pytest.raises(SourceError, match=r"S2X_UNKNOWN is neither in the download cache"):
        make_source(api, tmp_path).load([stranger], ["B04"], scene.grid, chunk_size=128)
    assert api.count() == 0


def test_failed_read_leaves_nothing_in_cache(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    files = dict(scene.day2)
    red = scene.day2["B04"].read_bytes()
    (broken / "B04.tif").write_bytes(red[: len(red) // 2])  # a truncated download
    files["B04"] = broken / "B04.tif"
    api.add_collection("broken", [make_item("S2B_BROKEN", DAY2, "broken", files, scene.grid)])
    cache = tmp_path / "cache"
    source = make_source(api, cache, collection="broken")
    found = source.search(scene.grid, WINDOW_2)
    with pytest.raises(RemoteServiceError, match=r"asset 'red' of STAC item S2B_BROKEN") as err:
        source.load(found, BANDS, scene.grid, chunk_size=128)
    assert "was not cached" in str(err.value)
    assert cache_files(cache) == []  # no partial COG, no temporary file


# --- one reflectance whatever the processing baseline ------------------------------------------

OLD = dt.datetime(2021, 8, 20, 10, 56, 21)  # processing baseline 03.01: DN = 10000 * reflectance
NEW = dt.datetime(2022, 8, 25, 10, 56, 19)  # 04.00: DN = 10000 * reflectance + 1000
WINDOW_MIXED = TimeWindow(dt.date(2021, 6, 1), dt.date(2022, 9, 30))
BASELINE04 = SensorConfig(preset="sentinel2_l2a_baseline04")  # scale 1e-4, offset -0.1


def _es(baseline: str, applied: bool) -> dict[str, Any]:
    return {"s2:processing_baseline": baseline, "earthsearch:boa_offset_applied": applied}


def _baseline_items(
    style: str, cid: str, true: dict[str, Path], shifted: dict[str, Path], grid: GeoBox
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """An item of baseline 03.01 and one of 04.00 holding the same reflectance, described the way
    `style`'s catalog describes them; and the catalog's asset keys."""
    if style == "earth-search":  # every fact given, the numbers as ESA made them
        old = make_item("S2A_OLD", OLD, cid, true, grid, properties=_es("03.01", False))
        new = make_item(
            "S2B_NEW", NEW, cid, shifted, grid, offset=-0.1, properties=_es("04.00", False)
        )
        return [old, new], EARTH_SEARCH_KEYS
    if style == "earth-search-offset-applied":
        # the provider took the offset off the numbers, and left raster:bands saying -0.1
        old = make_item("S2A_OLD", OLD, cid, true, grid, properties=_es("03.01", False))
        new = make_item("S2B_NEW", NEW, cid, true, grid, offset=-0.1, properties=_es("04.00", True))
        return [old, new], EARTH_SEARCH_KEYS
    if style == "planetary-computer":  # no raster:bands: the baseline alone tells
        old, new = (
            make_item(iid, when, cid, files, grid, keys=PC_KEYS, raster_bands=False,
                      properties={"s2:processing_baseline": baseline})
            for iid, when, files, baseline in
            [("S2A_OLD", OLD, true, "03.01"), ("S2B_NEW", NEW, shifted, "04.00")]
        )  # fmt: skip
        return [old, new], PC_KEYS
    assert style == "raster-bands"  # a private catalog that only describes its numbers
    old = make_item("S2A_OLD", OLD, cid, true, grid)
    new = make_item("S2B_NEW", NEW, cid, shifted, grid, offset=-0.1)
    return [old, new], EARTH_SEARCH_KEYS


@pytest.mark.parametrize("sensor", [L2A, BASELINE04], ids=["to-offset-0", "to-offset-0.1"])
@pytest.mark.parametrize(
    "style", ["earth-search", "earth-search-offset-applied", "planetary-computer", "raster-bands"]
)
def test_mixed_processing_baselines_give_one_reflectance(
    scene: Scene, api: FakeStacApi, tmp_path: Path, style: str, sensor: SensorConfig
) -> None:
    """The same reflectance stored before and after baseline 04.00 comes out the same, in each
    acquisition and in their composite, whichever offset the sensor config names."""
    shifted = with_boa_offset(scene.day2, tmp_path / "shifted")
    cid = f"baselines-{style}"
    items, keys = _baseline_items(style, cid, scene.day2, shifted, scene.grid)
    api.add_collection(cid, items)
    source = make_source(api, tmp_path / "cache", collection=cid, assets=dict(keys), sensor=sensor)
    found = source.search(scene.grid, WINDOW_MIXED)
    assert [a.id for a in found] == ["S2A_OLD", "S2B_NEW"]
    ds = source.load(found, BANDS, scene.grid, chunk_size=128)
    valid = ds["SCL"] > 0
    median = composite(ds, valid, WINDOW_MIXED, REFLECTANCE_BANDS).bands
    for band in REFLECTANCE_BANDS:
        truth = scene.expected(scene.day2, band)
        for t in range(2):
            np.testing.assert_allclose(ds[band].values[t], truth, atol=1e-6, err_msg=f"{band} {t}")
        np.testing.assert_allclose(median[band].values, truth, atol=1e-6, err_msg=band)
    np.testing.assert_array_equal(ds["SCL"].values[1], scene.expected(scene.day2, "SCL"))


def test_tiles_of_one_day_stored_differently_are_fused_alike(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    """Two tiles of one day, one whose offset the provider took off and one as ESA stored it
    (Earth Search reprocessed scene by scene): each is harmonised before they are fused."""
    shifted = with_boa_offset(scene.day2, tmp_path / "shifted")
    west, west_grid = cut_assets(scene.day2, scene.grid, (0, 0, 300, 170), tmp_path / "west")
    east, east_grid = cut_assets(shifted, scene.grid, (0, 130, 300, 170), tmp_path / "east")
    api.add_collection(
        "one-day-two-ways",
        [
            make_item("S2B_W", NEW, "one-day-two-ways", west, west_grid, offset=-0.1,
                      properties=_es("04.00", True)),
            make_item("S2B_E", NEW + dt.timedelta(seconds=3), "one-day-two-ways", east, east_grid,
                      offset=-0.1, properties=_es("04.00", False)),
        ],
    )  # fmt: skip
    source = make_source(api, tmp_path / "cache", collection="one-day-two-ways")
    (found,) = source.search(scene.grid, WINDOW_MIXED)
    ds = source.load([found], BANDS, scene.grid, chunk_size=128)
    for band in BANDS:
        np.testing.assert_allclose(
            ds[band].values[0], scene.expected(scene.day2, band), atol=1e-6, err_msg=band
        )


def test_item_silent_on_its_offset_takes_the_windows_agreed_one(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    shifted = with_boa_offset(scene.day2, tmp_path / "shifted")
    api.add_collection(
        "agreeing",
        [
            make_item("S2A_SAYS", OLD, "agreeing", shifted, scene.grid, keys=PC_KEYS,
                      raster_bands=False, properties={"s2:processing_baseline": "05.00"}),
            make_item("S2B_SILENT", NEW, "agreeing", shifted, scene.grid, keys=PC_KEYS,
                      raster_bands=False),
        ],
    )  # fmt: skip
    source = make_source(api, tmp_path / "cache", collection="agreeing", assets=dict(PC_KEYS))
    found = source.search(scene.grid, WINDOW_MIXED)
    ds = source.load(found, ["B04"], scene.grid, chunk_size=128)
    for t in range(2):
        np.testing.assert_allclose(
            ds["B04"].values[t], scene.expected(scene.day2, "B04"), atol=1e-6
        )


def test_item_silent_on_its_offset_among_disagreeing_items_is_refused(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    shifted = with_boa_offset(scene.day2, tmp_path / "shifted")
    middle = dt.datetime(2022, 1, 30, 10, 56)
    api.add_collection(
        "disagreeing",
        [
            make_item("S2A_OLD", OLD, "disagreeing", scene.day2, scene.grid, raster_bands=False,
                      keys=PC_KEYS, properties={"s2:processing_baseline": "03.01"}),
            make_item("S2A_SILENT", middle, "disagreeing", shifted, scene.grid, keys=PC_KEYS,
                      raster_bands=False),
            make_item("S2B_NEW", NEW, "disagreeing", shifted, scene.grid, raster_bands=False,
                      keys=PC_KEYS, properties={"s2:processing_baseline": "04.00"}),
        ],
    )  # fmt: skip
    source = make_source(api, tmp_path / "cache", collection="disagreeing", assets=dict(PC_KEYS))
    with pytest.raises(SourceError) as err:
        source.search(scene.grid, WINDOW_MIXED)
    message = str(err.value)
    assert "STAC item S2A_SILENT (disagreeing) does not say how asset 'B02' stores" in message
    assert "S2A_OLD: scale 0.0001 offset 0 (s2:processing_baseline 03.01)" in message
    assert "S2B_NEW: scale 0.0001 offset -0.1 (s2:processing_baseline 04.00)" in message
    assert "Narrow the time window" in message
    # a window on one side of the change has one answer: the silent item takes it
    found = source.search(scene.grid, TimeWindow(dt.date(2022, 1, 26), dt.date(2022, 9, 30)))
    assert [a.id for a in found] == ["S2A_SILENT", "S2B_NEW"]


# --- HTTP failures --------------------------------------------------------------------------


def test_server_error_then_success_is_retried(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    api.fail("/search", 500, times=1)
    api.fail("/", 429, times=1, headers={"Retry-After": "0"})
    found = make_source(api, tmp_path).search(scene.grid, WINDOW_ALL)
    assert [a.id for a in found] == [f"{ID_WEST}+{ID_EAST}", ID_DAY2]
    assert api.count("/") == 2
    assert api.count("/search") == 3  # first page twice, then the second page


def test_persistent_server_error_names_the_request(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    api.fail("/search", 503, times=100)
    source = make_source(api, tmp_path, max_retries=2)
    with pytest.raises(RemoteServiceError) as err:
        source.search(scene.grid, WINDOW_ALL)
    message = str(err.value)
    assert f"POST {api.url}search" in message
    assert "HTTP 503" in message and "after 2 retries" in message
    assert api.count("/search") == 3  # one try and two retries


def test_refused_request_is_not_retried(scene: Scene, api: FakeStacApi, tmp_path: Path) -> None:
    api.fail("/search", 400, times=100)
    with pytest.raises(RemoteServiceError, match=r"/search \(search of .* was refused \(HTTP 400"):
        make_source(api, tmp_path).search(scene.grid, WINDOW_ALL)
    assert api.count("/search") == 1


def test_unreachable_api_is_a_remote_service_error(tmp_path: Path) -> None:
    config = StacSourceConfig(url="http://127.0.0.1:9/", cache_dir=tmp_path, max_retries=0)
    with pytest.raises(RemoteServiceError, match=r"GET http://127.0.0.1:9/"):
        StacSource(config, L2A).search(
            GeoBox((10, 10), Affine(10, 0, 450000, 0, -10, 5410000), "EPSG:32631"),
            WINDOW_ALL,
        )


# --- pure helpers ---------------------------------------------------------------------------


def test_grid_id_is_stable_and_distinct(scene: Scene) -> None:
    grid = scene.grid
    assert grid_id(grid) == grid_id(GeoBox((300, 300), grid.transform, grid.crs))
    ids = {
        grid_id(grid),
        grid_id(grid[0:300, 1:301]),
        grid_id(grid[0:300, 0:299]),
        grid_id(grid.zoom_out(2)),
    }
    assert len(ids) == 4
    assert grid_id(grid) == "epsg32631_x453023_y5411753_300x300_r10"


def _item(properties: dict[str, Any], raster: dict[str, Any] | None = None) -> pystac.Item:
    asset = pystac.Asset("red.tif", extra_fields={"raster:bands": [raster]} if raster else {})
    item = pystac.Item("S2_X", None, None, dt.datetime(2022, 6, 1), properties)
    item.add_asset("red", asset)
    return item


@pytest.mark.parametrize(
    ("properties", "raster", "expected"),
    [
        # the provider says it took the offset off: its stale raster:bands offset is ignored
        (_es("04.00", True), {"scale": 0.0001, "offset": -0.1}, (0.0001, 0.0)),
        ({"sentinel:boa_offset_applied": True}, None, (0.0001, 0.0)),  # Earth Search v0
        # not taken off: ESA's numbers, the baseline decides over raster:bands
        (_es("04.00", False), {"scale": 0.0001, "offset": 0}, (0.0001, -0.1)),
        (_es("03.01", False), {"scale": 0.0001, "offset": -0.1}, (0.0001, 0.0)),
        # not taken off and no baseline: raster:bands
        ({"earthsearch:boa_offset_applied": False}, {"offset": -0.1}, (0.0001, -0.1)),
        ({}, {"scale": 2.75e-5, "offset": -0.2}, (2.75e-5, -0.2)),  # e.g. Landsat C2 L2
        ({"s2:processing_baseline": "02.14"}, {"scale": 0.0001, "offset": -0.1}, (0.0001, -0.1)),
        # the baseline alone (Planetary Computer)
        ({"s2:processing_baseline": "04.00"}, None, (0.0001, -0.1)),
        ({"s2:processing_baseline": "05.10"}, None, (0.0001, -0.1)),
        ({"sentinel:processing_baseline": "03.01"}, None, (0.0001, 0.0)),
        ({"s2:processing_baseline": "03.01"}, {"nodata": 0}, (0.0001, 0.0)),
        # nothing that tells
        ({}, None, None),
        ({}, {"nodata": 0, "data_type": "uint16"}, None),
        ({"s2:processing_baseline": "unknown"}, None, None),
        ({"earthsearch:boa_offset_applied": False}, None, None),
    ],
)
def test_asset_radiometry_in_order_of_authority(
    properties: dict[str, Any], raster: dict[str, Any] | None, expected: tuple[float, float] | None
) -> None:
    found = asset_radiometry(_item(properties, raster), "red")
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found.scale, found.offset) == pytest.approx(expected)


def test_harmonise_keeps_no_data_and_clamps_below_the_type() -> None:
    new = Radiometry(1e-4, -0.1)
    old = Radiometry(1e-4, 0.0)
    stored = np.array([[0, 500, 1000, 1001, 3000]], np.uint16)  # no data, -0.05, 0, 1e-4, 0.2
    np.testing.assert_array_equal(harmonise(stored, 0, new, old), [[0, 1, 1, 1, 2000]])
    np.testing.assert_array_equal(harmonise(stored, 0, old, new), [[0, 1500, 2000, 2001, 4000]])
    assert harmonise(stored, 0, old, Radiometry(1e-4, 0.0, "elsewhere")) is stored
    top = np.array([[65000]], np.uint16)
    np.testing.assert_array_equal(harmonise(top, 0, old, new), [[65535]])
    floats = np.array([[np.nan, 0.2]], np.float32)
    np.testing.assert_allclose(
        harmonise(floats, None, Radiometry(1.0, -0.1), Radiometry(1.0, 0.0)), [[np.nan, 0.1]]
    )


def test_solar_day_follows_longitude() -> None:
    late = dt.datetime(2024, 5, 1, 20, 0)
    assert solar_day(late, 0.0) == dt.date(2024, 5, 1)
    assert solar_day(late, 120.0) == dt.date(2024, 5, 2)  # 04:00 local solar time
    assert solar_day(dt.datetime(2024, 5, 1, 3, 0, tzinfo=dt.UTC), -90.0) == dt.date(2024, 4, 30)


# --- end to end: `changedetect run` on a STAC config ---------------------------------------------


def run_config(
    api: FakeStacApi,
    scene: Scene,
    tmp_path: Path,
    collection: str,
    source: dict[str, Any],
    *,
    before: list[str],
    after: list[str],
    **extra: Any,
) -> Any:
    """A run config over the scene's AOI (a little inside it, so the UTM grid planned from the
    bbox stays inside the assets) from `collection` of the fake catalog."""
    from changedetect.config import parse_config

    west, south, east, north = wgs84_bounds(scene.grid)
    pad_x, pad_y = (east - west) * 0.05, (north - south) * 0.05
    return parse_config(
        {
            "source": {
                "kind": "stac",
                "url": api.url,
                "collection": collection,
                "cache_dir": str(tmp_path / "cache"),
                "requests_per_second": 1000,
                **source,
            },
            "aois": [
                {
                    "name": "bercy",
                    "bbox": [west + pad_x, south + pad_y, east - pad_x, north - pad_y],
                }
            ],
            "before": {"start": before[0], "end": before[1]},
            "after": {"start": after[0], "end": after[1]},
            "output": {"dir": str(tmp_path / "out"), "chips": False},
            **extra,
        }
    )


def test_run_config_end_to_end_then_nothing_new_then_from_cache(
    api: FakeStacApi, scene: Scene, tmp_path: Path
) -> None:
    from changedetect.pipeline import run

    config = run_config(
        api, scene, tmp_path, COLLECTION, {"max_cloud_cover": 50},
        before=WINDOW_1.as_list(), after=WINDOW_2.as_list(),
    )  # fmt: skip
    (first,) = run(config)
    assert first.note is None and (first.out_dir / "clues.geojson").exists()
    assert first.out_dir.name == "20170829"  # the cloudy 2017-03-15 item is not used
    cached = cache_files(tmp_path / "cache")
    assert cached

    api.reset()
    (second,) = run(config)  # the next night: nothing newer than 2017-08-29
    assert second.note is not None and "no new acquisition" in second.note
    assert api.count("/search") >= 1 and cache_files(tmp_path / "cache") == cached

    hidden = scene.root.with_name(scene.root.name + "-hidden")
    scene.root.rename(hidden)  # every asset is gone: only the cache can serve the run
    try:
        (third,) = run(config, incremental=False)
    finally:
        hidden.rename(scene.root)
    assert [c.clue_id for c in third.clues] == [c.clue_id for c in first.clues]


def test_a_seasonal_baseline_comes_from_the_cache_on_later_nights(
    api: FakeStacApi, scene: Scene, tmp_path: Path
) -> None:
    import shutil

    from changedetect.pipeline import run

    # last summer's acquisition (its own copy of the files, so the test can take them away), and
    # two nights of this summer
    history = tmp_path / "history"
    history.mkdir()
    last_summer = {b: Path(shutil.copy(p, history / p.name)) for b, p in scene.day1.items()}
    api.add_collection(
        "seasons",
        [
            make_item("S2A_31UDQ_20160825_0_L2A", dt.datetime(2016, 8, 25, 10, 50), "seasons",
                      last_summer, scene.grid, cloud_cover=5.0),
            make_item(ID_DAY2, DAY2, "seasons", scene.day2, scene.grid, cloud_cover=5.0),
            make_item("S2B_31UDQ_20170908_0_L2A", DAY2 + dt.timedelta(days=10), "seasons",
                      scene.day2, scene.grid, cloud_cover=5.0),
        ],
    )  # fmt: skip
    config = run_config(
        api, scene, tmp_path, "seasons", {},
        before=["2016-01-01", "2016-12-31"], after=["2017-08-01", "2017-09-30"],
        baseline={"kind": "same_season", "years": 1},
    )  # fmt: skip
    (first,) = run(config, until=dt.date(2017, 8, 31))
    assert first.note is None and first.clues
    assert {c.baseline for c in first.clues} == {"same_season ±15 d over 1 year"}
    assert first.clues[0].before == ["2016-08-14", "2016-09-13"]
    # the next night's baseline is the same acquisition of last summer: from the cache only
    history.rename(tmp_path / "history-gone")
    (second,) = run(config)
    assert second.note is None and second.out_dir.name == "20170908"
    assert second.clues and second.clues[0].before == ["2016-08-24", "2016-09-23"]


def test_landsat_qa_pixel_bits_come_through_a_mosaic_unblended(
    scene: Scene, api: FakeStacApi, tmp_path: Path
) -> None:
    """A Landsat Collection 2 catalog maps QA_PIXEL to its ``qa_pixel`` asset: the bits arrive
    as stored (uint16, nearest), also where two tiles of one day are mosaicked."""
    clear, cloud = 21824, 22280  # Landsat 8-9 Collection 2: clear land; cloud, high confidence

    def with_qa(files: dict[str, Path], name: str) -> dict[str, Path]:
        qa = np.where(read_band(files["SCL"]) == 8, cloud, clear).astype(np.uint16)
        qa_file = write_cog(scene.root / name / "QA_PIXEL.tif", qa, scene.grid, nodata=1)
        return {**{b: files[b] for b in REFLECTANCE_BANDS}, "QA_PIXEL": qa_file}

    day1, day2 = with_qa(scene.day1, "qa1"), with_qa(scene.day2, "qa2")
    keys = {**{b: k for b, k in EARTH_SEARCH_KEYS.items() if b != "SCL"}, "QA_PIXEL": "qa_pixel"}
    west, west_grid = cut_assets(day1, scene.grid, (0, 0, 300, 170), scene.root / "qa-west")
    east, east_grid = cut_assets(day1, scene.grid, (0, 130, 300, 170), scene.root / "qa-east")
    api.add_collection(
        "landsat-c2-l2",
        [
            make_item("LC08_W", DAY1, "landsat-c2-l2", west, west_grid, keys=keys),
            make_item("LC08_E", DAY1, "landsat-c2-l2", east, east_grid, keys=keys),
            make_item("LC08_2", DAY2, "landsat-c2-l2", day2, scene.grid, keys=keys),
        ],
    )
    source = make_source(api, tmp_path, collection="landsat-c2-l2", assets=keys)
    found = source.search(scene.grid, WINDOW_ALL)
    ds = source.load(found, ["B04", "SCL", "QA_PIXEL"], scene.grid, chunk_size=128)
    assert list(ds.data_vars) == ["B04", "QA_PIXEL"]  # no SCL in this catalog: left out
    assert ds["QA_PIXEL"].dtype == np.uint16
    np.testing.assert_array_equal(ds["QA_PIXEL"].values[0], read_band(day1["QA_PIXEL"]))
    np.testing.assert_array_equal(ds["QA_PIXEL"].values[1], read_band(day2["QA_PIXEL"]))
    assert (ds["QA_PIXEL"].values == cloud).any()
    # onto a coarser grid: nearest neighbour, never a blend of a cloud's bits with clear ones
    coarse = scene.grid.zoom_out(3)
    ds = source.load(found, ["QA_PIXEL"], coarse, chunk_size=64)
    assert set(np.unique(ds["QA_PIXEL"].values)) == {clear, cloud}
