"""The compiled kernels of the change test against the numpy and scipy functions they replace,
one by one and in whole runs (the same clues, with the same confidences and geometry)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import chi2

from bench.scenes import run_scene
from changedetect.algorithms import composite_kernel
from changedetect.algorithms.composite import CompositeChunk
from changedetect.algorithms.detect import (
    _ABSORBING_INDEX,
    _B03,
    _B04,
    _B08,
    _B11,
    MAX_EVIDENCE,
    _evidence_table,
    kernels,
)
from changedetect.algorithms.masking import PixelMask
from changedetect.algorithms.tiles import Tiles, fetch_rows, tiles_of, whole
from changedetect.demo import demo_config
from changedetect.pipeline import run
from changedetect.testing.kernel_references import (
    REFERENCES,
    composite_chunk_reference,
    surface_state_reference,
)
from tests.factories import DATA


def with_references(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, reference in REFERENCES.items():
        monkeypatch.setattr(kernels, name, reference)
    monkeypatch.setattr(CompositeChunk, "fill", composite_chunk_reference)


SHAPES = [(1, 1), (1, 7), (6, 1), (2, 3), (37, 53), (128, 96)]


def image(shape: tuple[int, int], seed: int, holes: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.normal(0.1, 0.05, shape).astype(np.float32)
    # ties too: the network must pick the same value when neighbours are equal
    out[rng.random(shape) < 0.2] = np.float32(0.1)
    out[rng.random(shape) < holes] = np.nan
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_median_is_scipys_reflect_median_bit_for_bit(shape: tuple[int, int]) -> None:
    img = image(shape, seed=sum(shape))
    filled = np.where(np.isfinite(img), img, np.float32(0.0))
    expected = ndimage.median_filter(filled, size=3, mode="reflect")
    np.testing.assert_array_equal(kernels.median3x3(img, 0.0), expected)
    one_filled = np.where(np.isfinite(img), img, np.float32(1.0))
    np.testing.assert_array_equal(
        kernels.median3x3(img, 1.0), ndimage.median_filter(one_filled, size=3, mode="reflect")
    )


def test_band_medians_leave_missing_pixels_missing() -> None:
    cube = np.stack([image((40, 31), seed=k, holes=0.3) for k in range(3)])
    cube[1, 5, :] = np.inf
    out = kernels.median3x3_bands(cube)
    for k in range(3):
        filled = np.where(np.isfinite(cube[k]), cube[k], np.float32(0.0))
        expected = ndimage.median_filter(filled, size=3, mode="reflect")
        expected[~np.isfinite(cube[k])] = np.nan
        np.testing.assert_array_equal(out[k], expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_box_mean_is_the_nan_aware_nearest_box_mean(shape: tuple[int, int]) -> None:
    img = image(shape, seed=3 * sum(shape), holes=0.3)
    ok = np.isfinite(img)
    num = ndimage.uniform_filter(np.where(ok, img, np.float32(0.0)), 3, mode="nearest")
    den = ndimage.uniform_filter(ok.astype(np.float32), 3, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(ok, num / den, np.nan)
    out = kernels.box_mean3x3(img)
    assert np.array_equal(np.isnan(out), ~ok)
    np.testing.assert_allclose(out[ok], expected[ok], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [*SHAPES, (3, 40), (40, 3)])
@pytest.mark.parametrize("size", [1, 3, 9])
def test_share_passing_counts_the_neighbourhood(shape: tuple[int, int], size: int) -> None:
    passing = np.random.default_rng(size + sum(shape)).random(shape) < 0.4
    padded = np.pad(passing, size // 2).astype(np.int32)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
    expected = windows.sum(axis=(2, 3)).astype(np.float32) / np.float32(size * size)
    np.testing.assert_array_equal(kernels.share_passing(passing, size), expected)
    # and what the numpy test used: scipy's box filter, equal but for float rounding
    scipy_share = ndimage.uniform_filter(
        passing.astype(np.float32), size=size, mode="constant", cval=0.0
    )
    np.testing.assert_allclose(kernels.share_passing(passing, size), scipy_share, atol=1e-6)


@pytest.mark.parametrize("dof", [6.0, 4.37])
def test_evidence_lookup_is_numpys_interp_bit_for_bit(dof: float) -> None:
    grid, table = _evidence_table(dof)
    scale = np.float32(1.7)
    rng = np.random.default_rng(7)
    q = np.concatenate(
        [
            rng.chisquare(dof, 50_000) * scale,
            rng.uniform(0, float(grid[-1]) * 1.2 * scale, 50_000),
            grid[::97] * scale,  # on the grid's nodes, where a direct index may round across
            [0.0, -1.0, np.nan, np.inf, -np.inf, float(grid[-1]) * scale, 1e30],
        ]
    ).astype(np.float32)
    with np.errstate(invalid="ignore"):
        reference = np.interp(q / scale, grid, table, right=MAX_EVIDENCE)
    expected = np.where(np.isfinite(q), reference, np.nan).astype(np.float32)
    step = float(np.sqrt(grid[-1]) / (len(grid) - 1))
    out = kernels.evidence_lookup(q[None, :], scale, step, grid, table, MAX_EVIDENCE)
    np.testing.assert_array_equal(out.ravel(), expected)
    # the table is the exact tail probability
    assert out.ravel()[0] == pytest.approx(-chi2.logsf(q[0] / scale, dof) / np.log(10), rel=1e-4)


@pytest.mark.parametrize("dof", [6.0, 4.37, 5.2])
def test_the_lookup_finds_the_cell_whatever_its_first_guess(dof: float) -> None:
    # float64 values at, just below and just above every node, where the guess from the square
    # root lands in the next cell or the one before (float32 ones seldom come that close)
    grid, table = _evidence_table(dof)
    step = float(np.sqrt(grid[-1]) / (len(grid) - 1))
    x = np.concatenate([grid, np.nextafter(grid, 0), np.nextafter(grid, np.inf)])
    out = np.empty_like(x)
    one = np.float32(1.0)
    kernels._interpolate(x, one, step, grid, table, kernels._slopes(grid, table), 300.0, out)
    np.testing.assert_array_equal(out, np.interp(x, grid, table, right=300.0))


# --- whole runs: the kernels change no clue ---------------------------------------------------


def clue_table(path: Path) -> list[tuple]:
    features = json.loads(path.read_text())["features"]
    return [
        (f["properties"]["clue_id"], f["properties"]["confidence"], f["properties"]["area_m2"],
         f["properties"]["change_type"], json.dumps(f["geometry"]))
        for f in features
    ]  # fmt: skip


def test_surface_state_is_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    b = (0.3 * rng.random((6, 61, 47))).astype(np.float32)
    a = (b * 1.05 + 0.02 * rng.standard_normal(b.shape)).astype(np.float32)
    b[:, :4, :4] = np.nan  # no data
    a[2, 10:14, 5:9] = a[3, 10:14, 5:9] = 0.0  # red + NIR = 0: NDVI undefined
    b[1, 20:25, 20:25] = b[4, 20:25, 20:25] = -0.5  # below the dark object: clipped at 0
    a[5, 30, 30] = np.inf
    dark_b = np.array([0.01, 0.02, 0.03, 0.02, 0.01, 0.005], np.float32)
    dark_a = dark_b * np.float32(1.1)
    args = (b, a, dark_b, dark_a, _B03, _B04, _B08, _B11, _ABSORBING_INDEX)
    expected = surface_state_reference(*args)
    got = kernels.surface_state(*args)
    assert got.dtype == np.float32 and got.shape == (8, 61, 47)
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.isnan(got[1, 10:14, 5:9]).all() and np.isnan(got[:, :4, :4][[0, 2, 4, 6]]).all()


def test_the_demo_gives_the_same_clues_with_the_numpy_references(tmp_path, monkeypatch):
    (fast,) = run(demo_config(tmp_path / "kernels"))
    with_references(monkeypatch)
    (reference,) = run(demo_config(tmp_path / "numpy"))
    assert len(fast.clues) >= 30
    assert clue_table(fast.out_dir / "clues.geojson") == clue_table(
        reference.out_dir / "clues.geojson"
    )


@pytest.mark.slow
@pytest.mark.parametrize("scene", ["bordeaux", "mumbai", "taizhou"])
def test_real_scenes_give_the_same_patches_with_the_numpy_references(scene, monkeypatch):
    if not DATA.exists():
        pytest.skip(f"shared data not found at {DATA}")
    fast = run_scene(DATA, scene)
    with_references(monkeypatch)
    reference = run_scene(DATA, scene)
    assert len(fast.patches) >= 5
    assert [p.geometry.wkb for p in fast.patches] == [p.geometry.wkb for p in reference.patches]
    # the patch score averages the support share, now an exact count / 81 where scipy's box
    # filter rounded it: the same within float32 rounding
    np.testing.assert_allclose(fast.features, reference.features, rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("lever", "spread"), [(True, False), (False, False), (True, True)])
def test_squared_z_sum_is_numpys_bit_for_bit(shape, lever, spread) -> None:
    from changedetect.algorithms.detect import _Globals

    rng = np.random.default_rng(11)
    k = 6
    cube = (rng.standard_normal((4, k, *shape)) * 0.05 + 0.2).astype(np.float32)
    filtered, before, sb, sa = cube
    filtered[0, ::3] = np.nan
    before[1, ::2] = np.nan
    before[2, ..., -1:] = np.inf
    before[3, :1] = -np.inf
    sb[4, 1::2] = np.nan
    sa[5, ..., :1] = np.inf

    def f32(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    g = _Globals(
        f32(rng.uniform(0.9, 1.1, k)), f32(rng.uniform(0.1, 0.3, k)),
        f32(rng.uniform(0.1, 0.3, k)), f32(np.zeros(k)), f32(np.zeros(k)),
        f32(rng.normal(0, 0.01, k)), f32(rng.uniform(0.01, 0.05, k)),
        f32(rng.uniform(0.0, 0.2, k)), f32(rng.uniform(0.0, 0.2, k)), spread, 1.0, 6.0,
        f32(rng.uniform(0.0, 0.05, k) if lever else np.zeros(k)),
    )  # fmt: skip
    z = g.z_scores(filtered, sb, sa, before=before)
    expected = np.sum(z * z, axis=0)
    got = g.squared_z_sum(filtered, sb, sa, before)
    assert got.dtype == expected.dtype == np.float32
    assert got.tobytes() == expected.tobytes()
    if shape[0] > 3:
        assert np.isnan(got).any() and np.isfinite(got).any()


# --- fused passes of the test: numpy's results to the bit ------------------------------------


def line_statistics(k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gain, mx, my = rng.uniform(0.8, 1.2, k), rng.uniform(0.05, 0.3, k), rng.uniform(0.05, 0.3, k)
    return gain.astype(np.float32), mx.astype(np.float32), my.astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_filtered_differences_are_the_band_medians_of_the_differences(shape) -> None:
    from changedetect.algorithms.detect import _Globals

    b = np.stack([image(shape, seed=k) for k in range(6)])
    a = np.stack([image(shape, seed=10 + k) for k in range(6)])
    a[2] = b[2]  # a band without change: exact zeros (and ties) in the differences
    b[3, ..., :1] = np.inf
    gain, mx, my = line_statistics(6, seed=sum(shape))
    gain[2], mx[2], my[2] = 1.0, 0.0, 0.0
    got = kernels.filtered_differences(b, a, gain, mx, my)
    reference = REFERENCES["filtered_differences"](b, a, gain, mx, my)
    assert got.dtype == np.float32 and got.tobytes() == reference.tobytes()
    # and the compiled path it replaced: the differences in numpy, then the band medians
    g = _Globals(gain, mx, my, np.zeros(6, np.float32), np.zeros(6, np.float32))
    assert got.tobytes() == kernels.median3x3_bands(g.normalised_diff(b, a)).tobytes()


def evidence_cases(shape: tuple[int, int], seed: int, loose: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = rng.exponential(3.0, shape).astype(np.float32)
    flat = ev.reshape(-1)
    n = flat.size
    # the levels themselves, as float32 and just around, signed zeros, and no data
    special = [np.float32(6.0), np.float32(loose), np.nextafter(np.float32(loose), np.float32(9)),
               np.nextafter(np.float32(loose), np.float32(0)), np.float32(0.0), np.float32(-0.0),
               np.float32(np.nan), np.float32(300.0)]  # fmt: skip
    picks = rng.integers(0, len(special), n)
    chosen = rng.random(n) < 0.3
    flat[chosen] = np.array(special, np.float32)[picks[chosen]]
    return ev


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("support_size", [0, 1, 3, 9])
def test_decision_is_numpys_bit_for_bit(shape, support_size) -> None:
    loose = float(-np.log10(0.03))  # a level that float32 rounds up
    evidence = evidence_cases(shape, seed=support_size + sum(shape), loose=loose)
    plausible = np.random.default_rng(sum(shape)).random(shape) < 0.8
    args = (evidence, plausible, np.float32(6.0), np.float32(loose), support_size, np.float32(0.5))
    score, disturbed = kernels.decision(*args)
    expected_score, expected_disturbed = REFERENCES["decision"](*args)
    assert score.dtype == np.float32 and score.tobytes() == expected_score.tobytes()
    np.testing.assert_array_equal(disturbed, expected_disturbed)


def test_a_block_tests_the_same_as_with_the_numpy_steps(monkeypatch) -> None:
    from changedetect.algorithms.detect import ChangeTest, _Globals

    rng = np.random.default_rng(5)
    b = (0.05 + 0.25 * rng.random((6, 70, 90))).astype(np.float32)
    a = (b * 1.03 + 0.01 * rng.standard_normal(b.shape)).astype(np.float32)
    a[:, 30:50, 40:60] += 0.2  # a site
    b[:, :5, :5] = np.nan
    gain, mx, my = line_statistics(6, seed=1)
    k6 = np.full(6, 0.01, np.float32)
    g = _Globals(gain, mx, my, k6, k6, np.zeros(6, np.float32), k6, k6, k6, False, 1.1, 5.2, k6)
    # a (1, 1) support turns the supported test off
    for support in (9, 1):
        test = ChangeTest(g, 6.0, float(-np.log10(0.03)), support, 3)
        fast = test.evaluate(b, a)
        with monkeypatch.context() as patch:
            for name in ("filtered_differences", "decision", "surface_rules", "block_test"):
                patch.setattr(kernels, name, REFERENCES[name])
            slow = test.evaluate(b, a)
        assert fast.disturbed.any()
        for got, expected in zip(fast, slow, strict=True):
            assert got.tobytes() == expected.tobytes()


def test_the_levels_are_compared_in_float32_as_numpy_does() -> None:
    from changedetect.algorithms.detect import ChangeTest, _decision, _Globals

    ones = np.ones(6)
    test = ChangeTest(_Globals(ones, ones, ones, ones, ones), 6.0, float(-np.log10(0.03)), 9, 3)
    # evidence at the loose level rounded to float32, which lies above the level itself
    evidence = evidence_cases((40, 40), seed=3, loose=test.ev_loose)
    plausible = np.ones((40, 40), bool)
    score, disturbed = _decision(test, evidence, plausible)
    reference = REFERENCES["decision"](evidence, plausible, test.ev_strict, test.ev_loose, 9, 0.5)
    assert score.tobytes() == reference[0].tobytes()
    np.testing.assert_array_equal(disturbed, reference[1])


def box_mean_in_order(img: np.ndarray) -> np.ndarray:
    """The kernel's box mean in numpy: the nine values added in float32 from 0, row by row, as
    the kernel adds them (scipy's separable filter rounds differently)."""
    ok = np.isfinite(img)
    value = np.pad(np.where(ok, img, np.float32(0.0)), 1, mode="edge")
    weight = np.pad(ok.astype(np.float32), 1, mode="edge")
    h, w = img.shape
    total, n = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    for dy in range(3):
        for dx in range(3):
            total += value[dy : dy + h, dx : dx + w]
            n += weight[dy : dy + h, dx : dx + w]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, total / n, np.float32(np.nan))


