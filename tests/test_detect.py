"""The change decision and the patch classifier on small constructed scenes.

Scenes are flat spectra of typical surfaces plus Gaussian sensor noise, wrapped as dask-backed
composites; each test changes one thing between the dates and checks what the detector makes of
it.
"""

from __future__ import annotations

import datetime as dt
import threading

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from changedetect.algorithms.classify import classify_patch
from changedetect.algorithms.detect import (
    ChangeLayers,
    detect_change,
    index_features,
    prepare_change_test,
    sample_windows,
)
from changedetect.models import Composite, TimeWindow
from changedetect.types import ANALYSIS_BANDS, CHANGE_TYPES

# Surface reflectance B02 B03 B04 B08 B11 B12
FOREST = (0.020, 0.035, 0.020, 0.220, 0.100, 0.045)
CROP_GREEN = (0.030, 0.070, 0.035, 0.460, 0.210, 0.090)
SOIL = (0.060, 0.080, 0.110, 0.170, 0.260, 0.210)
SLASH = (0.060, 0.080, 0.100, 0.170, 0.260, 0.190)
ROCK = (0.200, 0.240, 0.290, 0.330, 0.400, 0.350)
BARE = (0.120, 0.150, 0.190, 0.250, 0.330, 0.280)
WATER = (0.045, 0.055, 0.040, 0.025, 0.008, 0.005)
TURBID = (0.070, 0.095, 0.090, 0.050, 0.015, 0.010)
DARK_SPOIL = (0.050, 0.060, 0.070, 0.090, 0.130, 0.120)

SHAPE = (192, 192)


def scene(
    base: tuple[float, ...],
    shape: tuple[int, int] = SHAPE,
    patches: list[tuple[np.ndarray, tuple[float, ...]]] | None = None,
    *,
    noise: float = 0.006,
    seed: int = 0,
) -> np.ndarray:
    """(band, y, x) reflectance: `base` everywhere, each (mask, spectrum) painted on, plus noise."""
    cube = np.empty((len(ANALYSIS_BANDS), *shape), dtype=np.float32)
    cube[:] = np.asarray(base, dtype=np.float32)[:, None, None]
    for mask, spectrum in patches or []:
        cube[:, mask] = np.asarray(spectrum, dtype=np.float32)[:, None]
    rng = np.random.default_rng(seed)
    return (cube + rng.normal(0.0, noise, cube.shape)).astype(np.float32)


def composite(
    cube: np.ndarray, *, chunks: int = 64, spread: np.ndarray | None = None, count: int = 1
) -> Composite:
    """A dask-backed Composite from a (band, y, x) array (spread all NaN unless given), the median
    of `count` observations at every pixel."""

    def dataset(arr: np.ndarray) -> xr.Dataset:
        return xr.Dataset(
            {
                b: (("y", "x"), da.from_array(arr[i], chunks=chunks))
                for i, b in enumerate(ANALYSIS_BANDS)
            }
        )

    if spread is None:
        spread = np.full(cube.shape, np.nan, dtype=np.float32)
    counts = da.full(cube.shape[1:], count, dtype="int16", chunks=chunks)
    day = dt.date(2024, 5, 1)
    return Composite(
        TimeWindow(day, day), dataset(cube), xr.DataArray(counts, dims=("y", "x")), [],
        dataset(spread),
    )  # fmt: skip


