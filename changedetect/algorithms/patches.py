"""From a per-pixel change decision to patches: clean, label, size filter, polygonise, measure.

The decision is computed lazily in chunks and gathered into a one-byte-per-pixel mask; cleaning
and labelling run on that whole mask, so a patch that crosses chunk borders comes out whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio import features as rio_features
from scipy import ndimage
from shapely.geometry import shape
from skimage import morphology

from ..models import Patch
from .jit import ngjit


def clean_mask(mask: np.ndarray, *, radius: int = 1) -> np.ndarray:
    """Morphological closing with a disk: bridges gaps of about `radius` pixels inside patches."""
    if radius < 1:
        return mask.astype(bool)
    disk = morphology.disk(radius)
    return _by_strips(
        mask, lambda m: ndimage.binary_closing(m, structure=disk, border_value=0), 2 * radius
    )


def core_mask(mask: np.ndarray, *, radius: int = 1) -> np.ndarray:
    """Pixels whose whole disk neighbourhood is in `mask`: the seeds of opening by reconstruction.

    A component without a single core pixel is a thin line or speckle (typically an edge left by
    misregistration) and is dropped whole; every other component is kept whole, so small compact
    patches do not lose their rim as they would under a plain opening.
    """
    if radius < 1:
        return mask.astype(bool)
    return _by_strips(mask, lambda m: _eroded(m, radius), radius)


def _eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.binary_erosion(mask, structure=morphology.disk(radius), border_value=0)


def _by_strips(
    mask: np.ndarray, operation: Callable[[np.ndarray], np.ndarray], reach: int
) -> np.ndarray:
    """A binary morphology whose result at a pixel depends on the pixels up to `reach` rows away
    (the grid's edges read as 0), computed strip by strip with that many rows of context: the
    whole-grid result, with temporaries the size of a strip (scipy's closing holds two more
    whole-grid arrays)."""
    out = np.empty(mask.shape, dtype=bool)
    for rows, context, own in _strips_in_context(mask.shape[0], reach):
        out[rows] = operation(mask[context])[own]
    return out


def _strips_in_context(height: int, reach: int) -> list[tuple[slice, slice, slice]]:
    """Each strip's rows, the rows up to `reach` away around them (inside the grid), and the
    strip's own rows within those."""
    out = []
    for rows in _strips(height):
        top, bottom = max(rows.start - reach, 0), min(rows.stop + reach, height)
        out.append((rows, slice(top, bottom), slice(rows.start - top, rows.stop - top)))
    return out


def label_patches(
    mask: np.ndarray, *, min_pixels: int, seed_radius: int | None = None
) -> tuple[np.ndarray, int]:
    """8-connected labels of `mask` with holes filled; components below `min_pixels`, or without
    a core pixel of radius `seed_radius` (see :func:`core_mask`), removed.

    Labels are renumbered 1..n in raster order so that the same mask always gives the same labels.
    """
    labels, n = _components(mask)
    return _kept(labels, n, min_pixels, seed_radius)


def label_changed_pixels(
    flat_index: np.ndarray, shape: tuple[int, int], *, radius: int, min_pixels: int
) -> tuple[np.ndarray, int]:
    """:func:`label_patches` of the :func:`clean_mask` of the pixels at `flat_index` (raveled
    positions on a grid of `shape`), with the seeds of :func:`core_mask`, each whole-grid mask
    let go as soon as the next exists: the labels are the only grid-sized array left."""
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    mask[flat_index] = True
    closed = clean_mask(mask.reshape(shape), radius=radius)
    del mask
    labels, n = _components(closed)
    del closed
    return _kept(labels, n, min_pixels, radius)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of `mask`: uint16 labels where they suffice (half the memory of
    int32, 0.2 GB less at 10,000²), int32 when there are more than 65,535 components."""
    structure = np.ones((3, 3), dtype=bool)
    try:
        labels = np.empty(mask.shape, dtype=np.uint16)
        n = ndimage.label(mask, structure=structure, output=labels)
    except RuntimeError:  # scipy: "insufficient bit-depth in requested output type"
        del labels
        labels = np.empty(mask.shape, dtype=np.int32)
        n = ndimage.label(mask, structure=structure, output=labels)
    return labels, n


def _kept(
    labels: np.ndarray, n: int, min_pixels: int, seed_radius: int | None
) -> tuple[np.ndarray, int]:
    """The components of `labels` that are large enough and seeded, renumbered, holes filled."""
    if n == 0:
        return labels, 0
    sizes = label_counts(labels, n)
    keep = sizes >= min_pixels
    if seed_radius is not None:
        # the seeds strip by strip, from the labels: a whole-grid mask and core mask would be
        # two more grid-sized arrays
        seeded = np.zeros(n + 1, dtype=bool)
        for rows, context, own in _strips_in_context(labels.shape[0], seed_radius):
            core = core_mask(labels[context] > 0, radius=seed_radius)[own]
            strip = labels[rows]
            seeded[strip[core & (strip > 0)]] = True
        keep &= seeded
    keep[0] = False
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    relabel(labels, remap)
    n_kept = int(keep.sum())
    # fill holes patch by patch (inside its bounding box only, to stay cheap)
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        own = labels[sl] == index
        filled = ndimage.binary_fill_holes(own)
        holes = filled & ~own & (labels[sl] == 0)
        labels[sl][holes] = index
    return labels, n_kept


#: Rows per strip of the whole-grid passes over labels: bounds their temporary arrays.
STRIP_ROWS = 512


def _strips(height: int) -> list[slice]:
    return [slice(r, min(r + STRIP_ROWS, height)) for r in range(0, height, STRIP_ROWS)]


def label_counts(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Pixels per label 0..n_labels (np.bincount on the whole grid would copy it as int64)."""
    counts = np.zeros(n_labels + 1, dtype=np.int64)
    for rows in _strips(labels.shape[0]):
        counts += np.bincount(labels[rows].ravel(), minlength=n_labels + 1)
    return counts


def relabel(labels: np.ndarray, remap: np.ndarray) -> None:
    """labels := remap[labels], in place, strip by strip (no second whole-grid array)."""
    for rows in _strips(labels.shape[0]):
        labels[rows] = remap[labels[rows]]


def polygonise(labels: np.ndarray, transform: Affine) -> dict[int, object]:
    """Valid (OGC) shapely geometry (grid CRS) per label, covering exactly the label's pixels.

    Each label is traced inside its own bounding box: a whole-grid trace would copy the grid.
    Labels are 8-connected, but they are traced 4-connected: an 8-connected trace of pixels that
    touch only at a corner gives one ring passing twice through that corner, a self-intersecting
    ring that GIS tools reject. Traced 4-connected, each piece is a valid polygon (a hole may touch
    its shell at a corner, which OGC allows), and the union of the pieces is a valid Polygon or
    MultiPolygon whose parts meet at corners only. Both traces follow the same pixel edges, so
    area, perimeter, hull and centroid do not change; nothing is buffered or snapped.
    """
    geoms: dict[int, object] = {}
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        own = labels[sl] == index
        box_transform = transform @ Affine.translation(sl[1].start, sl[0].start)
        parts = [
            shape(geom)
            for geom, _ in rio_features.shapes(
                own.astype(np.uint8), mask=own, transform=box_transform, connectivity=4
            )
        ]
        geom = parts[0] if len(parts) == 1 else shapely.union_all(parts)
        if not geom.is_valid:  # not seen from a 4-connected trace: repaired rather than written
            geom = shapely.make_valid(geom, method="structure", keep_collapsed=False)
        geoms[index] = geom
    return geoms


#: Pixels whose features are derived at a time in :func:`patch_statistics`.
STATISTICS_PART = 2**18


def patch_statistics(
    labels: np.ndarray,
    n_labels: int,
    flat_index: np.ndarray,
    values: Mapping[str, np.ndarray],
    derive: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Mean of each sparse per-pixel value over each label (NaN-aware).

    `flat_index` holds raveled pixel positions where `values` were gathered; pixels outside any
    kept label are ignored. With `derive`, the means are of the values it derives from `values`,
    which it is given STATISTICS_PART pixels at a time (so only that many pixels' derived values
    exist at once); the sums run over the pixels in order as one ``np.bincount`` would.
    """
    lab = labels.ravel()[flat_index]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for start in range(0, lab.size, STATISTICS_PART) if lab.size else [0]:
        part = slice(start, start + STATISTICS_PART)
        part_values = {name: v[part] for name, v in values.items()}
        part_labels = lab[part]
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
    labels: np.ndarray,
    n_labels: int,
    transform: Affine,
    stats: Mapping[str, np.ndarray],
    areas_m2: np.ndarray,
) -> list[Patch]:
    """Patch objects for labels 1..n: geometry, area, pixel count, bbox and mean statistics."""
    geoms = polygonise(labels, transform)
    counts = label_counts(labels, n_labels)
    patches = []
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or index not in geoms:
            continue
        patches.append(
            Patch(
                label=index,
                geometry=geoms[index],
                area_m2=float(areas_m2[index]),
                n_pixels=int(counts[index]),
                stats={k: float(v[index]) for k, v in stats.items()},
                bbox_rc=(sl[0].start, sl[1].start, sl[0].stop, sl[1].stop),
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
    is the order of ``window[..., labels[window] == label]``.
    """

    blocks: list[tuple[int, int, np.ndarray]]
    """(block row, block column, flat positions inside the block) of each block holding any."""
    order: np.ndarray
    """Permutation of the concatenated pixels into label order, raster order within a label."""
    spans: dict[int, tuple[int, int]]
    """label -> (start, stop) in `order`; an empty span for a wanted label without a pixel."""


def block_pixels(
    labels: np.ndarray,
    wanted: Sequence[int],
    row_chunks: Sequence[int],
    col_chunks: Sequence[int],
) -> BlockPixels:
    """The pixels of the `wanted` labels, block by block (blocks of `row_chunks` x `col_chunks`
    pixels, as dask's ``chunks`` gives them); see :class:`BlockPixels`."""
    if sum(row_chunks) != labels.shape[0] or sum(col_chunks) != labels.shape[1]:
        raise ValueError(f"blocks {sum(row_chunks)}x{sum(col_chunks)} do not tile {labels.shape}")
    wanted_labels = np.unique(np.asarray(wanted, dtype=np.int64))
    wanted_labels = wanted_labels[wanted_labels > 0]
    lookup = np.zeros(int(wanted_labels[-1]) + 2 if wanted_labels.size else 1, dtype=bool)
    lookup[wanted_labels] = True
    top = len(lookup) - 1  # any label above the last wanted one maps here (never wanted)
    width = labels.shape[1]
    blocks: list[tuple[int, int, np.ndarray]] = []
    found_labels, found_index = [], []
    r0 = 0
    for i, height in enumerate(row_chunks):
        c0 = 0
        for j, block_width in enumerate(col_chunks):
            lab = labels[r0 : r0 + height, c0 : c0 + block_width]
            hit = lookup[np.minimum(lab, top)]
            positions = np.flatnonzero(hit)
            if positions.size:
                blocks.append((i, j, positions))
                found_labels.append(lab.ravel()[positions])
                rows, cols = np.divmod(positions, block_width)
                found_index.append((rows + r0).astype(np.int64) * width + (cols + c0))
            c0 += block_width
        r0 += height
    pixel_labels = np.concatenate(found_labels) if found_labels else np.zeros(0, np.int32)
    index = np.concatenate(found_index) if found_index else np.zeros(0, np.int64)
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
