import numpy as np
import pytest
from affine import Affine

from changedetect.algorithms.patches import (
    build_patches,
    clean_mask,
    core_mask,
    label_patches,
    patch_statistics,
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
    labels, n = label_patches(closed, min_pixels=10, seeds=core_mask(closed))
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
    stats = patch_statistics(labels, n, flat, values)
    patches = build_patches(labels, n, transform, stats, np.bincount(labels.ravel()) * 100.0)
    (patch,) = patches
    assert patch.geometry.area == pytest.approx(100 * 100.0)
    assert patch.geometry.bounds == pytest.approx((1200, 4850, 1300, 4950))
    assert patch.stats["d_ndvi"] == pytest.approx(-0.5)
    assert patch.bbox_rc == (5, 20, 15, 30)
    assert patch.area_m2 == pytest.approx(10000.0)


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
    labels, n = label_patches(closed, min_pixels=10, seeds=core_mask(closed))
    assert n == 1
    assert (labels > 0).sum() == blob.sum()  # kept whole, rim included
