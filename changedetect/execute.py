"""The one pass over the imagery: write scratch rasters and gather the changed pixels.

Bands are decoded once: the score and RGB scratch rasters are stored block by block while the
(small) set of changed pixels and their features is gathered from the same dask graph.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rasterio

from .algorithms.detect import ChangeInputs, ChangeTest, index_feature_values, split_inputs
from .io.sinks.chips import reflectance_to_byte
from .io.sinks.rasters import scratch_profile
from .models import GridSpec
from .types import ANALYSIS_BANDS

#: Red, green, blue rows of the (band, y, x) analysis cube.
RGB = [ANALYSIS_BANDS.index(b) for b in ("B04", "B03", "B02")]

#: Chunks computed per dask call. Dask's scheduler would otherwise start on every chunk of a large
#: region before finishing any (the neighbourhood filters link them all), holding intermediates for
#: the whole region; bands of rows keep memory proportional to this number. Chunks next to a band
#: border are partly recomputed by both bands (their overlap margins only).
BATCH_CHUNKS = 16


@dataclass
class Gathered:
    """Changed pixels of the cleaned decision, with their feature values."""

    flat_index: np.ndarray
    values: dict[str, np.ndarray]
    n_valid: int
    n_pixels: int


class _BlockWriter:
    """Writes blocks into open GeoTIFFs from dask worker threads (GDAL handles are not
    thread-safe, hence the lock)."""

    def __init__(
        self,
        score: rasterio.io.DatasetWriter,
        rgb: rasterio.io.DatasetWriter,
        chunks: tuple[tuple[int, ...], tuple[int, ...]],
    ) -> None:
        self.score = score
        self.rgb = rgb
        self.lock = threading.Lock()
        self.row_starts = np.cumsum((0, *chunks[0][:-1]))
        self.col_starts = np.cumsum((0, *chunks[1][:-1]))

    def origin(self, i: int, j: int) -> tuple[int, int]:
        return int(self.row_starts[i]), int(self.col_starts[j])

    def write(self, row0: int, col0: int, score: np.ndarray, rgb: np.ndarray) -> None:
        window = rasterio.windows.Window(col0, row0, score.shape[1], score.shape[0])
        with self.lock:
            self.score.write(score.astype(np.float32), 1, window=window)
            self.rgb.write(rgb, window=window)


def _trim(depth: int, index: int, count: int, size: int) -> slice:
    """The block's own pixels inside its expanded block (no halo beyond the grid's edges)."""
    start = depth if index > 0 else 0
    stop = size - depth if index < count - 1 else size
    return slice(start, stop)


def _finish_block(
    writer: _BlockWriter,
    test: ChangeTest,
    place: tuple[int, int, int, int, int],
    min_valid: int,
    expanded: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    # the whole per-chunk work in one task: test, trim, write, gather. Dask then holds nothing of a
    # chunk but its composites until its neighbours have taken their halo strips.
    (i, n_rows, j, n_cols, width), halo = place, test.halo
    ys = _trim(halo, i, n_rows, expanded.shape[1])
    xs = _trim(halo, j, n_cols, expanded.shape[2])
    counts = expanded[-2:, ys, xs]
    b, a, sb, sa = split_inputs(expanded[:-2])
    result = test.evaluate(b, a, sb, sa)
    b, a = b[:, ys, xs], a[:, ys, xs]
    valid = (counts[0] >= min_valid) & (counts[1] >= min_valid)
    decision = result.disturbed[ys, xs] & valid
    score = result.score[ys, xs]
    row0, col0 = writer.origin(i, j)
    rgb = reflectance_to_byte(np.concatenate([b[RGB], a[RGB]]))
    writer.write(row0, col0, score, rgb)
    rows, cols = np.nonzero(decision)
    flat = (rows.astype(np.int64) + row0) * width + (cols + col0)
    values = index_feature_values(
        {band: b[k, rows, cols] for k, band in enumerate(ANALYSIS_BANDS)},
        {band: a[k, rows, cols] for k, band in enumerate(ANALYSIS_BANDS)},
    )
    values["evidence"] = result.evidence[ys, xs][rows, cols]
    values["brightening"] = result.brightening[ys, xs][rows, cols]
    values["score"] = score[rows, cols]
    gathered = {name: np.asarray(v, dtype=np.float32) for name, v in values.items()}
    return flat, gathered, int(np.count_nonzero(valid))


def run_pass(
    grid: GridSpec,
    test: ChangeTest,
    inputs: ChangeInputs,
    valid_counts: tuple[da.Array, da.Array],
    min_valid: int,
    score_path: Path,
    rgb_path: Path,
) -> Gathered:
    """Test every pixel in one dask computation; scratch rasters land on disk and the changed
    pixels' features come back."""
    cube = inputs.cube
    chunks = cube.chunks[1:]
    counts = [c.astype(np.float32).rechunk(chunks)[None] for c in valid_counts]
    stacked = da.concatenate([cube, *counts], axis=0).rechunk({0: -1})
    halo = test.halo
    expanded = da.overlap.overlap(stacked, depth={0: 0, 1: halo, 2: halo}, boundary="none")
    blocks = expanded.to_delayed(optimize_graph=False)
    n_rows, n_cols = len(chunks[0]), len(chunks[1])
    with (
        rasterio.open(score_path, "w", **scratch_profile(grid, 1, "float32", np.nan)) as sdst,
        rasterio.open(rgb_path, "w", **scratch_profile(grid, 6, "uint8", None)) as rdst,
    ):
        writer = _BlockWriter(sdst, rdst, chunks)
        results: list[tuple[np.ndarray, dict[str, np.ndarray], int]] = []
        rows_per_batch = max(1, BATCH_CHUNKS // n_cols)
        for first in range(0, n_rows, rows_per_batch):
            tasks = [
                dask.delayed(_finish_block)(
                    writer, test, (i, n_rows, j, n_cols, grid.width), min_valid, blocks[0, i, j]
                )
                for i in range(first, min(first + rows_per_batch, n_rows))
                for j in range(n_cols)
            ]
            results.extend(dask.compute(*tasks))
    names = tuple(results[0][1]) if results else ()
    flat_index = np.concatenate([r[0] for r in results]) if results else np.empty(0, np.int64)
    values = {n: np.concatenate([r[1][n] for r in results]) for n in names}
    return Gathered(flat_index, values, sum(r[2] for r in results), grid.width * grid.height)
