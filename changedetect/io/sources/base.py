"""The contract every imagery source meets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import xarray as xr
from odc.geo.geobox import GeoBox

from ...models import Acquisition, TimeWindow


@runtime_checkable
class ImagerySource(Protocol):
    """Finds acquisitions over an area and loads their bands lazily onto an analysis grid.

    `load` returns an ``xarray.Dataset`` with dims ``(time, y, x)``, one float32 variable per
    reflectance band (0-1 scale) and, where the source has it, a uint8 ``SCL`` variable; the arrays
    are dask-backed with chunks of ``chunk_size`` pixels in y and x, and the coordinates are
    odc-geo's for the grid (:func:`odc.geo.xr.xr_coords` with dims ``y, x``), so
    ``ds.odc.geobox`` gives the grid back. Pixels without data are NaN (SCL 0).
    """

    name: str

    def search(self, grid: GeoBox, window: TimeWindow) -> list[Acquisition]:
        """Acquisitions that intersect `grid` and fall inside `window`, oldest first."""
        ...

    def load(
        self,
        acquisitions: Sequence[Acquisition],
        bands: Sequence[str],
        grid: GeoBox,
        chunk_size: int,
    ) -> xr.Dataset:
        """Lazily load `bands` of `acquisitions` resampled onto `grid`."""
        ...
