"""Before/after composites: per-pixel median of the valid observations in a window."""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np
import xarray as xr

from ..models import Composite, TimeWindow
from .arrays import as_dask

#: Consistency constant that turns a median absolute deviation into a normal standard deviation.
MAD_TO_SIGMA = 1.4826


def composite(
    stack: xr.Dataset,
    valid: xr.DataArray,
    window: TimeWindow,
    bands: Sequence[str],
    *,
    min_valid: int = 1,
    within: Sequence[TimeWindow] | None = None,
) -> Composite:
    """Median of valid observations per pixel, with the count and the temporal spread.

    The median is taken over the acquisitions of `stack` in `window`, and also in one of `within`
    when it is given (a seasonal baseline's weeks of each earlier year, the rest of the stack being
    history the composite is not made of).

    `spread` per band is the robust temporal standard deviation (1.4826 * MAD over time) where a
    pixel has at least three valid observations, NaN elsewhere: it tells how much a pixel varies
    on its own (crops, phenology, residual haze) so a change can be judged against it.
    """
    times = [np.datetime64(t, "D").astype(object) for t in stack["time"].values]
    in_window = [
        window.contains(t) and (within is None or any(w.contains(t) for w in within)) for t in times
    ]
    sel = stack.isel(time=np.flatnonzero(in_window))
    sel_valid = valid.isel(time=np.flatnonzero(in_window))
    ids = [str(i) for i in sel["acquisition"].values] if "acquisition" in sel.coords else []
    count = sel_valid.sum("time").astype("int16").rename("valid_count")
    enough = count >= min_valid
    medians = {}
    spreads = {}
    for band in bands:
        masked = sel[band].where(sel_valid)
        if sel.sizes["time"] == 1:
            # one observation is its own median and has no spread: no reduction to compute
            medians[band] = masked.isel(time=0, drop=True).where(enough).astype("float32")
            continue
        med, mad = _median_and_mad(masked)
        medians[band] = med.where(enough).astype("float32")
        spreads[band] = (mad * MAD_TO_SIGMA).where(count >= 3).astype("float32")
    bands_ds = xr.Dataset(medians, attrs=dict(stack.attrs))
    # fewer than three observations anywhere: no pixel has a spread
    spread_ds = xr.Dataset(spreads, attrs=dict(stack.attrs)) if spreads else None
    return Composite(
        window=window,
        bands=bands_ds,
        valid_count=count,
        acquisitions=ids,
        spread=spread_ds,
        valid=valid,
        members=np.asarray(in_window, dtype=bool),
    )


def nan_median(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Median over `axis` ignoring NaN (NaN where all are NaN), without numpy's slow masked path.

    Sorting pushes NaN to the end, so the median of the n valid values sits at (n-1)//2 and n//2.
    """
    ordered = np.sort(values, axis=axis)
    n = np.sum(~np.isnan(ordered), axis=axis, keepdims=True)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0), axis=axis)
    hi = np.take_along_axis(ordered, np.maximum(n // 2, 0), axis=axis)
    med = np.where(n > 0, (lo + hi) / 2, np.nan)
    return np.squeeze(med, axis=axis)


def _nan_median_mad(block: np.ndarray) -> np.ndarray:
    if block.shape[0] == 1:  # one observation: itself, no spread
        return np.stack([block[0], np.where(np.isnan(block[0]), np.nan, 0)]).astype(np.float32)
    med = nan_median(block, axis=0)
    mad = nan_median(np.abs(block - med), axis=0)
    return np.stack([med, mad]).astype(np.float32)


def _median_and_mad(masked: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Per-pixel median over time and median absolute deviation from it, in one block pass."""
    data = as_dask(masked.transpose("time", "y", "x").data).rechunk({0: -1})
    both = da.map_blocks(_nan_median_mad, data, dtype=np.float32, chunks=((2,), *data.chunks[1:]))
    coords = {k: v for k, v in masked.coords.items() if "time" not in v.dims}
    med = xr.DataArray(both[0], dims=("y", "x"), coords=coords)
    mad = xr.DataArray(both[1], dims=("y", "x"), coords=coords)
    return med, mad
