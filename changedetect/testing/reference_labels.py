"""The whole-grid patch labelling the pipeline used before it went strip by strip and sparse
(:mod:`changedetect.algorithms.labelling`): the reference its results are compared against,
pixel for pixel. A mask and a label raster the size of the grid; for tests on small grids only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import morphology


def reference_label_changed_pixels(
    flat_index: np.ndarray, shape: tuple[int, int], *, radius: int, min_pixels: int
) -> tuple[np.ndarray, int]:
    """The closing of radius `radius` of the pixels at `flat_index`, labelled as
    :func:`reference_label_patches` does with seeds of the same radius."""
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    mask[flat_index] = True
    mask = mask.reshape(shape)
    if radius >= 1:
        disk = morphology.disk(radius)
        mask = ndimage.binary_closing(mask, structure=disk, border_value=0)
    return reference_label_patches(mask, min_pixels=min_pixels, seed_radius=radius)


def reference_label_patches(
    mask: np.ndarray, *, min_pixels: int, seed_radius: int | None = None
) -> tuple[np.ndarray, int]:
    """8-connected labels of `mask` with holes filled; components below `min_pixels`, or without
    a pixel whose disk of radius `seed_radius` lies in `mask`, removed; renumbered 1..n in raster
    order, then each patch's holes (4-connected) filled inside its bounding box, in label order,
    where no other patch is."""
    labels, n = _components(mask)
    if n == 0:
        return labels, 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    if seed_radius is not None and seed_radius >= 1:
        core = ndimage.binary_erosion(
            labels > 0, structure=morphology.disk(seed_radius), border_value=0
        )
        seeded = np.zeros(n + 1, dtype=bool)
        seeded[labels[core]] = True
        keep &= seeded
    keep[0] = False
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    labels = remap[labels].astype(labels.dtype)
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        own = labels[sl] == index
        filled = ndimage.binary_fill_holes(own)
        holes = filled & ~own & (labels[sl] == 0)
        labels[sl][holes] = index
    return labels, int(keep.sum())


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of `mask`: uint16 labels where they suffice, int32 when there are
    more than 65,535 components (as the pipeline held them)."""
    structure = np.ones((3, 3), dtype=bool)
    try:
        labels = np.empty(mask.shape, dtype=np.uint16)
        n = ndimage.label(mask, structure=structure, output=labels)
    except RuntimeError:  # scipy: "insufficient bit-depth in requested output type"
        labels = np.empty(mask.shape, dtype=np.int32)
        n = ndimage.label(mask, structure=structure, output=labels)
    return labels, n
