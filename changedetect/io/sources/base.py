"""The contract every imagery source meets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import xarray as xr

from ...models import Acquisition, GridSpec, TimeWindow


@runtime_checkable
class ImagerySource(Protocol):
    """Finds acquisitions over an area and loads their bands lazily onto an analysis grid.

    `load` returns an ``xarray.Dataset`` with dims ``(time, y, x)``, one float32 variable per
    reflectance band (0-1 scale) and, where the source has it, a uint8 ``SCL`` variable; the arrays
    are dask-backed with chunks of ``chunk_size`` pixels in y and x and the grid is recorded with
    :meth:`GridSpec.attach`. Pixels without data are NaN (SCL 0).
    """

    name: str

    def search(self, grid: GridSpec, window: TimeWindow) -> list[Acquisition]:
        """Acquisitions that intersect `grid` and fall inside `window`, oldest first."""
        ...

    def load(
        self,
        acquisitions: Sequence[Acquisition],
        bands: Sequence[str],
        grid: GridSpec,
        chunk_size: int,
    ) -> xr.Dataset:
        """Lazily load `bands` of `acquisitions` resampled onto `grid`."""
        ...