@pytest.mark.parametrize("shape", [*SHAPES, (3, 40), (40, 3)])
def test_box_mean_adds_in_the_same_order_bit_for_bit(shape: tuple[int, int]) -> None:
    img = image(shape, seed=5 * sum(shape), holes=0.3)
    img[0, -1] = -np.float32(0.0)
    if img.size > 4:
        img.reshape(-1)[3] = np.inf
    assert kernels.box_mean3x3(img).tobytes() == box_mean_in_order(img).tobytes()


def surface_layers(shape: tuple[int, int], seed: int) -> np.ndarray:
    """(8, y, x) layers as `surface_state` gives them: vegetation before, little after, dry,
    so that each rule decides; NDVI after at its threshold (as float32 and as the Python
    float) over stripes wide enough for the median to pick it, brightness unchanged in places,
    missing pixels and zero brightness."""
    from changedetect.algorithms.detect import BARE_AFTER_NDVI

    rng = np.random.default_rng(seed)
    state = np.stack(
        [rng.uniform(0.4, 0.9, shape), rng.uniform(0.0, 0.6, shape),
         rng.uniform(-0.5, 0.05, shape), rng.uniform(-0.5, 0.05, shape),
         *rng.uniform(0.0, 0.4, (4, *shape))]
    ).astype(np.float32)  # fmt: skip
    at = np.float32(BARE_AFTER_NDVI)
    for k, value in enumerate([at, np.nextafter(at, np.float32(1)), np.nextafter(at, 0)]):
        state[1, 3 * k : 3 * k + 3, ::2] = value
    # and at the vegetation and water thresholds
    state[0, ::5] = state[1, 1::5] = np.float32(0.5)
    state[2, 2::7] = state[3, 3::7] = np.float32(0.0)
    # the left half neither brighter nor darker
    half = shape[1] // 2
    state[5, :, :half], state[7, :, :half] = state[4, :, :half], state[6, :, :half]
    state[:, rng.random(shape) < 0.05] = np.nan
    state[4:][rng.random((4, *shape)) < 0.05] = np.float32(0.0)
    return state


