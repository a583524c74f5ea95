"""The array-type dispatch: numpy, dask and xarray inputs give the same values, and stay lazy or
labelled as they came."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from changedetect.algorithms.arrays import as_dask, is_lazy, where
from changedetect.algorithms.indices import ndvi

VALUES = np.array([[0.1, np.nan, 0.3], [0.0, 0.5, -0.2]], dtype=np.float32)
EXPECTED = np.where(VALUES > 0, VALUES, np.nan)


def backends(values: np.ndarray) -> dict[str, object]:
    return {
        "numpy": values,
        "dask": da.from_array(values, chunks=1),
        "xarray": xr.DataArray(values, dims=("y", "x"), attrs={"units": "1"}),
        "xarray-dask": xr.DataArray(da.from_array(values, chunks=1), dims=("y", "x")),
    }


def test_where_gives_the_same_values_on_every_backend_and_keeps_its_kind():
    for kind, x in backends(VALUES).items():
        out = where(x > 0, x, np.nan)
        assert is_lazy(out) == ("dask" in kind), kind
        assert isinstance(out, xr.DataArray) == kind.startswith("xarray"), kind
        np.testing.assert_array_equal(np.asarray(out), EXPECTED, kind)
    labelled = where(backends(VALUES)["xarray"] > 0, backends(VALUES)["xarray"], np.nan)
    assert labelled.attrs == {"units": "1"}


def test_an_index_is_the_same_on_every_backend():
    red, nir = VALUES, VALUES[::-1].copy()
    expected = ndvi(red, nir)
    for kind, r in backends(red).items():
        n = backends(nir)[kind]
        np.testing.assert_allclose(np.asarray(ndvi(r, n)), expected, equal_nan=True, err_msg=kind)


def test_as_dask_wraps_or_rechunks():
    lazy = as_dask(VALUES, chunks=(1, 2))
    assert isinstance(lazy, da.Array) and lazy.chunks == ((1, 1), (2, 1))
    assert as_dask(backends(VALUES)["xarray-dask"]).chunks == ((1, 1), (1, 1, 1))
    np.testing.assert_array_equal(as_dask(backends(VALUES)["xarray"]).compute(), VALUES)
