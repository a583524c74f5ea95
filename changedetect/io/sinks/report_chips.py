"""The before/after chips each card of the report shows, as PNG `data:` URIs.

The pipeline's own chip PNGs are used where they exist; a clue without them (no `chip_dir`, or a
file missing) gets chips cut from the run's preview raster, framed as chips.py frames them.
"""

from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from rasterio.features import rasterize
from rasterio.windows import transform as window_transform

from ...models import GridSpec, Patch, PatchClue
from ..raster import GDAL_READ_OPTIONS
from .chips import chip_window, render_chips
from .palette import palette_image, png_data_uri

__all__ = ["CardChips"]


def _cut_chips(src: Any, grid: GridSpec, patch: Patch, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Before/after chips of `patch` as chips.py renders them, from the preview raster."""
    window = chip_window(patch, src.height, src.width)
    data = src.read(window=window)
    own = rasterize(
        [patch.geometry],
        out_shape=data.shape[1:],
        transform=window_transform(window, grid.transform),
        dtype="uint8",
    ).astype(bool)
    return render_chips(data, own, math.sqrt(abs(grid.transform.a * grid.transform.e)), size)


class CardChips:
    """Chips for each clue: the pipeline's PNGs from `chip_dir` where present, else cut from
    `rgb_path` (opened once, only if needed). Use as a context manager: it closes the raster."""

    def __init__(self, chip_dir: Path | None, rgb_path: Path, grid: GridSpec, size: int) -> None:
        self.chip_dir = chip_dir
        self.rgb_path = rgb_path
        self.grid = grid
        self.size = size
        self._src: Any = None
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()

    def __enter__(self) -> CardChips:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _from_dir(self, clue: PatchClue, tag: str) -> np.ndarray | None:
        if self.chip_dir is None:
            return None
        recorded = clue.chip_before if tag == "before" else clue.chip_after
        # only the file name counts: the recorded path is relative to the output folder, and a
        # clue must not be able to point outside chip_dir
        name = Path(recorded).name if recorded else f"{clue.clue_id}_{tag}.png"
        path = self.chip_dir / name
        if not path.is_file():
            return None
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    def uris(self, clue: PatchClue, patch: Patch) -> tuple[str, str]:
        """The clue's (before, after) chips as PNG data URIs; safe to call from several threads."""
        before, after = self._from_dir(clue, "before"), self._from_dir(clue, "after")
        if before is None or after is None:
            # one dataset handle, opened once and read by one thread at a time; a GDAL
            # environment belongs to the thread that entered it, so each read enters its own
            with self._lock, rasterio.Env(**GDAL_READ_OPTIONS):
                if self._src is None:
                    self._src = self._stack.enter_context(rasterio.open(self.rgb_path))
                before, after = _cut_chips(self._src, self.grid, patch, self.size)
        return png_data_uri(palette_image(before)), png_data_uri(palette_image(after))
