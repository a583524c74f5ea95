import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio.features import rasterize
from scipy import ndimage

from changedetect.algorithms.labelling import clean_mask, label_patches
from changedetect.algorithms.patch_pixels import PatchPixels
from changedetect.algorithms.patches import (
    block_pixels,
    build_patches,
    patch_statistics,
    polygonise,
)


def blob_mask(shape=(120, 120)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = ((yy - 60) ** 2 + (xx - 60) ** 2) < 30**2  # a disk of radius 30 across chunk borders
    mask[5:8, 5:8] = True  # 9 px: below a 10 px unit
    mask[100, 100] = True  # speckle
    return mask


def test_one_disk_is_one_patch_speckle_and_small_dropped():
    mask = blob_mask()
    closed = clean_mask(mask)
    labels, n = label_patches(closed, min_pixels=10, seed_radius=1)
    assert n == 1
    area = np.count_nonzero(labels == 1)
    assert area == pytest.approx(np.pi * 30**2, rel=0.03)


def test_min_mapping_unit_and_hole_filling():
    mask = np.zeros((50, 50), bool)
    mask[10:30, 10:30] = True
    mask[18:21, 18:21] = False  # a hole
    mask[40:43, 40:43] = True  # 9 px
    labels, n = label_patches(mask, min_pixels=10)
    assert n == 1
    assert (labels[10:30, 10:30] == 1).all()
    labels, n = label_patches(mask, min_pixels=9)
    assert n == 2


def test_polygons_statistics_and_bbox():
    mask = np.zeros((40, 40), bool)
    mask[5:15, 20:30] = True
    labels, n = label_patches(mask, min_pixels=1)
    transform = Affine(10, 0, 1000, 0, -10, 5000)
    flat = np.flatnonzero(mask)
    values = {"d_ndvi": np.full(flat.size, -0.5, np.float32)}
    sparse = PatchPixels.from_raster(labels, n)
    stats = patch_statistics(sparse, flat, values)
    patches = build_patches(sparse, transform, stats, sparse.counts * 100.0)
    (patch,) = patches
    assert patch.geometry.area == pytest.approx(100 * 100.0)
    assert patch.geometry.bounds == pytest.approx((1200, 4850, 1300, 4950))
    assert patch.stats["d_ndvi"] == pytest.approx(-0.5)
    assert patch.bbox_rc == (5, 20, 15, 30)
    assert patch.area_m2 == pytest.approx(10000.0)


def pixels(*rows: str) -> np.ndarray:
    return np.array([[c == "X" for c in row] for row in rows])


def assert_valid_outline_of(geom, own: np.ndarray, transform: Affine) -> None:
    """`geom` is valid (OGC) and covers exactly the pixels of `own`, with their exact area."""
    assert shapely.is_valid(geom), shapely.is_valid_reason(geom)
    assert geom.geom_type in ("Polygon", "MultiPolygon")
    assert geom.area == own.sum() * abs(transform.a * transform.e)
    covered = rasterize([geom], out_shape=own.shape, transform=transform) > 0
    np.testing.assert_array_equal(covered, own)


TRANSFORM = Affine(10, 0, 1000, 0, -10, 5000)


@pytest.mark.parametrize(
    "mask",
    [
        pixels("XX..", "XX..", "..XX", "..XX"),  # two blocks touching at one corner
        pixels("X.X", ".X.", "X.X"),  # five pixels touching only at corners
        pixels(".X.", "X.X", ".X."),  # a diamond around a pixel that is not in it
        pixels("XXXX", "X..X", "X.X.", "XX.."),  # holes meeting the outside at corners
    ],
)
def test_pixels_touching_at_a_corner_give_a_valid_outline_of_exactly_those_pixels(mask):
    # one 8-connected label each: traced 8-connected, its ring passes twice through a corner
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    assert n == 1
    (geom,) = polygonise(labels, TRANSFORM).values()
    assert_valid_outline_of(geom, mask, TRANSFORM)


def test_patch_geometry_of_a_diagonal_patch_is_valid_and_keeps_its_area():
    mask = np.zeros((30, 30), bool)
    mask[5:15, 5:15] = mask[15:25, 15:25] = True  # two 10 x 10 squares meeting at a corner
    labels, n = label_patches(mask, min_pixels=1)
    assert n == 1
    flat = np.flatnonzero(mask)
    sparse = PatchPixels.from_raster(labels, n)
    stats = patch_statistics(sparse, flat, {"d_ndvi": np.full(flat.size, -0.5, np.float32)})
    (patch,) = build_patches(sparse, TRANSFORM, stats, sparse.counts * 100.0)
    assert_valid_outline_of(patch.geometry, labels == 1, TRANSFORM)
    assert patch.geometry.length == pytest.approx(8 * 100.0)  # the same edges as before
    assert patch.geometry.centroid.coords[0] == pytest.approx((1150.0, 4850.0))


@settings(max_examples=150, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 10), st.integers(1, 10))))
def test_every_label_outline_is_valid_and_covers_exactly_its_pixels(mask):
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    geoms = polygonise(labels, TRANSFORM)
    assert sorted(geoms) == list(range(1, n + 1))
    for index, geom in geoms.items():
        assert_valid_outline_of(geom, labels == index, TRANSFORM)


