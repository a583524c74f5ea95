"""From labelled patches to their outlines, statistics and pixels: polygonise, measure, gather.

The patches come from :mod:`changedetect.algorithms.labelling` as :class:`PatchPixels` (sparse:
no whole-grid label raster); each function here works on one patch's bounding box, or on the
patch pixels themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import shapely
from affine import Affine
from rasterio import features as rio_features
from scipy import ndimage
from shapely.geometry import shape

from ..models import Patch
from .jit import ngjit
from .patch_pixels import PatchPixels


def polygonise(labels: np.ndarray, transform: Affine) -> dict[int, object]:
    """:func:`outline` of each label of a label raster (for small rasters: the pipeline
    outlines each patch of its :class:`PatchPixels` in :func:`build_patches`)."""
    geoms: dict[int, object] = {}
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is not None:
            geoms[index] = outline(labels[sl] == index, transform, sl[0].start, sl[1].start)
    return geoms


def outline(own: np.ndarray, transform: Affine, row0: int = 0, col0: int = 0) -> object:
    """Valid (OGC) shapely geometry (grid CRS) covering exactly the pixels of `own`, a window
    whose top left pixel is (`row0`, `col0`) on the grid of `transform`.

    Patches are 8-connected, but they are traced 4-connected: an 8-connected trace of pixels
    that touch only at a corner gives one ring passing twice through that corner, a
    self-intersecting ring that GIS tools reject. Traced 4-connected, each piece is a valid
    polygon (a hole may touch its shell at a corner, which OGC allows), and the union of the
    pieces is a valid Polygon or MultiPolygon whose parts meet at corners only. Both traces follow
    the same pixel edges, so area, perimeter, hull and centroid do not change; nothing is
    buffered or snapped.
    """
    box_transform = transform @ Affine.translation(col0, row0)
    parts = [
        shape(geom)
        for geom, _ in rio_features.shapes(
            own.astype(np.uint8), mask=own, transform=box_transform, connectivity=4
        )
    ]
    geom = parts[0] if len(parts) == 1 else shapely.union_all(parts)
    if not geom.is_valid:  # not seen from a 4-connected trace: repaired rather than written
        geom = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    return geom


#: Pixels whose features are derived at a time in :func:`patch_statistics`.
STATISTICS_PART = 2**18


class PixelColumn(Protocol):
    """One value per pixel, sliced like a 1-d array: an array, or values read from a file a
    slice at a time (the pass's spilled values, :mod:`changedetect.engine.pixel_values`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, part: slice, /) -> np.ndarray: ...


def patch_statistics(
    pixels: PatchPixels,
    flat_index: np.ndarray,
    values: Mapping[str, PixelColumn],
    derive: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Mean of each sparse per-pixel value over each label 0..n_labels (NaN-aware).

    `flat_index` holds raveled pixel positions where `values` were gathered; pixels outside any
    kept label are ignored. The values are read, labelled and (with `derive`) derived
    STATISTICS_PART pixels at a time, so only that many pixels' labels and derived values exist
    at once; with `derive`, the means are of the values it derives from `values`. The sums run
    over the pixels in order as one ``np.bincount`` would.
    """
    n_labels = pixels.n_labels
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for start in range(0, flat_index.size, STATISTICS_PART) if flat_index.size else [0]:
        part = slice(start, start + STATISTICS_PART)
        part_values = {name: v[part] for name, v in values.items()}
        part_labels = pixels.label_at(flat_index[part])
        for name, vals in (derive(part_values) if derive else part_values).items():
            finite = np.isfinite(vals) & (part_labels > 0)
            total = sums.setdefault(name, np.zeros(n_labels + 1))
            count = counts.setdefault(name, np.zeros(n_labels + 1, dtype=np.int64))
            _accumulate(total, count, part_labels[finite], vals[finite])
    with np.errstate(invalid="ignore", divide="ignore"):
        return {name: sums[name] / counts[name] for name in sums}


@ngjit
def _accumulate(
    total: np.ndarray, count: np.ndarray, labels: np.ndarray, values: np.ndarray
) -> None:
    # what np.bincount does with weights, continued from earlier parts: in double, in order
    for i in range(labels.shape[0]):
        total[labels[i]] += np.float64(values[i])
        count[labels[i]] += 1


def build_patches(
    pixels: PatchPixels,
    transform: Affine,
    stats: Mapping[str, np.ndarray],
    areas_m2: np.ndarray,
) -> list[Patch]:
    """Patch objects for labels 1..n: geometry, area, pixel count, bbox and mean statistics;
    each outlined inside its own bounding box."""
    patches = []
    for label, (rows, cols), own in pixels.patches():
        patches.append(
            Patch(
                label=label,
                geometry=outline(own, transform, rows.start, cols.start),
                area_m2=float(areas_m2[label]),
                n_pixels=int(pixels.counts[label]),
                stats={k: float(v[label]) for k, v in stats.items()},
                bbox_rc=(rows.start, cols.start, rows.stop, cols.stop),
            )
        )
    return patches


@dataclass(frozen=True)
class BlockPixels:
    """Where the pixels of some labels lie in a grid cut into blocks, for gathering them from a
    chunked (dask) array one block at a time rather than one label's window at a time.

    Gathering ``flat_block[..., positions]`` from each of `blocks` in turn and concatenating the
    results along the pixel axis gives every wanted pixel once; taking ``order[start:stop]`` of
    that (with ``(start, stop) = spans[label]``) gives one label's pixels in raster order, which
    is the order of the label's pixels in any window around it.
    """

    blocks: list[tuple[int, int, np.ndarray]]
    """(block row, block column, flat positions inside the block) of each block holding any."""
    order: np.ndarray
    """Permutation of the concatenated pixels into label order, raster order within a label."""
    spans: dict[int, tuple[int, int]]
    """label -> (start, stop) in `order`; an empty span for a wanted label without a pixel."""


def block_pixels(
    pixels: PatchPixels,
    wanted: Sequence[int],
    row_chunks: Sequence[int],
    col_chunks: Sequence[int],
) -> BlockPixels:
    """The pixels of the `wanted` labels, block by block (blocks of `row_chunks` x `col_chunks`
    pixels, as dask's ``chunks`` gives them); see :class:`BlockPixels`."""
    height, width = pixels.shape
    if sum(row_chunks) != height or sum(col_chunks) != width:
        raise ValueError(f"blocks {sum(row_chunks)}x{sum(col_chunks)} do not tile {pixels.shape}")
    wanted_labels = np.unique(np.asarray(wanted, dtype=np.int64))
    wanted_labels = wanted_labels[wanted_labels > 0]
    chosen = pixels.only(wanted_labels)
    index, pixel_labels = chosen.index, chosen.labels
    row_starts = np.cumsum([0, *row_chunks])
    col_starts = np.cumsum([0, *col_chunks])
    rows, cols = np.divmod(index, width)
    block_row = np.searchsorted(row_starts, rows, side="right") - 1
    block_col = np.searchsorted(col_starts, cols, side="right") - 1
    block_width = np.asarray(col_chunks, dtype=np.int64)[block_col]
    inside = (rows - row_starts[block_row]) * block_width + (cols - col_starts[block_col])
    block = block_row * len(col_chunks) + block_col
    # block by block (row-major), raster order inside each block: as a scan of each block finds them
    by_block = np.lexsort((inside, block))
    block, inside = block[by_block], inside[by_block]
    index, pixel_labels = index[by_block], pixel_labels[by_block]
    blocks: list[tuple[int, int, np.ndarray]] = []
    cuts = np.flatnonzero(np.diff(block)) + 1
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, block.size], strict=True):
        if stop > start:
            i, j = divmod(int(block[start]), len(col_chunks))
            blocks.append((i, j, inside[start:stop]))
    # raster index is unique, so this sort has no ties: the order is fully determined
    order = np.lexsort((index, pixel_labels))
    sorted_labels = pixel_labels[order]
    starts = np.searchsorted(sorted_labels, wanted_labels, side="left")
    stops = np.searchsorted(sorted_labels, wanted_labels, side="right")
    spans = {
        int(label): (int(a), int(b))
        for label, a, b in zip(wanted_labels, starts, stops, strict=True)
    }
    return BlockPixels(blocks, order, spans)
