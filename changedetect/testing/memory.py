"""An in-memory imagery source: serves numpy arrays through the `ImagerySource` protocol."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from ..models import Acquisition, TimeWindow


class MemorySource:
    """Acquisitions held as `{band: 2-D array}` on one grid, keyed by date."""

    name = "memory"

    def __init__(self, grid: GeoBox, scenes: Mapping[dt.date, Mapping[str, np.ndarray]]) -> None:
        self.grid = grid
        self.scenes = dict(sorted(scenes.items()))
        self.acquisitions = [
            Acquisition(
                id=f"MEM_{day:%Y%m%d}",
                datetime=dt.datetime.combine(day, dt.time()),
                source=self.name,
                grid=grid,
            )
            for day in self.scenes
        ]

    def search(self, grid: GeoBox, window: TimeWindow) -> list[Acquisition]:
        return [a for a in self.acquisitions if window.contains(a.datetime)]

    def load(
        self,
        acquisitions: Sequence[Acquisition],
        bands: Sequence[str],
        grid: GeoBox,
        chunk_size: int,
    ) -> xr.Dataset:
        if grid != self.grid:
            raise ValueError("MemorySource serves its own grid only")
        data_vars = {}
        for band in bands:
            layers = []
            for acq in acquisitions:
                scene = self.scenes[acq.datetime.date()]
                if band not in scene:
                    continue
                layers.append(np.asarray(scene[band]))
            if len(layers) != len(acquisitions):
                continue
            stacked = np.stack(layers)
            chunks = (1, chunk_size, chunk_size)
            data_vars[band] = (("time", "y", "x"), da.from_array(stacked, chunks=chunks))
        coords = {
            "time": np.array([np.datetime64(a.datetime, "ns") for a in acquisitions]),
            "acquisition": ("time", [a.id for a in acquisitions]),
            **xr_coords(grid, dims=("y", "x")),
        }
        return xr.Dataset(data_vars, coords=coords)