@pytest.mark.parametrize("shape", SHAPES)
def test_surface_rules_are_numpys_bit_for_bit(shape) -> None:
    from changedetect.algorithms.detect import _surface_rules

    state = surface_layers(shape, seed=sum(shape))
    levels = (np.float32(0.5), np.float32(0.17), np.float32(0.0))
    plausible, ratio = kernels.surface_rules(state, *levels)
    expected_plausible, expected_ratio = REFERENCES["surface_rules"](state, *levels)
    np.testing.assert_array_equal(plausible, expected_plausible)
    assert ratio.dtype == np.float32 and ratio.tobytes() == expected_ratio.tobytes()
    # the wrapper: the thresholds as the Python floats the numpy code compared with
    plausible, brightening = _surface_rules(state)
    expected_plausible, expected_ratio = REFERENCES["surface_rules"](state, 0.5, 0.17, 0.0)
    np.testing.assert_array_equal(plausible, expected_plausible)
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log(np.where(expected_ratio > 0, expected_ratio, np.nan))
    assert brightening.tobytes() == (0.5 * logs).astype(np.float32).tobytes()


# --- the test's passes fused, a row at a time, read from a block's tiles ----------------------


def tiled(block: np.ndarray, sides: tuple[int, int, int, int], seed: int) -> Tiles:
    """`block` (layer, y, x) as the 3 x 3 tiles a chunk and its halo come in, `sides` the
    (top, bottom, left, right) halo (0: none, a grid's edge): each tile part of a larger array
    of its own, at a place given by slices counted from the start or from the end."""
    rng = np.random.default_rng(seed)
    top, bottom, left, right = sides
    n_layers, h, w = block.shape
    ys, xs = [0, top, h - bottom, h], [0, left, w - right, w]
    parts: list[list] = []
    for r in range(3):
        parts.append([])
        for c in range(3):
            rows, cols = slice(ys[r], ys[r + 1]), slice(xs[c], xs[c + 1])
            if rows.start == rows.stop or cols.start == cols.stop:
                parts[-1].append(None)
                continue
            y0, x0, y_more, x_more = rng.integers(0, 4, 4)
            ph, pw = rows.stop - rows.start, cols.stop - cols.start
            array = rng.random((n_layers, y0 + ph + y_more, x0 + pw + x_more)).astype(block.dtype)
            array[:, y0 : y0 + ph, x0 : x0 + pw] = block[:, rows, cols]
            part_ys, part_xs = slice(y0, y0 + ph), slice(x0, x0 + pw)
            if rng.random() < 0.5:  # a strip facing the chunk: counted from the array's end
                end_y, end_x = y0 + ph - array.shape[1], x0 + pw - array.shape[2]
                part_ys = slice(y0 - array.shape[1], end_y or None)
                part_xs = slice(x0 - array.shape[2], end_x or None)
            parts[-1].append((array, (part_ys, part_xs)))
    return tiles_of(parts)


