"""The one pass over the imagery: write scratch rasters and gather the changed pixels.

Bands are decoded once: the score and RGB scratch rasters are stored block by block while the
(small) set of changed pixels and their features is gathered from the same dask graph.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rasterio

from .io.sinks.rasters import scratch_profile
from .models import GridSpec


class _RasterTarget:
    """A `da.store` target that writes blocks into an open GeoTIFF (GDAL handles are not
    thread-safe, hence the lock)."""

    def __init__(self, dataset: rasterio.io.DatasetWriter, lock: threading.Lock) -> None:
        self.dataset = dataset
        self.lock = lock

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        *lead, rows, cols = key
        window = rasterio.windows.Window(
            cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start
        )
        with self.lock:
            if lead:
                self.dataset.write(block, window=window)
            else:
                self.dataset.write(block, 1, window=window)


@dataclass
class Gathered:
    """Changed pixels of the cleaned decision, with their feature values."""

    flat_index: np.ndarray
    values: dict[str, np.ndarray]
    n_valid: int
    n_pixels: int


def _gather_block(
    mask: np.ndarray,
    valid: np.ndarray,
    row0: int,
    col0: int,
    width: int,
    names: tuple[str, ...],
    *features: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    rows, cols = np.nonzero(mask)
    flat = (rows.astype(np.int64) + row0) * width + (cols + col0)
    values = {n: f[rows, cols].astype(np.float32) for n, f in zip(names, features, strict=True)}
    return flat, values, int(np.count_nonzero(valid))


def run_pass(
    grid: GridSpec,
    mask: da.Array,
    valid: da.Array,
    features: Mapping[str, da.Array],
    score: da.Array,
    rgb: da.Array,
    score_path: Path,
    rgb_path: Path,
) -> Gathered:
    """Compute everything in one dask computation; scratch rasters land on disk."""
    chunks = mask.chunks
    names = tuple(features)
    feats = [features[n].rechunk(chunks) for n in names]
    valid = valid.rechunk(chunks)
    lock = threading.Lock()
    with (
        rasterio.open(score_path, "w", **scratch_profile(grid, 1, "float32", np.nan)) as sdst,
        rasterio.open(rgb_path, "w", **scratch_profile(grid, 6, "uint8", None)) as rdst,
    ):
        stores = da.store(
            [score.rechunk(chunks), rgb.rechunk({0: 6, 1: chunks[0], 2: chunks[1]})],
            [_RasterTarget(sdst, lock), _RasterTarget(rdst, lock)],
            lock=False,
            compute=False,
        )
        # unoptimised delayed blocks keep the same keys as the store graph, so shared work
        # (loading, compositing, differencing) is computed once
        mask_blocks = mask.to_delayed(optimize_graph=False)
        valid_blocks = valid.to_delayed(optimize_graph=False)
        feat_blocks = [f.to_delayed(optimize_graph=False) for f in feats]
        row_starts = np.cumsum((0, *chunks[0][:-1]))
        col_starts = np.cumsum((0, *chunks[1][:-1]))
        gathers = []
        for i, row0 in enumerate(row_starts):
            for j, col0 in enumerate(col_starts):
                gathers.append(
                    dask.delayed(_gather_block)(
                        mask_blocks[i, j],
                        valid_blocks[i, j],
                        int(row0),
                        int(col0),
                        grid.width,
                        names,
                        *[fb[i, j] for fb in feat_blocks],
                    )
                )
        _, results = dask.compute(stores, gathers)
    flats = [r[0] for r in results]
    flat_index = np.concatenate(flats) if flats else np.empty(0, np.int64)
    values = {
        n: (np.concatenate([r[1][n] for r in results]) if results else np.empty(0, np.float32))
        for n in names
    }
    return Gathered(flat_index, values, sum(r[2] for r in results), grid.width * grid.height)
