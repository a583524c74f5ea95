"""Compiled kernels of the scene statistics (:func:`estimate_globals`'s sample, not the per-chunk
test): each does in one pass what a numpy or scipy composition did in several, with the same
arithmetic in the same order, so that the statistics stay the same to the bit
(tests/test_detect.py holds each against its reference in
changedetect/testing/statistics_reference.py)."""

from __future__ import annotations

import numpy as np

from ..jit import ngjit_numpy_division


@ngjit_numpy_division
def _whole(window: np.ndarray) -> np.ndarray:
    """Pixels of a (band, y, x) window whose 3x3 neighbourhood (edges repeated) is finite in
    every band: ``scipy.ndimage.minimum_filter`` of the pixels valid in every band (along the
    rows, then down the columns)."""
    k, h, w = window.shape
    valid = np.ones((h, w), np.uint8)
    for i in range(k):
        for y in range(h):
            for x in range(w):
                valid[y, x] &= np.uint8(np.isfinite(window[i, y, x]))
    across = np.empty((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            across[y, x] = valid[y, max(x - 1, 0)] & valid[y, x] & valid[y, min(x + 1, w - 1)]
    whole = np.empty((h, w), np.bool_)
    for y in range(h):
        above, below = max(y - 1, 0), min(y + 1, h - 1)
        for x in range(w):
            whole[y, x] = (across[above, x] & across[y, x] & across[below, x]) != 0
    return whole


@ngjit_numpy_division
def _value(v: float) -> float:
    """A pixel's value in the mean's sum: 0 where it is missing."""
    return v if np.isfinite(v) else 0.0


@ngjit_numpy_division
def _mean_down(band: np.ndarray, down: np.ndarray) -> None:
    """scipy.ndimage.uniform_filter1d(size=3, mode="nearest") down the columns of a (y, x)
    band (missing pixels as 0) into `down` (the band's dtype, as scipy keeps a pass's result):
    each column a running sum in float64, the first of the three edge-repeated values summed
    from zero, each next one moved by the value entering minus the one leaving, and divided by
    3 at each output (scipy's NI_UniformFilter1D). The columns side by side, so that the loops
    over them vectorise; each column's additions are the same, in the same order."""
    h, w = band.shape
    total = np.zeros(w)
    for j in range(3):
        y = max(min(j - 1, h - 1), 0)
        for x in range(w):
            total[x] += _value(band[y, x])
    for x in range(w):
        down[0, x] = total[x] / 3.0
    for j in range(1, h):
        entering, leaving = min(j + 1, h - 1), max(j - 2, 0)
        for x in range(w):
            total[x] += _value(band[entering, x]) - _value(band[leaving, x])
            down[j, x] = total[x] / 3.0


@ngjit_numpy_division
def _mean_across(down: np.ndarray, whole: np.ndarray, out: np.ndarray, start: int) -> None:
    """The second pass of :func:`_mean_down`'s filter, along the rows of `down`, into
    ``out[start + y * x]`` (float64), NaN where not `whole`."""
    h, w = down.shape
    row = np.empty(w, down.dtype)  # the pass's result in the band's dtype, as scipy's
    for y in range(h):
        line = down[y]
        total = 0.0
        for j in range(3):
            total += np.float64(line[max(min(j - 1, w - 1), 0)])
        row[0] = total / 3.0
        for j in range(1, w):
            entering, leaving = line[min(j + 1, w - 1)], line[max(j - 2, 0)]
            total += np.float64(entering) - np.float64(leaving)
            row[j] = total / 3.0
        base = start + y * w
        for x in range(w):
            out[base + x] = row[x] if whole[y, x] else np.nan


@ngjit_numpy_division
def local_means(window: np.ndarray, out: np.ndarray, start: int) -> None:
    """3x3 means of each band of a (band, y, x) window into ``out[:, start:start + y * x]``
    (float64), NaN where any of the nine pixels (edges repeated) of any band is missing: what
    ``scipy.ndimage.uniform_filter(size=3, mode="nearest")`` gives on each band with its missing
    pixels set to 0 (a pass down the columns into the window's dtype, then one along the rows),
    kept where :func:`_whole`."""
    k, h, w = window.shape
    whole = _whole(window)
    down = np.empty((h, w), window.dtype)
    for i in range(k):
        _mean_down(window[i], down)
        _mean_across(down, whole, out[i], start)


@ngjit_numpy_division
def group_sums(
    x_values: np.ndarray,
    y_values: np.ndarray,
    x_centre: np.ndarray,
    y_centre: np.ndarray,
    group: np.ndarray,
    n: int,
) -> np.ndarray:
    """Per band and group (`group`: each pixel's, 0 to n - 1), the sums of x, y, x², y² and xy
    of the (band, pixel) values about each band's centres, (5, band, n) float64: what
    ``np.bincount(group, weights=v, minlength=n)`` adds for each, in the pixels' order."""
    k, m = x_values.shape
    out = np.zeros((5, k, n))
    for i in range(k):
        for p in range(m):
            g = group[p]
            x = x_values[i, p] - x_centre[i]
            y = y_values[i, p] - y_centre[i]
            out[0, i, g] += x
            out[1, i, g] += y
            out[2, i, g] += x * x
            out[3, i, g] += y * y
            out[4, i, g] += x * y
    return out
