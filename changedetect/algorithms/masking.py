"""Validity masks from the scene classification layer and from the reflectance itself."""

from __future__ import annotations

from collections.abc import Sequence

import xarray as xr

#: Sentinel-2 L2A scene classification classes.
SCL_NO_DATA = 0
SCL_SATURATED = 1
SCL_DARK = 2
SCL_CLOUD_SHADOW = 3
SCL_VEGETATION = 4
SCL_NOT_VEGETATED = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_CIRRUS = 10
SCL_SNOW = 11


def valid_mask(
    stack: xr.Dataset, bands: Sequence[str], cloud_classes: Sequence[int]
) -> xr.DataArray:
    """True where every band has data and, if an SCL band exists, its class is not invalid."""
    valid = None
    for band in bands:
        has = stack[band].notnull()
        valid = has if valid is None else (valid & has)
    if valid is None:
        raise ValueError("valid_mask needs at least one band")
    if "SCL" in stack:
        valid = valid & ~stack["SCL"].isin(list(cloud_classes))
    return valid.rename("valid")
