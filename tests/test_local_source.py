"""Local imagery source: acquisitions from files and folders, lazy warped loading, clear errors."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS, Transformer

from changedetect.config import LocalSourceConfig, SensorConfig
from changedetect.errors import (
    CorruptInputError,
    GridMismatchError,
    MissingBandError,
    SourceError,
)
from changedetect.grids import pixel_size
from changedetect.io.sources.base import ImagerySource
from changedetect.io.sources.local import (
    LocalSource,
    acquisition_from_path,
    check_overlap,
    normalize_band,
    parse_date,
    scan_folder,
)
from changedetect.models import TimeWindow
from changedetect.testing.rasters import (
    coarsen_grid,
    make_grid,
    seeded_reflectance,
    truncate_file,
    write_band_folder,
    write_multiband,
)

L2A = SensorConfig()  # scale 1e-4, offset 0, nodata 0


def load(acqs, bands, grid, chunk_size=32, sensor=L2A):
    return LocalSource(None, sensor, list(acqs)).load(acqs, bands, grid, chunk_size)


# --- acquisitions ----------------------------------------------------------------------------


def test_multiband_with_descriptions(tmp_path: Path) -> None:
    grid = make_grid(shape=(40, 50))
    bands = seeded_reflectance(["B02", "B04", "B08"], grid.shape.yx, seed=1)
    path = write_multiband(tmp_path / "S2A_20200501T031539.tif", bands, grid, nodata=0)

    acq = acquisition_from_path(path, L2A)
    assert acq.id == "S2A_20200501T031539"
    assert acq.datetime == dt.datetime(2020, 5, 1, 3, 15, 39)
    assert acq.assets == {"B02": (str(path), 1), "B04": (str(path), 2), "B08": (str(path), 3)}
    assert acq.grid == grid

    ds = load([acq], ["B02", "B08"], grid, chunk_size=16)
    assert isinstance(LocalSource(None, L2A, [acq]), ImagerySource)
    assert ds["B02"].dims == ("time", "y", "x")
    assert ds["B02"].dtype == np.float32
    assert isinstance(ds["B02"].data, da.Array)
    assert ds["B02"].data.chunks == ((1,), (16, 16, 8), (16, 16, 16, 2))
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert list(ds["acquisition"].values) == [acq.id]
    np.testing.assert_allclose(ds["x"].values, grid.coords["x"].values)
    assert ds.odc.geobox == grid
    np.testing.assert_allclose(ds["B08"].values[0], bands["B08"] * 1e-4, rtol=1e-6)
    np.testing.assert_allclose(ds["B02"].values[0], bands["B02"] * 1e-4, rtol=1e-6)


def test_band_folder_mixed_resolutions(tmp_path: Path) -> None:
    g10 = make_grid(shape=(64, 64))
    g20 = coarsen_grid(g10, 2)
    rng = np.random.default_rng(2)
    b02 = rng.integers(100, 3000, g10.shape.yx).astype(np.uint16)
    b11 = np.full(g20.shape.yx, 3000, np.uint16)
    b12 = (1000 + 100 * np.arange(g20.width))[None, :].repeat(g20.height, 0).astype(np.uint16)
    scl = rng.integers(1, 12, g20.shape.yx).astype(np.uint8)
    folder = tmp_path / "T50RKV_20200501"
    write_band_folder(
        folder,
        "T50RKV_20200501T030541",
        {"B02": b02, "B11": b11, "B12": b12, "SCL": scl},
        {"B02": g10, "B11": g20, "B12": g20, "SCL": g20},
    )

    acq = acquisition_from_path(folder, L2A)
    assert acq.id == "T50RKV_20200501"
    assert set(acq.assets) == {"B02", "B11", "B12", "SCL"}
    assert acq.grid == g10  # the finest band's grid

    ds = load([acq], ["B02", "B11", "B12", "SCL"], g10, chunk_size=24).compute()
    np.testing.assert_allclose(ds["B02"].values[0], b02 * 1e-4, rtol=1e-6)
    np.testing.assert_allclose(ds["B11"].values[0], 0.3, rtol=1e-6)
    # bilinear: the 10 m pixel centre c sits at 20 m pixel coordinate c/2 - 1/4
    cols = np.arange(1, 63)
    expected = (1000 + 100 * (cols / 2 - 0.25)) * 1e-4
    np.testing.assert_allclose(ds["B12"].values[0][5, 1:63], expected, rtol=1e-5)
    # nearest for the scene classification, kept uint8
    assert ds["SCL"].dtype == np.uint8
    np.testing.assert_array_equal(ds["SCL"].values[0], np.repeat(np.repeat(scl, 2, 0), 2, 1))


def test_explicit_band_mapping(tmp_path: Path) -> None:
    grid = make_grid(shape=(20, 20))
    raw = seeded_reflectance(["x1", "x2", "x3"], grid.shape.yx, seed=3)
    path = write_multiband(tmp_path / "scene_20190704.tif", raw, grid, descriptions=False)
    sensor = SensorConfig(bands=["B04", "SKIP", "B08"])

    acq = acquisition_from_path(path, sensor)
    assert acq.assets == {"B04": (str(path), 1), "B08": (str(path), 3)}
    ds = load([acq], ["B04", "B08"], grid, sensor=sensor)
    np.testing.assert_allclose(ds["B08"].values[0], raw["x3"] * 1e-4, rtol=1e-6)

    with pytest.raises(MissingBandError, match="cannot tell which band"):
        acquisition_from_path(path, L2A)
    with pytest.raises(SourceError, match=r"has 3 band\(s\) but the band mapping names 2"):
        acquisition_from_path(path, SensorConfig(bands=["B04", "B08"]))

    described = write_multiband(
        tmp_path / "described_20190704.tif", raw, grid, descriptions=["B02", "B03", "B04"]
    )
    acq = acquisition_from_path(described, sensor)  # the mapping wins over descriptions
    assert acq.assets == {"B04": (str(described), 1), "B08": (str(described), 3)}


def test_landsat_envi_with_preset(shared_data: Path) -> None:
    path = shared_data / "landsat-taizhou" / "2000TM"
    if not path.exists():
        pytest.skip("landsat-taizhou data absent")
    sensor = SensorConfig(preset="landsat_tm_dn")
    acq = acquisition_from_path(path, sensor)
    # dated by the Landsat product id its ENVI header names (L71119038_03820000317_MTL.txt)
    assert acq.datetime == dt.datetime(2000, 3, 17)
    later = acquisition_from_path(shared_data / "landsat-taizhou" / "2003TM", sensor)
    assert later.datetime == dt.datetime(2003, 2, 6)
    assert sorted(acq.assets) == ["B02", "B03", "B04", "B08", "B11", "B12"]
    assert acq.assets["B11"] == (str(path), 5)
    assert acq.grid is not None and acq.grid.crs.to_epsg() == 32651
    assert acq.grid.shape.yx == (400, 400) and pixel_size(acq.grid) == 30.0

    window = acq.grid[100:164, 150:198]
    ds = load([acq], ["B04", "B11"], window, chunk_size=32, sensor=sensor)
    with rasterio.open(path) as src:
        dn = src.read(5, window=((100, 164), (150, 198))).astype(np.float32)
    expected = np.where(dn == 0, np.nan, dn / 255.0)
    np.testing.assert_allclose(ds["B11"].values[0], expected, rtol=1e-6)


def test_scale_offset_and_nodata(tmp_path: Path) -> None:
    grid = make_grid(shape=(16, 16))
    dn = np.full(grid.shape.yx, 2000, np.uint16)
    dn[3, 4] = 0
    declared = write_multiband(tmp_path / "a_20200101.tif", {"B04": dn}, grid, nodata=0)
    undeclared = write_multiband(tmp_path / "b_20200101.tif", {"B04": dn}, grid, nodata=None)
    baseline04 = SensorConfig(preset="sentinel2_l2a_baseline04")

    for path in (declared, undeclared):  # sensor.nodata (0) applies when the file declares none
        values = load([acquisition_from_path(path, baseline04)], ["B04"], grid, sensor=baseline04)
        values = values["B04"].values[0]
        assert np.isnan(values[3, 4])
        assert np.isfinite(values).sum() == grid.height * grid.width - 1
        np.testing.assert_allclose(values[0, 0], 2000 * 1e-4 - 0.1, rtol=1e-6)

    every_value = SensorConfig(nodata=None, scale=0.5, offset=1.0)
    ds = load([acquisition_from_path(undeclared, every_value)], ["B04"], grid, sensor=every_value)
    assert ds["B04"].values[0, 3, 4] == pytest.approx(1.0)
    assert ds["B04"].values[0, 0, 0] == pytest.approx(1001.0)


def _bright_centroid(image: np.ndarray, background: float) -> tuple[float, float]:
    weights = np.clip(np.nan_to_num(image - background), 0.0, None)
    rows, cols = np.indices(image.shape)
    return (
        float((rows * weights).sum() / weights.sum()),
        float((cols * weights).sum() / weights.sum()),
    )


@pytest.mark.parametrize("other", ["geographic", "utm"])
def test_second_acquisition_aligned_by_georeference(tmp_path: Path, other: str) -> None:
    # Target: imgs_1-like EPSG:4326 grid. The second date has other pixels, is smaller, or is in UTM.
    target = make_grid("EPSG:4326", left=54.5, top=24.4, resolution=1e-4, shape=(100, 100))
    lon, lat = 54.5055, 24.3945  # centre of target pixel (55, 55)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32640", always_xy=True)
    if other == "geographic":
        second = make_grid(
            "EPSG:4326",
            left=54.5,
            top=24.4,
            resolution=1.01e-4,
            resolution_y=0.995e-4,
            shape=(98, 97),
        )
    else:
        left, top = to_utm.transform(54.5003, 24.3998)
        second = make_grid("EPSG:32640", left=left, top=top, resolution=10.0, shape=(105, 98))

    def scene(grid: GeoBox, x: float, y: float) -> tuple[np.ndarray, tuple[float, float]]:
        """A 5 x 5 bright square centred on the pixel holding (x, y); and its centre (x, y)."""
        col, row = ~grid.transform @ (x, y)
        r, c = int(row), int(col)
        dn = np.full(grid.shape.yx, 500, np.uint16)
        dn[r - 2 : r + 3, c - 2 : c + 3] = 5000
        return dn, grid.transform @ (c + 0.5, r + 0.5)

    dn1, _ = scene(target, lon, lat)
    if other == "geographic":
        dn2, (cx, cy) = scene(second, lon, lat)
    else:
        dn2, (cx, cy) = scene(second, *to_utm.transform(lon, lat))
        cx, cy = to_utm.transform(cx, cy, direction="INVERSE")
    col2, row2 = ~target.transform @ (cx, cy)  # where the planted square must land on the target
    assert abs(col2 - 55.5) < 1 and abs(row2 - 55.5) < 1

    first = write_multiband(tmp_path / "one_20160120.tif", {"B08": dn1}, target)
    later = write_multiband(tmp_path / "two_20180328.tif", {"B08": dn2}, second)
    acqs = [acquisition_from_path(p, L2A) for p in (first, later)]
    assert check_overlap(target, acqs[1]) > 0.9

    stack = load(acqs, ["B08"], target, chunk_size=40)["B08"].values
    assert _bright_centroid(stack[0], 0.05) == pytest.approx((55.0, 55.0), abs=0.01)
    assert _bright_centroid(stack[1], 0.05) == pytest.approx((row2 - 0.5, col2 - 0.5), abs=0.1)
    assert stack[1][55, 55] > 0.45
    if other == "geographic":  # the second grid stops short of the target's last column and rows
        assert np.isnan(stack[1][:, 99]).all() and np.isnan(stack[1][99, :]).all()
        assert np.isfinite(stack[1][:90, :90]).all()


def test_results_independent_of_chunk_size(tmp_path: Path) -> None:
    target = make_grid("EPSG:4326", left=54.5, top=24.4, resolution=1e-4, shape=(70, 90))
    utm = Transformer.from_crs("EPSG:4326", "EPSG:32640", always_xy=True)
    left, top = utm.transform(54.5002, 24.3997)
    g10 = make_grid("EPSG:32640", left=left, top=top, resolution=10.0, shape=(64, 80))
    g20 = coarsen_grid(g10, 2)
    folder = tmp_path / "utm_20200601"
    write_band_folder(
        folder,
        "T40_20200601",
        {
            "B04": seeded_reflectance(["B04"], g10.shape.yx, 5)["B04"],
            "B11": seeded_reflectance(["B11"], g20.shape.yx, 6)["B11"],
        },
        {"B04": g10, "B11": g20},
        nodata=0,
    )
    acq = acquisition_from_path(folder, L2A)
    results = [load([acq], ["B04", "B11"], target, chunk_size=cs).compute() for cs in (13, 32, 128)]
    for other in results[1:]:
        for band in ("B04", "B11"):  # equal up to float32 rounding, NaN in the same places
            np.testing.assert_allclose(results[0][band].values, other[band].values, rtol=1e-6)
    assert np.isfinite(results[0]["B04"].values).mean() > 0.5
    assert np.isnan(results[0]["B04"].values).any()  # target pixels outside the footprint


# --- errors ----------------------------------------------------------------------------------


def test_missing_band(tmp_path: Path) -> None:
    grid = make_grid(shape=(8, 8))
    path = write_multiband(
        tmp_path / "s_20200101.tif", seeded_reflectance(["B02", "B03", "B04"], grid.shape.yx), grid
    )
    acq = acquisition_from_path(path, L2A)
    with pytest.raises(MissingBandError) as info:
        load([acq], ["B02", "B11"], grid)
    message = str(info.value)
    assert "acquisition s_20200101 has no band B11 (found: B02, B03, B04)" in message
    assert "--bands" in message and "\n" not in message


def test_truncated_file_fails_early_and_when_read(tmp_path: Path) -> None:
    grid = make_grid(shape=(64, 64))
    bands = seeded_reflectance(["B02", "B04"], grid.shape.yx, seed=7)
    path = write_multiband(tmp_path / "t_20200101.tif", bands, grid, blocksize=16)
    truncate_file(path, keep=0.6)
    with pytest.raises(CorruptInputError, match="t_20200101.tif"):
        acquisition_from_path(path, L2A)

    # Truncated after it was listed: the lazy read fails with the same error type.
    good = write_multiband(tmp_path / "u_20200101.tif", bands, grid, blocksize=16)
    acq = acquisition_from_path(good, L2A)
    ds = load([acq], ["B02"], grid, chunk_size=16)  # lazy: nothing read yet
    truncate_file(good, keep=0.5)
    with pytest.raises(CorruptInputError, match="u_20200101.tif"):
        ds.compute()

    # A band file of a folder, and a file that is not a raster at all.
    folder = tmp_path / "acq_20200101"
    files = write_band_folder(folder, "X_20200101", bands, grid, blocksize=16)
    truncate_file(files["B04"], keep=0.7)
    with pytest.raises(CorruptInputError, match="X_20200101_B04.tif"):
        acquisition_from_path(folder, L2A)
    # A raw format (ENVI): GDAL would read the missing tail as zeros; the size check catches it.
    envi = tmp_path / "scene_20000101"
    profile = {"driver": "ENVI", "count": 2, "dtype": "uint8", "height": 64, "width": 64}
    with rasterio.open(envi, "w", crs=grid.crs.to_wkt(), transform=grid.transform, **profile) as ds:
        ds.write(np.full((2, 64, 64), 100, np.uint8))
    two = SensorConfig(preset="landsat_tm_dn", bands=["B04", "B08"])
    assert acquisition_from_path(envi, two).assets["B08"] == (str(envi), 2)
    truncate_file(envi, keep=0.8)
    with pytest.raises(CorruptInputError, match="scene_20000101 is truncated"):
        acquisition_from_path(envi, two)

    junk = tmp_path / "junk_20200101.tif"
    junk.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(CorruptInputError, match="junk_20200101.tif"):
        acquisition_from_path(junk, L2A)


def test_no_georeference(tmp_path: Path) -> None:
    path = write_multiband(
        tmp_path / "plain_20200101.tif", seeded_reflectance(["B02"], (8, 8)), grid=None
    )
    with pytest.raises(SourceError, match="no georeference"):
        acquisition_from_path(path, L2A)


def test_non_overlapping_pair(tmp_path: Path) -> None:
    a = make_grid("EPSG:32650", left=500_000, top=3_500_000, shape=(32, 32))
    b = make_grid("EPSG:32650", left=600_000, top=3_500_000, shape=(32, 32))
    far = make_grid("EPSG:32632", left=500_000, top=5_000_000, shape=(32, 32))
    assert check_overlap(a, a) == pytest.approx(1.0)
    with pytest.raises(GridMismatchError, match="does not overlap"):
        check_overlap(a, b)
    with pytest.raises(GridMismatchError, match="does not overlap"):
        check_overlap(a, far)
    path = write_multiband(tmp_path / "b_20200101.tif", seeded_reflectance(["B02"], b.shape), b)
    acq = acquisition_from_path(path, L2A)
    with pytest.raises(GridMismatchError, match="acquisition b_20200101"):
        check_overlap(a, acq)
    with pytest.raises(GridMismatchError):
        load([acq], ["B02"], a)


def test_folder_without_acquisitions(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no acquisitions found"):
        LocalSource(LocalSourceConfig(path=tmp_path), L2A)
    with pytest.raises(SourceError, match="holds no band files"):
        acquisition_from_path(tmp_path / "empty", L2A)
    with pytest.raises(SourceError, match="does not exist"):
        LocalSource(LocalSourceConfig(path=tmp_path / "missing"), L2A)


# --- folder scan, search, SCL ------------------------------------------------------------------


def test_folder_scan_and_search(tmp_path: Path) -> None:
    grid = make_grid(shape=(32, 32))
    far = make_grid(left=700_000, shape=(32, 32))
    data = seeded_reflectance(["B02", "B04"], grid.shape.yx, seed=9)
    write_multiband(tmp_path / "S2_20200105.tif", data, grid)
    write_multiband(tmp_path / "S2_20200310.tif", data, far)  # elsewhere
    write_band_folder(tmp_path / "T50_20200301", "T50_20200301T030000", data, grid)
    write_band_folder(tmp_path, "T50_20200415T030000", data, grid)  # flat band files
    write_multiband(tmp_path / "nodate.tif", data, grid, datetime=dt.datetime(2020, 3, 20, 9, 0))
    (tmp_path / "README.txt").write_text("not imagery")
    (tmp_path / "labels").mkdir()

    source = LocalSource(LocalSourceConfig(path=tmp_path), L2A)
    assert source.name == "local"
    ids = [a.id for a in source.acquisitions]
    assert ids == [
        "S2_20200105",
        "T50_20200301",
        "S2_20200310",
        "nodate",
        "T50_20200415T030000",
    ]
    spring = TimeWindow(dt.date(2020, 2, 1), dt.date(2020, 4, 30))
    found = source.search(grid, spring)
    assert [a.id for a in found] == ["T50_20200301", "nodate", "T50_20200415T030000"]
    assert found[1].datetime == dt.datetime(2020, 3, 20, 9, 0)  # from TIFFTAG_DATETIME
    ds = source.load(found, ["B02", "B04"], grid, 16)
    assert ds.sizes == {"time": 3, "y": 32, "x": 32}
    np.testing.assert_allclose(ds["B04"].values[2], data["B04"] * 1e-4, rtol=1e-6)


def test_scl_optional(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    grid = make_grid(shape=(16, 16))
    data = seeded_reflectance(["B04", "B08"], grid.shape.yx, seed=4)
    data["B04"][0, 0] = 0
    without = acquisition_from_path(write_multiband(tmp_path / "a_20200101.tif", data, grid), L2A)
    scl = {**data, "SCL": np.full(grid.shape.yx, 9, np.uint8)}
    with_scl = acquisition_from_path(
        write_multiband(tmp_path / "b_20200111.tif", scl, grid, dtype=np.uint16), L2A
    )
    source = LocalSource(None, L2A, [without, with_scl])
    with caplog.at_level(logging.INFO, logger="changedetect.io.sources.local"):
        alone = source.load([without], ["B04", "B08", "SCL"], grid, 16)
        source.load([without], ["B04", "SCL"], grid, 16)
    assert "SCL" not in alone
    assert caplog.text.count("a_20200101 has no SCL or QA_PIXEL band") == 1

    mixed = source.load([without, with_scl], ["B04", "SCL"], grid, 8).compute()
    assert mixed["SCL"].dtype == np.uint8
    assert (mixed["SCL"].values[1] == 9).all()
    assert mixed["SCL"].values[0, 0, 0] == 0  # no data there
    assert (mixed["SCL"].values[0].ravel()[1:] == 7).all()  # unclassified, not masked


def test_names_and_dates() -> None:
    assert normalize_band("b2") == "B02" and normalize_band("B8A") == "B8A"
    assert normalize_band("Resize (ETM+ Meta (Band 1))") is None
    assert parse_date("S2A_OPER_MSI_L1C_TL_MTI__20160120T104345_A003020_T39QZG") == dt.datetime(
        2016, 1, 20, 10, 43, 45
    )
    assert parse_date("x_99999999_20200230_20200229") == dt.datetime(2020, 2, 29)
    assert parse_date("scene-2021-07-04", r"(\d{4}-\d{2}-\d{2})") == dt.datetime(2021, 7, 4)
    assert parse_date("2000TM") is None
    assert parse_date("2000TM", r"^(\d{4})") == dt.datetime(2000, 1, 1)


# --- real data ---------------------------------------------------------------------------------


def test_oscd_abudhabi_pair(shared_data: Path) -> None:
    city = shared_data / "oscd" / "abudhabi"
    if not (city / "imgs_1").exists():
        pytest.skip("OSCD abudhabi absent")
    sensor = SensorConfig(preset="sentinel2_l1c")
    before = acquisition_from_path(city / "imgs_1", sensor)
    after = acquisition_from_path(city / "imgs_2", sensor)
    assert before.datetime.date() == dt.date(2016, 1, 20)
    assert after.datetime.date() == dt.date(2018, 3, 28)
    grid = before.grid
    assert grid is not None and grid.crs == CRS.from_epsg(4326) and grid.shape.yx == (799, 785)
    assert after.grid is not None and after.grid.shape.yx == (795, 782)
    assert check_overlap(grid, after) > 0.99

    ds = load([before, after], ["B04", "B08", "B11"], grid, chunk_size=256).compute()
    assert ds.sizes == {"time": 2, "y": 799, "x": 785}
    for band in ("B04", "B08", "B11"):
        assert np.isfinite(ds[band].values).mean() > 0.99
        assert 0.05 < float(np.nanmedian(ds[band].values)) < 0.6

    # Aligned by georeference, the residual shift between the dates is the same in the top-left
    # and bottom-right corners (cropping imgs_2 at the corner would drift by ~2 px across).
    x, y = ds["B08"].values

    def best_shift(p: np.ndarray, q: np.ndarray) -> tuple[int, int]:
        scores = {}
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                a = p[3 + dy : p.shape[0] - 3 + dy, 3 + dx : p.shape[1] - 3 + dx]
                b = q[3:-3, 3:-3]
                ok = np.isfinite(a) & np.isfinite(b)
                scores[(dy, dx)] = np.corrcoef(a[ok], b[ok])[0, 1]
        return max(scores, key=scores.__getitem__)

    top_left = best_shift(x[:300, :300], y[:300, :300])
    bottom_right = best_shift(x[480:780, 460:760], y[480:780, 460:760])
    assert top_left == bottom_right
    assert max(abs(v) for v in top_left) <= 1


def test_make_grid_pixel_sizes() -> None:
    # non-square pixels, north-up
    g = make_grid(resolution=10, resolution_y=20, shape=(3, 4))
    assert g.transform == Affine(10, 0, 500_000, 0, -20, 3_500_000)


def test_qa_pixel_keeps_its_bits_by_nearest_neighbour(tmp_path: Path) -> None:
    """Landsat's QA_PIXEL bits are read as stored (uint16, never scaled or interpolated), from a
    band file named ``..._QA_PIXEL.tif`` or a band of a stack; an acquisition without one gets a
    layer that flags nothing over its data."""
    grid = make_grid(shape=(16, 16))
    data = seeded_reflectance(["B04", "B08"], grid.shape.yx, seed=5)
    qa = np.full(grid.shape.yx, 21824, np.uint16)  # clear land (Landsat 8-9 Collection 2)
    qa[4:8, 4:8] = 22280  # cloud, high confidence
    folder = tmp_path / "LC09_20230704"
    folder.mkdir()
    for band, values in data.items():
        write_multiband(folder / f"LC09_20230704_{band}.tif", {band: values}, grid)
    write_multiband(folder / "LC09_20230704_QA_PIXEL.tif", {"QA_PIXEL": qa}, grid)
    sensor = SensorConfig(preset="landsat_c2_l2")
    (filed,) = scan_folder(tmp_path, sensor)
    assert "QA_PIXEL" in filed.assets
    stacked = acquisition_from_path(
        write_multiband(tmp_path / "stack_20230720.tif", {**data, "QA_PIXEL": qa}, grid),
        sensor,
    )
    without = acquisition_from_path(
        write_multiband(tmp_path / "bare_20230805.tif", data, grid), sensor
    )
    # a coarser grid: nearest neighbour must not blend a cloud's bits with its neighbours'
    coarse = make_grid(shape=(8, 8), resolution=20.0)
    for target, chunk in ((grid, 8), (coarse, 4)):
        ds = (
            LocalSource(None, sensor, [filed, stacked, without])
            .load([filed, stacked, without], ["B04", "QA_PIXEL"], target, chunk)
            .compute()
        )
        assert ds["QA_PIXEL"].dtype == np.uint16
        for t in (0, 1):
            assert set(np.unique(ds["QA_PIXEL"].values[t])) == {21824, 22280}
        assert (ds["QA_PIXEL"].values[2] == 0).all()  # flags nothing
        if target is grid:  # the reflectance is scaled as Collection 2 Level-2 says
            assert np.allclose(ds["B04"].values[0], data["B04"] * 2.75e-5 - 0.2, atol=1e-6)


def test_a_file_rewritten_between_loads_is_read_anew(tmp_path: Path) -> None:
    """Band files stay open in the worker threads for the load that opened them: a later load
    (the next night) reads the file as it is now, even when its size and time stamps did not
    change; within one load a changed file is opened again."""
    import os

    grid = make_grid(shape=(64, 64))
    path = tmp_path / "a_20200101.tif"
    first = np.full(grid.shape.yx, 1000, np.uint16)
    write_multiband(path, {"B04": first}, grid, nodata=0)
    acq = acquisition_from_path(path, L2A)
    stamp = os.stat(path)
    assert float(load([acq], ["B04"], grid)["B04"].max()) == pytest.approx(0.1)
    with rasterio.open(path, "r+") as dst:  # in place: the same file, size and time stamps
        dst.write(first * 2, 1)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    again = os.stat(path)
    assert (again.st_ino, again.st_size, again.st_mtime_ns) == (
        stamp.st_ino, stamp.st_size, stamp.st_mtime_ns
    )  # fmt: skip
    assert float(load([acq], ["B04"], grid)["B04"].max()) == pytest.approx(0.2)
    # one load, read twice: a file changed in between is noticed by its new time stamp
    stack = load([acq], ["B04"], grid)
    assert float(stack["B04"].max()) == pytest.approx(0.2)
    with rasterio.open(path, "r+") as dst:
        dst.write(first * 3, 1)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    assert float(stack["B04"].max()) == pytest.approx(0.3)


def _undated(tmp_path: Path, name: str = "scene.tif") -> Path:
    grid = make_grid(shape=(20, 20))
    raw = seeded_reflectance(["B02", "B03", "B04"], grid.shape.yx, seed=3)
    return write_multiband(tmp_path / name, raw, grid)


def test_an_undated_acquisition_is_refused_not_dated_by_its_file_time(tmp_path: Path) -> None:
    path = _undated(tmp_path)
    with pytest.raises(SourceError, match=r"scene.*no date in its name.*--before-date"):
        acquisition_from_path(path, L2A)
    given = dt.datetime(2021, 7, 4)
    assert acquisition_from_path(path, L2A, when=given).datetime == given


@pytest.mark.parametrize(
    ("sidecar", "text", "expected"),
    [
        # ENVI's own field
        (
            "scene.hdr",
            "ENVI\nsamples = 20\nacquisition time = 2019-07-04T02:58:12Z\n",
            (2019, 7, 4),
        ),
        # a Collection 2 product id in the band names of a header
        (
            "scene.hdr",
            "ENVI\nband names = {LC08_L1TP_119038_20210917_20210925_02_T1_MTL.txt}\n",
            (2021, 9, 17),
        ),
        # the MTL file itself beside the raster
        (
            "scene_MTL.txt",
            'GROUP = X\n  DATE_ACQUIRED = 2011-05-02\n  SCENE_CENTER_TIME = "02:"\n',
            (2011, 5, 2),
        ),
    ],
)
def test_an_acquisition_is_dated_by_the_metadata_beside_it(
    tmp_path: Path, sidecar: str, text: str, expected: tuple[int, int, int]
) -> None:
    path = _undated(tmp_path)
    (tmp_path / sidecar).write_text(text)
    assert acquisition_from_path(path, L2A).datetime.date() == dt.date(*expected)


def test_a_grid_on_the_same_pixels_is_read_by_a_plain_window_and_no_other() -> None:
    from changedetect.io.sources.local import _aligned_origin_of

    utm = CRS.from_epsg(32649).to_wkt()
    src = (10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)

    def origin(transform, crs=utm, src_transform=src):
        return _aligned_origin_of(src_transform, (100, 120), utm, crs, transform, (40, 50))

    assert origin(src) == (0, 0)
    # 3 rows down, 5 columns right; and 2 columns left of the file (the rest is no data)
    assert origin((10.0, 0.0, 500_050.0, 0.0, -10.0, 3_999_970.0)) == (3, 5)
    assert origin((10.0, 0.0, 499_980.0, 0.0, -10.0, 4_000_000.0)) == (0, -2)
    # half a pixel off, another pixel size, another CRS, a rotation: the warper's job
    assert origin((10.0, 0.0, 500_005.0, 0.0, -10.0, 4_000_000.0)) is None
    assert origin((20.0, 0.0, 500_000.0, 0.0, -20.0, 4_000_000.0)) is None
    assert origin(src, crs=CRS.from_epsg(32650).to_wkt()) is None
    assert origin((10.0, 0.1, 500_000.0, 0.1, -10.0, 4_000_000.0)) is None


def _read_aligned_numpy(src, indexes, offset_rc, height, width, src_nodata, scale, offset):
    """The windowed reflectance read as numpy did it (the reference of the compiled one)."""
    row, col = offset_rc
    out = np.full((len(indexes), height, width), np.nan, "float32")
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, src.height), min(col + width, src.width)
    if r1 > r0 and c1 > c0:
        data = src.read(list(indexes), window=rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0))
        values = data.astype(np.float32)
        if src_nodata is not None:
            values[data == src_nodata] = np.nan
        out[:, r0 - row : r1 - row, c0 - col : c1 - col] = values
    if scale != 1.0 or offset != 0.0:
        out = out * np.float32(scale) + np.float32(offset)
    return out.astype(np.float32, copy=False)


@pytest.mark.parametrize(
    ("dtype", "nodata", "scale", "offset"),
    [
        ("uint16", 0, 1e-4, 0.0),
        ("uint16", None, 1e-4, -0.1),
        ("int16", -9999, 2.75e-5, -0.2),
        ("float32", None, 1.0, 0.0),
        ("float64", 0.0, 0.5, 0.25),
    ],
)
def test_the_compiled_aligned_read_is_numpys_to_the_bit(tmp_path, dtype, nodata, scale, offset):
    from changedetect.io.sources.local import _read_aligned

    rng = np.random.default_rng(4)
    data = rng.integers(-50, 12000, (2, 37, 45)).astype(dtype)
    if dtype.startswith("float"):
        data = data * 1.37
        data[0, 3, :] = np.nan
    data[:, 5:7, 2:9] = nodata if nodata is not None else data[:, 5:7, 2:9]
    path = tmp_path / "r.tif"
    profile = {"driver": "GTiff", "width": 45, "height": 37, "count": 2, "dtype": dtype}
    with rasterio.open(path, "w", **profile, nodata=nodata) as dst:
        dst.write(data)
    with rasterio.open(path) as src:
        for offset_rc, h, w in [((0, 0), 37, 45), ((4, 6), 20, 30), ((-3, 30), 16, 24)]:
            for indexes in ((1,), (2, 1)):
                got = _read_aligned(src, indexes, offset_rc, h, w, nodata, None, scale, offset)
                want = _read_aligned_numpy(src, indexes, offset_rc, h, w, nodata, scale, offset)
                assert got.dtype == want.dtype == np.float32
                assert got.tobytes() == want.tobytes()
                assert np.isfinite(got).any()


def test_a_band_files_chunk_is_one_graph_entry(tmp_path: Path) -> None:
    # the whole cube's graph is held while the pass runs: entries per chunk are memory that
    # grows with the AOI (20,000² px: 1,600 chunks a layer)
    grid = make_grid(shape=(64, 96))
    folder = tmp_path / "one_20200601"
    write_band_folder(
        folder, "T49_20200601", seeded_reflectance(["B04", "B08"], grid.shape.yx, 3), grid, nodata=0
    )
    stacked = write_multiband(
        tmp_path / "S2A_20200602T031539.tif",
        seeded_reflectance(["B04", "B08"], grid.shape.yx, 4),
        grid,
        nodata=0,
    )
    acqs = [acquisition_from_path(folder, L2A), acquisition_from_path(stacked, L2A)]
    n_chunks = 2 * 3
    for acq in acqs:
        ds = load([acq], ["B04", "B08"], grid, chunk_size=32)
        graph = dict(ds["B04"].data.__dask_graph__())
        reads = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("local-read")]
        assert len(reads) == n_chunks
    one_band = dict(load(acqs[:1], ["B04"], grid, chunk_size=32)["B04"].data.__dask_graph__())
    # the read, the grid's template and the stack over acquisitions: nothing taken out of a stack
    assert len(one_band) == 3 * n_chunks
    both = load(acqs, ["B04", "B08"], grid, chunk_size=32).compute()
    expected = seeded_reflectance(["B04"], grid.shape.yx, 3)["B04"] * np.float32(1e-4)
    np.testing.assert_allclose(both["B04"].values[0], expected, rtol=1e-6)


def _in_new_thread(work):
    import threading

    out: list = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join()
    return out[0]


def test_reading_env_is_entered_once_per_thread_with_the_read_options() -> None:
    import contextlib

    from changedetect.io.raster import GDAL_READ_OPTIONS, reading_env

    def first_and_second_read():
        assert not rasterio.env.hasenv()
        with reading_env():
            during = rasterio.env.getenv()
        after = rasterio.env.getenv()
        return during, after, reading_env()

    during, after, again = _in_new_thread(first_and_second_read)
    for key, value in GDAL_READ_OPTIONS.items():
        assert during[key] == value and after[key] == value
    assert isinstance(again, contextlib.nullcontext)


def test_reading_env_nests_inside_an_env_of_other_options() -> None:
    from changedetect.io.raster import GDAL_READ_OPTIONS, reading_env

    def read_inside_other_env():
        with rasterio.Env(GDAL_CACHEMAX=64 * 2**20):
            with reading_env():
                during = rasterio.env.getenv()["GDAL_CACHEMAX"]
            return during, rasterio.env.getenv()["GDAL_CACHEMAX"]

    during, after = _in_new_thread(read_inside_other_env)
    assert during == GDAL_READ_OPTIONS["GDAL_CACHEMAX"]
    assert after == 64 * 2**20
