"""PatchPixels against the label raster it stands for."""

import numpy as np
import pytest
from scipy import ndimage

from changedetect.algorithms.patch_pixels import PatchPixels

from .test_patches import many_patches


def test_lookups_windows_boxes_and_masks_are_those_of_the_raster():
    labels, n = many_patches()
    pixels = PatchPixels.from_raster(labels, n)
    np.testing.assert_array_equal(pixels.raster(), labels)
    np.testing.assert_array_equal(
        pixels.counts, np.bincount(labels.ravel(), minlength=n + 1) * (np.arange(n + 1) > 0)
    )
    rng = np.random.default_rng(2)
    at = rng.integers(0, labels.size, 5000)
    np.testing.assert_array_equal(pixels.label_at(at), labels.ravel()[at])
    for _ in range(200):
        r0, c0 = rng.integers(0, labels.shape[0]), rng.integers(0, labels.shape[1])
        r1, c1 = rng.integers(r0, labels.shape[0] + 1), rng.integers(c0, labels.shape[1] + 1)
        rows, cols = slice(int(r0), int(r1)), slice(int(c0), int(c1))
        np.testing.assert_array_equal(pixels.window(rows, cols), labels[rows, cols])
    for r0, r1 in ((0, labels.shape[0]), (0, 1), (37, 90), (156, 157), (40, 40)):
        at, label = pixels.in_rows(slice(r0, r1))
        part = labels[r0:r1].ravel()
        np.testing.assert_array_equal(at, np.flatnonzero(part))
        np.testing.assert_array_equal(label, part[at])
    objects = ndimage.find_objects(labels)
    seen = []
    for label, (rows, cols), own in pixels.patches():
        assert (rows, cols) == objects[label - 1]
        np.testing.assert_array_equal(own, labels[rows, cols] == label)
        seen.append(label)
    assert seen == list(range(1, n + 1))


@pytest.mark.parametrize("wanted", [[], [3], [1, 5, 7, 999]])
def test_only_keeps_the_wanted_labels_unchanged(wanted):
    labels, n = many_patches()
    kept = PatchPixels.from_raster(labels, n).only(wanted)
    expected = np.where(np.isin(labels, wanted), labels, 0)
    np.testing.assert_array_equal(kept.raster(), expected)
    assert kept.n_labels == n
    assert [label for label, _, _ in kept.patches()] == sorted(w for w in wanted if w <= n)


def test_an_empty_grid():
    pixels = PatchPixels.empty((5, 7))
    assert pixels.n_labels == 0 and not pixels.raster().any()
    assert list(pixels.patches()) == [] and pixels.label_at(np.arange(35)).sum() == 0
