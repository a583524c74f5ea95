"""The composites' one-call chunks (CompositeChunk) against the xarray composites they stand for:
the change test's statistics and inputs must come out bit for bit the same."""

from __future__ import annotations

import dataclasses
import datetime as dt

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from changedetect.algorithms.composite import composite
from changedetect.algorithms.detect import _has_layers, prepare_change_test
from changedetect.algorithms.masking import pixel_mask, valid_mask
from changedetect.models import TimeWindow
from changedetect.types import ANALYSIS_BANDS

CLOUDS = [8, 9, 10]
SPRING = TimeWindow(dt.date(2024, 5, 1), dt.date(2024, 5, 31))


def stack(seed: int, n_times: int, *, changed: bool = False, qa: bool = False) -> xr.Dataset:
    """`n_times` acquisitions of a 70 x 90 scene in uneven chunks, with clouds (SCL 9 or the
    QA_PIXEL cloud bit), shadow (SCL 3), nodata (NaN in one band or all of them) and, with
    `changed`, a bright square that is new."""
    rng = np.random.default_rng(seed)
    h, w = 70, 90
    base = {"B02": 0.03, "B03": 0.05, "B04": 0.04, "B08": 0.3, "B11": 0.15, "B12": 0.07}
    data = {
        b: (v * (1 + rng.normal(0, 0.05, (n_times, h, w)))).astype(np.float32)
        for b, v in base.items()
    }
    if changed:
        for b in base:
            data[b][:, 20:35, 30:50] = 0.35 + rng.normal(0, 0.01, (n_times, 15, 20))
    scl = np.full((n_times, h, w), 4, np.uint8)
    for t in range(n_times):
        scl[t, rng.random((h, w)) < 0.15] = 9
        scl[t, 5 * t : 5 * t + 6, :] = 3
        data["B11"][t, rng.random((h, w)) < 0.05] = np.nan  # one band missing
        for b in base:
            data[b][t, :, 80 - 3 * t :] = np.nan  # the swath's edge
    chunks = (1, 32, 40)
    layers = {b: (("time", "y", "x"), da.from_array(v, chunks=chunks)) for b, v in data.items()}
    if qa:
        flags = np.where(scl == 9, 1 << 3, 0).astype(np.uint16)
        layers["QA_PIXEL"] = (("time", "y", "x"), da.from_array(flags, chunks=chunks))
    else:
        layers["SCL"] = (("time", "y", "x"), da.from_array(scl, chunks=chunks))
    days = [1 + 6 * t for t in range(n_times)]
    times = np.array([np.datetime64(f"2024-05-{d:02d}", "ns") for d in days])
    return xr.Dataset(layers, coords={"time": times})


def composite_of(ds: xr.Dataset, window: TimeWindow, method: str = "scl", min_valid: int = 1):
    valid = valid_mask(ds, ANALYSIS_BANDS, CLOUDS, cloud_mask=method)
    mask = pixel_mask(ds, ANALYSIS_BANDS, CLOUDS, cloud_mask=method)
    return composite(ds, valid, window, ANALYSIS_BANDS, min_valid=min_valid, mask=mask)


def assert_same_test(before, after, **options):
    """The test prepared from the one-call layers equals the one from the xarray layers."""
    assert _has_layers(before) and _has_layers(after)
    new_test, new_inputs = prepare_change_test(before, after, **options)
    old = [dataclasses.replace(c, layers=None) for c in (before, after)]
    old_test, old_inputs = prepare_change_test(*old, **options)
    for name in ("ev_strict", "ev_loose", "support_size", "median_size"):
        assert getattr(new_test, name) == getattr(old_test, name)
    for f in dataclasses.fields(old_test.g):
        new, was = np.asarray(getattr(new_test.g, f.name)), np.asarray(getattr(old_test.g, f.name))
        assert new.dtype == was.dtype and new.tobytes() == was.tobytes(), f.name
    assert new_inputs.cube.chunks == old_inputs.cube.chunks
    new_cube, old_cube = new_inputs.cube.compute(), old_inputs.cube.compute()
    assert new_cube.dtype == old_cube.dtype == np.float32
    assert new_cube.tobytes() == old_cube.tobytes()
    return new_test, new_cube


@pytest.mark.parametrize(("n_before", "n_after"), [(5, 1), (5, 4), (1, 1), (2, 3)])
def test_layers_give_the_inputs_and_statistics_of_the_xarray_composites(n_before, n_after):
    before = composite_of(stack(1, n_before), SPRING)
    after = composite_of(stack(2, n_after, changed=True), SPRING)
    assert before.layers is not None and after.layers is not None
    test, cube = assert_same_test(before, after)
    assert np.isnan(cube).any() and np.isfinite(cube).any()
    assert test.g.gain_error.any()  # statistics learnt from the sample, not the neutral ones
    if n_before > 2 and n_after > 2:
        assert test.g.use_spread  # the spreads are among the inputs compared


def test_layers_of_a_window_that_takes_some_acquisitions_only():
    ds = stack(3, 5)
    early = TimeWindow(dt.date(2024, 5, 6), dt.date(2024, 5, 20))  # the 2nd to 4th of five
    before = composite_of(ds, early, min_valid=2)
    assert before.layers.chunk.members == (1, 2, 3)
    after = composite_of(stack(4, 3, changed=True), SPRING)
    assert_same_test(before, after)
    assert_same_test(before, after, use_spread=False)


def test_layers_with_a_cloud_mask_from_neighbouring_pixels_read_the_valid_mask():
    before = composite_of(stack(5, 4), SPRING, "multitemporal")
    after = composite_of(stack(6, 3, changed=True), SPRING, "multitemporal")
    assert before.layers.chunk.mask is None  # the valid mask is one of the chunk's inputs
    assert_same_test(before, after)


@pytest.mark.parametrize("method", ["scl", "none", "qa_pixel"])
def test_pixel_mask_is_valid_mask(method):
    ds = stack(7, 3, qa=method == "qa_pixel")
    mask = pixel_mask(ds, ANALYSIS_BANDS, CLOUDS, cloud_mask=method)
    expected = valid_mask(ds, ANALYSIS_BANDS, CLOUDS, cloud_mask=method).values
    blocks = {name: ds[name].values for name in mask.reads}
    assert np.array_equal(mask(blocks), expected)
    assert not expected.all() and expected.any()
    if method != "none":
        assert not np.array_equal(mask(blocks), valid_mask(ds, ANALYSIS_BANDS, []).values)
    qa = method == "qa_pixel"
    assert pixel_mask(ds, ANALYSIS_BANDS, CLOUDS, cloud_mask="multitemporal") is None or qa


def test_a_stack_in_memory_has_no_layers():
    ds = stack(8, 2).compute()
    assert composite_of(ds, SPRING).layers is None


def test_pixel_mask_reads_scl_of_any_integer_type():
    ds = stack(9, 2)
    wide = ds.assign(SCL=ds["SCL"].astype("int16"))
    mask = pixel_mask(wide, ANALYSIS_BANDS, [*CLOUDS, 300], cloud_mask="scl")
    blocks = {name: wide[name].values for name in mask.reads}
    narrow = {**blocks, "SCL": ds["SCL"].values}
    expected = valid_mask(wide, ANALYSIS_BANDS, [*CLOUDS, 300]).values
    assert np.array_equal(mask(blocks), expected)
    assert np.array_equal(mask(narrow), expected)
