import datetime as dt

import dask.array as da
import numpy as np
import xarray as xr

from changedetect.algorithms.composite import composite
from changedetect.algorithms.masking import valid_mask
from changedetect.models import TimeWindow

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def stack_with_clouds():
    """Five dates; clouds (SCL 9, bright) over different pixels on each date."""
    rng = np.random.default_rng(3)
    n, h, w = 5, 40, 40
    truth = {
        b: np.float32(v) for b, v in zip(BANDS, [0.03, 0.05, 0.04, 0.3, 0.15, 0.07], strict=True)
    }
    scl = np.full((n, h, w), 4, np.uint8)
    data = {
        b: np.full((n, h, w), truth[b], np.float32)
        + rng.normal(0, 0.002, (n, h, w)).astype(np.float32)
        for b in BANDS
    }
    for t in range(n):
        cloud = np.zeros((h, w), bool)
        cloud[t * 8 : t * 8 + 20, :] = True  # every pixel is cloudy on at most 3 of 5 dates
        scl[t][cloud] = 9
        for b in BANDS:
            data[b][t][cloud] = 0.6
    times = np.array([np.datetime64(f"2024-05-{d:02d}", "ns") for d in (1, 6, 11, 16, 21)])
    ds = xr.Dataset(
        {b: (("time", "y", "x"), da.from_array(v, chunks=(1, 16, 16))) for b, v in data.items()}
        | {"SCL": (("time", "y", "x"), da.from_array(scl, chunks=(1, 16, 16)))},
        coords={"time": times},
    )
    return ds, truth


def test_composite_ignores_clouds():
    ds, truth = stack_with_clouds()
    valid = valid_mask(ds, BANDS, [8, 9, 10])
    comp = composite(ds, valid, TimeWindow(dt.date(2024, 5, 1), dt.date(2024, 5, 31)), BANDS)
    for b in BANDS:
        values = comp.bands[b].values
        assert np.all(np.abs(values - truth[b]) < 0.01), b
    # a naive median over all dates would be pulled to the cloud value where 3 of 5 are cloudy
    naive = ds["B02"].median("time").values
    assert (naive > 0.3).any()
    assert comp.valid_count.values.min() >= 2


def test_composite_window_selects_dates():
    ds, _ = stack_with_clouds()
    valid = valid_mask(ds, BANDS, [8, 9, 10])
    comp = composite(ds, valid, TimeWindow(dt.date(2024, 5, 1), dt.date(2024, 5, 7)), BANDS)
    assert comp.valid_count.values.max() == 2


def test_all_cloud_gives_nan_and_zero_count():
    ds, _ = stack_with_clouds()
    ds["SCL"] = ds["SCL"] * 0 + 9
    valid = valid_mask(ds, BANDS, [8, 9, 10])
    comp = composite(ds, valid, TimeWindow(dt.date(2024, 5, 1), dt.date(2024, 5, 31)), BANDS)
    assert np.isnan(comp.bands["B04"].values).all()
    assert (comp.valid_count.values == 0).all()


def test_spread_only_with_three_observations():
    ds, _ = stack_with_clouds()
    valid = valid_mask(ds, BANDS, [8, 9, 10])
    comp = composite(ds, valid, TimeWindow(dt.date(2024, 5, 1), dt.date(2024, 5, 31)), BANDS)
    spread = comp.spread["B08"].values
    count = comp.valid_count.values
    assert np.isnan(spread[count < 3]).all()
    assert np.isfinite(spread[count >= 3]).all()
    assert float(np.nanmedian(spread)) < 0.01


def test_one_observation_is_its_own_composite_without_spread():
    ds, _ = stack_with_clouds()
    valid = valid_mask(ds, BANDS, [8, 9, 10])
    comp = composite(ds, valid, TimeWindow(dt.date(2024, 5, 1), dt.date(2024, 5, 1)), BANDS)
    first = ds["B08"].values[0]
    cloudy = ds["SCL"].values[0] == 9
    np.testing.assert_array_equal(comp.bands["B08"].values[~cloudy], first[~cloudy])
    assert np.isnan(comp.bands["B08"].values[cloudy]).all()
    assert (comp.valid_count.values == (~cloudy).astype(int)).all()
    assert comp.spread is None


def test_a_composite_within_some_weeks_leaves_the_rest_of_the_stack_out():
    ds, _ = stack_with_clouds()
    valid = valid_mask(ds, BANDS, [8, 9, 10])
    # the whole of May, but only its first and last weeks: dates 1, 6 and 21 of 1-21
    weeks = [
        TimeWindow(dt.date(2024, 5, 1), dt.date(2024, 5, 7)),
        TimeWindow(dt.date(2024, 5, 20), dt.date(2024, 5, 27)),
    ]
    may = TimeWindow(dt.date(2024, 5, 1), dt.date(2024, 5, 31))
    comp = composite(ds, valid, may, BANDS, within=weeks)
    assert comp.members.tolist() == [True, True, False, False, True]
    counts = valid.isel(time=[0, 1, 4]).sum("time").values
    assert np.array_equal(comp.valid_count.values, counts)
    # the median is over those three alone
    masked = ds["B08"].where(valid).isel(time=[0, 1, 4])
    assert np.allclose(comp.bands["B08"].values, masked.median("time").values, equal_nan=True)
    whole = composite(ds, valid, may, BANDS)
    assert whole.members.all()
    assert np.array_equal(whole.valid_count.values, valid.sum("time").values)
