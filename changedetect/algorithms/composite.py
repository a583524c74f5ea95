"""Before/after composites: per-pixel median of the valid observations in a window."""

from __future__ import annotations

from collections.abc import Sequence

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
        med = masked.median("time", skipna=True)
        medians[band] = med.where(enough).astype("float32")
        mad = abs(masked - med).median("time", skipna=True) * MAD_TO_SIGMA
        spreads[band] = mad.where(count >= 3).astype("float32")
    bands_ds = xr.Dataset(medians, attrs=dict(stack.attrs))
    spread_ds = xr.Dataset(spreads, attrs=dict(stack.attrs))
    return Composite(window=window, bands=bands_ds, valid_count=count, acquisitions=ids, spread=spread_ds)
