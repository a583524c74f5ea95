"""From the changed pixels to labelled patches, strip by strip: clean, label, seed, size filter,
fill holes, with no whole-grid array.

Each strip of rows is cleaned (closing) and seeded (erosion) with as many rows of context as the
morphology reaches, so its pixels are those of the whole-grid operations; components are labelled
in the strip and merged across strip borders through the labels of the border rows (a graph of
the per-strip components, solved once). What is global is decided on the merged components: the
size (summed over strips), the seed (any strip), the number (raster order of the first pixel),
and the holes, which are the background components (4-connected, merged the same way) that do
not touch the grid's edge. Only the closed pixels (sparse) and one strip at a time are held.

A strip is worked on without the runs of columns far from its changed pixels (see
:class:`_Columns`): with sparse change most of a strip's width is such runs, whose pixels are
background and whose morphology and labels follow from the column beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage import morphology

from .patch_pixels import PatchPixels

#: Rows per strip of the passes over the grid: bounds their temporary arrays.
STRIP_ROWS = 512

_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


def clean_mask(mask: np.ndarray, *, radius: int = 1) -> np.ndarray:
    """Morphological closing with a disk: bridges gaps of about `radius` pixels inside patches."""
    if radius < 1:
        return mask.astype(bool)
    return _by_strips(mask, lambda m: _closed(m, radius), 2 * radius)


def core_mask(mask: np.ndarray, *, radius: int = 1) -> np.ndarray:
    """Pixels whose whole disk neighbourhood is in `mask`: the seeds of opening by reconstruction.

    A component without a single core pixel is a thin line or speckle (typically an edge left by
    misregistration) and is dropped whole; every other component is kept whole, so small compact
    patches do not lose their rim as they would under a plain opening.
    """
    if radius < 1:
        return mask.astype(bool)
    return _by_strips(mask, lambda m: _eroded(m, radius), radius)


def _closed(mask: np.ndarray, radius: int) -> np.ndarray:
    disk = morphology.disk(radius)
    return ndimage.binary_closing(mask, structure=disk, border_value=0)


def _eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.binary_erosion(mask, structure=morphology.disk(radius), border_value=0)


def _by_strips(
    mask: np.ndarray, operation: Callable[[np.ndarray], np.ndarray], reach: int
) -> np.ndarray:
    """A binary morphology whose result at a pixel depends on the pixels up to `reach` rows away
    (the grid's edges read as 0), computed strip by strip with that many rows of context."""
    out = np.empty(mask.shape, dtype=bool)
    for rows in _strips(mask.shape[0]):
        context, own = _in_context(rows, reach, mask.shape[0])
        out[rows] = operation(mask[context])[own]
    return out


def _strips(height: int) -> list[slice]:
    return [slice(r, min(r + STRIP_ROWS, height)) for r in range(0, height, STRIP_ROWS)]


def _in_context(rows: slice, reach: int, height: int) -> tuple[slice, slice]:
    """The rows up to `reach` away around `rows` (inside the grid), and `rows` within those."""
    top, bottom = max(rows.start - reach, 0), min(rows.stop + reach, height)
    return slice(top, bottom), slice(rows.start - top, rows.stop - top)


def label_patches(
    mask: np.ndarray, *, min_pixels: int, seed_radius: int | None = None
) -> tuple[np.ndarray, int]:
    """8-connected labels (int32 raster) of `mask` with holes filled; components below
    `min_pixels`, or without a core pixel of radius `seed_radius` (see :func:`core_mask`),
    removed. Labels are 1..n in raster order of each patch's first pixel. For small grids: the
    pipeline uses :func:`label_changed_pixels`, which keeps the labels sparse."""
    pixels = label_pixels(
        np.flatnonzero(mask), mask.shape, close_radius=0, seed_radius=seed_radius or 0,
        min_pixels=min_pixels,
    )  # fmt: skip
    return pixels.raster(), pixels.n_labels


def label_changed_pixels(
    flat_index: np.ndarray, shape: tuple[int, int], *, radius: int, min_pixels: int
) -> PatchPixels:
    """The patches of the changed pixels at `flat_index` (raveled positions on a grid of
    `shape`, in any order): the :func:`clean_mask` of radius `radius`, labelled as :func:`label_patches` does
    with seeds of the same radius."""
    return label_pixels(
        flat_index, shape, close_radius=radius, seed_radius=radius, min_pixels=min_pixels
    )


@dataclass(frozen=True, eq=False)
class _Columns:
    """The columns of a grid `width` wide that a strip's passes work on: `kept` (sorted, from 0
    on), each standing for itself and the run of columns left out after it; None: all of them.

    Kept are the columns up to the closing's radius from a changed pixel of the strip's context,
    the column after each range of those, and the first column. The others are background in
    every row of the closed strip (a closing adds no pixel farther than its radius from a changed
    one: a disk centred on it misses them all), and so is the kept column before each run of
    them. On the kept columns alone:

    - the morphology is that of the whole width: the changed pixels on either side of a run left
      out stay more than a disk's width apart, which a closing cannot bridge, and have no changed
      pixel within the closing's reach on that side, as in the grid; the right edge, when left
      out, is beyond that reach;
    - the 8-connected patches are those of the whole width, a background column separating those
      on either side of a run;
    - a run left out joins, row by row, the background component of the column before it, which
      comes first in raster order: the 4-connected background components, their numbering (raster
      order of the first pixel, as ``ndimage.label`` numbers them), their first pixels and whether
      they touch the grid's edge are those of the whole width.
    """

    kept: np.ndarray | None
    width: int

    @classmethod
    def of(cls, changed_columns: np.ndarray, width: int, radius: int) -> _Columns:
        """The columns to keep for a strip whose changed pixels lie in `changed_columns`, closed with
        a disk of `radius` (0: not closed)."""
        occupied = np.zeros(width, dtype=np.int64)
        occupied[changed_columns] = 1
        upto = np.concatenate(([0], np.cumsum(occupied)))  # changed columns left of each
        column = np.arange(width)
        # a changed pixel in [column - radius - 1, column + radius]: up to radius away from
        # one, or the first column after those
        start, stop = np.maximum(column - radius - 1, 0), np.minimum(column + radius + 1, width)
        near = upto[stop] > upto[start]
        # the kept columns stand for the whole width from the first on (a strip without change
        # keeps one, for its background)
        near[0] = True
        if near.all():
            return cls(None, width)
        return cls(np.flatnonzero(near), width)

    @property
    def n(self) -> int:
        return self.width if self.kept is None else self.kept.size

    def local(self, columns: np.ndarray) -> np.ndarray:
        """Where kept grid `columns` are among the kept columns."""
        return columns if self.kept is None else np.searchsorted(self.kept, columns)

    def repeats(self) -> np.ndarray:
        """How many grid columns each kept column stands for (itself and the run after it)."""
        assert self.kept is not None
        return np.diff(np.append(self.kept, self.width))

    def full(self, values: np.ndarray) -> np.ndarray:
        """Values over the kept columns (last axis) spread over the whole width: a run left out
        takes the value of the column before it (0 for labels of patches, that column's
        background component for labels of the background)."""
        return values if self.kept is None else np.repeat(values, self.repeats(), axis=-1)

    def grid_positions(self, positions: np.ndarray, row0: int) -> np.ndarray:
        """Raveled grid positions (int64) of raveled `positions` in a strip of the kept columns
        starting at grid row `row0`."""
        if self.kept is None:
            return positions.astype(np.int64) + row0 * self.width
        rows, at = np.divmod(positions.astype(np.int64), self.kept.size)
        return (rows + row0) * self.width + self.kept[at]

    def narrow(self, values: np.ndarray | None) -> np.ndarray | None:
        """Values over the whole width (last axis) at the kept columns."""
        return values if values is None or self.kept is None else values[..., self.kept]

    def strip_positions(self, grid_positions: np.ndarray, row0: int) -> np.ndarray:
        """Raveled positions in a strip of the kept columns starting at grid row `row0` of raveled
        grid positions in kept columns."""
        rows, columns = np.divmod(grid_positions - row0 * self.width, self.width)
        return rows * self.n + self.local(columns)


@dataclass
class _Graph:
    """Per-strip components as nodes 1..n (0 is no component), in raster order of their first
    pixel, with the edges that join them across strip borders."""

    n: int = 0
    edges: list[np.ndarray] | None = None

    def add_strip(self, n_labels: int) -> int:
        """Number a strip's labels 1..n_labels as the next nodes: the offset to add to them."""
        offset = self.n
        self.n += n_labels
        return offset

    def join(self, above: np.ndarray, below: np.ndarray, shifts: tuple[int, ...]) -> None:
        """Join the node of each pixel of the row `above` to that of the pixel of the row `below`
        `shift` columns to its right, for each of `shifts` (where both are nodes)."""
        if self.edges is None:
            self.edges = []
        width = above.size
        for shift in shifts:
            a = above[max(-shift, 0) : width - max(shift, 0)]
            b = below[max(shift, 0) : width - max(-shift, 0)]
            both = (a > 0) & (b > 0)
            if both.any():
                pairs = np.stack([a[both], b[both]], axis=1).astype(np.int64)
                self.edges.append(np.unique(pairs, axis=0))

    def merged(self) -> tuple[np.ndarray, np.ndarray]:
        """(component of each node 0..n, first node of each component), the components numbered
        in the order of their first nodes (component 0 is node 0 alone)."""
        pairs = np.concatenate(self.edges) if self.edges else np.zeros((0, 2), np.int64)
        graph = coo_matrix(
            (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])),
            shape=(self.n + 1, self.n + 1),
        )
        _, component = connected_components(graph, directed=False)
        # np.unique's first occurrences are each component's smallest node
        _, first, inverse = np.unique(component, return_index=True, return_inverse=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        return rank[inverse.ravel()], first[order]


def _nodes(labels: np.ndarray, offset: int) -> np.ndarray:
    """Node ids (int64) of strip labels numbered from `offset` (0 stays 0)."""
    return np.where(labels > 0, labels.astype(np.int64) + offset, 0)


def _first_pixels(strip_labels: np.ndarray) -> np.ndarray:
    """Raveled position in the strip of the first pixel of each label 1..n: labels numbered in
    raster order of their first pixel (as ``ndimage.label`` numbers them) first appear where a
    label exceeds every label before it, which can only be where a run of a label starts."""
    flat = strip_labels.ravel()
    if flat.size == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat[0] > 0:
        starts = np.concatenate(([0], starts))
    starts = starts[flat[starts] > 0]
    values = flat[starts]
    if values.size == 0:
        return starts
    running = np.maximum.accumulate(values)
    new = np.empty(values.size, dtype=bool)
    new[0] = True
    np.greater(values[1:], running[:-1], out=new[1:])
    return starts[new]


def label_pixels(
    flat_index: np.ndarray,
    shape: tuple[int, int],
    *,
    close_radius: int,
    seed_radius: int,
    min_pixels: int,
) -> PatchPixels:
    """8-connected patches of the closing (radius `close_radius`) of the pixels at `flat_index`,
    those below `min_pixels` or without a core pixel of radius `seed_radius` removed, holes
    filled; labels 1..n in raster order of each patch's first pixel.

    A hole is a 4-connected background component (the kept patches being the foreground) that
    does not touch the grid's edge; it takes the label of the outermost patch around it (so a
    patch inside another's hole keeps its label, while the background around it, and its own
    holes, take the outer patch's), as filling each patch's holes in label order does.
    """
    width = shape[1]
    strips = _strips(shape[0])
    flat_index = np.asarray(flat_index, dtype=np.int64)
    if flat_index.size and not (flat_index[1:] >= flat_index[:-1]).all():
        flat_index = np.sort(flat_index)  # the pass gathers them chunk by chunk
    fg = _foreground(flat_index, shape, strips, close_radius, seed_radius)
    if fg.graph.n == 0:
        return PatchPixels.empty(shape)
    component, first_node = fg.graph.merged()
    size = np.bincount(component, weights=fg.sizes, minlength=first_node.size)
    seeded = np.bincount(component, weights=fg.seeded, minlength=first_node.size) > 0
    keep = (size >= min_pixels) & seeded
    keep[0] = False
    n_kept = int(keep.sum())
    if n_kept == 0:
        return PatchPixels.empty(shape)
    label_of = np.zeros(first_node.size, np.int32)
    label_of[keep] = np.arange(1, n_kept + 1, dtype=np.int32)  # components are in raster order
    node_label = label_of[component]
    first_pixel = np.concatenate(([-1], fg.first_pixel[first_node[keep]]))
    hole_label = _hole_labels(fg.closed, fg.columns, node_label, first_pixel, strips, shape)
    index_parts, label_parts = [], []
    for closed, columns, rows, holes in zip(fg.closed, fg.columns, strips, hole_label, strict=True):
        strip = _kept_strip(closed, node_label, rows, columns)
        if holes is not None:
            background, _ = ndimage.label(strip == 0, structure=_FOUR)
            strip += holes[background]
            # a run left out is, in every row, in the component of the kept column before it
            if columns.kept is not None and holes[background[0, columns.repeats() > 1]].any():
                # a hole reaches into runs left out: they are filled too, over the whole width
                strip, columns = columns.full(strip), _Columns(None, width)
            del background
        at = np.flatnonzero(strip)
        index_parts.append(columns.grid_positions(at, rows.start))
        label_parts.append(strip.ravel()[at])
    return PatchPixels(
        shape,
        np.concatenate(index_parts).astype(np.int64, copy=False),
        np.concatenate(label_parts).astype(np.int32, copy=False),
        n_kept,
    )


@dataclass
class _Foreground:
    """The closed pixels strip by strip (the nodes of their per-strip components at raveled
    positions in the strip's kept columns), the columns kept in each strip, the graph of those
    components, and per node: its pixel count, whether it holds a seed (1.0 or 0.0), and its
    first pixel (raveled, in the grid)."""

    closed: list[tuple[np.ndarray, np.ndarray]]
    columns: list[_Columns]
    graph: _Graph
    sizes: np.ndarray
    seeded: np.ndarray
    first_pixel: np.ndarray


def _foreground(
    flat_index: np.ndarray,
    shape: tuple[int, int],
    strips: list[slice],
    close_radius: int,
    seed_radius: int,
) -> _Foreground:
    """Close, seed and label each strip (with the context the closing and the erosion reach)."""
    height, width = shape
    reach = 2 * max(close_radius, 0) + max(seed_radius, 0)
    graph = _Graph()
    closed, kept_columns = [], []
    sizes, seeded, first_pixel = [np.zeros(1)], [np.zeros(1)], [np.full(1, -1, np.int64)]
    above = None
    for rows in strips:
        context, _ = _in_context(rows, reach, height)
        lo, hi = np.searchsorted(flat_index, (context.start * width, context.stop * width))
        changed = flat_index[lo:hi] - context.start * width
        changed_columns = changed % width
        columns = _Columns.of(changed_columns, width, max(close_radius, 0))
        raw = np.zeros((context.stop - context.start, columns.n), dtype=bool)
        if columns.kept is None:
            raw.reshape(-1)[changed] = True
        else:
            raw[changed // width, columns.local(changed_columns)] = True
        del changed, changed_columns
        # the closed rows up to seed_radius around the strip: the erosion's context
        ext, own = _in_context(rows, max(seed_radius, 0), height)
        cl = _closed(raw, close_radius) if close_radius >= 1 else raw
        cl = cl[ext.start - context.start : ext.stop - context.start]
        del raw
        lab, k = ndimage.label(cl[own], structure=_EIGHT)
        offset = graph.add_strip(k)
        if above is not None:
            graph.join(above, columns.full(_nodes(lab[0], offset)), (-1, 0, 1))
        above = columns.full(_nodes(lab[-1], offset))
        sizes.append(np.bincount(lab.ravel(), minlength=k + 1)[1:].astype(np.float64))
        if seed_radius >= 1:
            core = _eroded(cl, seed_radius)[own]
            seeded.append((np.bincount(lab[core], minlength=k + 1)[1:] > 0).astype(np.float64))
            del core
        else:
            seeded.append(np.ones(k))
        del cl
        first_pixel.append(columns.grid_positions(_first_pixels(lab), rows.start))
        at = np.flatnonzero(lab)
        # positions in a strip and node ids both count pixels: int32 unless the grid is huge
        small = np.int32 if height * width < 2**31 else np.int64
        closed.append((at.astype(small), (lab.ravel()[at] + offset).astype(small, copy=False)))
        kept_columns.append(columns)
        del lab
    return _Foreground(
        closed,
        kept_columns,
        graph,
        np.concatenate(sizes),
        np.concatenate(seeded),
        np.concatenate(first_pixel),
    )


def _kept_strip(
    closed: tuple[np.ndarray, np.ndarray], node_label: np.ndarray, rows: slice, columns: _Columns
) -> np.ndarray:
    """The int32 label raster of a strip's kept pixels (holes not filled), over its kept
    columns."""
    at, node = closed
    strip = np.zeros((rows.stop - rows.start) * columns.n, dtype=np.int32)
    label = node_label[node]
    strip[at[label > 0]] = label[label > 0]
    return strip.reshape(-1, columns.n)


def _hole_labels(
    closed: list[tuple[np.ndarray, np.ndarray]],
    kept_columns: list[_Columns],
    node_label: np.ndarray,
    first_pixel: np.ndarray,
    strips: list[slice],
    shape: tuple[int, int],
) -> list[np.ndarray | None]:
    """For each strip, the label that each of its background components (4-connected labels of
    the strip's background over its kept columns, as ``ndimage.label`` numbers them) takes as a
    hole, 0 where it is not one; None for a strip without a hole.

    The background components, merged across strips, and the patches form a tree: a bounded
    background component lies inside the patch just above its first pixel, a patch inside the
    background component just above its first pixel. A hole's label is that of its outermost
    ancestor patch.
    """
    height, width = shape
    n_kept = first_pixel.size - 1
    graph = _Graph()
    offsets = []
    exterior = [np.ones(1, dtype=np.float64)]  # node 0: outside the grid
    patch_above = [np.zeros(1, np.int64)]  # the patch above each node's first pixel (0: none)
    around = np.zeros(n_kept + 1, np.int64)  # the node above each patch's first pixel (0: none)
    above_nodes = above_labels = None
    for s, (rows, columns) in enumerate(zip(strips, kept_columns, strict=True)):
        strip = _kept_strip(closed[s], node_label, rows, columns)
        background, k = ndimage.label(strip == 0, structure=_FOUR)
        offset = graph.add_strip(k)
        offsets.append(offset)
        if above_nodes is not None:
            graph.join(above_nodes, columns.full(_nodes(background[0], offset)), (0,))
        edge = np.zeros(k + 1, dtype=bool)
        edge[background[:, 0]] = edge[background[:, -1]] = True
        if rows.start == 0:
            edge[background[0]] = True
        if rows.stop == height:
            edge[background[-1]] = True
        exterior.append(edge[1:].astype(np.float64))
        # what lies just above each first pixel: in the strip, or in the last row of the one above
        flat_strip, flat_background = strip.ravel(), background.ravel()
        first = _first_pixels(background)
        patch_above.append(_above(first, flat_strip, columns.narrow(above_labels), columns.n))
        lo, hi = np.searchsorted(first_pixel[1:], (rows.start * width, rows.stop * width))
        inside = columns.strip_positions(first_pixel[1 + lo : 1 + hi], rows.start)
        around[1 + lo : 1 + hi] = _above(
            inside, flat_background, columns.narrow(above_nodes), columns.n, offset
        )
        above_nodes = columns.full(_nodes(background[-1], offset))
        above_labels = columns.full(strip[-1]).copy()
        del strip, background
    component, first_node = graph.merged()
    outside = np.bincount(component, weights=np.concatenate(exterior)) > 0
    parent = np.concatenate(patch_above)[first_node]  # of each background component
    around_component = component[around]
    top = list(range(n_kept + 1))
    outside_list, parent_list = outside.tolist(), parent.tolist()
    for label, c in enumerate(around_component.tolist()):
        if label and not outside_list[c]:
            top[label] = top[parent_list[c]]
    top_array = np.asarray(top, dtype=np.int32)
    hole = np.where(outside, 0, top_array[parent])[component]
    out: list[np.ndarray | None] = []
    for s, offset in enumerate(offsets):
        stop = offsets[s + 1] if s + 1 < len(offsets) else graph.n
        lut = hole[offset : stop + 1].astype(np.int32)
        lut[0] = 0
        out.append(lut if lut.any() else None)
    return out


def _above(
    positions: np.ndarray,
    flat: np.ndarray,
    above_row: np.ndarray | None,
    width: int,
    offset: int = 0,
) -> np.ndarray:
    """The value (int64) just above each raveled strip position: from the strip's `flat` labels
    (numbered from `offset`, 0 staying 0), or in the first row from `above_row` (the last row of
    the strip above, already numbered; 0 above the grid)."""
    out = np.zeros(positions.size, dtype=np.int64)
    inner = positions >= width
    values = flat[positions[inner] - width].astype(np.int64)
    out[inner] = np.where(values > 0, values + offset, 0)
    if above_row is not None:
        out[~inner] = above_row[positions[~inner]]
    return out
