"""The pixels of labelled patches, held sparsely: memory that follows the patches, not the grid.

A whole-grid label raster costs 2-4 bytes a pixel however little changed (0.8 GB at 20,000²);
:class:`PatchPixels` holds only the patch pixels (12 bytes each) and gives any window's or any
one patch's small label raster when a consumer needs one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True, eq=False)
class PatchPixels:
    """Labels 1..n_labels of the pixels of a grid of `shape` that lie in a patch; 0 elsewhere."""

    shape: tuple[int, int]
    """(rows, columns) of the grid."""
    index: np.ndarray
    """Raveled positions (int64) of the patch pixels, sorted."""
    labels: np.ndarray
    """Label (int32, > 0) of each pixel of `index`."""
    n_labels: int
    """Labels are 1..n_labels; after :meth:`only`, some of them may have no pixel."""

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> PatchPixels:
        return cls(shape, np.zeros(0, np.int64), np.zeros(0, np.int32), 0)

    @classmethod
    def from_raster(cls, labels: np.ndarray, n_labels: int | None = None) -> PatchPixels:
        """The nonzero pixels of a label raster (for small grids and tests)."""
        index = np.flatnonzero(labels)
        values = labels.ravel()[index].astype(np.int32)
        n = int(values.max(initial=0)) if n_labels is None else n_labels
        return cls((labels.shape[0], labels.shape[1]), index.astype(np.int64), values, n)

    def raster(self) -> np.ndarray:
        """The whole-grid int32 label raster (for small grids and tests only)."""
        return self.window(slice(0, self.shape[0]), slice(0, self.shape[1]))

    @cached_property
    def counts(self) -> np.ndarray:
        """Pixels per label 0..n_labels (0 for label 0)."""
        return np.bincount(self.labels, minlength=self.n_labels + 1).astype(np.int64)

    @cached_property
    def _by_label(self) -> tuple[np.ndarray, np.ndarray]:
        """(order, starts): ``index[order[starts[k - 1]:starts[k]]]`` are label k's pixels, in
        raster order."""
        order = np.argsort(self.labels, kind="stable")
        starts = np.concatenate(([0], np.cumsum(self.counts[1:])))
        return order, starts

    @cached_property
    def bboxes(self) -> np.ndarray:
        """(n_labels + 1, 4) int64: (row0, col0, row1, col1), end exclusive, of each label; all
        0 for a label without a pixel (and for label 0)."""
        out = np.zeros((self.n_labels + 1, 4), dtype=np.int64)
        present = np.flatnonzero(self.counts[1:]) + 1
        if present.size == 0:
            return out
        order, starts = self._by_label
        rows, cols = np.divmod(self.index[order], self.shape[1])
        first = starts[present - 1]
        last = starts[present] - 1
        out[present, 0] = rows[first]  # raster order: the first pixel is in the top row
        out[present, 2] = rows[last] + 1
        out[present, 1] = np.minimum.reduceat(cols, first)
        out[present, 3] = np.maximum.reduceat(cols, first) + 1
        return out

    def label_at(self, flat_index: np.ndarray) -> np.ndarray:
        """The label (0 outside the patches) at each raveled position of `flat_index`."""
        flat_index = np.asarray(flat_index, dtype=np.int64)
        if self.index.size == 0:
            return np.zeros(flat_index.shape, np.int32)
        at = np.minimum(np.searchsorted(self.index, flat_index), self.index.size - 1)
        return np.where(self.index[at] == flat_index, self.labels[at], 0).astype(np.int32)

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """The int32 label raster of the window `rows` x `cols` (plain slices inside the grid)."""
        r0, r1 = rows.start, rows.stop
        c0, c1 = cols.start, cols.stop
        out = np.zeros((r1 - r0, c1 - c0), dtype=np.int32)
        width = self.shape[1]
        lo, hi = np.searchsorted(self.index, (r0 * width + c0, (r1 - 1) * width + c1))
        r, c = np.divmod(self.index[lo:hi], width)
        inside = (c >= c0) & (c < c1)
        out[r[inside] - r0, c[inside] - c0] = self.labels[lo:hi][inside]
        return out

    def in_rows(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """The patch pixels in the grid rows `rows` (a plain slice inside the grid): their raveled
        positions in those rows (int64, sorted) and their labels."""
        width = self.shape[1]
        lo, hi = np.searchsorted(self.index, (rows.start * width, rows.stop * width))
        return self.index[lo:hi] - rows.start * width, self.labels[lo:hi]

    def patch(self, label: int) -> tuple[tuple[slice, slice], np.ndarray]:
        """One label's bounding box (row and column slices) and its pixels there (bool)."""
        order, starts = self._by_label
        r0, c0, r1, c1 = (int(v) for v in self.bboxes[label])
        own = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        rows, cols = np.divmod(self.index[order[starts[label - 1] : starts[label]]], self.shape[1])
        own[rows - r0, cols - c0] = True
        return (slice(r0, r1), slice(c0, c1)), own

    def patches(self) -> Iterator[tuple[int, tuple[slice, slice], np.ndarray]]:
        """(label, bounding box, pixels there) of each label with a pixel, in label order."""
        for label in np.flatnonzero(self.counts[1:]) + 1:
            yield (int(label), *self.patch(int(label)))

    def only(self, wanted: Sequence[int]) -> PatchPixels:
        """The pixels of the `wanted` labels, labels unchanged (the others become 0)."""
        keep = np.zeros(self.n_labels + 1, dtype=bool)
        wanted_labels = np.asarray(wanted, dtype=np.int64)
        keep[wanted_labels[(wanted_labels > 0) & (wanted_labels <= self.n_labels)]] = True
        hit = keep[self.labels]
        return PatchPixels(self.shape, self.index[hit], self.labels[hit], self.n_labels)