def disk(center: tuple[int, int], radius: float, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def run(before: np.ndarray, after: np.ndarray, **kwargs) -> tuple[ChangeLayers, np.ndarray]:
    layers = detect_change(composite(before), composite(after), **kwargs)
    return layers, np.asarray(layers.disturbed.values, dtype=bool)


def test_bright_rock_blob_in_forest_is_detected():
    blob = disk((96, 100), 6)
    before = scene(FOREST, seed=1)
    after = scene(FOREST, patches=[(blob, ROCK)], seed=2)
    layers, disturbed = run(before, after)
    assert disturbed[blob].mean() > 0.95
    far_away = ~disk((96, 100), 9)
    assert disturbed[far_away].sum() == 0
    score = layers.score.values
    assert np.all((score >= 0) & (score <= 1))
    assert np.all(score[disturbed] >= 0.5)  # the decision boundary is score 0.5
    assert np.mean(score[blob] > 0.9) > 0.8 and np.nanmax(score[far_away]) < 0.5


def test_pure_noise_gives_about_the_false_alarm_rate():
    shape = (384, 384)
    rates = []
    for seed in (3, 4):
        before = scene(BARE, shape, noise=0.01, seed=seed)
        after = scene(BARE, shape, noise=0.01, seed=seed + 100)
        _, disturbed = run(before, after, false_alarm_rate=1e-3)
        rates.append(disturbed.mean())
    # the 3x3 median makes the tail a little heavier than Gaussian: within a factor of 2.5
    assert 0.4e-3 < np.mean(rates) < 2.5e-3, rates


def test_uniform_gain_and_offset_between_dates_is_not_change():
    rng = np.random.default_rng(5)
    patches = [
        (disk(tuple(rng.integers(20, 172, 2)), rng.uniform(5, 20)), spectrum)
        for spectrum in (SOIL, ROCK, CROP_GREEN, BARE, SOIL, ROCK)
    ]
    before = scene(FOREST, patches=patches, seed=6)
    after = scene(FOREST, patches=patches, seed=7) * 1.12 + 0.015
    layers, disturbed = run(before, after)
    assert disturbed.mean() < 1e-4
    gains = layers.diagnostics["gain"]
    assert all(1.05 < g < 1.2 for g in gains.values()), gains


def test_one_night_against_a_season_median_keeps_the_gain_and_a_stable_quarry_unflagged():
    """The before side is the median of nine acquisitions, the after side one acquisition: the
    after side is several times noisier. Over forest, whose visible bands span a narrow range,
    an orthogonal line tilts towards the noisier side and turns a small stable quarry into a
    "change"; the line weighted by the two sides' noise keeps the gain at its true 1."""
    rng = np.random.default_rng(21)
    truth = np.asarray(FOREST, dtype=np.float32)[:, None, None] * rng.uniform(0.5, 1.5, SHAPE)
    quarry = np.zeros(SHAPE, bool)
    quarry[80:95, 80:95] = True
    truth[:, quarry] = np.asarray(ROCK, dtype=np.float32)[:, None]
    noise = 0.01
    median_noise = noise * np.sqrt(np.pi / (2 * 9 + 1))  # the median of nine observations
    before = (truth + rng.normal(0, median_noise, truth.shape)).astype(np.float32)
    after = (truth + rng.normal(0, noise, truth.shape)).astype(np.float32)
    layers = detect_change(composite(before, count=9), composite(after, count=1))
    gains = layers.diagnostics["gain"]
    assert all(abs(g - 1) < 0.03 for g in gains.values()), gains
    assert not np.asarray(layers.disturbed.values)[quarry].any()
    # the same pixels taken as two single acquisitions (the orthogonal line): tilted. Fitted on
    # pixels it tilted by over 10 % and flagged the quarry; on local means (a ninth of the
    # noise) it tilts by about 5 %, still twice what the weighted line is off by
    equal = detect_change(composite(before, count=1), composite(after, count=1))
    tilt = max(abs(g - 1) for g in equal.diagnostics["gain"].values())
    assert tilt > 0.04 and tilt > 2 * max(abs(g - 1) for g in gains.values())


def test_the_gain_of_a_low_contrast_scene_is_not_tilted_by_the_noise_it_carries():
    """A second overpass of unchanged bare ground: the after image is the before image (its
    noise included) with a 3 % gain and fresh noise, so the after side is twice as noisy as the
    observation counts say. The ground's contrast is low (15 %) and spatially smooth, as real
    ground is; fitted on pixels the line tilted to gains of 1.04-1.07, fitted on 3x3 local means
    (a ninth of the noise, the same contrast) it finds 1.03."""
    rng = np.random.default_rng(23)
    field = ndimage.gaussian_filter(rng.normal(size=SHAPE), 4)
    field /= field.std()
    truth = np.asarray(BARE, dtype=np.float32)[:, None, None] * (1 + 0.15 * field)[None]
    before = (truth + rng.normal(0, 0.006, truth.shape)).astype(np.float32)
    after = (before * 1.03 + rng.normal(0, 0.006, truth.shape)).astype(np.float32)
    test, _ = prepare_change_test(composite(before), composite(after))
    assert np.all(np.abs(test.g.gain - 1.03) < 0.01), test.g.gain


def test_a_gain_the_scene_does_not_agree_on_is_trusted_less_on_bright_ground():
    """Three parts of the scene with gains 0.94, 1 and 1.06 (what the ground did, not the
    sensor): the gain moves when a part is left out, so its standard error is several times
    that of a scene with one gain everywhere, and the test allows a pixel that much more the
    farther its reflectance lies from the scene's typical one."""
    rng = np.random.default_rng(22)
    truth = np.asarray(BARE, dtype=np.float32)[:, None, None] * rng.uniform(0.5, 1.5, SHAPE)
    before = (truth + rng.normal(0, 0.006, truth.shape)).astype(np.float32)
    parts = np.repeat([0.94, 1.0, 1.06], SHAPE[1] // 3)[None, None, :]
    afters = {
        "uniform": truth * 1.05 + rng.normal(0, 0.006, truth.shape),
        "patchy": truth * parts + rng.normal(0, 0.006, truth.shape),
    }
    tests = {
        name: prepare_change_test(composite(before), composite(after.astype(np.float32)))[0]
        for name, after in afters.items()
    }
    errors = {name: float(t.g.gain_error.max()) for name, t in tests.items()}
    assert errors["patchy"] > 4 * errors["uniform"], errors
    g = tests["patchy"].g
    diff = np.full((len(ANALYSIS_BANDS), 1, 2), 0.02, dtype=np.float32)
    level = g.mx[:, None, None] + np.array([0.0, 0.3], dtype=np.float32)[None, None, :]
    z = g.z_scores(diff, None, None, before=level.astype(np.float32))
    assert np.all(np.abs(z[:, 0, 1]) < np.abs(z[:, 0, 0]))  # the bright pixel: smaller z
    assert np.allclose(z[:, 0, 0], g.z_scores(diff, None, None)[:, 0, 0])  # at the centre: none


def test_greening_of_stable_vegetation_is_not_change():
    field = np.zeros(SHAPE, bool)
    field[20:170, 20:90] = True
    soil = np.zeros(SHAPE, bool)
    soil[:, 120:] = True
    before = scene(FOREST, patches=[(soil, BARE)], seed=8)
    after = scene(FOREST, patches=[(soil, BARE), (field, CROP_GREEN)], seed=9)
    layers, disturbed = run(before, after)
    evidence = layers.features["evidence"].values
    assert np.median(evidence[field]) > -np.log10(1e-6)  # a strong change ...
    assert not disturbed[field].any()  # ... that is not a disturbance


def test_water_to_water_is_not_change():
    water = np.zeros(SHAPE, bool)
    water[60:130, :] = True
    before = scene(FOREST, patches=[(water, WATER)], seed=10)
    after = scene(FOREST, patches=[(water, TURBID)], seed=11)
    layers, disturbed = run(before, after)
    assert np.median(layers.features["evidence"].values[water]) > -np.log10(1e-6)
    assert not disturbed.any()


def test_clearing_is_a_disturbance_but_crop_harvest_is_not():
    field = np.zeros(SHAPE, bool)
    field[20:90, 20:170] = True
    clearing = disk((140, 96), 12)
    before = scene(FOREST, patches=[(field, CROP_GREEN)], seed=12)
    after = scene(FOREST, patches=[(field, SOIL), (clearing, SLASH)], seed=13)
    _, disturbed = run(before, after)
    assert disturbed[clearing].mean() > 0.95
    assert disturbed[field].mean() < 0.01


def test_dark_spoil_replacing_forest_is_a_disturbance():
    """Coal spoil or shale is darker in the NIR than the forest it replaced and hardly brighter
    elsewhere: "not brighter" like a harvest, but bare, so it is reported, down to small sites."""
    spoil, small = disk((70, 70), 14), disk((150, 150), 2.5)  # 21 px: two mapping units
    before = scene(FOREST, seed=14)
    after = scene(FOREST, patches=[(spoil, DARK_SPOIL), (small, DARK_SPOIL)], seed=15)
    layers, disturbed = run(before, after)
    assert disturbed[spoil].mean() > 0.95
    assert disturbed[small].mean() > 0.5
    assert disturbed[~(disk((70, 70), 16) | disk((150, 150), 4))].mean() < 0.001
    assert np.nanmean(layers.features["brightening"].values[spoil]) < 0  # truly not brighter


def test_own_temporal_spread_absorbs_changes_of_variable_pixels():
    left, right = disk((96, 50), 15), disk((96, 142), 15)
    shifted = tuple(v * 1.25 for v in BARE)
    before = scene(FOREST, patches=[(left, BARE), (right, BARE)], seed=14)
    after = scene(FOREST, patches=[(left, shifted), (right, shifted)], seed=15)
    spread = np.full(before.shape, 0.006, dtype=np.float32)  # sensor noise everywhere
    spread[:, left] = 0.08  # the left field varies a lot inside each window
    layers = detect_change(composite(before, spread=spread), composite(after, spread=spread))
    disturbed = layers.disturbed.values
    assert layers.diagnostics["uses_temporal_spread"]
    assert disturbed[right].mean() > 0.9
    assert disturbed[left].mean() < 0.05


@pytest.mark.parametrize("after_spread", ["absent", "all NaN"])
def test_the_before_spread_counts_when_the_after_side_is_a_single_acquisition(after_spread):
    # a night brings one acquisition: no spread of its own (no layer, or NaN where fewer than 3
    # observations), while a multi-year baseline has each pixel's spread across the years
    left, right = disk((96, 50), 15), disk((96, 142), 15)
    shifted = tuple(v * 1.25 for v in BARE)
    before = scene(FOREST, patches=[(left, BARE), (right, BARE)], seed=14)
    after = scene(FOREST, patches=[(left, shifted), (right, shifted)], seed=15)
    spread = np.full(before.shape, 0.006, dtype=np.float32)
    spread[:, left] = 0.08  # the left field varies a lot from year to year
    night = composite(after)  # spread all NaN
    if after_spread == "absent":
        night = Composite(night.window, night.bands, night.valid_count, [], None)
    layers = detect_change(composite(before, spread=spread), night)
    disturbed = layers.disturbed.values
    assert layers.diagnostics["uses_temporal_spread"]
    assert disturbed[right].mean() > 0.9
    assert disturbed[left].mean() < 0.05


def test_missing_data_gives_nan_score_and_no_decision():
    blob = disk((96, 96), 8)
    before = scene(FOREST, seed=16)
    after = scene(FOREST, patches=[(blob, ROCK)], seed=17)
    after[:, :, :30] = np.nan
    layers, disturbed = run(before, after)
    score = layers.score.values
    assert np.isnan(score[:, :30]).all() and not disturbed[:, :30].any()
    assert np.isfinite(score[:, 40:]).all()
    assert disturbed[blob].mean() > 0.95


def test_no_valid_data_at_all_is_all_nan_not_an_error():
    before = scene(FOREST, seed=23)
    after = np.full_like(before, np.nan)
    layers, disturbed = run(before, after)
    assert np.isnan(layers.score.values).all() and not disturbed.any()


def test_result_does_not_depend_on_chunk_size():
    shape = (300, 280)
    rng = np.random.default_rng(18)
    patches = [
        (disk(tuple(rng.integers(10, 270, 2)), rng.uniform(3, 12), shape), spectrum)
        for spectrum in (ROCK, SOIL, SLASH, BARE, ROCK, WATER)
    ]
    before = scene(FOREST, shape, seed=19)
    after = scene(FOREST, shape, patches=patches, seed=20)
    out = []
    for chunks in (64, 256):
        layers = detect_change(composite(before, chunks=chunks), composite(after, chunks=chunks))
        assert layers.disturbed.data.chunks[0][0] == min(chunks, shape[0])
        out.append((layers.disturbed.values, layers.score.values, layers.features.compute()))
    (d64, s64, f64), (d256, s256, f256) = out
    assert d64.any()
    np.testing.assert_array_equal(d64, d256)
    np.testing.assert_allclose(s64, s256, rtol=1e-5, atol=1e-6)
    for name in f64.data_vars:
        np.testing.assert_allclose(f64[name].values, f256[name].values, rtol=1e-5, atol=1e-6)


def test_only_a_bounded_sample_is_computed_eagerly():
    shape, chunk = (2048, 2048), 256
    computed: set[tuple[int, int, int]] = set()
    lock = threading.Lock()

    def block(seed: int, block_info=None) -> np.ndarray:  # noqa: ANN001 - dask's block_info
        (r0, r1), (c0, c1) = block_info[None]["array-location"][1:]
        with lock:
            computed.add((seed, r0, c0))
        rng = np.random.default_rng([seed, r0, c0])
        base = np.asarray(FOREST, dtype=np.float32)[:, None, None]
        return (base + rng.normal(0, 0.006, (6, r1 - r0, c1 - c0))).astype(np.float32)

    def lazy(seed: int) -> Composite:
        cube = da.map_blocks(
            block, seed, dtype=np.float32, chunks=((6,), (chunk,) * 8, (chunk,) * 8)
        )
        ds = xr.Dataset({b: (("y", "x"), cube[i]) for i, b in enumerate(ANALYSIS_BANDS)})
        day = dt.date(2024, 5, 1)
        return Composite(TimeWindow(day, day), ds, None, [], None)

    layers = detect_change(lazy(1), lazy(2))
    windows = sample_windows(shape)
    assert sum((ys.stop - ys.start) * (xs.stop - xs.start) for ys, xs in windows) < 0.2 * 2048**2
    sampled = {(r0, c0) for _, r0, c0 in computed}
    # only the blocks under the sample windows were computed (each window spans <= 2 x 2 blocks)
    assert 0 < len(sampled) <= 4 * len(windows) < 64
    computed.clear()
    corner = layers.disturbed[:chunk, :chunk].values
    assert corner.shape == (chunk, chunk) and not corner.any()
    # chained neighbourhood filters reach into neighbouring blocks, and no further
    assert max(max(r0, c0) for _, r0, c0 in computed) <= 2 * chunk


def test_index_features_include_what_the_classifier_reads():
    before = composite(scene(FOREST, seed=21)).bands
    after = composite(scene(ROCK, seed=22)).bands
    feats = index_features(before, after)
    for name in ("d_ndvi", "d_bsi", "d_ndbi", "ndvi_before", "ndvi_after", "redness_after"):
        assert name in feats
    assert float(feats["d_ndvi"].mean()) < -0.5


# ----------------------------------------------------------------------------------------------
# Classifier on typical per-patch means
# ----------------------------------------------------------------------------------------------


def _means(ndvi_b: float, ndvi_a: float, redness: float, redness_std: float, **extra: float):
    stats = {
        "ndvi_before": ndvi_b,
        "ndvi_after": ndvi_a,
        "d_ndvi": ndvi_a - ndvi_b,
        "redness_after": redness,
        "redness_after_sq": redness**2 + redness_std**2,
        "mndwi_after": -0.3,
        "brightening": 0.3,
    }
    stats.update(extra)
    return stats


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        # forest -> fresh limestone / reddish spoil: bare, reddish, uniform hue
        (_means(0.78, 0.10, 0.30, 0.04), "quarry"),
        (_means(0.75, 0.12, 0.65, 0.05), "quarry"),
        # meadow -> concrete and grey roofs: bare, grey
        (_means(0.75, 0.12, 0.10, 0.30), "construction"),
        # building site with red roofs and spoil among concrete: reddish on average, varied hue
        (_means(0.73, 0.13, 0.30, 0.36), "construction"),
        # bare field -> built: no canopy before, grey now
        (_means(0.28, 0.08, 0.13, 0.25), "construction"),
        # forest -> slash and soil: some NDVI left, ground got brighter
        (_means(0.79, 0.34, 0.41, 0.05, brightening=0.35), "vegetation_loss"),
        # bright green crop -> stubble or ploughed soil: NDVI lost, ground not brighter
        (_means(0.78, 0.25, 0.50, 0.05, brightening=-0.25), "other"),
        # cropland greening up
        (_means(0.30, 0.70, 0.05, 0.05), "other"),
        (_means(0.30, 0.45, 0.48, 0.05), "other"),
        # nothing usable
        ({"ndvi_before": float("nan"), "ndvi_after": 0.1}, "other"),
    ],
)
def test_classify_patch_types(stats, expected):
    assert classify_patch(stats) == expected
    assert classify_patch(stats) in CHANGE_TYPES


