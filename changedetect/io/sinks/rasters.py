"""Change rasters as Cloud-Optimized GeoTIFFs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.errors import RasterioIOError
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window

from ...algorithms.patch_pixels import PatchPixels
from ..atomic import atomic_path
from .chips import PREVIEW_BANDS


def scratch_profile(grid: GeoBox, count: int, dtype: str, nodata: float | None) -> dict:
    """A tiled, uncompressed GeoTIFF profile for intermediate rasters written block by block."""
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype,
        "crs": grid.crs.to_wkt(),
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        # scratch files live minutes: compressing imagery would cost more than the disk it saves
        # (the preview, 10 bytes a pixel, in zstd at its fastest level: 12 CPU-s more at 20,000²)
        "compress": "none",
        # each band in tiles of its own: the report's overview reads 3 of the preview's 10 bands,
        # 6x cheaper than decoding pixel-interleaved tiles of all 10 (1.6 -> 0.25 CPU-s at 10,000²)
        "interleave": "band",
        "BIGTIFF": "IF_SAFER",
    }


def write_cog(source: Path, target: Path) -> Path:
    """Copy a tiled GeoTIFF into a COG (overviews, internal tiling) atomically."""
    with atomic_path(target) as tmp:
        rio_copy(
            str(source),
            str(tmp),
            driver="COG",
            COMPRESS="DEFLATE",
            # a score raster is zeros around patches of a few values: deflate packs those runs
            # as they are, and worse after the floating-point predictor splits them into byte
            # planes (2.4 against 3.5 MB for 2.5 % of pixels in patches, at half the CPU)
            PREDICTOR="NO",
            OVERVIEWS="AUTO",
            RESAMPLING="NEAREST",
            BLOCKSIZE=512,
        )
    return target


def mask_score_to_patches(
    score_path: Path,
    pixels: PatchPixels,
    patch_score: np.ndarray,
    *,
    block_rows: int = 256,
) -> None:
    """Make a raw score raster (a scratch GeoTIFF) fit for publication, in place:
    0 outside kept patches, NaN stays nodata. Rewriting it in place spares writing the whole
    grid once more before the COG copy.

    Inside a patch every pixel is change: where its own score is 0 or missing (a filled hole, a
    closed gap) it takes its patch's score, `patch_score[label]`. A window that comes out as it
    was is not written again: with sparse change most hold only 0 and NaN and no patch.
    """
    patch_score = np.asarray(patch_score, dtype=np.float32)
    with rasterio.open(score_path, "r+") as raster:
        for row in range(0, raster.height, block_rows):
            window = Window(0, row, raster.width, min(block_rows, raster.height - row))
            score = raster.read(1, window=window)
            at, label = pixels.in_rows(slice(row, row + window.height))
            out = _published_score(score, at, label, patch_score)
            # compared bit for bit: a -0.0 outside the patches is written as 0.0
            if not np.array_equal(out.view(np.uint32), score.view(np.uint32)):
                raster.write(out, 1, window=window)


def _published_score(
    score: np.ndarray, at: np.ndarray, label: np.ndarray, patch_score: np.ndarray
) -> np.ndarray:
    """A float32 window of the raw score with the patch pixels at raveled positions `at` (labels
    `label`): NaN stays, 0 elsewhere outside the patches, the patch's score where a patch pixel's
    own is not above 0."""
    out = np.where(np.isnan(score), score, np.float32(0.0))
    own = score.reshape(-1)[at]
    out.reshape(-1)[at] = np.where(own > 0, own, patch_score[label])
    return out


#: The score's scratch raster is zeros outside the changed pixels, and NaN where there is no data:
#: zstd at its fastest level packs those runs some 4,000 times (0.1 against 419 MB at 10,000²)
#: for less CPU than the page cache takes to hold them (0.09 against 0.2-0.6 CPU-s). At 20,000²
#: the uncompressed 1.6 GB, with the preview's 4 GB, went past the kernel's budget of dirty
#: pages, and the pass's writer thread waited on the disk.
SCORE_SCRATCH_COMPRESSION = {"compress": "zstd", "zstd_level": 1}


class ScratchRasters:
    """The pass's blocks as they come: the float32 score (compressed,
    :data:`SCORE_SCRATCH_COMPRESSION`) and the uint8 before/after preview
    (:data:`~changedetect.io.sinks.chips.PREVIEW_BANDS`), each in a tiled scratch GeoTIFF on
    `grid` (a context manager; `write` takes any object with the `Block` fields row0, col0,
    score and preview)."""

    def __init__(self, grid: GeoBox, score_path: Path, preview_path: Path) -> None:
        self.grid, self.score_path, self.preview_path = grid, score_path, preview_path
        self._score: Any = None
        self._preview: Any = None

    def __enter__(self) -> ScratchRasters:
        profile = scratch_profile(self.grid, 1, "float32", np.nan)
        try:
            self._score = rasterio.open(
                self.score_path, "w", **{**profile, **SCORE_SCRATCH_COMPRESSION}
            )
        except RasterioIOError:  # a GDAL built without zstd ("missing codec")
            self._score = rasterio.open(self.score_path, "w", **profile)
        self._preview = rasterio.open(
            self.preview_path, "w", **scratch_profile(self.grid, PREVIEW_BANDS, "uint8", None)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        for dst in (self._score, self._preview):
            if dst is not None:
                dst.close()

    def write(self, block: Any) -> None:
        height, width = block.score.shape
        window = Window(block.col0, block.row0, width, height)
        self._score.write(block.score, 1, window=window)
        self._preview.write(block.preview, window=window)
