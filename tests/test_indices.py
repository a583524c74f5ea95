import dask.array as da
import numpy as np
import pytest
import xarray as xr

from changedetect.algorithms.indices import bsi, mndwi, ndbi, ndvi


def test_ndvi_hand_computed():
    # (0.30 - 0.05) / (0.30 + 0.05) = 0.714285...
    assert ndvi(np.float32(0.05), np.float32(0.30)) == pytest.approx(0.25 / 0.35, rel=1e-6)


def test_bsi_hand_computed():
    b02, b04, b08, b11 = 0.10, 0.20, 0.25, 0.35
    # ((0.35 + 0.20) - (0.25 + 0.10)) / ((0.35 + 0.20) + (0.25 + 0.10)) = 0.2 / 0.9
    assert bsi(np.array(b02), np.array(b04), np.array(b08), np.array(b11)) == pytest.approx(
        0.2 / 0.9
    )


def test_ndbi_and_mndwi_hand_computed():
    assert ndbi(np.array(0.2), np.array(0.3)) == pytest.approx(0.1 / 0.5)
    assert mndwi(np.array(0.06), np.array(0.02)) == pytest.approx(0.04 / 0.08)


def test_zero_denominator_is_nan_without_warning():
    with np.errstate(all="raise"):
        out = ndvi(np.array([0.0, 0.1]), np.array([0.0, 0.3]))
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.5)


def test_same_result_for_numpy_dask_and_xarray():
    rng = np.random.default_rng(0)
    red, nir = rng.random((2, 50, 50)).astype(np.float32)
    ref = ndvi(red, nir)
    lazy = ndvi(da.from_array(red, chunks=16), da.from_array(nir, chunks=16))
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), ref)
    labelled = ndvi(xr.DataArray(red, dims=("y", "x")), xr.DataArray(nir, dims=("y", "x")))
    np.testing.assert_allclose(labelled.values, ref)