@pytest.mark.parametrize("dof", [1.0, 2.5, 3.7, 5.123456, 6.0, 12.3])
def test_chi_square_tail_and_gaussian_quantile_are_scipy_stats_to_the_bit(dof):
    from scipy.stats import chi2, norm

    from changedetect.algorithms.detect import (
        MAX_EVIDENCE,
        _chi2_logsf,
        _evidence_table,
        gaussian_isf,
    )

    grid, table = _evidence_table(dof)
    q_max = float(chi2.isf(10.0**-MAX_EVIDENCE, dof))
    assert grid[-1] == np.linspace(0.0, np.sqrt(q_max), 8192)[-1] ** 2
    assert _chi2_logsf(grid, dof).tobytes() == chi2.logsf(grid, dof).tobytes()
    expected = np.clip(-chi2.logsf(grid, dof) / np.log(10.0), 0.0, MAX_EVIDENCE)
    assert table.tobytes() == expected.tobytes()
    for p in (1e-6, 0.03, 0.5, 0.9, 10.0**-dof):
        assert repr(gaussian_isf(p)) == repr(float(norm.isf(p)))


def test_median_is_numpys_to_the_bit():
    from changedetect.algorithms.detect import median

    rng = np.random.default_rng(2)
    for n in (1, 2, 3, 10, 11, 4096, 590_001, 590_000):
        values = rng.standard_normal(n) * 0.3 + 0.1
        values[: n // 3] = np.round(values[: n // 3], 2)  # ties
        assert repr(median(values)) == repr(float(np.median(values))), n
        assert repr(median(np.abs(values))) == repr(float(np.median(np.abs(values)))), n
    with_nan = np.array([1.0, np.nan, 3.0])
    assert np.isnan(median(with_nan))
    assert np.isnan(median(with_nan.astype(np.float32)))
    for n in (1, 2, 3, 10, 11, 4096, 100_001, 100_000):
        values = (rng.standard_normal(n) * 0.3 + 0.1).astype(np.float32)
        values[: n // 3] = np.round(values[: n // 3], 2)
        assert repr(median(values)) == repr(float(np.median(values))), n
        # zeros of both signs in the middle: np.median's own choice of sign
        values = np.round(rng.standard_normal(n) * 0.01, 2).astype(np.float32)
        values[::2] = -values[::2]
        assert repr(median(values)) == repr(float(np.median(values))), n
    for values in (rng.standard_normal((200, 10)) * 0.3 + 0.1).astype(np.float32):
        assert repr(median(values)) == repr(float(np.median(values)))  # float32's mean
    counts = np.array([3, 1, 2, 2], np.int16)
    assert median(counts) == float(np.median(counts)) == 2.0


def test_median_and_robust_scale_overwriting_their_input_are_the_same_to_the_bit():
    from changedetect.algorithms.detect import median, robust_location_scale

    rng = np.random.default_rng(5)
    for dtype in (np.float64, np.float32):
        for n in (1, 2, 7, 4096, 100_001):
            values = np.round(rng.standard_normal(n) * 0.3, 2).astype(dtype)
            values[::7] = -0.0
            assert repr(median(values.copy(), overwrite=True)) == repr(median(values)), n
            scale = robust_location_scale(values.copy(), overwrite=True)
            assert scale == robust_location_scale(values), n
            values[::3] = np.nan
            assert robust_location_scale(values.copy(), overwrite=True) == (
                robust_location_scale(values)
            )
    assert np.isnan(median(np.array([1.0, np.nan, 3.0, 4.0]), overwrite=True))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (6, 1), (2, 2), (37, 64), (64, 37)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_local_means_are_scipys_uniform_filter_bit_for_bit(shape, dtype):
    from changedetect.algorithms.detect import statistics_kernels
    from changedetect.testing.statistics_reference import local_means_reference

    rng = np.random.default_rng(6)
    for missing in (0.0, 0.002, 0.3):
        window = (rng.standard_normal((6, *shape)) * 0.2 + 0.1).astype(dtype)
        window[1, :, ::5] = np.round(window[1, :, ::5], 2)
        window[2][rng.random(shape) < 0.3] = -0.0
        window[3][rng.random(shape) < missing] = np.nan
        window[4][rng.random(shape) < missing / 4] = np.inf
        out = np.full((6, 3 + window[0].size), 7.0)
        statistics_kernels.local_means(window, out, 2)
        expected = local_means_reference(window)
        assert out[:, 2:-1].tobytes() == expected.tobytes(), missing
        assert (out[:, :2] == 7.0).all() and (out[:, -1] == 7.0).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_group_sums_are_numpys_bincount_bit_for_bit(dtype):
    from changedetect.algorithms.detect import statistics_kernels
    from changedetect.testing.statistics_reference import group_sums_reference

    rng = np.random.default_rng(7)
    for m, n in ((1, 1), (5, 3), (10_001, 9), (40_000, 4)):
        x = (rng.standard_normal((6, m)) * 0.2 + 0.3).astype(dtype)
        y = (x * 1.02 + rng.standard_normal((6, m)) * 0.01).astype(dtype)
        x[0, ::3] = 0.25
        group = np.sort(rng.integers(0, n, m)) if m > 5 else rng.integers(0, n, m)
        centres = np.median(x, axis=1), np.median(y, axis=1)
        got = statistics_kernels.group_sums(x, y, *centres, group, n)
        expected = group_sums_reference(x, y, *centres, group, n)
        assert got.dtype == np.float64 and got.tobytes() == expected.tobytes(), (m, n)


STATISTICS_CASES = {
    "nine windows": {},
    "clouds": {"clouds": True},
    "scattered gaps: pixels": {"scattered": True, "shape": (32, 32)},
    "one window, odd edges": {"windows": 1, "shape": (97, 131), "clouds": True},
    "no spreads": {"spreads": None},
    "the after date's spread only": {"spreads": (False, True), "clouds": True},
    "no counts": {"counts": False},
    "float64 windows": {"dtype": np.float64, "windows": 3},
    "too few pixels": {"windows": 1, "shape": (20, 20)},
}


@pytest.mark.parametrize("case", STATISTICS_CASES.values(), ids=STATISTICS_CASES.keys())
@pytest.mark.parametrize("median_size", [3, 1, 5])
def test_the_scene_statistics_are_their_reference_to_the_bit(case, median_size):
    from changedetect.algorithms.detect import estimate_globals
    from changedetect.testing.statistics_reference import (
        estimate_globals_reference,
        statistics_sample,
    )

    samples = statistics_sample(3, **case)
    given = [[None if v is None else v.copy() for v in s] for s in samples]
    g = estimate_globals(samples, median_size)
    expected = estimate_globals_reference(samples, median_size)
    # the inputs are read, never reordered in place
    for sample, was in zip(samples, given, strict=True):
        for v, w in zip(sample, was, strict=True):
            assert (v is None and w is None) or v.tobytes() == w.tobytes()
    if expected is None:
        assert g is None and case.get("shape") == (20, 20)
        return
    assert g is not None
    assert g.use_spread == (case.get("spreads", ()) is not None)
    for name, value in vars(expected).items():
        got = np.asarray(getattr(g, name))
        assert got.dtype == np.asarray(value).dtype, name
        assert got.tobytes() == np.asarray(value).tobytes(), name


def test_robust_location_scale_is_that_of_the_finite_values_to_the_bit():
    from changedetect.algorithms.detect import MAD_TO_SIGMA, median, robust_location_scale

    def of_the_finite_values(sample: np.ndarray) -> tuple[float, float]:
        finite = sample[np.isfinite(sample)]
        if finite.size == 0:
            return 0.0, 1.0
        med = median(finite)
        return med, max(median(np.abs(finite - med)) * MAD_TO_SIGMA, 1e-6)

    rng = np.random.default_rng(4)
    for dtype in (np.float64, np.float32):
        for n in (1, 2, 7, 4096, 100_001):
            values = (rng.standard_normal(n) * 0.3 + 0.1).astype(dtype)
            assert robust_location_scale(values) == of_the_finite_values(values), n
            values[::3] = np.nan
            values[1::5] = np.inf
            assert robust_location_scale(values) == of_the_finite_values(values), n
    rows = rng.standard_normal((6, 300))
    assert robust_location_scale(rows[2]) == of_the_finite_values(rows[2])
    assert robust_location_scale(rows) == of_the_finite_values(rows)
    assert robust_location_scale(np.full(5, np.nan)) == (0.0, 1.0)


def test_the_brightening_of_a_few_pixels_is_that_of_the_whole_block():
    # the pass takes the logarithm at the changed pixels only: numpy's float32 logarithm (SIMD
    # loops, their tails masked) must give each value the same bits whatever the array's length,
    # the value's place in it, the array's alignment or strides
    from changedetect.algorithms.detect import brightening

    rng = np.random.default_rng(0)
    special = [0.0, -0.0, 1.0, 2.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38, -1.0]
    ratio = np.concatenate(
        [
            rng.lognormal(0.0, 1.0, 20_000),
            rng.uniform(0.999, 1.001, 5_000),  # about 1, where the logarithm is about 0
            np.exp(rng.uniform(-80.0, 80.0, 5_000)),
            rng.uniform(1e-45, 1e-37, 1_000),  # subnormal
            rng.uniform(-1.0, 1.0, 2_000),
            np.repeat(special, 100),
        ]
    ).astype(np.float32)
    bits = rng.integers(0, 2**32, 5_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ratio = np.concatenate([ratio, bits])
    rng.shuffle(ratio)
    block = np.resize(ratio, (211, 223))
    whole = brightening(block)
    buffer = np.empty(block.size + 16, np.float32)
    for n in [*range(40), 63, 64, 65, 127, 128, 129, 1_000, 5_000]:
        for _ in range(3):
            rows, cols = rng.integers(0, 211, n), rng.integers(0, 223, n)
            expected = whole[rows, cols].tobytes()
            assert brightening(block[rows, cols]).tobytes() == expected
            offset = int(rng.integers(0, 16))
            buffer[offset : offset + n] = block[rows, cols]
            assert brightening(buffer[offset : offset + n]).tobytes() == expected
    view = block[3:, 1::3]
    assert brightening(view).tobytes() == whole[3:, 1::3].tobytes()
    assert brightening(view[::2]).tobytes() == whole[3:, 1::3][::2].tobytes()
