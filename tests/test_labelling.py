"""Strip-by-strip, sparse labelling against the whole-grid reference, pixel for pixel."""

import numpy as np
import pytest

import changedetect.algorithms.labelling as labelling
from changedetect.algorithms.labelling import label_changed_pixels, label_patches, label_pixels
from changedetect.algorithms.patch_pixels import PatchPixels
from changedetect.testing.reference_labels import (
    reference_label_changed_pixels,
    reference_label_patches,
)


def _ring(mask, cy, cx, outer, inner):
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    mask |= (d2 <= outer**2) & (d2 > inner**2)


def random_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Speckle, blobs, thin lines, rings with holes (some holding patches, some nested), square
    frames (4-connected holes closed only at corners), and shapes on the grid's edges."""
    height, width = shape
    mask = rng.random(shape) < rng.uniform(0.0, 0.15)
    yy, xx = np.ogrid[:height, :width]
    for _ in range(rng.integers(0, 12)):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(0, 7)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    for _ in range(rng.integers(0, 5)):
        r0, c0 = rng.integers(0, height), rng.integers(0, width)
        length = rng.integers(3, max(height, width))
        kind = rng.integers(0, 3)  # down, across, diagonal
        steps = np.arange(length)
        rows = r0 + steps * (kind != 1)
        cols = c0 + steps * (kind != 0)
        ok = (rows < height) & (cols < width)
        mask[rows[ok], cols[ok]] = True
    for _ in range(rng.integers(0, 5)):
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        outer = rng.integers(3, 15)
        inner = rng.integers(1, outer)
        _ring(mask, cy, cx, outer, inner)
        if rng.random() < 0.5:  # something in the hole, maybe a ring in its turn
            _ring(mask, cy, cx, max(inner - 2, 1), max(inner - 4, 0))
    for _ in range(rng.integers(0, 4)):  # one-pixel square frames, some with a corner gap
        r0, c0 = rng.integers(0, height), rng.integers(0, width)
        size = rng.integers(3, 12)
        r1, c1 = min(r0 + size, height - 1), min(c0 + size, width - 1)
        mask[r0, c0 : c1 + 1] = mask[r1, c0 : c1 + 1] = True
        mask[r0 : r1 + 1, c0] = mask[r0 : r1 + 1, c1] = True
        if rng.random() < 0.5:
            mask[r0, c0] = False
        if rng.random() < 0.3:
            mask[(r0 + r1) // 2, (c0 + c1) // 2] = True
    return mask


def assert_same(pixels: PatchPixels, expected: np.ndarray, n_expected: int, what: str) -> None:
    assert pixels.n_labels == n_expected, what
    np.testing.assert_array_equal(pixels.raster(), expected, err_msg=what)
    np.testing.assert_array_equal(
        pixels.counts[1:], np.bincount(expected.ravel(), minlength=n_expected + 1)[1:], what
    )


@pytest.mark.parametrize("seed", range(60))
def test_strips_and_sparse_labels_are_the_whole_grid_labels(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 70)), int(rng.integers(1, 70)))
    mask = random_mask(rng, shape)
    flat = rng.permutation(np.flatnonzero(mask))  # the pass gathers them in chunk order
    for strip_rows in (1, 2, 3, 7, 512):
        monkeypatch.setattr(labelling, "STRIP_ROWS", strip_rows)
        for radius in (0, 1, 2):
            for min_pixels in (1, 5, 30):
                what = f"seed {seed}, strips of {strip_rows}, radius {radius}, unit {min_pixels}"
                expected, n = reference_label_changed_pixels(
                    flat, shape, radius=radius, min_pixels=min_pixels
                )
                got = label_changed_pixels(flat, shape, radius=radius, min_pixels=min_pixels)
                assert_same(got, expected, n, what)
        expected, n = reference_label_patches(mask, min_pixels=3)
        got, n_got = label_patches(mask, min_pixels=3)
        assert n_got == n
        np.testing.assert_array_equal(got, expected)


def test_holes_of_nested_patches_take_the_outermost_label(monkeypatch):
    monkeypatch.setattr(labelling, "STRIP_ROWS", 4)
    mask = np.zeros((40, 40), bool)
    _ring(mask, 20, 20, 18, 15)  # patch 1
    _ring(mask, 20, 20, 10, 7)  # patch 2, in patch 1's hole, with a hole of its own
    mask[19:22, 19:22] = True  # patch 3, in patch 2's hole
    got = label_pixels(
        np.flatnonzero(mask), mask.shape, close_radius=0, seed_radius=0, min_pixels=1
    )
    expected, n = reference_label_patches(mask, min_pixels=1)
    assert n == 3
    assert_same(got, expected, n, "nested rings")
    raster = got.raster()
    assert raster[20, 20] == 3 and raster[20, 25] == 1 and raster[20, 29] == 2
    assert raster[20, 33] == 1


def test_a_hole_open_at_a_corner_is_not_a_hole():
    mask = np.zeros((9, 9), bool)
    mask[2, 2:7] = mask[6, 2:7] = mask[2:7, 2] = mask[2:7, 6] = True
    mask[2, 2] = False  # 8-connected frame; its inside reaches the outside 4-connected? no
    got = label_pixels(
        np.flatnonzero(mask), mask.shape, close_radius=0, seed_radius=0, min_pixels=1
    )
    expected, n = reference_label_patches(mask, min_pixels=1)
    assert_same(got, expected, n, "frame")