def test_no_change_in_no_patch_out():
    labels, n = label_patches(np.zeros((30, 30), bool), min_pixels=1)
    assert n == 0 and not labels.any()


def test_thin_lines_dropped_small_compact_patches_kept_whole():
    mask = np.zeros((40, 40), bool)
    mask[5, 2:38] = True  # a one-pixel line, e.g. an edge left by misregistration
    blob = np.zeros_like(mask)
    blob[20:24, 20:23] = True  # 12 px, compact
    blob[24, 21] = True
    mask |= blob
    closed = clean_mask(mask)
    labels, n = label_patches(closed, min_pixels=10, seed_radius=1)
    assert n == 1
    assert (labels > 0).sum() == blob.sum()  # kept whole, rim included


def test_cleaning_and_seeding_strip_by_strip_equal_the_whole_grid_operations(monkeypatch):
    from scipy import ndimage
    from skimage import morphology

    import changedetect.algorithms.labelling as patches

    rng = np.random.default_rng(5)
    # speckle, blobs and lines that cross the strips' borders, and touch the grid's edges
    mask = rng.random((97, 61)) < 0.12
    for cy, cx, r in rng.integers(0, 97, (25, 3)) % [97, 61, 6]:
        yy, xx = np.ogrid[:97, :61]
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 1) ** 2
    mask[:, 30] = True
    mask[0, :] = True
    monkeypatch.setattr(patches, "STRIP_ROWS", 7)
    for radius in (1, 2):
        disk = morphology.disk(radius)
        closed = ndimage.binary_closing(mask, structure=disk, border_value=0)
        core = ndimage.binary_erosion(closed, structure=disk, border_value=0)
        np.testing.assert_array_equal(patches.clean_mask(mask, radius=radius), closed)
        np.testing.assert_array_equal(patches.core_mask(closed, radius=radius), core)
        # seeds: a component stays when any of its pixels is a core pixel of the whole grid
        labels, n = label_patches(closed, min_pixels=3, seed_radius=radius)
        whole, n_whole = ndimage.label(closed, structure=np.ones((3, 3), bool))
        seeded = np.unique(whole[core])
        sizes = np.bincount(whole.ravel())
        expected = [k for k in seeded if k > 0 and sizes[k] >= 3]
        assert n == len(expected) > 2
        # each kept component labelled whole, in raster order
        firsts = [np.flatnonzero(whole.ravel() == k)[0] for k in expected]
        np.testing.assert_array_equal(labels.ravel()[firsts], np.arange(1, n + 1))
        for k in expected:
            assert (labels[whole == k] == labels.ravel()[firsts[expected.index(k)]]).all()


def test_labels_from_changed_pixels_are_those_of_the_cleaned_mask():
    from changedetect.algorithms.labelling import label_changed_pixels

    mask = blob_mask()
    mask[40:44, 100:118] = True
    mask[70, 5:40] = True  # a line without a core: dropped
    sparse = label_changed_pixels(np.flatnonzero(mask), mask.shape, radius=1, min_pixels=10)
    expected, n_expected = label_patches(clean_mask(mask), min_pixels=10, seed_radius=1)
    assert sparse.n_labels == n_expected == 2
    np.testing.assert_array_equal(sparse.raster(), expected)


def many_patches(shape=(157, 133), seed=3):
    """Labels of many patches: random blobs (several touching the grid's edges, some 8-connected
    only by a corner), a ring whose hole holds another patch, two patches side by side, a
    one-pixel patch in a corner; labels 1..n with none missing."""
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_dilation(rng.random(shape) > 0.993, iterations=3)
    labels, n = label_patches(mask, min_pixels=1)
    labels[100:130, 0:45] = 0
    labels[100:130, 0:30] = n + 1  # the ring, on the left edge
    labels[108:122, 8:22] = 0
    labels[111:119, 11:19] = n + 2  # the patch in its hole
    labels[100:130, 30:40] = n + 3  # beside the ring, touching it
    labels[-1, -1] = n + 4
    remap = np.zeros(n + 5, dtype=np.int32)
    present = np.unique(labels)
    remap[present] = np.arange(present.size, dtype=np.int32)
    return remap[labels], present.size - 1


