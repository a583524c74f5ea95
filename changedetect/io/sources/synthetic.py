"""The synthetic scene as an imagery source: the demo's embedded default, with known truth.

It needs no network and no files, so the demo always runs, and every detection can be scored
against the planted disturbances (:meth:`SyntheticSource.truth`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.array.core import normalize_chunks
from dask.base import tokenize
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from ...config import SyntheticSourceConfig
from ...errors import MissingBandError, SourceError
from ...models import Acquisition, TimeWindow
from ...testing.synthetic import (
    BANDS,
    PlantedChange,
    SyntheticScene,
    acquisition_dates,
    new_changes,
)

#: Nominal overpass time (UTC) given to every synthetic acquisition.
ACQUISITION_TIME = dt.time(10, 30)
_VARIABLES = (*BANDS, "SCL")


@lru_cache(maxsize=8)
def _scene(config: SyntheticSourceConfig, height: int, width: int) -> SyntheticScene:
    # Scenes are cached because search, load and truth all need the same one and laying it out
    # (placing the planted changes) takes a fraction of a second.
    return SyntheticScene(
        height,
        width,
        seed=config.seed,
        cloud_cover=config.cloud_cover,
        noise=config.noise,
        crop_rotation=config.crop_rotation,
        changes_from=config.changes_from,
        changes_until=config.changes_until,
        wet_days=tuple(config.wet_days),
    )


def _utc_naive(when: dt.datetime) -> np.datetime64:
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return np.datetime64(when, "ns")


def _render_block(
    block_info: dict[Any, Any] | None = None,
    *,
    scene: SyntheticScene,
    days: tuple[dt.date, ...],
    variables: tuple[str, ...],
) -> np.ndarray:
    assert block_info is not None
    (t0, _), _, (r0, r1), (c0, c1) = block_info[None]["array-location"]
    rendered = scene.render(days[t0], (r0, r1), (c0, c1), variables)
    out = np.empty((1, len(variables), r1 - r0, c1 - c0), dtype=np.float32)
    for i, name in enumerate(variables):
        out[0, i] = rendered[name]
    return out


class SyntheticSource:
    """A seeded synthetic Sentinel-2 L2A scene laid out on whatever grid is asked for.

    The scene depends only on the config and the grid shape: the same AOI gives the same scene.
    Load the whole AOI grid and cut windows from the result rather than loading sub-grids, which
    would each get a scene of their own.
    """

    name = "synthetic"

    def __init__(self, config: SyntheticSourceConfig | None = None) -> None:
        self.config = config or SyntheticSourceConfig()

    @classmethod
    def for_windows(
        cls, before: TimeWindow, after: TimeWindow, config: SyntheticSourceConfig | None = None
    ) -> SyntheticSource:
        """A source whose new disturbances all start between `before` and `after`.

        The scene cannot see the analysis windows (``load`` gets none), so a run whose windows
        differ from the config's ``changes_from``/``changes_until`` builds its source here.
        """
        first, last = before.end + dt.timedelta(days=1), after.start - dt.timedelta(days=1)
        if last < first:
            raise ValueError(
                f"after window {after.as_list()} must start at least two days after the before "
                f"window {before.as_list()} ends, so that changes can happen in between"
            )
        base = config or SyntheticSourceConfig()
        return cls(base.model_copy(update={"changes_from": first, "changes_until": last}))

    def scene(self, grid: GeoBox) -> SyntheticScene:
        """The scene laid out on `grid` (cached)."""
        return _scene(self.config, grid.height, grid.width)

    def search(self, grid: GeoBox, window: TimeWindow) -> list[Acquisition]:
        """One acquisition every `revisit_days` days (counted from 2020-01-01) inside `window`.

        `cloud_cover` is the flagged cloud and cirrus share of the scene in percent (0-100), as in
        the STAC ``eo:cloud_cover`` field.
        """
        scene = self.scene(grid)
        return [
            Acquisition(
                id=f"SYN_{day:%Y%m%d}",
                datetime=dt.datetime.combine(day, ACQUISITION_TIME),
                source=self.name,
                cloud_cover=round(100.0 * scene.cloud_fraction(day), 2),
                grid=grid,
            )
            for day in acquisition_dates(window, self.config.revisit_days)
        ]

    def load(
        self,
        acquisitions: Sequence[Acquisition],
        bands: Sequence[str],
        grid: GeoBox,
        chunk_size: int,
    ) -> xr.Dataset:
        """Lazily render `bands` of `acquisitions` on `grid`, one dask task per (date, block)."""
        bands = list(dict.fromkeys(bands))
        unknown = [b for b in bands if b not in _VARIABLES]
        if unknown:
            raise MissingBandError(
                f"the synthetic source has no band(s) {unknown}; ask for some of {list(_VARIABLES)}"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of pixels, got {chunk_size}")
        foreign = [a.id for a in acquisitions if a.source != self.name]
        if foreign:
            raise SourceError(
                f"acquisitions {foreign} were not found by the synthetic source; load them with "
                "the source that listed them"
            )
        days = tuple(a.datetime.date() for a in acquisitions)
        height, width = grid.shape.yx
        shape = (len(days), len(bands), height, width)
        if days:
            chunks = normalize_chunks((1, len(bands), chunk_size, chunk_size), shape)
            token = tokenize(self.config.model_dump_json(), height, width, days, bands, chunk_size)
            stack = da.map_blocks(
                _render_block,
                dtype=np.float32,
                chunks=chunks,
                meta=np.empty((0, 0, 0, 0), dtype=np.float32),
                name=f"synthetic-{token}",
                scene=self.scene(grid),
                days=days,
                variables=tuple(bands),
            )
        else:
            stack = da.zeros(
                shape, dtype=np.float32, chunks=(1, len(bands), chunk_size, chunk_size)
            )
        data_vars = {}
        for i, band in enumerate(bands):
            arr = stack[:, i]
            if band == "SCL":
                arr = arr.astype(np.uint8)
            data_vars[band] = (("time", "y", "x"), arr)
        times = np.array([_utc_naive(a.datetime) for a in acquisitions], dtype="datetime64[ns]")
        return xr.Dataset(
            data_vars,
            coords={
                "time": times,
                **xr_coords(grid, dims=("y", "x")),
                "acquisition": ("time", [a.id for a in acquisitions]),
            },
        )

    def truth(self, grid: GeoBox, before: TimeWindow, after: TimeWindow) -> list[PlantedChange]:
        """Planted disturbances absent throughout `before` and present throughout `after`."""
        return new_changes(self.scene(grid).planted(grid), before, after)

    def planted(self, grid: GeoBox) -> list[PlantedChange]:
        """Every planted disturbance, including the history that predates any analysis window."""
        return self.scene(grid).planted(grid)