def test_no_change_and_nothing_kept():
    shape = (30, 20)
    assert label_changed_pixels(np.zeros(0, np.int64), shape, radius=1, min_pixels=1).n_labels == 0
    flat = np.array([5, 300])
    pixels = label_changed_pixels(flat, shape, radius=1, min_pixels=1)
    assert pixels.n_labels == 0 and pixels.index.size == 0


@pytest.mark.parametrize("seed", range(4))
def test_larger_grids_with_many_strip_borders(monkeypatch, seed):
    rng = np.random.default_rng(100 + seed)
    shape = (240, 190)
    mask = random_mask(rng, shape) | random_mask(rng, shape)
    for _ in range(20):
        _ring(mask, rng.integers(0, 240), rng.integers(0, 190), 20, rng.integers(3, 18))
    flat = np.flatnonzero(mask)
    for strip_rows in (5, 16, 64):
        monkeypatch.setattr(labelling, "STRIP_ROWS", strip_rows)
        for radius in (1, 2):
            expected, n = reference_label_changed_pixels(flat, shape, radius=radius, min_pixels=10)
            got = label_changed_pixels(flat, shape, radius=radius, min_pixels=10)
            assert_same(got, expected, n, f"seed {seed}, strips {strip_rows}, radius {radius}")


def _bars(mask, row, cols, height=7):
    for col in cols:
        mask[row : row + height, col] = True


def _spaced_bars(width: int) -> np.ndarray:
    """Vertical bars 2 to 10 columns apart, so that for each radius some pairs are bridged by
    the closing and some lie just as far apart as runs of columns start to be left out."""
    mask = np.zeros((40, width), bool)
    cols = np.cumsum(np.arange(2, 11)) - 1
    _bars(mask, 3, cols)
    _bars(mask, 22, cols + 1, height=12)  # across strip borders, shifted by a column
    mask[18, cols[::2]] = True  # lone pixels above some of them
    return mask


def _edges() -> np.ndarray:
    """Patches on the grid's left and right edges and 1 to 4 columns away from them."""
    mask = np.zeros((50, 60), bool)
    for band, gap in enumerate(range(5)):
        row = 2 + 10 * band
        mask[row : row + 6, gap : gap + 3] = True
        mask[row : row + 6, 60 - gap - 3 : 60 - gap] = True
        mask[row + 2, gap + 4] = mask[row + 3, 60 - gap - 5] = True
    return mask


def _empty_strips() -> np.ndarray:
    """Patches with empty rows and strips between them, one open towards the empty rows below
    it (a U upside down: its inside is not a hole) and one closed above them."""
    mask = np.zeros((60, 80), bool)
    mask[2:8, 10:20] = True
    mask[3:6, 12:18] = False
    mask[6:8, 13:17] = False  # the opening, towards the empty rows below
    _ring(mask, 45, 60, 8, 4)
    mask[57:60, 0:3] = True
    return mask


def _wide_holes() -> np.ndarray:
    """A ring wider than a strip around empty columns, holding a blob and a ring with its own
    hole; beside it a frame whose hole reaches the strip borders."""
    mask = np.zeros((80, 120), bool)
    _ring(mask, 38, 40, 36, 32)
    mask[36:40, 30:33] = True  # in the hole, between columns left out
    _ring(mask, 38, 52, 7, 4)  # its hole is the big ring's too
    mask[10:13, 90:115] = mask[58:61, 90:115] = True
    mask[10:61, 90:93] = mask[10:61, 112:115] = True
    return mask


@pytest.mark.parametrize(
    "make",
    [
        lambda: _spaced_bars(70),
        _edges,
        _empty_strips,
        _wide_holes,
        lambda: np.zeros((30, 200), bool),
        lambda: np.ones((30, 40), bool),
    ],
    ids=["spaced bars", "edges", "empty strips", "wide holes", "no change", "all changed"],
)
def test_runs_of_columns_far_from_change_are_as_over_the_whole_width(monkeypatch, make):
    mask = make()
    flat = np.flatnonzero(mask)
    for strip_rows in (1, 4, 8, 512):
        monkeypatch.setattr(labelling, "STRIP_ROWS", strip_rows)
        for radius in (0, 1, 2, 3):
            for min_pixels in (1, 9):
                what = f"strips of {strip_rows}, radius {radius}, unit {min_pixels}"
                expected, n = reference_label_changed_pixels(
                    flat, mask.shape, radius=radius, min_pixels=min_pixels
                )
                got = label_changed_pixels(flat, mask.shape, radius=radius, min_pixels=min_pixels)
                assert_same(got, expected, n, what)
        expected, n = reference_label_patches(mask, min_pixels=1, seed_radius=1)
        got = label_pixels(flat, mask.shape, close_radius=0, seed_radius=1, min_pixels=1)
        assert_same(got, expected, n, f"strips of {strip_rows}, seeds only")


def test_a_hole_over_columns_left_out_is_filled(monkeypatch):
    monkeypatch.setattr(labelling, "STRIP_ROWS", 8)
    mask = _wide_holes()
    pixels = label_changed_pixels(np.flatnonzero(mask), mask.shape, radius=1, min_pixels=1)
    raster = pixels.raster()
    assert pixels.n_labels == 4  # the big ring, the frame, the small ring, the blob
    assert raster[38, 20] == raster[38, 60] == raster[38, 52] == 1
    assert raster[38, 31] == 4 and raster[38, 45] == 3
    assert raster[35, 102] == raster[10, 90] == 2
