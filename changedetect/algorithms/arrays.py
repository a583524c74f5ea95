"""The one place that tells numpy, dask and xarray arrays apart.

The algorithms are written once for all three (as xarray-spatial's `ArrayTypeFunctionMapping`
dispatches each of its functions by array type): what differs between them, choosing element by
element and making an array lazy, goes through here.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

#: Chunk edge for arrays made lazy without a chunking to follow.
DEFAULT_CHUNK = 1024


def is_lazy(*arrays: Any) -> bool:
    """Whether any of `arrays` is a dask array or an xarray object holding one."""
    return any(isinstance(getattr(a, "data", a), da.Array) for a in arrays)


def where(cond: Any, x: Any, y: Any) -> Any:
    """`x` where `cond`, else `y`: lazy when any input is (dask or xarray), xarray's coordinates
    and attributes kept (from `y` when it is an xarray object, else from `x`), and no warning
    for NaN in `cond`."""
    if isinstance(y, xr.DataArray):
        return y.where(~cond, x)
    if isinstance(x, xr.DataArray):
        return x.where(cond, y)
    if is_lazy(cond, x, y):
        return da.where(cond, x, y)
    with np.errstate(invalid="ignore"):
        return np.where(cond, x, y)


def as_dask(array: Any, chunks: Any | None = None) -> da.Array:
    """`array` (numpy, dask, or an xarray object's data) as a dask array, rechunked to `chunks`
    when given."""
    data = getattr(array, "data", array)
    if isinstance(data, da.Array):
        return data if chunks is None else data.rechunk(chunks)
    return da.from_array(np.asarray(data), chunks=chunks if chunks is not None else DEFAULT_CHUNK)
