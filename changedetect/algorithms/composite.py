"""Before/after composites: per-pixel median of the valid observations in a window."""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np
import xarray as xr

from ..models import Composite, TimeWindow

#: Consistency constant that turns a median absolute deviation into a normal standard deviation.
MAD_TO_SIGMA = 1.4826


def composite(
    stack: xr.Dataset,
    valid: xr.DataArray,
    window: TimeWindow,
    bands: Sequence[str],
    *,
    min_valid: int = 1,
) -> Composite:
    """Median of valid observations per pixel, with the count and the temporal spread.

    `spread` per band is the robust temporal standard deviation (1.4826 * MAD over time) where a
    pixel has at least three valid observations, NaN elsewhere: it tells how much a pixel varies
    on its own (crops, phenology, residual haze) so a change can be judged against it.
    """
    times = [np.datetime64(t, "D").astype(object) for t in stack["time"].values]
    in_window = [window.contains(t) for t in times]
    sel = stack.isel(time=np.flatnonzero(in_window))
    sel_valid = valid.isel(time=np.flatnonzero(in_window))
    ids = [str(i) for i in sel["acquisition"].values] if "acquisition" in sel.coords else []
    count = sel_valid.sum("time").astype("int16").rename("valid_count")
    enough = count >= min_valid
    medians = {}
    spreads = {}
    for band in bands:
        masked = sel[band].where(sel_valid)
        med, mad = _median_and_mad(masked)
        medians[band] = med.where(enough).astype("float32")
        spreads[band] = (mad * MAD_TO_SIGMA).where(count >= 3).astype("float32")
    bands_ds = xr.Dataset(medians, attrs=dict(stack.attrs))
    spread_ds = xr.Dataset(spreads, attrs=dict(stack.attrs))
    return Composite(
        window=window, bands=bands_ds, valid_count=count, acquisitions=ids, spread=spread_ds
    )


def _nan_median_mad(block: np.ndarray) -> np.ndarray:
    # all-NaN pixels (cloud on every date) are expected; filling them first avoids numpy's
    # warning, which cannot be silenced thread-safely under dask
    empty = np.isnan(block).all(axis=0)
    filled = np.where(empty[None], 0.0, block)
    med = np.nanmedian(filled, axis=0)
    mad = np.nanmedian(np.abs(filled - med), axis=0)
    out = np.stack([med, mad]).astype(np.float32)
    out[:, empty] = np.nan
    return out


def _median_and_mad(masked: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Per-pixel median over time and median absolute deviation from it, in one block pass."""
    data = masked.transpose("time", "y", "x").data
    if not isinstance(data, da.Array):
        data = da.from_array(data)
    data = data.rechunk({0: -1})
    both = da.map_blocks(_nan_median_mad, data, dtype=np.float32, chunks=((2,), *data.chunks[1:]))
    coords = {k: v for k, v in masked.coords.items() if "time" not in v.dims}
    med = xr.DataArray(both[0], dims=("y", "x"), coords=coords)
    mad = xr.DataArray(both[1], dims=("y", "x"), coords=coords)
    return med, mad