TILINGS = [(0, 0, 0, 0), (5, 5, 5, 5), (0, 5, 0, 5), (5, 0, 5, 0), (2, 1, 0, 3), (1, 1, 1, 1)]


def test_a_blocks_rows_are_read_from_its_tiles() -> None:
    block = np.random.default_rng(1).random((5, 23, 31)).astype(np.float32)
    for seed, sides in enumerate(TILINGS):
        tiles = tiled(block, sides, seed)
        assert tiles.shape == (23, 31)
        assert tiles.joined().tobytes() == block.tobytes()
        top, bottom, left, right = sides
        assert tiles.core().tobytes() == block[:, top : 23 - bottom, left : 31 - right].tobytes()
        out = np.full((3, 31), np.nan, np.float32)
        for y in range(23):
            fetch_rows(tiles.arrays, *tiles.geometry(), 2, y, out)
            assert out.tobytes() == block[2:5, y].tobytes()
    single = whole(block)
    assert single.joined().tobytes() == single.core().tobytes() == block.tobytes()


def block_inputs(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A cube of the test's inputs (before, after, their spreads, counts: (4 * 6 + 2, y, x)):
    a site that changed, missing pixels, infinities, reflectance below the dark offsets and
    bands at 0 (indices undefined), a band that did not change at all (ties in the medians)."""
    rng = np.random.default_rng(seed)
    b = (0.05 + 0.25 * rng.random((6, *shape))).astype(np.float32)
    a = (b * 1.03 + 0.01 * rng.standard_normal(b.shape)).astype(np.float32)
    h, w = shape
    a[:, h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] += np.float32(0.2)
    a[4] = b[4]
    b[:, rng.random(shape) < 0.05] = np.nan
    a[rng.random(a.shape) < 0.02] = np.nan
    b[rng.random(b.shape) < 0.01] = np.inf
    a[rng.random(a.shape) < 0.01] = -np.inf
    b[rng.random(b.shape) < 0.03] = np.float32(0.001)  # below the dark offset: clipped to 0
    a[2:4, rng.random(shape) < 0.03] = np.float32(0.0)  # red and NIR at 0: no NDVI
    spreads = (0.03 * rng.random((12, *shape))).astype(np.float32)
    spreads[rng.random(spreads.shape) < 0.1] = np.nan
    spreads[rng.random(spreads.shape) < 0.01] = np.inf
    counts = rng.integers(0, 5, (2, *shape)).astype(np.float32)
    return np.concatenate([b, a, spreads, counts])


def block_globals(seed: int, lever: bool, spread: bool):  # noqa: ANN201
    from changedetect.algorithms.detect import _Globals

    rng = np.random.default_rng(seed)
    gain, mx, my = line_statistics(6, seed)

    def f32(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    return _Globals(
        gain, mx, my, f32(rng.uniform(0.0, 0.03, 6)), f32(rng.uniform(0.0, 0.03, 6)),
        f32(rng.normal(0, 0.005, 6)), f32(rng.uniform(0.01, 0.03, 6)),
        f32(rng.uniform(0.0, 0.02, 6)), f32(rng.uniform(0.0, 0.02, 6)), spread, 1.1, 5.2,
        f32(rng.uniform(0.0, 0.05, 6) if lever else np.zeros(6)),
    )  # fmt: skip


def block_test_args(g, tiles: Tiles, spread: bool) -> tuple:  # noqa: ANN001
    from changedetect.algorithms.detect import _SURFACE_BANDS, _SURFACE_LEVELS, _lookup

    return (
        *tiles.geometry(), (tiles.arrays,) * 4, np.array([0, 6, 12, 18], np.int64), spread,
        (g.gain, g.mx, g.my),
        (g.loc, g.sigma**2, g.gain_error, g.noise_before**2, g.noise_after**2),
        bool(np.any(g.gain_error > 0)), _lookup(g.chi_scale, g.chi_dof),
        (g.dark_before, g.dark_after), _SURFACE_BANDS, _ABSORBING_INDEX, _SURFACE_LEVELS,
    )  # fmt: skip


@pytest.mark.parametrize("shape", [*SHAPES, (3, 40), (40, 3)])
@pytest.mark.parametrize(("lever", "spread"), [(True, False), (False, False), (True, True)])
def test_the_fused_test_is_numpys_steps_bit_for_bit(shape, lever, spread) -> None:
    cube = block_inputs(shape, seed=sum(shape))
    g = block_globals(seed=len(shape), lever=lever, spread=spread)
    for seed, sides in enumerate(TILINGS):
        if sides[0] + sides[1] >= shape[0] or sides[2] + sides[3] >= shape[1]:
            continue
        args = block_test_args(g, tiled(cube, sides, seed), spread)
        got = kernels.block_test(*args)
        expected = REFERENCES["block_test"](*args)
        for name, x, y in zip(("evidence", "plausible", "ratio"), got, expected, strict=True):
            assert x.dtype == y.dtype and x.shape == shape, name
            assert x.tobytes() == y.tobytes(), name
    if shape[0] > 30:
        evidence, plausible, ratio = got
        assert np.isnan(evidence).any() and (evidence > 6).any() and not plausible.all()
        assert np.isnan(ratio).any() and (ratio > 1).any() and (ratio < 1).any()


@pytest.mark.parametrize(("lever", "spread"), [(True, False), (True, True)])
def test_a_blocks_tiles_test_as_the_joined_block_does_step_by_step(monkeypatch, lever, spread):
    from changedetect.algorithms.detect import ChangeTest, split_inputs

    cube = block_inputs((48, 57), seed=4)
    g = block_globals(seed=2, lever=lever, spread=spread)
    test = ChangeTest(g, 6.0, float(-np.log10(0.03)), 9, 3)
    fused = [test.evaluate_tiles(tiled(cube, sides, seed)) for seed, sides in enumerate(TILINGS)]
    whole_block = test.evaluate(*split_inputs(cube)[:4])
    # each step by its kernel, on the joined block
    monkeypatch.setattr(ChangeTest, "_compiled", lambda self, dtypes: False)
    steps = test.evaluate(*split_inputs(cube)[:4])
    assert steps.disturbed.any() and np.isnan(steps.score).any()
    joined = test.evaluate_tiles(tiled(cube, (5, 5, 5, 5), seed=9)).change()
    for result in [*(t.change() for t in fused), whole_block, joined]:
        for got, expected in zip(result, steps, strict=True):
            assert got.tobytes() == expected.tobytes()


# --- a composite's chunk: the mask, count, medians and spreads in one pass --------------------


@pytest.mark.parametrize("n", range(1, 13))
def test_the_sorting_network_sorts_any_zeros_and_ones(n) -> None:
    # the 0-1 principle: a network that sorts every sequence of 0s and 1s sorts any sequence
    network = composite_kernel.sorting_network(n)
    ones = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    columns = ones.T.astype(np.float32).copy()
    composite_kernel._sort_columns(columns, network)
    np.testing.assert_array_equal(columns, np.sort(ones, axis=1).T)


COMPOSITE_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
CLASSES = (3, 8, 9, 10)


def composite_blocks(n_times: int, quality: str | None, seed: int, shape=(19, 43)) -> list:
    """A stack's chunks (time, y, x): 6 bands with ties, missing bands, pixels never valid,
    infinities (alone, both signs, and values whose sum overflows: infinite medians), and the
    quality layer (SCL classes, QA_PIXEL bits, or the valid mask itself: "given")."""
    rng = np.random.default_rng(seed)
    full = (n_times, *shape)
    bands = [rng.normal(0.2, 0.1, full).astype(np.float32) for _ in COMPOSITE_BANDS]
    for k, band in enumerate(bands):
        band[rng.random(full) < 0.25] = np.float32(0.1 + 0.01 * k)  # ties
        band[rng.random(full) < 0.08] = np.nan
    for band in bands:
        band[:, :2, :3] = np.nan  # no data in any acquisition
        band[:, 2, :4] = [np.inf, -np.inf, np.float32(3e38), np.float32(-3e38)]
        band[: n_times // 2, 3, :3] = [np.inf, np.float32(3e38), -np.inf]
        band[n_times // 2 :, 3, :3] = [-np.inf, np.float32(2e38), np.float32(1e-42)]
    blocks = list(bands)
    if quality == "SCL":
        blocks.append(rng.integers(0, 12, full).astype(np.uint8))
    elif quality == "QA_PIXEL":
        # each bit alone (the six rejected ones among them), and some together
        flags = np.array([0, 0, *(1 << np.arange(16)), 1 << 4 | 1, 1 << 6 | 1 << 2], np.uint16)
        blocks.append(rng.choice(flags, full))
    elif quality == "given":
        blocks.append(rng.random(full) < 0.7)  # not only where the bands have data
    if quality is not None:
        # the infinities kept, a few pixels rejected in every acquisition
        blocks[-1][:, 2:4] = {"SCL": 4, "QA_PIXEL": 0, "given": True}[quality]
        blocks[-1][:, 4, :5] = {"SCL": 9, "QA_PIXEL": 1 << 3, "given": False}[quality]
    return blocks


def composite_chunk(n_times: int, quality: str | None, members=None, min_valid=1):
    names = COMPOSITE_BANDS if quality in (None, "given") else (*COMPOSITE_BANDS, quality)
    mask = None if quality == "given" else PixelMask(COMPOSITE_BANDS, quality, CLASSES)
    members = tuple(range(n_times)) if members is None else members
    return CompositeChunk(names, len(COMPOSITE_BANDS), members, n_times, min_valid, mask)


def filled(chunk, blocks, with_spread: bool = True, reference: bool = False) -> np.ndarray:
    """The chunk's layers (medians, spreads, count), over a fill that shows what is left."""
    k = chunk.n_bands
    out = np.full((2 * k + 1, *blocks[0].shape[1:]), 7.0, np.float32)
    spreads = out[k : 2 * k] if with_spread else None
    if reference:
        with np.errstate(invalid="ignore", over="ignore"):  # infinite medians, as planted
            composite_chunk_reference(chunk, blocks, out[:k], spreads, out[2 * k])
    else:
        chunk.fill(blocks, out[:k], spreads, out[2 * k])
    return out


def assert_same_chunk(chunk, blocks, with_spread: bool = True) -> np.ndarray:
    got = filled(chunk, blocks, with_spread)
    expected = filled(chunk, blocks, with_spread, reference=True)
    assert got.tobytes() == expected.tobytes()
    return got


@pytest.mark.parametrize("quality", ["SCL", "QA_PIXEL", None, "given"])
@pytest.mark.parametrize("n_times", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("min_valid", [1, 2, 3])
def test_composite_chunk_is_numpys_bit_for_bit(quality, n_times, min_valid) -> None:
    blocks = composite_blocks(n_times, quality, seed=10 * n_times + min_valid)
    chunk = composite_chunk(n_times, quality, min_valid=min_valid)
    out = assert_same_chunk(chunk, blocks)
    k = chunk.n_bands
    assert np.isnan(out[:k, :2, :3]).all()
    assert quality == "given" or (out[2 * k, :2, :3] == 0).all()
    if n_times > 2:
        assert np.isfinite(out[k : 2 * k]).any() and np.isnan(out[k : 2 * k]).any()
        assert np.isinf(out[:k]).any()  # the infinite medians were taken
    assert_same_chunk(chunk, blocks, with_spread=False)


@pytest.mark.parametrize("quality", ["SCL", "QA_PIXEL", "given"])
@pytest.mark.parametrize("members", [(2,), (0, 3), (1, 2, 4), (0, 2, 3, 4, 5, 6, 7, 9)])
def test_composite_chunk_of_some_acquisitions_is_numpys(quality, members) -> None:
    blocks = composite_blocks(10, quality, seed=len(members))
    assert_same_chunk(composite_chunk(10, quality, members, min_valid=2), blocks)


def test_composite_chunk_of_many_acquisitions_is_numpys() -> None:
    blocks = composite_blocks(40, "SCL", seed=4, shape=(7, 33))
    assert_same_chunk(composite_chunk(40, "SCL", min_valid=5), blocks)


def test_composite_chunk_of_a_view_and_of_other_types_is_numpys() -> None:
    blocks = composite_blocks(5, "SCL", seed=8, shape=(30, 50))
    # views that are not contiguous (a rechunked stack's), and read-only ones
    views = [b[:, 3:25, 1::2] for b in blocks]
    views[1] = np.asfortranarray(views[1])
    views[2].flags.writeable = False
    chunk = composite_chunk(5, "SCL", min_valid=2)
    assert_same_chunk(chunk, views)
    # SCL in a wider type, a class beyond uint8 rejected
    wide = [*blocks[:-1], blocks[-1].astype(np.int16)]
    wide[-1][0, :5, :5] = 300
    assert_same_chunk(
        dataclasses.replace(chunk, mask=PixelMask(COMPOSITE_BANDS, "SCL", (9, 300))), wide
    )
    # bands in float64 (the medians computed in float64), and of two float types
    double = [b.astype(np.float64) for b in blocks[:-1]] + [blocks[-1]]
    assert_same_chunk(chunk, double)
    mixed = [*double[:3], *blocks[3:]]
    assert_same_chunk(chunk, mixed)
    # a valid mask given with integer bands (NaN-free: numpy masks them as float64)
    given = composite_chunk(5, "given", min_valid=2)
    integers = [np.random.default_rng(k).integers(0, 50, (5, 30, 50), np.int16) for k in range(6)]
    assert_same_chunk(given, [*integers, np.random.default_rng(1).random(integers[0].shape) < 0.6])
