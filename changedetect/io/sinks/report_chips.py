"""The before, after and NDVI-change chips each card of the report shows, as PNG `data:` URIs.

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
from odc.geo.geobox import GeoBox
from rasterio.features import rasterize

from ...models import Patch, PatchClue
from ..raster import GDAL_READ_OPTIONS
from .chips import chip_window, render_chips
from .palette import palette_image, png_data_uri, png_uri

__all__ = ["CardChips"]


#: The chips of a card, in the order it shows them.
CHIP_TAGS = ("before", "after", "change")


def _cut_chips(src: Any, grid: GeoBox, patch: Patch, size: int) -> dict[str, np.ndarray]:
    """The chips of `patch` as chips.py renders them, from the preview raster, by tag."""
    window = chip_window(patch, src.height, src.width)
    data = src.read(window=window)
    own = rasterize(
        [patch.geometry],
        out_shape=data.shape[1:],
        transform=grid[window.toslices()].transform,
        dtype="uint8",
    ).astype(bool)
    metres_per_px = math.sqrt(abs(grid.transform.a * grid.transform.e))
    return render_chips(data, own, metres_per_px, size)._asdict()


class CardChips:
    """Chips for each clue: the pipeline's PNGs from `chip_dir` where present, else cut from
    `rgb_path` (opened once, only if needed). Use as a context manager: it closes the raster."""

    def __init__(self, chip_dir: Path | None, rgb_path: Path, grid: GeoBox, size: int) -> None:
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

    def _from_dir(self, clue: PatchClue, tag: str) -> bytes | None:
        if self.chip_dir is None:
            return None
        recorded = getattr(clue, f"chip_{tag}")
        # only the file name counts: the recorded path is relative to the output folder, and a
        # clue must not be able to point outside chip_dir
        name = Path(recorded).name if recorded else f"{clue.clue_id}_{tag}.png"
        path = self.chip_dir / name
        if not path.is_file():
            return None
        # the pipeline writes its chips as the report would encode them (chips._save_chip)
        return path.read_bytes()

    def uris(self, clue: PatchClue, patch: Patch) -> tuple[str, str, str]:
        """The clue's (before, after, change) chips as PNG data URIs; safe to call from several
        threads. A chip not in `chip_dir` (an output folder from before the change chip, say) is
        cut from the preview raster."""
        files = {tag: self._from_dir(clue, tag) for tag in CHIP_TAGS}
        if files["before"] is None or files["after"] is None:
            # the two dates under one stretch: both from the folder or both cut
            files["before"] = files["after"] = None
        uris = {tag: png_uri(png) for tag, png in files.items() if png is not None}
        if len(uris) < len(CHIP_TAGS):
            # one dataset handle, opened once and read by one thread at a time; a GDAL
            # environment belongs to the thread that entered it, so each read enters its own
            with self._lock, rasterio.Env(**GDAL_READ_OPTIONS):
                if self._src is None:
                    self._src = self._stack.enter_context(rasterio.open(self.rgb_path))
                cut = _cut_chips(self._src, self.grid, patch, self.size)
            for tag in CHIP_TAGS:
                uris.setdefault(tag, png_data_uri(palette_image(cut[tag])))
        return uris["before"], uris["after"], uris["change"]
