"""A block of (layer, y, x) layers given as the 3 x 3 tiles it would be joined from: a chunk and
the parts of its neighbours that make its halo. Compiled kernels read a block's rows from its
tiles (:func:`fetch_row`), so the block is never joined: a copy of some 15 MB a chunk, which cost
about as much as one of the test's passes over it."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .jit import ngjit_numpy_division

#: One of the 3 x 3 tiles: an array and the part of it that belongs to the block, or None where
#: the block has no tile (beyond the grid's edge).
TilePart = tuple[Any, tuple[slice, slice]] | None


class Tiles(NamedTuple):
    """A block as its 3 x 3 tiles, row by row: tile t is rows ``origin[t, 0]`` onwards and
    columns ``origin[t, 1]`` onwards of ``arrays[t]``, ``heights[t // 3]`` by ``widths[t % 3]``
    pixels of each layer. The arrays are C-contiguous, of one dtype and one number of layers;
    where there is no tile, an empty array and a height or width of 0."""

    arrays: tuple[np.ndarray, ...]
    origin: np.ndarray
    heights: np.ndarray
    widths: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """The block's (y, x) size."""
        return int(self.heights.sum()), int(self.widths.sum())

    @property
    def dtype(self) -> np.dtype:
        return self.arrays[4].dtype

    def part(self, t: int) -> np.ndarray:
        """Tile `t`'s part of its array (layer, y, x)."""
        (y0, x0), h, w = self.origin[t], self.heights[t // 3], self.widths[t % 3]
        return self.arrays[t][:, y0 : y0 + h, x0 : x0 + w]

    def core(self) -> np.ndarray:
        """The middle tile's part: the block without its halo."""
        return self.part(4)

    def joined(self) -> np.ndarray:
        """The block as one array (a copy)."""
        rows = [[self.part(3 * r + c) for c in range(3) if self.widths[c]] for r in range(3)]
        return np.block([row for row, h in zip(rows, self.heights, strict=True) if h])

    def geometry(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(origin, heights, widths), as the kernels take them."""
        return self.origin, self.heights, self.widths


def whole(array: np.ndarray) -> Tiles:
    """A (layer, y, x) array as a block of one tile."""
    array = np.ascontiguousarray(array)
    empty = np.empty((0, 0, 0), array.dtype)
    arrays = (empty,) * 4 + (array,) + (empty,) * 4
    h, w = array.shape[1:]
    sizes = np.array([0, h, 0], np.int64), np.array([0, w, 0], np.int64)
    return Tiles(arrays, np.zeros((9, 2), np.int64), *sizes)


def tiles_of(parts: list[list[TilePart]]) -> Tiles:
    """The 3 x 3 `parts` of a block as :class:`Tiles`. A row or column of tiles is missing as a
    whole or not at all, and the middle tile is there."""
    middle = parts[1][1]
    if middle is None:
        raise ValueError("a block's tiles need their middle one")
    dtype = np.asarray(middle[0]).dtype
    empty = np.empty((0, 0, 0), dtype)
    arrays: list[np.ndarray] = []
    origin = np.zeros((9, 2), np.int64)
    heights, widths = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for r, row in enumerate(parts):
        for c, part in enumerate(row):
            if part is None:
                arrays.append(empty)
                continue
            array, (ys, xs) = part
            array = np.ascontiguousarray(array)  # a chunk's own is: the view, not a copy
            y0, y1, _ = ys.indices(array.shape[1])
            x0, x1, _ = xs.indices(array.shape[2])
            arrays.append(array)
            origin[3 * r + c] = y0, x0
            heights[r], widths[c] = y1 - y0, x1 - x0
    return Tiles(tuple(arrays), origin, heights, widths)


@ngjit_numpy_division
def fetch_rows(
    arrays: tuple[np.ndarray, ...],
    origin: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    first: int,
    y: int,
    out: np.ndarray,
) -> None:
    """Row `y` of layers `first` onwards of the block of tiles (`arrays`, `origin`, `heights`,
    `widths` as :class:`Tiles` holds them) into `out` (layer, x)."""
    # the row's tiles taken from the tuple by constant indices, once for all the layers: by a
    # variable index, the compiled code copies the tuple's nine array descriptors for each read
    if y < heights[0]:
        left, middle, right, t, ty = arrays[0], arrays[1], arrays[2], 0, y
    elif y < heights[0] + heights[1]:
        left, middle, right, t, ty = arrays[3], arrays[4], arrays[5], 3, y - heights[0]
    else:
        left, middle, right = arrays[6], arrays[7], arrays[8]
        t, ty = 6, y - heights[0] - heights[1]
    for k in range(out.shape[0]):
        at = 0
        if widths[0]:
            _copy_row(left, first + k, origin[t, 0] + ty, origin[t, 1], widths[0], out[k], at)
            at += widths[0]
        _copy_row(middle, first + k, origin[t + 1, 0] + ty, origin[t + 1, 1], widths[1], out[k], at)
        at += widths[1]
        if widths[2]:
            _copy_row(
                right, first + k, origin[t + 2, 0] + ty, origin[t + 2, 1], widths[2], out[k], at
            )


@ngjit_numpy_division
def _copy_row(
    array: np.ndarray, layer: int, y: int, x0: int, w: int, out: np.ndarray, at: int
) -> None:
    row = array[layer, y]
    for x in range(w):
        # unsigned indices: numba wraps negative ones around, a test in the loop that keeps it
        # from being vectorised
        out[np.uint64(at + x)] = row[np.uint64(x0 + x)]