def straightforward_pixels(values, labels, label):
    """One label's values over its bounding box, in raster order: what block_pixels replaces."""
    objects = ndimage.find_objects(labels)
    if label > len(objects) or objects[label - 1] is None:
        return values[..., :0, :0].reshape(*values.shape[:-2], 0)
    rows, cols = objects[label - 1]
    return values[..., rows, cols][..., labels[rows, cols] == label]


@pytest.mark.parametrize(
    ("row_chunks", "col_chunks"),
    [((40, 40, 40, 37), (50, 50, 33)), ((157,), (133,)), ((16,) * 9 + (13,), (7,) * 19)],
)
def test_block_pixels_gather_each_label_as_its_window_does(row_chunks, col_chunks):
    labels, n = many_patches()
    assert n > 40
    values = np.random.default_rng(0).random((2, 3, *labels.shape)).astype(np.float32)
    values[0, 1, ::7, ::5] = np.nan
    # every label, one that has no pixel, and a few left out on purpose
    wanted = [k for k in range(1, n + 1) if k % 5] + [n + 10]
    pixels = block_pixels(PatchPixels.from_raster(labels, n), wanted, row_chunks, col_chunks)
    starts = np.cumsum((0, *row_chunks)), np.cumsum((0, *col_chunks))
    gathered = np.concatenate(
        [
            values[..., starts[0][i] : starts[0][i + 1], starts[1][j] : starts[1][j + 1]].reshape(
                *values.shape[:2], -1
            )[..., at]
            for i, j, at in pixels.blocks
        ],
        axis=-1,
    )
    assert gathered.shape[-1] == np.isin(labels, wanted).sum()
    assert set(pixels.spans) == set(wanted)
    for label in wanted:
        start, stop = pixels.spans[label]
        got = gathered[..., pixels.order[start:stop]]
        expected = straightforward_pixels(values, labels, label)
        assert got.shape == expected.shape, label
        np.testing.assert_array_equal(got, expected)


def test_block_pixels_refuses_blocks_that_do_not_tile_the_grid():
    labels, _ = many_patches()
    with pytest.raises(ValueError, match="do not tile"):
        block_pixels(PatchPixels.from_raster(labels), [1], (100,), (133,))


def test_statistics_of_derived_values_in_parts_are_those_of_the_whole(monkeypatch):
    import changedetect.algorithms.patches as patches
    from changedetect.algorithms.detect.features import kept_values, pixel_features
    from changedetect.types import ANALYSIS_BANDS

    labels, n = label_patches(blob_mask((150, 150)) | (np.eye(150, dtype=bool)), min_pixels=1)
    rng = np.random.default_rng(11)
    flat = np.flatnonzero(rng.random(labels.size) < 0.5)  # inside and outside the patches
    k = len(ANALYSIS_BANDS)
    before = rng.uniform(0.0, 0.4, (k, flat.size)).astype(np.float32)
    after = rng.uniform(0.0, 0.4, (k, flat.size)).astype(np.float32)
    before[:, ::17] = np.nan
    test_values = {
        name: rng.normal(1, 1, flat.size).astype(np.float32)
        for name in ("evidence", "brightening", "score")
    }
    kept = kept_values(before, after, test_values)
    features = pixel_features(kept)
    assert len(features) > 25 and all(v.dtype == np.float32 for v in features.values())
    sparse = PatchPixels.from_raster(labels, n)
    whole = patch_statistics(sparse, flat, features)
    monkeypatch.setattr(patches, "STATISTICS_PART", 7)
    in_parts = patch_statistics(sparse, flat, kept, derive=pixel_features)
    assert list(in_parts) == list(whole)
    for name in whole:
        np.testing.assert_array_equal(in_parts[name], whole[name], name)
    assert np.isfinite(whole["ndvi_after"][1:]).all()


def test_reference_labels_are_uint16_until_there_are_more_components():
    """The whole-grid reference holds its labels as the pipeline did (uint16 while they fit)."""
    from changedetect.testing.reference_labels import reference_label_patches

    few = np.zeros((40, 40), bool)
    few[5:10, 5:10] = few[20:30, 20:30] = True
    labels, n = reference_label_patches(few, min_pixels=1)
    assert labels.dtype == np.uint16 and n == 2
    # 90,000 isolated pixels: more components than uint16 labels can number
    many = np.zeros((600, 600), bool)
    many[::2, ::2] = True
    many[98:142, 98:142] = False
    many[100:140, 100:140] = True  # one patch of 1,600 px, kept; the rest below the unit
    labels, n = reference_label_patches(many, min_pixels=2)
    assert labels.dtype == np.int32 and n == 1
    assert (labels[100:140, 100:140] == 1).all() and np.count_nonzero(labels) == 1600
    sparse, n_sparse = label_patches(many, min_pixels=2)
    assert n_sparse == 1
    np.testing.assert_array_equal(sparse, labels)
