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

    def __init__(self, score: rasterio.io.DatasetWriter, rgb: rasterio.io.DatasetWriter) -> None:
        self.score = score
        self.rgb = rgb
        self.lock = threading.Lock()

    def write(self, row0: int, col0: int, score: np.ndarray, rgb: np.ndarray) -> None:
        window = rasterio.windows.Window(col0, row0, score.shape[1], score.shape[0])
        with self.lock:
            self.score.write(score.astype(np.float32), 1, window=window)
            self.rgb.write(rgb, window=window)


def _finish_block(
    writer: _BlockWriter,
    row0: int,
    col0: int,
    width: int,
    names: tuple[str, ...],
    mask: np.ndarray,
    valid: np.ndarray,
    score: np.ndarray,
    rgb: np.ndarray,
    *features: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    # one terminal task per chunk: writing and gathering together let dask finish a chunk and free
    # its intermediates before it starts on far-away chunks
    writer.write(row0, col0, score, rgb)
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
    blocks = {
        "mask": mask,
        "valid": valid.rechunk(chunks),
        "score": score.rechunk(chunks),
        **{f"f:{n}": features[n].rechunk(chunks) for n in names},
    }
    delayed = {k: v.to_delayed(optimize_graph=False) for k, v in blocks.items()}
    rgb_blocks = rgb.rechunk({0: 6, 1: chunks[0], 2: chunks[1]}).to_delayed(optimize_graph=False)
    row_starts = np.cumsum((0, *chunks[0][:-1]))
    col_starts = np.cumsum((0, *chunks[1][:-1]))
    with (
        rasterio.open(score_path, "w", **scratch_profile(grid, 1, "float32", np.nan)) as sdst,
        rasterio.open(rgb_path, "w", **scratch_profile(grid, 6, "uint8", None)) as rdst,
    ):
        writer = _BlockWriter(sdst, rdst)
        results: list[tuple[np.ndarray, dict[str, np.ndarray], int]] = []
        rows_per_batch = max(1, BATCH_CHUNKS // len(col_starts))
        for first in range(0, len(row_starts), rows_per_batch):
            tasks = []
            for i in range(first, min(first + rows_per_batch, len(row_starts))):
                row0 = row_starts[i]
                for j, col0 in enumerate(col_starts):
                    tasks.append(
                        dask.delayed(_finish_block)(
                            writer,
                            int(row0),
                            int(col0),
                            grid.width,
                            names,
                            delayed["mask"][i, j],
                            delayed["valid"][i, j],
                            delayed["score"][i, j],
                            rgb_blocks[0, i, j],
                            *[delayed[f"f:{n}"][i, j] for n in names],
                        )
                    )
            results.extend(dask.compute(*tasks))
    flat_index = np.concatenate([r[0] for r in results]) if results else np.empty(0, np.int64)
    values = {
        n: (np.concatenate([r[1][n] for r in results]) if results else np.empty(0, np.float32))
        for n in names
    }
    return Gathered(flat_index, values, sum(r[2] for r in results), grid.width * grid.height)
