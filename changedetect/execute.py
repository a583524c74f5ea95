"""The one pass over the imagery: write scratch rasters and gather the changed pixels.

Bands are decoded once: each chunk's task returns its score and RGB blocks, written to scratch
rasters as they come back, with the (small) set of its changed pixels and their features.
"""

from __future__ import annotations

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


@dataclass
class BlockResult:
    """What one chunk's task hands back: its place, its scratch blocks and its changed pixels."""

    row0: int
    col0: int
    score: np.ndarray
    rgb: np.ndarray
    flat_index: np.ndarray
    values: dict[str, np.ndarray]
    n_valid: int


def _trim(depth: int, index: int, count: int, size: int) -> slice:
    """The block's own pixels inside its expanded block (no halo beyond the grid's edges)."""
    start = depth if index > 0 else 0
    stop = size - depth if index < count - 1 else size
    return slice(start, stop)


def _finish_block(
    test: ChangeTest,
    origin: tuple[int, int],
    place: tuple[int, int, int, int, int],
    min_valid: int,
    expanded: np.ndarray,
) -> BlockResult:
    # the whole per-chunk work in one task (test, trim, gather), so dask holds nothing of a chunk
    # but its composites until its neighbours have taken their halo strips; the task is pure and
    # picklable, so it runs on a distributed cluster's worker processes as well as on threads
    (i, n_rows, j, n_cols, width), halo = place, test.halo
    ys = _trim(halo, i, n_rows, expanded.shape[1])
    xs = _trim(halo, j, n_cols, expanded.shape[2])
    b, a, sb, sa, counts = split_inputs(expanded)
    counts = counts[:, ys, xs]
    result = test.evaluate(b, a, sb, sa)
    b, a = b[:, ys, xs], a[:, ys, xs]
    valid = (counts[0] >= min_valid) & (counts[1] >= min_valid)
    decision = result.disturbed[ys, xs] & valid
    score = np.ascontiguousarray(result.score[ys, xs])
    row0, col0 = origin
    rows, cols = np.nonzero(decision)
    flat = (rows.astype(np.int64) + row0) * width + (cols + col0)
    values = index_feature_values(
        {band: b[k, rows, cols] for k, band in enumerate(ANALYSIS_BANDS)},
        {band: a[k, rows, cols] for k, band in enumerate(ANALYSIS_BANDS)},
    )
    values["evidence"] = result.evidence[ys, xs][rows, cols]
    values["brightening"] = result.brightening[ys, xs][rows, cols]
    values["score"] = score[rows, cols]
    return BlockResult(
        row0,
        col0,
        score,
        reflectance_to_byte(np.concatenate([b[RGB], a[RGB]])),
        flat,
        {name: np.asarray(v, dtype=np.float32) for name, v in values.items()},
        int(np.count_nonzero(valid)),
    )


def run_pass(
    grid: GridSpec,
    test: ChangeTest,
    inputs: ChangeInputs,
    min_valid: int,
    score_path: Path,
    rgb_path: Path,
) -> Gathered:
    """Test every pixel, batch by batch on dask's current scheduler (threads, or a distributed
    cluster when a client is active); scratch rasters land on disk and the changed pixels'
    features come back."""
    cube = inputs.cube
    chunks = cube.chunks[1:]
    halo = test.halo
    expanded = da.overlap.overlap(cube, depth={0: 0, 1: halo, 2: halo}, boundary="none")
    blocks = expanded.to_delayed(optimize_graph=False)
    row_starts = np.cumsum((0, *chunks[0][:-1]))
    col_starts = np.cumsum((0, *chunks[1][:-1]))
    n_rows, n_cols = len(chunks[0]), len(chunks[1])
    flat_parts: list[np.ndarray] = []
    value_parts: list[dict[str, np.ndarray]] = []
    n_valid = 0
    with (
        rasterio.open(score_path, "w", **scratch_profile(grid, 1, "float32", np.nan)) as sdst,
        rasterio.open(rgb_path, "w", **scratch_profile(grid, 6, "uint8", None)) as rdst,
    ):
        rows_per_batch = max(1, BATCH_CHUNKS // n_cols)
        for first in range(0, n_rows, rows_per_batch):
            tasks = [
                dask.delayed(_finish_block, pure=True)(
                    test,
                    (int(row_starts[i]), int(col_starts[j])),
                    (i, n_rows, j, n_cols, grid.width),
                    min_valid,
                    blocks[0, i, j],
                )
                for i in range(first, min(first + rows_per_batch, n_rows))
                for j in range(n_cols)
            ]
            for block in dask.compute(*tasks):
                window = rasterio.windows.Window(
                    block.col0, block.row0, block.score.shape[1], block.score.shape[0]
                )
                sdst.write(block.score, 1, window=window)
                rdst.write(block.rgb, window=window)
                flat_parts.append(block.flat_index)
                value_parts.append(block.values)
                n_valid += block.n_valid
    names = tuple(value_parts[0]) if value_parts else ()
    flat_index = np.concatenate(flat_parts) if flat_parts else np.empty(0, np.int64)
    values = {n: np.concatenate([v[n] for v in value_parts]) for n in names}
    return Gathered(flat_index, values, n_valid, grid.width * grid.height)
