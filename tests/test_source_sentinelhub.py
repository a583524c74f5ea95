"""Sentinel Hub source against a fake service on localhost (the real sentinelhub client runs).

The fake (tests/fakes/sentinelhub_api.py) serves real OSCD Cupertino bands reprojected onto a UTM
10 m grid; every date has its own pixels (a DN offset), so a tile from the wrong date shows.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import os
import re
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS, Transformer
from sentinelhub import SHConfig

from changedetect.config import SensorConfig, SentinelHubSourceConfig
from changedetect.errors import CredentialsError, MissingBandError, RemoteServiceError, SourceError
from changedetect.io.sources.base import ImagerySource
from changedetect.io.sources.sentinelhub import (
    CDSE_TOKEN_URL,
    SentinelHubSource,
    build_evalscript,
    default_token_url,
    request_tiles,
    retry_after_seconds,
)
from changedetect.models import Acquisition, TimeWindow
from changedetect.types import ANALYSIS_BANDS
from tests.factories import DATA

from .fakes.sentinelhub_api import FakeSentinelHub, Scene, Truth, oscd_truth, parse_evalscript

CITY = DATA / "oscd" / "cupertino"
SECRET = "s3cr3t+Value/with=&chars"
BANDS = [*ANALYSIS_BANDS, "SCL"]

SCENES = [
    Scene(dt.datetime(2018, 3, 11, 18, 50, 1), 5.0, 0, "S2A_20180311_a"),
    # same pass, next granule, cloudier: one acquisition with the one above, mosaicked under it
    Scene(dt.datetime(2018, 3, 11, 18, 50, 15), 12.0, 40, "S2A_20180311_b"),
    Scene(dt.datetime(2018, 3, 16, 18, 50, 3), 80.0, 60, "S2B_20180316"),  # too cloudy
    Scene(dt.datetime(2018, 3, 21, 18, 50, 2), 20.0, 100, "S2A_20180321"),
    Scene(dt.datetime(2018, 4, 5, 18, 50, 2), 1.0, 200, "S2A_20180405"),  # after the window
]
WINDOW = TimeWindow(dt.date(2018, 3, 1), dt.date(2018, 3, 31))
#: What the service mosaics on top for each acquisition day (least cloudy of the day).
TOP = {dt.date(2018, 3, 11): SCENES[0], dt.date(2018, 3, 21): SCENES[3]}
DAY21 = dt.date(2018, 3, 21)

#: The analysis grid: a 240 x 300 window of the 300 x 360 truth, reaching its no-data east edge.
ROW, COL, HEIGHT, WIDTH = 30, 60, 240, 300
#: With max_tile_px=128 the grid is requested as 2 x 3 tiles of 120 x 100 px.
N_TILES = 6


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> Truth:
    if not CITY.exists():
        pytest.skip(f"OSCD data not found at {CITY}")
    built = oscd_truth(CITY)
    built.write(tmp_path_factory.mktemp("truth") / "truth.tif")
    return built


@pytest.fixture(scope="module")
def server(truth: Truth) -> Any:
    with FakeSentinelHub(truth, SCENES, page_size=2, client_secret=SECRET) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeSentinelHub, monkeypatch: pytest.MonkeyPatch) -> FakeSentinelHub:
    # The fake speaks plain http; oauthlib refuses that unless told it is a test.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    server.reset(SCENES)
    return server


@pytest.fixture
def aoi(truth: Truth) -> GeoBox:
    return truth.grid[ROW : ROW + HEIGHT, COL : COL + WIDTH]


def make_source(
    fake: FakeSentinelHub,
    cache_dir: Path,
    *,
    environ: dict[str, str] | None = None,
    waits: list[float] | None = None,
    max_wait_s: float = 0.05,
    sensor: SensorConfig | None = None,
    jitter: Callable[[], float] | None = lambda: 0.0,
    sleep: Callable[[float], None] | None = None,
    refresh: bool = False,
    **settings: Any,
) -> SentinelHubSource:
    """A source on the fake; retry waits are recorded in `waits` instead of slept (unless `sleep`
    is given), and drawn without jitter (None: the source's random jitter)."""
    options: dict[str, Any] = {
        "base_url": fake.base_url,
        "token_url": fake.token_url,
        "cache_dir": cache_dir,
        "max_tile_px": 128,
        "requests_per_second": 1000.0,
        "max_retries": 3,
        "timeout_s": 5.0,
    }
    options.update(settings)
    if environ is None:
        environ = {"SH_CLIENT_ID": fake.client_id, "SH_CLIENT_SECRET": fake.client_secret}
    recorder = waits if waits is not None else []

    def record_and_sleep(seconds: float) -> None:
        recorder.append(seconds)
        if sleep is not None:
            sleep(seconds)

    return SentinelHubSource(
        SentinelHubSourceConfig(**options),
        sensor or SensorConfig(),
        environ=environ,
        backoff_s=0.01,
        max_wait_s=max_wait_s,
        sleep=record_and_sleep,
        refresh=refresh,
        **({} if jitter is None else {"jitter": jitter}),
    )


def acquisition(day: dt.date) -> Acquisition:
    return Acquisition(
        id=f"sentinel-2-l2a_{day:%Y%m%d}",
        datetime=dt.datetime.combine(day, dt.time(18, 50)),
        source="sentinelhub",
    )


def expected(truth: Truth, scene: Scene, band: str, sample_type: str = "UINT16") -> np.ndarray:
    """The truth on the analysis grid as the loader must return it."""
    dn = truth.window(band, scene, ROW, COL, HEIGHT, WIDTH)
    if band == "SCL":
        return dn.astype(np.uint8)
    if sample_type == "UINT16":
        values = dn.astype(np.float32) * np.float32(1e-4)
    else:
        values = (dn.astype(np.float64) / 10000.0).astype(np.float32)
    values[dn == 0] = np.nan
    return values


def assert_equals_truth(
    ds: Any, truth: Truth, days: list[dt.date], sample_type: str = "UINT16"
) -> Any:
    """Compare every band of every day with the truth; return the computed dataset."""
    loaded = ds.compute()
    for i, day in enumerate(days):
        for band in BANDS:
            want = expected(truth, TOP[day], band, sample_type)
            got = loaded[band].values[i]
            assert got.dtype == want.dtype, band
            assert np.array_equal(got, want, equal_nan=True), f"{band} of {day} differs"
    return loaded


def cache_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def assert_no_partial_files(root: Path) -> None:
    leftovers = [p for p in cache_files(root) if p.name.startswith(".") or p.suffix == ".part"]
    assert leftovers == []


def cached_tiles(root: Path) -> list[Path]:
    return sorted((root / "sentinelhub").rglob("*.tif")) if (root / "sentinelhub").exists() else []


# --------------------------------------------------------------------------------------------
# Pure pieces


def test_request_tiles_cover_the_grid_on_its_pixels() -> None:
    grid = GeoBox((257, 300), Affine(10, 0, 585573, 0, -10, 4135597), "EPSG:32610")
    tiles = request_tiles(grid, 128)
    assert [(t.row, t.col, t.grid.height, t.grid.width) for t in tiles[:4]] == [
        (0, 0, 86, 100),
        (0, 100, 86, 100),
        (0, 200, 86, 100),
        (86, 0, 86, 100),
    ]
    cover = np.zeros(grid.shape.yx, int)
    for tile in tiles:
        assert tile.grid.height <= 128 and tile.grid.width <= 128
        assert tile.grid.transform == grid.transform @ Affine.translation(tile.col, tile.row)
        cover[tile.row : tile.row + tile.grid.height, tile.col : tile.col + tile.grid.width] += 1
    assert (cover == 1).all()
    assert len({t.id for t in tiles}) == len(tiles)
    assert tiles[0].id == "epsg32610_x585573_y4135597_100x86_r10"
    assert len(request_tiles(grid, 2500)) == 1

    rotated = GeoBox((10, 10), Affine(10, 1, 0, 0, -10, 0), grid.crs)
    with pytest.raises(SourceError, match="north-up"):
        request_tiles(rotated, 128)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2000", 2.0),  # Sentinel Hub sends milliseconds
        ("7", 0.007),
        ("1500.5", 1.5005),  # sentinelhub's own loop raises ValueError on a fraction
        ("  0 ", 0.0),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_milliseconds_or_http_date(header: str | None, seconds: float | None) -> None:
    now = dt.datetime(2015, 10, 21, 7, 28, tzinfo=dt.UTC)
    assert retry_after_seconds(header, now=now) == pytest.approx(seconds)


def test_retry_after_in_seconds_where_the_server_speaks_plain_http() -> None:
    assert retry_after_seconds("7", milliseconds=False) == 7.0
    assert retry_after_seconds("1.5", milliseconds=False) == 1.5


def test_token_url_defaults_and_overrides(tmp_path: Path) -> None:
    main_realm = "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token"
    assert SHConfig().sh_token_url == main_realm  # what sentinelhub-py authenticates with
    assert default_token_url("https://services.sentinel-hub.com/") == main_realm
    # other deployments authenticate at the main one too
    assert default_token_url("https://services-uswest2.sentinel-hub.com") == main_realm
    assert default_token_url("https://sh.dataspace.copernicus.eu") == CDSE_TOKEN_URL

    def source(environ: dict[str, str], **settings: Any) -> SentinelHubSource:
        config = SentinelHubSourceConfig(cache_dir=tmp_path, **settings)
        return SentinelHubSource(config, SensorConfig(), environ=environ)

    sh = source({})
    assert (sh.base_url, sh.token_url) == ("https://services.sentinel-hub.com", main_realm)
    cdse = source({}, base_url="https://sh.dataspace.copernicus.eu")
    assert cdse.token_url == CDSE_TOKEN_URL
    assert (
        source({}, token_url="https://auth.example/token").token_url == "https://auth.example/token"
    )
    env = source({"SH_BASE_URL": "https://sh.dataspace.copernicus.eu/"})
    assert (env.base_url, env.token_url) == ("https://sh.dataspace.copernicus.eu", CDSE_TOKEN_URL)
    both = source(
        {"SH_BASE_URL": "http://localhost:9", "SH_TOKEN_URL": "http://localhost:9/t"},
        token_url="https://ignored.example/token",
    )
    assert (both.base_url, both.token_url) == ("http://localhost:9", "http://localhost:9/t")


def test_evalscript_asks_dn_for_uint16_and_reflectance_for_float32() -> None:
    uint16 = parse_evalscript(build_evalscript(BANDS, "UINT16"))
    assert uint16.bands == (*BANDS, "dataMask")
    assert set(uint16.units) == {"DN"}
    assert (uint16.sample_type, uint16.output_bands) == ("UINT16", 7)
    float32 = parse_evalscript(build_evalscript(BANDS, "FLOAT32"))
    assert float32.units == ("REFLECTANCE",) * 6 + ("DN", "DN")
    assert float32.sample_type == "FLOAT32"


# --------------------------------------------------------------------------------------------
# Search


def test_search_groups_a_day_and_filters_cloud_cover(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    source = make_source(fake, tmp_path / "cache")
    assert isinstance(source, ImagerySource)
    found = source.search(aoi, WINDOW)

    assert [a.datetime for a in found] == [
        dt.datetime(2018, 3, 11, 18, 50, 1),
        dt.datetime(2018, 3, 21, 18, 50, 2),
    ]
    assert [a.cloud_cover for a in found] == [8.5, 20.0]
    # the day and a digest of its granules: another set of granules is another acquisition
    assert [a.id[:-9] for a in found] == ["sentinel-2-l2a_20180311", "sentinel-2-l2a_20180321"]
    assert all(re.fullmatch(r"_[0-9a-f]{8}", a.id[-9:]) for a in found)
    assert {a.source for a in found} == {"sentinelhub"}
    # three granules pass the filter, two a page: the second page is asked for with `next`
    requests = fake.recorded("catalog")
    assert len(requests) == 2
    body = requests[0].body
    assert body is not None
    assert body["collections"] == ["sentinel-2-l2a"]
    assert body["datetime"] == "2018-03-01T00:00:00Z/2018-03-31T23:59:59Z"
    assert body["filter"] == "eo:cloud_cover <= 60"
    assert requests[1].body is not None and requests[1].body["next"] == 2
    west, south, east, north = body["bbox"]
    tr = Transformer.from_crs(aoi.crs.proj, 4326, always_xy=True)
    left, bottom, right, top = aoi.boundingbox
    for x, y in [(left, bottom), (right, top), (left, top), (right, bottom)]:
        lon, lat = tr.transform(x, y)
        assert west <= lon <= east and south <= lat <= north

    strict = make_source(fake, tmp_path / "strict", max_cloud_cover=10.0)
    assert [(a.datetime.date(), a.cloud_cover) for a in strict.search(aoi, WINDOW)] == [
        (dt.date(2018, 3, 11), 5.0)
    ]


def test_search_of_a_past_window_is_cached_a_present_one_is_not(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    first = make_source(fake, tmp_path / "cache").search(aoi, WINDOW)
    asked = fake.count()
    again = make_source(fake, tmp_path / "cache").search(aoi, WINDOW)
    assert again == first
    assert fake.count() == asked

    today = dt.datetime.now(dt.UTC).date()
    fake.reset([Scene(dt.datetime.combine(today - dt.timedelta(days=2), dt.time(18, 50)), 3.0)])
    recent = TimeWindow(today - dt.timedelta(days=20), today)
    for _ in range(2):
        found = make_source(fake, tmp_path / "cache").search(aoi, recent)
        assert [a.datetime.date() for a in found] == [today - dt.timedelta(days=2)]
    assert fake.count("catalog") == 2


def test_an_empty_answer_is_not_cached_the_archive_may_fill_in(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    fake.reset([])
    assert make_source(fake, tmp_path / "cache").search(aoi, WINDOW) == []
    fake.publish(*SCENES)  # the archive fills in
    found = make_source(fake, tmp_path / "cache").search(aoi, WINDOW)
    assert [a.datetime.date() for a in found] == [dt.date(2018, 3, 11), dt.date(2018, 3, 21)]
    assert fake.count("catalog") == 1 + 2  # asked again (two pages)
    again = make_source(fake, tmp_path / "cache").search(aoi, WINDOW)
    assert again == found and fake.count("catalog") == 3  # that answer is kept


def test_an_empty_answer_cached_by_an_older_release_is_asked_again(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    make_source(fake, tmp_path / "cache").search(aoi, WINDOW)
    (kept,) = (tmp_path / "cache" / "sentinelhub-search").glob("*.json")
    kept.write_text('{"format": 1, "acquisitions": []}', encoding="utf-8")
    asked = fake.count("catalog")
    assert len(make_source(fake, tmp_path / "cache").search(aoi, WINDOW)) == 2
    assert fake.count("catalog") == asked + 2


def test_a_refreshing_source_searches_past_the_cache(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    assert len(make_source(fake, tmp_path / "cache").search(aoi, WINDOW)) == 2
    fake.publish(Scene(dt.datetime(2018, 3, 26, 18, 50, 2), 3.0, 300, "S2B_20180326"))
    assert len(make_source(fake, tmp_path / "cache").search(aoi, WINDOW)) == 2  # cached
    asked = fake.count("catalog")
    fresh = make_source(fake, tmp_path / "cache", refresh=True).search(aoi, WINDOW)
    assert [a.datetime.day for a in fresh] == [11, 21, 26]
    assert fake.count("catalog") > asked
    # the fresh answer replaced the cached one
    asked = fake.count("catalog")
    assert make_source(fake, tmp_path / "cache").search(aoi, WINDOW) == fresh
    assert fake.count("catalog") == asked


# --------------------------------------------------------------------------------------------
# Load


def test_load_stitches_tiles_back_into_the_truth_pixel_for_pixel(
    fake: FakeSentinelHub, truth: Truth, aoi: GeoBox, tmp_path: Path
) -> None:
    source = make_source(fake, tmp_path / "cache")
    found = source.search(aoi, WINDOW)
    ds = source.load(found, BANDS, aoi, chunk_size=96)

    assert fake.count("process") == 2 * N_TILES
    assert fake.count("token") == 1
    assert dict(ds.sizes) == {"time": 2, "y": HEIGHT, "x": WIDTH}
    assert ds.odc.geobox == aoi
    assert ds["B02"].chunks[1][0] == 96
    assert list(ds["acquisition"].values) == [a.id for a in found]
    loaded = assert_equals_truth(ds, truth, [dt.date(2018, 3, 11), dt.date(2018, 3, 21)])
    assert np.isnan(loaded["B04"].values[0][:, -3:]).all()  # the truth's no-data edge
    assert (loaded["SCL"].values == 9).any()  # the planted cloud came through

    bodies = [r.body for r in fake.recorded("process")]
    assert all(b is not None for b in bodies)
    left, bottom, right, top = aoi.boundingbox
    xs, ys = set(), set()
    for body in bodies:
        assert body is not None
        bounds = body["input"]["bounds"]
        assert bounds["properties"]["crs"] == "http://www.opengis.net/def/crs/EPSG/0/32610"
        x0, y0, x1, y1 = bounds["bbox"]
        assert (x1 - x0, y1 - y0) == (body["output"]["width"] * 10, body["output"]["height"] * 10)
        assert ((x0 - left) % 10, (top - y1) % 10) == (0, 0)  # on the grid's pixel edges
        xs |= {x0, x1}
        ys |= {y0, y1}
        data = body["input"]["data"][0]
        assert data["type"] == "sentinel-2-l2a"
        assert data["dataFilter"]["mosaickingOrder"] == "leastCC"
        assert data["dataFilter"]["maxCloudCoverage"] == 60
        assert data["dataFilter"]["timeRange"]["from"][11:] == "00:00:00Z"
        assert data["dataFilter"]["timeRange"]["to"][11:] == "23:59:59Z"
        assert body["output"]["responses"][0]["format"]["type"] == "image/tiff"
    assert (min(xs), max(xs), min(ys), max(ys)) == (left, right, bottom, top)

    # everything is cached: a new source (a re-run) asks nothing, for the search nor the pixels
    fake.reset(SCENES)
    rerun = make_source(fake, tmp_path / "cache")
    ds2 = rerun.load(rerun.search(aoi, WINDOW), BANDS, aoi, chunk_size=256)
    assert ds2["B02"].chunks[1] == (240,)
    assert_equals_truth(ds2, truth, [dt.date(2018, 3, 11), dt.date(2018, 3, 21)])
    assert fake.count() == 0
    assert_no_partial_files(tmp_path / "cache")


def test_a_better_granule_arriving_later_is_fetched_for_its_day(
    fake: FakeSentinelHub, truth: Truth, aoi: GeoBox, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    source = make_source(fake, cache)
    found = source.search(aoi, WINDOW)
    assert_equals_truth(source.load(found, BANDS, aoi, 256), truth, [dt.date(2018, 3, 11), DAY21])
    fetched = fake.count("process")

    # a clearer granule of the 21st is processed late: the service now mosaics it on top
    late = Scene(dt.datetime(2018, 3, 21, 18, 50, 20), 2.0, 150, "S2B_20180321_late")
    fake.publish(late)
    fresh = make_source(fake, cache, refresh=True)  # a past window: its search is cached
    again = fresh.search(aoi, WINDOW)
    loaded = fresh.load(again, BANDS, aoi, 256).compute()
    assert fake.count("process") == fetched + N_TILES  # the 21st again, not the 11th
    for band in BANDS:
        assert np.array_equal(loaded[band].values[1], expected(truth, late, band), equal_nan=True)
    assert again[0].id == found[0].id and again[1].id != found[1].id
    assert again[1].datetime == found[1].datetime  # same first granule: the time cannot tell

    # the cloud limit sent is part of the key too: it decides which granules are mosaicked
    fetched = fake.count("process")
    strict = make_source(fake, cache, max_cloud_cover=30.0)
    strict.load([acquisition(dt.date(2018, 3, 11))], BANDS, aoi, 256)
    assert fake.count("process") == fetched + N_TILES


def test_float32_replies_load_as_reflectance(
    fake: FakeSentinelHub, truth: Truth, aoi: GeoBox, tmp_path: Path
) -> None:
    day = dt.date(2018, 3, 21)
    source = make_source(fake, tmp_path / "cache", sample_type="FLOAT32", max_tile_px=200)
    ds = source.load([acquisition(day)], BANDS, aoi, chunk_size=256)
    as_float = assert_equals_truth(ds, truth, [day], sample_type="FLOAT32")
    body = fake.recorded("process")[0].body
    assert body is not None and 'sampleType: "FLOAT32"' in body["evalscript"]
    with rasterio.open(cached_tiles(tmp_path / "cache")[0]) as src:
        assert src.dtypes[0] == "float32"
    b08 = as_float["B08"].values[0]
    assert np.nanmax(b08) < 1.0 and np.nanmedian(b08) > 0.05

    as_dn = make_source(fake, tmp_path / "dn").load([acquisition(day)], BANDS, aoi, 256).compute()
    for band in ANALYSIS_BANDS:  # the same reflectance either way, to float32 rounding
        np.testing.assert_allclose(as_float[band].values, as_dn[band].values, rtol=1e-6)
    assert np.array_equal(as_float["SCL"].values, as_dn["SCL"].values)


def test_the_service_encoding_wins_over_a_sensor_offset(
    fake: FakeSentinelHub,
    truth: Truth,
    aoi: GeoBox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    day = dt.date(2018, 3, 21)
    sensor = SensorConfig(preset="sentinel2_l2a_baseline04")  # offset -0.1: wrong for harmonised DN
    source = make_source(fake, tmp_path / "cache", sensor=sensor, max_tile_px=2500)
    ds = source.load([acquisition(day)], BANDS, aoi, chunk_size=256)
    assert_equals_truth(ds, truth, [day])
    assert "sensor offset -0.1 ignored" in caplog.text
    body = fake.recorded("process")[0].body
    assert body is not None
    assert body["input"]["data"][0]["processing"] == {"harmonizeValues": True}


def test_l1c_is_loaded_without_scl(
    fake: FakeSentinelHub, truth: Truth, aoi: GeoBox, tmp_path: Path
) -> None:
    day = dt.date(2018, 3, 21)
    source = make_source(fake, tmp_path / "cache", collection="sentinel-2-l1c", max_tile_px=2500)
    ds = source.load([acquisition(day)], BANDS, aoi, chunk_size=256).compute()
    assert "SCL" not in ds
    body = fake.recorded("process")[0].body
    assert body is not None and body["input"]["data"][0]["type"] == "sentinel-2-l1c"
    assert '"SCL"' not in body["evalscript"]
    want = expected(truth, TOP[day], "B11")
    assert np.array_equal(ds["B11"].values[0], want, equal_nan=True)


def test_tiles_are_fetched_concurrently_up_to_the_limit(
    fake: FakeSentinelHub, truth: Truth, aoi: GeoBox, tmp_path: Path
) -> None:
    fake.process_delay_s = 0.25
    source = make_source(fake, tmp_path / "cache", max_concurrent_requests=3)
    start = time.monotonic()
    ds = source.load([acquisition(dt.date(2018, 3, 11))], BANDS, aoi, chunk_size=256)
    elapsed = time.monotonic() - start
    assert fake.max_in_flight == 3
    assert elapsed < N_TILES * 0.25  # one at a time would take at least this long
    assert_equals_truth(ds, truth, [dt.date(2018, 3, 11)])


def test_requests_never_start_faster_than_the_rate_limit(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    source = make_source(
        fake, tmp_path / "cache", max_concurrent_requests=4, requests_per_second=10.0
    )
    source.load([acquisition(dt.date(2018, 3, 21))], BANDS, aoi, chunk_size=256)
    arrivals = sorted(r.arrived for r in fake.recorded("process"))
    assert len(arrivals) == N_TILES
    # Starts are 0.1 s apart; arrivals jitter by the time a request takes to reach the server.
    assert arrivals[-1] - arrivals[0] >= 0.45
    busiest = max(sum(1 for t in arrivals if start <= t < start + 0.2) for start in arrivals)
    assert busiest <= 3  # without pacing all six arrive within a few milliseconds


# --------------------------------------------------------------------------------------------
# Faults


@pytest.mark.parametrize(
    ("kind", "retry_after", "waits", "reason"),
    [
        ("429", "30", [0.03, 0.03], "HTTP 429"),  # Retry-After in milliseconds, honoured
        ("429", "1000", [0.05, 0.05], "HTTP 429"),  # capped by max_wait_s
        ("503", "0", [0.0, 0.0], "HTTP 503"),
        # exponential backoff, half of it drawn (none here: the tests draw 0)
        ("500", None, [0.005, 0.01], "HTTP 500"),
        ("slow", None, [0.005, 0.01], "no reply within 0.4 s"),  # slower than timeout_s
        ("truncate", None, [0.005, 0.01], "truncated"),  # complete HTTP reply, half a TIFF
        ("cut", None, [0.005, 0.01], "connection broke"),  # connection closed mid-body
        ("content_type", None, [0.005, 0.01], "text/html, not image/tiff"),  # 200, an HTML page
    ],
)
def test_transient_faults_are_retried(
    fake: FakeSentinelHub,
    truth: Truth,
    aoi: GeoBox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    retry_after: str | None,
    waits: list[float],
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="changedetect")
    recorded: list[float] = []
    source = make_source(
        fake, tmp_path / "cache", waits=recorded, max_concurrent_requests=1, timeout_s=0.4
    )
    fake.fail_next(kind, count=2, after=1, retry_after=retry_after, sleep_s=1.0)
    day = dt.date(2018, 3, 11)
    ds = source.load([acquisition(day)], BANDS, aoi, chunk_size=256)
    assert fake.count("process") == N_TILES + 2
    assert recorded == pytest.approx(waits)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and all(reason in m and "2018-03-11 tile" in m for m in retries)
    assert_equals_truth(ds, truth, [day])
    assert_no_partial_files(tmp_path / "cache")


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("2000", 2.0),  # milliseconds: read as seconds, this stalled a run for the 60 s cap
        ("2500", 2.5),
        ("750.5", 0.7505),
        ("3600000", 60.0),  # capped
        ("http-date+30", 30.0),
    ],
)
def test_retry_after_is_read_as_milliseconds_and_capped(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path, header: str, wait: float
) -> None:
    if header.startswith("http-date"):
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=31)
        header = email.utils.format_datetime(later, usegmt=True)
    recorded: list[float] = []
    source = make_source(
        fake, tmp_path / "cache", waits=recorded, max_wait_s=60.0, max_tile_px=2500
    )
    fake.fail_next(429, retry_after=header)
    source.load([acquisition(dt.date(2018, 3, 11))], ["B04"], aoi, chunk_size=256)
    assert len(recorded) == 1
    assert recorded[0] == pytest.approx(wait, abs=1.5 if header[0].isalpha() else 1e-9)
    assert fake.count("process") == 2


def test_a_millisecond_retry_after_is_waited_out_and_no_longer(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    # Really slept: the fake throttles again whatever comes back before its 300 ms are up.
    recorded: list[float] = []
    source = make_source(
        fake, tmp_path / "cache", waits=recorded, sleep=time.sleep, max_wait_s=3.0, max_tile_px=2500
    )
    fake.throttle(300)
    start = time.monotonic()
    source.load([acquisition(dt.date(2018, 3, 11))], ["B04"], aoi, chunk_size=256)
    elapsed = time.monotonic() - start
    assert [r.status for r in fake.recorded("process")] == [429, 200]
    assert recorded == [pytest.approx(0.3)]
    assert 0.3 <= elapsed < 2.0


def test_workers_throttled_together_come_back_apart(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    recorded: list[float] = []
    source = make_source(
        fake,
        tmp_path / "cache",
        waits=recorded,
        jitter=None,  # the source's own random draws
        max_wait_s=60.0,
        max_concurrent_requests=3,
        max_retries=N_TILES,  # however the 429s fall on the tiles, none gives up
    )
    fake.fail_next(429, count=N_TILES, retry_after="2000")
    source.load([acquisition(dt.date(2018, 3, 11))], ["B04"], aoi, chunk_size=256)
    assert fake.count("process") == 2 * N_TILES
    # the server's 2 s plus up to one backoff step (0.01 s), each drawn apart
    assert len(recorded) == N_TILES
    assert all(2.0 <= w <= 2.01 for w in recorded)
    assert len(set(recorded)) == N_TILES

    recorded.clear()
    one_by_one = make_source(
        fake, tmp_path / "cache", waits=recorded, jitter=None, max_concurrent_requests=1
    )
    fake.fail_next(503)
    for _ in range(N_TILES - 1):
        fake.fail_next(503, after=1)  # every tile fails once, then its retry succeeds
    one_by_one.load([acquisition(dt.date(2018, 3, 21))], ["B04"], aoi, chunk_size=256)
    # the first backoff step (0.01 s), half of it drawn
    assert len(recorded) == N_TILES
    assert all(0.005 <= w <= 0.01 for w in recorded)
    assert len(set(recorded)) == N_TILES


@pytest.mark.parametrize(
    ("kind", "retry_after", "reason"),
    [
        (500, None, "HTTP 500"),
        (429, "0", "HTTP 429"),
        ("slow", None, "no reply within 0.3 s"),
        ("truncate", None, "the reply is truncated"),
        ("cut", None, "the connection broke"),
        ("content_type", None, "the reply is text/html, not image/tiff"),
    ],
)
def test_a_request_that_keeps_failing_names_itself(
    fake: FakeSentinelHub,
    aoi: GeoBox,
    tmp_path: Path,
    kind: str | int,
    retry_after: str | None,
    reason: str,
) -> None:
    recorded: list[float] = []
    source = make_source(
        fake, tmp_path / "cache", waits=recorded, max_concurrent_requests=1, timeout_s=0.3
    )
    fake.fail_next(kind, count=None, retry_after=retry_after, sleep_s=0.6)
    with pytest.raises(RemoteServiceError) as info:
        source.load([acquisition(dt.date(2018, 3, 11))], BANDS, aoi, chunk_size=256)
    message = str(info.value)
    first = request_tiles(aoi, 128)[0]
    assert message.startswith(f"Process API request for 2018-03-11 tile {first.id} ")
    assert "(POST /api/v1/process)" in message
    assert f"after 4 attempt(s): {reason}" in message
    assert fake.count("process") == 4  # max_retries=3, then it gives up
    assert len(recorded) == 3
    assert all(token not in message for token in fake.issued_tokens)
    assert cached_tiles(tmp_path / "cache") == []
    assert_no_partial_files(tmp_path / "cache")


@pytest.mark.parametrize(
    ("endpoint", "transient", "names"),
    [
        (
            "catalog",
            "truncate",
            "Catalog API search of sentinel-2-l2a in ['2018-03-01', '2018-03-31']",
        ),
        ("catalog", "content_type", "(POST /api/v1/catalog/1.0.0/search)"),
        ("token", "truncate", "access token from http://"),
        ("token", "slow", "/openid-connect/token: HTTP 503 after 4 attempt(s)"),
    ],
)
def test_search_and_token_requests_are_retried_then_named(
    fake: FakeSentinelHub,
    aoi: GeoBox,
    tmp_path: Path,
    endpoint: str,
    transient: str,
    names: str,
) -> None:
    recorded: list[float] = []
    fake.fail_next(transient, endpoint=endpoint, sleep_s=1.0)
    source = make_source(fake, tmp_path / "a", waits=recorded, timeout_s=0.4)
    assert len(source.search(aoi, WINDOW)) == 2
    assert fake.count(endpoint) == 2 + (endpoint == "catalog")  # catalog: two pages
    assert len(recorded) == 1

    fake.reset(SCENES)
    fake.fail_next(503, endpoint=endpoint, count=None)
    with pytest.raises(RemoteServiceError) as info:
        make_source(fake, tmp_path / "b").search(aoi, WINDOW)
    assert names in str(info.value)
    assert "HTTP 503" in str(info.value) and "after 4 attempt(s)" in str(info.value)
    assert fake.count(endpoint) == 4


def test_a_client_error_is_not_retried(fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path) -> None:
    source = make_source(fake, tmp_path / "cache", max_concurrent_requests=1)
    # B05 is a real Sentinel-2 band, but the fake has none: it answers 400 like the service would
    with pytest.raises(RemoteServiceError, match=r"HTTP 400: .*B05") as info:
        source.load([acquisition(dt.date(2018, 3, 11))], ["B05"], aoi, chunk_size=256)
    assert "after" not in str(info.value)
    assert fake.count("process") == 1
    with pytest.raises(MissingBandError, match="B13"):
        source.load([acquisition(dt.date(2018, 3, 11))], ["B13"], aoi, chunk_size=256)


def test_a_token_revoked_mid_run_is_replaced_once(
    fake: FakeSentinelHub,
    truth: Truth,
    aoi: GeoBox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="changedetect")
    source = make_source(fake, tmp_path / "cache", max_concurrent_requests=3)
    days = [dt.date(2018, 3, 11), dt.date(2018, 3, 21)]
    found = source.search(aoi, WINDOW)
    fake.revoke_tokens(after=3)  # the session is revoked while the tiles are being fetched
    ds = source.load(found, BANDS, aoi, chunk_size=256)
    assert_equals_truth(ds, truth, days)
    refused = [r for r in fake.recorded("process") if r.status == 401]
    assert 1 <= len(refused) <= 3  # the requests in flight with the old token
    assert fake.count("process") == 2 * N_TILES + len(refused)
    # one fresh token for all the threads, fetched once (besides the first)
    assert fake.count("token") == 2
    assert "access token was refused; trying once more with a fresh one" in caplog.text

    # the search asks with a fresh token too
    fake.revoke_tokens()
    assert len(make_source(fake, tmp_path / "other").search(aoi, WINDOW)) == 2


def test_a_service_that_refuses_even_a_fresh_token_names_the_token_url(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    source = make_source(fake, tmp_path / "cache", max_concurrent_requests=1)
    fake.fail_next(401, count=None)
    with pytest.raises(CredentialsError) as info:
        source.load([acquisition(dt.date(2018, 3, 11))], ["B04"], aoi, chunk_size=256)
    message = str(info.value)
    assert "HTTP 401" in message and "freshly issued access token" in message
    assert f"tokens from {fake.token_url}" in message and "source.token_url" in message
    assert "SH_CLIENT_ID" not in message  # the credentials were accepted: they are not the fault
    assert (fake.count("process"), fake.count("token")) == (2, 2)  # once with a fresh token
    assert all(token not in message for token in fake.issued_tokens)


def test_a_client_revoked_mid_run_is_a_credentials_error(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    source = make_source(fake, tmp_path / "cache", max_concurrent_requests=1)
    source.search(aoi, WINDOW)
    fake.revoke_tokens()
    fake.fail_next(401, endpoint="token", count=None)  # and the client is gone
    with pytest.raises(CredentialsError) as info:
        source.load([acquisition(dt.date(2018, 3, 11))], ["B04"], aoi, chunk_size=256)
    message = str(info.value)
    assert f"token endpoint {fake.token_url} refused the client credentials" in message
    assert "SH_CLIENT_ID and SH_CLIENT_SECRET" in message


def test_a_403_carries_the_service_message(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    source = make_source(fake, tmp_path / "cache", max_concurrent_requests=1)
    said = "Your account has used up its processing units for this month"
    fake.fail_next(403, count=None, message=said)
    with pytest.raises(CredentialsError) as info:
        source.load([acquisition(dt.date(2018, 3, 11))], ["B04"], aoi, chunk_size=256)
    message = str(info.value)
    assert message.startswith("Process API request for 2018-03-11 tile ")
    assert f"HTTP 403: {said}" in message and "Sentinel Hub dashboard" in message
    assert fake.count("process") == 1  # not retried: waiting does not bring quota back
    assert all(token not in message for token in fake.issued_tokens)
    assert fake.client_secret not in message


def test_a_run_killed_half_way_fetches_only_the_missing_tiles(
    fake: FakeSentinelHub, truth: Truth, aoi: GeoBox, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    days = [dt.date(2018, 3, 11), dt.date(2018, 3, 21)]
    acquisitions = [acquisition(d) for d in days]
    first = make_source(fake, cache, max_concurrent_requests=1, max_retries=0)
    fake.fail_next(500, count=None, after=4)
    with pytest.raises(RemoteServiceError):
        first.load(acquisitions, BANDS, aoi, chunk_size=256)
    done = cached_tiles(cache)
    assert len(done) == 4
    assert_no_partial_files(cache)
    for path in done:  # every tile left behind is whole
        with rasterio.open(path) as src:
            assert src.read().shape == (len(BANDS), 120, 100)

    fake.reset(SCENES)
    ds = make_source(fake, cache).load(acquisitions, BANDS, aoi, chunk_size=256)
    assert fake.count("process") == 2 * N_TILES - 4
    assert_equals_truth(ds, truth, days)


def test_a_token_about_to_expire_is_replaced_before_use(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path
) -> None:
    lifetime = fake.token_lifetime_s
    fake.token_lifetime_s = 60  # inside the two-minute margin: every request needs a new one
    try:
        source = make_source(fake, tmp_path / "cache", max_concurrent_requests=1)
        source.load([acquisition(dt.date(2018, 3, 11))], ["B04"], aoi, chunk_size=256)
    finally:
        fake.token_lifetime_s = lifetime
    assert fake.count("token") >= fake.count("catalog") + fake.count("process")
    assert not [r for r in fake.requests if r.status == 401]


def test_only_the_public_api_of_sentinelhub_is_used() -> None:
    # Overriding the package's private methods is what tied it to one major version.
    import sentinelhub

    from changedetect.io.sources import sentinelhub as module

    for name, cls in vars(module).items():
        if not isinstance(cls, type) or cls.__module__ != module.__name__:
            continue
        for base in cls.__mro__[1:]:
            if not base.__module__.startswith(sentinelhub.__name__):
                continue
            private = [a for a in vars(cls) if a.startswith("_") and not a.startswith("__")]
            private = [a for a in private if hasattr(base, a)]
            assert private == [], f"{name} overrides private {private} of {base.__name__}"


# --------------------------------------------------------------------------------------------
# Credentials


def test_missing_credentials_fail_only_when_a_request_is_needed(
    fake: FakeSentinelHub, truth: Truth, aoi: GeoBox, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    anonymous = make_source(fake, cache, environ={})
    with pytest.raises(CredentialsError, match="SH_CLIENT_ID and SH_CLIENT_SECRET"):
        anonymous.search(aoi, WINDOW)
    with pytest.raises(CredentialsError, match="SH_CLIENT_ID and SH_CLIENT_SECRET"):
        anonymous.load([acquisition(dt.date(2018, 3, 11))], BANDS, aoi, chunk_size=256)
    half = make_source(fake, cache, environ={"SH_CLIENT_ID": fake.client_id})
    with pytest.raises(CredentialsError, match=r"\(SH_CLIENT_SECRET not set\)"):
        half.search(aoi, WINDOW)
    assert fake.count() == 0

    found = make_source(fake, cache).search(aoi, WINDOW)
    make_source(fake, cache).load(found, BANDS, aoi, chunk_size=256)
    fake.reset(SCENES)
    cached = make_source(fake, cache, environ={})
    ds = cached.load(cached.search(aoi, WINDOW), BANDS, aoi, chunk_size=256)
    assert_equals_truth(ds, truth, [dt.date(2018, 3, 11), dt.date(2018, 3, 21)])
    assert fake.count() == 0


def test_base_url_from_the_environment(fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path) -> None:
    config = SentinelHubSourceConfig(cache_dir=tmp_path / "cache")  # sentinel-hub.com by default
    environ = {
        "SH_BASE_URL": fake.base_url,
        "SH_TOKEN_URL": fake.token_url,
        "SH_CLIENT_ID": fake.client_id,
        "SH_CLIENT_SECRET": fake.client_secret,
    }
    source = SentinelHubSource(config, SensorConfig(), environ=environ, sleep=lambda s: None)
    assert len(source.search(aoi, WINDOW)) == 2
    assert fake.count("token") == 1


def test_prefect_secret_blocks(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = {"sh-id": fake.client_id, "sh-secret": fake.client_secret}
    settings = {"client_id_block": "sh-id", "client_secret_block": "sh-secret"}
    for name in ("prefect", "prefect.blocks", "prefect.blocks.system"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails: Prefect is not installed
    source = make_source(fake, tmp_path / "cache", environ={}, **settings)
    with pytest.raises(CredentialsError, match="'sh-id'.*Prefect is not installed"):
        source.search(aoi, WINDOW)

    class Secret:
        def __init__(self, value: str) -> None:
            self.value = value

        @classmethod
        def load(cls, name: str) -> Secret:
            return cls(blocks[name])

        def get(self) -> str:
            return self.value

    system = types.ModuleType("prefect.blocks.system")
    system.Secret = Secret  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefect", types.ModuleType("prefect"))
    monkeypatch.setitem(sys.modules, "prefect.blocks", types.ModuleType("prefect.blocks"))
    monkeypatch.setitem(sys.modules, "prefect.blocks.system", system)
    source = make_source(fake, tmp_path / "cache", environ={}, **settings)
    assert len(source.search(aoi, WINDOW)) == 2
    missing = make_source(
        fake,
        tmp_path / "other",
        environ={},
        client_id_block="nope",
        client_secret_block="sh-secret",
    )
    with pytest.raises(CredentialsError, match="'nope'.*KeyError"):
        missing.search(aoi, WINDOW)


def test_secrets_stay_out_of_logs_and_errors(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    source = make_source(fake, tmp_path / "cache", max_concurrent_requests=1, max_retries=1)
    found = source.search(aoi, WINDOW)
    fake.fail_next(500)
    source.load(found[:1], ["B04"], aoi, chunk_size=256)  # one retry, logged
    fake.fail_next(500, count=None)
    with pytest.raises(RemoteServiceError) as failed:
        source.load(found[1:], ["B04"], aoi, chunk_size=256)
    errors.append(failed.value)
    wrong = make_source(
        fake,
        tmp_path / "cache2",
        environ={"SH_CLIENT_ID": fake.client_id, "SH_CLIENT_SECRET": "wr0ng-" + SECRET},
    )
    with pytest.raises(CredentialsError, match="invalid_client") as refused:
        wrong.search(aoi, WINDOW)
    errors.append(refused.value)

    # requests-oauthlib did log the token request and reply: the test exercises the redaction
    assert any(r.name.startswith("requests_oauthlib") for r in caplog.records)
    assert any("retry 1 of 1" in r.getMessage() for r in caplog.records)
    texts = [caplog.text, *(r.getMessage() for r in caplog.records)]
    texts += ["".join(traceback.format_exception(e)) for e in errors]
    forms = {SECRET, "wr0ng-" + SECRET}
    forms |= {
        f.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D").replace("&", "%26")
        for f in set(forms)
    }
    assert fake.issued_tokens
    for text in texts:
        for secret in [*forms, *fake.issued_tokens]:
            assert secret not in text


# --------------------------------------------------------------------------------------------
# The real service


@pytest.mark.credentials
def test_real_service_small_area(tmp_path: Path) -> None:
    if not (os.environ.get("SH_CLIENT_ID") and os.environ.get("SH_CLIENT_SECRET")):
        pytest.skip("SH_CLIENT_ID / SH_CLIENT_SECRET not set")
    crs = CRS.from_epsg(32610)
    x, y = Transformer.from_crs(4326, crs, always_xy=True).transform(-122.03, 37.335)
    grid = GeoBox((96, 120), Affine(10, 0, round(x, -1), 0, -10, round(y, -1)), crs)
    config = SentinelHubSourceConfig(cache_dir=tmp_path, max_cloud_cover=20.0, max_tile_px=64)
    source = SentinelHubSource(config, SensorConfig())
    found = source.search(grid, TimeWindow(dt.date(2023, 6, 1), dt.date(2023, 7, 31)))
    assert found and all(a.cloud_cover is not None and a.cloud_cover <= 20 for a in found)
    ds = source.load(found[:1], ["B04", "B08", "SCL"], grid, chunk_size=64).compute()
    nir = ds["B08"].values[0]
    assert np.isfinite(nir).mean() > 0.9
    assert 0.0 < float(np.nanmedian(nir)) < 1.0
    assert set(np.unique(ds["SCL"].values)) <= set(range(12))


# --------------------------------------------------------------------------------------------
# End to end: `changedetect run` on a Sentinel Hub config


def run_config(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path, before: TimeWindow, after: TimeWindow
) -> Any:
    """A run configuration of one AOI (a little inside `aoi`) on the fake."""
    from changedetect.config import parse_config

    west, south, east, north = Transformer.from_crs(
        aoi.crs.proj, "EPSG:4326", always_xy=True
    ).transform_bounds(*aoi.boundingbox)
    # a little inside the AOI, so the UTM grid planned from the bbox stays inside the truth
    pad_x, pad_y = (east - west) * 0.05, (north - south) * 0.05
    return parse_config(
        {
            "source": {
                "kind": "sentinelhub",
                "base_url": fake.base_url,
                "token_url": fake.token_url,
                "cache_dir": str(tmp_path / "cache"),
                "max_tile_px": 128,
                "requests_per_second": 1000,
                "timeout_s": 5,
            },
            "aois": [
                {
                    "name": "cupertino",
                    "bbox": [west + pad_x, south + pad_y, east - pad_x, north - pad_y],
                }
            ],
            "before": {"start": before.start.isoformat(), "end": before.end.isoformat()},
            "after": {"start": after.start.isoformat(), "end": after.end.isoformat()},
            "output": {"dir": str(tmp_path / "out"), "chips": False},
        }
    )


def test_run_config_end_to_end_then_nothing_new_then_fully_cached(
    fake: FakeSentinelHub, truth: Truth, aoi: GeoBox, tmp_path: Path, monkeypatch
) -> None:
    from changedetect.pipeline import run

    monkeypatch.setenv("SH_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("SH_CLIENT_SECRET", fake.client_secret)
    before = TimeWindow(dt.date(2018, 3, 1), dt.date(2018, 3, 15))
    config = run_config(
        fake, aoi, tmp_path, before, TimeWindow(dt.date(2018, 3, 16), dt.date(2018, 4, 30))
    )
    (first,) = run(config)
    assert first.note is None and (first.out_dir / "clues.geojson").exists()
    assert first.out_dir.name == "20180405"  # newest after acquisition (03-16 is too cloudy)
    process_requests = fake.count("process")
    assert process_requests > 0

    (second,) = run(config)  # the next night: nothing newer than 2018-04-05
    assert second.note is not None and "no new acquisition" in second.note
    assert fake.count("process") == process_requests

    process_requests = fake.count("process")
    catalog_requests = fake.count("catalog")
    (third,) = run(config, incremental=False)  # --full: the same window again
    # the searches are asked afresh (--full reaches the source), the pixels come from the cache
    assert fake.count("catalog") > catalog_requests
    assert third.note is None and fake.count("process") == process_requests
    assert [c.clue_id for c in third.clues] == [c.clue_id for c in first.clues]


def test_the_next_night_analyses_a_day_again_when_a_better_granule_came_in(
    fake: FakeSentinelHub, aoi: GeoBox, tmp_path: Path, monkeypatch
) -> None:
    from changedetect.pipeline import run

    monkeypatch.setenv("SH_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("SH_CLIENT_SECRET", fake.client_secret)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    at = dt.datetime.combine(yesterday, dt.time(18, 50, 1))
    fake.publish(Scene(at, 40.0, 100, "S2A_yesterday"))
    before = TimeWindow(dt.date(2018, 3, 1), dt.date(2018, 3, 15))
    after = TimeWindow(yesterday - dt.timedelta(days=10), yesterday + dt.timedelta(days=1))
    config = run_config(fake, aoi, tmp_path, before, after)
    (first,) = run(config)
    assert first.note is None and first.out_dir.name == f"{yesterday:%Y%m%d}"
    fetched = fake.count("process")

    # yesterday's neighbouring granule, clearer, is processed late: it is mosaicked on top
    fake.publish(Scene(at + dt.timedelta(seconds=14), 3.0, 200, "S2A_yesterday_late"))
    (second,) = run(config)  # the next night: yesterday again, as the service now serves it
    assert second.note is None and second.out_dir == first.out_dir
    assert fake.count("process") > fetched

    (third,) = run(config)  # and then nothing new
    assert third.note is not None and "no new acquisition" in third.note
