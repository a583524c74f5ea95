"""Compiled per-chunk kernels of the change test (numba, as xarray-spatial writes its own).

Each replaces a numpy or scipy composition that made several passes over a chunk and
temporaries the size of it. They release the GIL, so dask's threads run them side by side.
`tests/test_kernels.py` holds each against the numpy or scipy function it replaces: the medians
and the evidence lookup are bit-identical (a median selects one of its values; the lookup
interpolates in the same cell with the same formula), the box means equal to float32 rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..jit import ngjit_numpy_division
from ..tiles import fetch_rows


@ngjit_numpy_division
def _median9(
    p0: float,
    p1: float,
    p2: float,
    p3: float,
    p4: float,
    p5: float,
    p6: float,
    p7: float,
    p8: float,
) -> float:
    # Paeth's 19-exchange network for the median of nine, on scalars so that the compiler
    # keeps them in registers and vectorises the loop over a row
    p1, p2 = min(p1, p2), max(p1, p2)
    p4, p5 = min(p4, p5), max(p4, p5)
    p7, p8 = min(p7, p8), max(p7, p8)
    p0, p1 = min(p0, p1), max(p0, p1)
    p3, p4 = min(p3, p4), max(p3, p4)
    p6, p7 = min(p6, p7), max(p6, p7)
    p1, p2 = min(p1, p2), max(p1, p2)
    p4, p5 = min(p4, p5), max(p4, p5)
    p7, p8 = min(p7, p8), max(p7, p8)
    p3 = max(p0, p3)
    p5 = min(p5, p8)
    p4, p7 = min(p4, p7), max(p4, p7)
    p6 = max(p3, p6)
    p4 = max(p1, p4)
    p2 = min(p2, p5)
    p4 = min(p4, p7)
    p4, p2 = min(p4, p2), max(p4, p2)
    p4 = max(p6, p4)
    return min(p4, p2)


@ngjit_numpy_division
def _mirror_edges(p: np.ndarray) -> None:
    """Fill the one-pixel border of padded `p` by mirroring its inside (scipy's
    mode="reflect": the edge pixel repeated)."""
    h, w = p.shape[0] - 2, p.shape[1] - 2
    for y in range(1, h + 1):
        p[y, 0] = p[y, 1]
        p[y, w + 1] = p[y, w]
    for x in range(w + 2):
        p[0, x] = p[1, x]
        p[h + 1, x] = p[h, x]


@ngjit_numpy_division
def _padded(image: np.ndarray, fill: float) -> np.ndarray:
    """`image` with one pixel mirrored around it (scipy's mode="reflect"), pixels that are not
    finite set to `fill`."""
    h, w = image.shape
    out = np.empty((h + 2, w + 2), np.float32)
    fill32 = np.float32(fill)
    # the inside first, a loop without index arithmetic that the compiler vectorises
    for y in range(h):
        for x in range(w):
            value = image[y, x]
            out[y + 1, x + 1] = value if np.isfinite(value) else fill32
    _mirror_edges(out)
    return out


@ngjit_numpy_division
def median3x3(image: np.ndarray, fill: float) -> np.ndarray:
    """3x3 median of a float32 (y, x) image with mirrored edges (scipy's mode="reflect"),
    pixels that are not finite read as `fill`."""
    h, w = image.shape
    p = _padded(image, fill)
    out = np.empty((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            out[y, x] = _median9(
                p[y, x], p[y, x + 1], p[y, x + 2],
                p[y + 1, x], p[y + 1, x + 1], p[y + 1, x + 2],
                p[y + 2, x], p[y + 2, x + 1], p[y + 2, x + 2],
            )  # fmt: skip
    return out


@ngjit_numpy_division
def median3x3_bands(cube: np.ndarray) -> np.ndarray:
    """The 3x3 median of each band of a float32 (band, y, x) cube, missing pixels counted as 0
    in their neighbours' medians and left missing themselves."""
    out = np.empty(cube.shape, np.float32)
    for i in range(cube.shape[0]):
        out[i] = median3x3(cube[i], 0.0)
        for y in range(cube.shape[1]):
            for x in range(cube.shape[2]):
                if not np.isfinite(cube[i, y, x]):
                    out[i, y, x] = np.nan
    return out


@ngjit_numpy_division
def box_mean3x3(image: np.ndarray) -> np.ndarray:
    """3x3 mean of the finite pixels of a float32 (y, x) image, edges repeated (scipy's
    mode="nearest"); NaN where the pixel itself is not finite."""
    h, w = image.shape
    # values (0 where missing) and their weights, padded by repeating the edges (for one pixel
    # the same as mirroring them), so that the loop below has no branch and vectorises
    value = np.empty((h + 2, w + 2), np.float32)
    weight = np.empty((h + 2, w + 2), np.float32)
    zero, one = np.float32(0.0), np.float32(1.0)
    for y in range(h):
        for x in range(w):
            v = image[y, x]
            ok = np.isfinite(v)
            value[y + 1, x + 1] = v if ok else zero
            weight[y + 1, x + 1] = one if ok else zero
    _mirror_edges(value)
    _mirror_edges(weight)
    out = np.empty((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            total = np.float32(0.0)
            n = np.float32(0.0)
            for dy in range(3):
                for dx in range(3):
                    total += value[y + dy, x + dx]
                    n += weight[y + dy, x + dx]
            out[y, x] = total / n if np.isfinite(image[y, x]) else np.nan
    return out


@ngjit_numpy_division
def share_passing(passing: np.ndarray, size: int) -> np.ndarray:
    """Share of each pixel's `size` x `size` neighbourhood that passes; outside the grid
    counts as not passing. By running column sums, so the cost does not grow with `size`."""
    h, w = passing.shape
    r = size // 2
    # column sums over the window's rows, updated row by row; the columns inside the grid and
    # those `size` ahead as slices of their own, whose loops index from 0: numba checks an
    # index offset by a variable for being negative, which keeps the loops from vectorising
    column = np.zeros(w + 2 * r, np.int32)
    inside, ahead = column[r : r + w], column[size:]
    for yy in range(0, min(r, h)):
        _add_row(inside, passing[yy], 1)
    out = np.empty((h, w), np.float32)
    area = np.float32(size * size)
    for y in range(h):
        enter, leave = y + r, y - r - 1
        if enter < h:
            _add_row(inside, passing[enter], 1)
        if leave >= 0:
            _add_row(inside, passing[leave], -1)
        count = 0
        for x in range(size):
            count += column[x]
        row = out[y]
        for x in range(w):
            row[x] = np.float32(count) / area
            if x + 1 < w:
                count += ahead[x] - column[x]
    return out


@ngjit_numpy_division
def _add_row(column: np.ndarray, passing: np.ndarray, sign: int) -> None:
    """`sign` times a row of `passing` added to the column sums."""
    step = np.int32(sign)
    for x in range(column.shape[0]):
        column[x] += step * np.int32(passing[x])


@ngjit_numpy_division
def evidence_lookup(
    q: np.ndarray, scale: np.float32, step: float, grid: np.ndarray, table: np.ndarray, top: float
) -> np.ndarray:
    """`table` interpolated at q / scale (numpy's `interp`, `top` beyond the grid; NaN where q is
    not finite), the cell found directly: the grid's square roots are evenly spaced `step`
    apart."""
    out = np.empty(q.shape, np.float32)
    _interpolate(q.ravel(), scale, step, grid, table, _slopes(grid, table), top, out.ravel())
    return out


@ngjit_numpy_division
def _slopes(grid: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The slope of `table` over each cell of `grid`, as numpy's `interp` computes it."""
    slopes = np.empty(grid.shape[0] - 1)
    for j in range(slopes.shape[0]):
        slopes[j] = (table[j + 1] - table[j]) / (grid[j + 1] - grid[j])
    return slopes


@ngjit_numpy_division
def _interpolate(
    q: np.ndarray,
    scale: np.float32,
    step: float,
    grid: np.ndarray,
    table: np.ndarray,
    slopes: np.ndarray,
    top: float,
    out: np.ndarray,
) -> None:
    """:func:`evidence_lookup` of the values of 1-D `q` into `out` (`slopes`: :func:`_slopes`)."""
    last = grid.shape[0] - 1
    # a product finds a first guess sooner than a quotient; the cell it leads to is the same
    inverse = 1.0 / step
    for n in range(q.shape[0]):
        if not np.isfinite(q[n]):
            out[n] = np.nan
            continue
        x = np.float64(q[n] / scale)
        if x >= grid[last]:
            out[n] = top if x > grid[last] else table[last]
            continue
        if x <= grid[0]:
            out[n] = table[0]
            continue
        j = min(int(np.sqrt(x) * inverse), last - 1)
        # the square root may round across a cell's edge: step to the cell holding x
        while j > 0 and grid[j] > x:
            j -= 1
        while j < last - 1 and grid[j + 1] <= x:
            j += 1
        out[n] = slopes[j] * (x - grid[j]) + table[j]


@ngjit_numpy_division
def _clipped_rows(cube: np.ndarray, dark: np.ndarray, band: int, y: int, out: np.ndarray) -> None:
    """Row `y` of `band` minus its dark value, clipped at 0 (NaN stays NaN, as np.maximum)."""
    d = dark[band]
    zero = np.float32(0.0)
    for x in range(out.shape[0]):
        v = cube[band, y, x] - d
        out[x] = zero if v < zero else v


@ngjit_numpy_division
def surface_state(
    before: np.ndarray,
    after: np.ndarray,
    dark_before: np.ndarray,
    dark_after: np.ndarray,
    green: int,
    red: int,
    nir: int,
    swir: int,
    absorbing: np.ndarray,
) -> np.ndarray:
    """(8, y, x) float32 per date, after dark-object subtraction (clipped at 0): NDVI before and
    after, MNDWI before and after, the mean of the `absorbing` bands before and after, NIR before
    and after. Bands are indices into the (band, y, x) float32 composites.

    Row by row, in place of numpy's band copies, two clipped cubes and a temporary per index.
    The same float32 operations in the same order (the absorbing bands summed in order, then
    divided), so the result is numpy's to the bit; an undefined index (both bands 0) is NaN."""
    _, h, w = before.shape
    out = np.empty((8, h, w), np.float32)
    n_abs = absorbing.shape[0]
    count = np.float32(n_abs)
    rows = np.empty((4, w), np.float32)
    total = np.empty(w, np.float32)
    band_row = np.empty(w, np.float32)
    nan = np.float32(np.nan)
    for date in range(2):
        cube = before if date == 0 else after
        dark = dark_before if date == 0 else dark_after
        for y in range(h):
            _clipped_rows(cube, dark, green, y, rows[0])
            _clipped_rows(cube, dark, red, y, rows[1])
            _clipped_rows(cube, dark, nir, y, rows[2])
            _clipped_rows(cube, dark, swir, y, rows[3])
            _clipped_rows(cube, dark, absorbing[0], y, total)
            for k in range(1, n_abs):
                _clipped_rows(cube, dark, absorbing[k], y, band_row)
                for x in range(w):
                    total[x] += band_row[x]
            for x in range(w):
                g, r, n, s = rows[0, x], rows[1, x], rows[2, x], rows[3, x]
                vegetation = n + r
                water = g + s
                out[date, y, x] = (n - r) / vegetation if vegetation != 0 else nan
                out[2 + date, y, x] = (g - s) / water if water != 0 else nan
                out[4 + date, y, x] = total[x] / count
                out[6 + date, y, x] = n
    return out


@ngjit_numpy_division
def squared_z_sum(
    filtered: np.ndarray,
    before: np.ndarray,
    loc: np.ndarray,
    variance: np.ndarray,
    mx: np.ndarray,
    gain: np.ndarray,
    gain_error: np.ndarray,
    lever: bool,
    spread_before: np.ndarray,
    spread_after: np.ndarray,
    noise_before2: np.ndarray,
    noise_after2: np.ndarray,
    spread: bool,
) -> np.ndarray:
    """The sum over bands of the squared z-scores of (band, y, x) float32 filtered differences
    (`_Globals.z_scores`, then ``np.sum(z * z, axis=0)``): the band's `variance`, with
    `lever` the normalisation's uncertainty at the `before` reflectance, with `spread` each
    date's own variability above its noise floor (squared: `noise_*2`). Pixel by pixel, the same
    float32 operations in the same order, so the sum is numpy's to the bit (NaN to 0 and
    infinities to the largest finite values as np.nan_to_num, the bands summed in order)."""
    n_bands, h, w = filtered.shape
    out = np.zeros((h, w), np.float32)
    zero = np.float32(0.0)
    big = np.float32(np.finfo(np.float32).max)
    # band by band, each row in a loop over contiguous pixels (the compiler vectorises it); each
    # pixel's sum still runs over the bands in order, from 0 as numpy's
    for k in range(n_bands):
        var0, centre, m, g, e = variance[k], loc[k], mx[k], gain[k], gain_error[k]
        nb2, na2 = (noise_before2[k], noise_after2[k]) if spread else (zero, zero)
        for y in range(h):
            f_row, b_row, o_row = filtered[k, y], before[k, y], out[y]
            sb_row = spread_before[k, y] if spread else f_row
            sa_row = spread_after[k, y] if spread else f_row
            for x in range(w):
                var = _pixel_variance(
                    var0, b_row[x], m, g, e, lever, sb_row[x], sa_row[x], nb2, na2, spread, big
                )
                z = (f_row[x] - centre) / np.sqrt(var)
                o_row[x] = o_row[x] + z * z
    return out


@ngjit_numpy_division
def _pixel_variance(
    var0: np.float32,
    before: np.float32,
    mx: np.float32,
    gain: np.float32,
    gain_error: np.float32,
    lever: bool,
    spread_before: np.float32,
    spread_after: np.float32,
    nb2: np.float32,
    na2: np.float32,
    spread: bool,
    big: np.float32,
) -> np.float32:
    """One pixel's variance of its normalised difference (:func:`squared_z_sum`): the band's
    `var0`, with `lever` the normalisation's uncertainty at its `before` reflectance, with
    `spread` each date's variability above its squared noise floor `nb2`, `na2`."""
    zero = np.float32(0.0)
    var = var0
    if lever:
        t = (_finite(before - mx, big) / gain) * gain_error
        var = var + t * t
    if spread:
        sb = _finite(spread_before, big)
        sa = _finite(spread_after, big)
        vb = sb * sb - nb2
        va = sa * sa - na2
        vb = zero if vb < zero else vb
        va = zero if va < zero else va
        var = var + (vb + va)
    return var


@ngjit_numpy_division
def _finite(v: np.float32, big: np.float32) -> np.float32:
    """np.nan_to_num of one float32: NaN to 0, infinities to the largest finite values."""
    v = np.float32(0.0) if v != v else v
    v = big if v > big else v
    return -big if v < -big else v


@ngjit_numpy_division
def filtered_differences(
    before: np.ndarray, after: np.ndarray, gain: np.ndarray, mx: np.ndarray, my: np.ndarray
) -> np.ndarray:
    """`median3x3_bands` of the normalised differences of float32 (band, y, x) composites
    (``(after - my) / gain + mx - before`` per band, `_Globals.normalised_diff`).

    Each band's differences go straight into the median's padded buffer, then the output holds
    them until the median replaces them pixel by pixel: no cube of differences, no numpy
    temporaries. The same float32 operations in the same order, so numpy's to the bit."""
    n_bands, h, w = before.shape
    out = np.empty((n_bands, h, w), np.float32)
    p = np.empty((h + 2, w + 2), np.float32)
    zero = np.float32(0.0)
    nan = np.float32(np.nan)
    for k in range(n_bands):
        g, cx, cy = gain[k], mx[k], my[k]
        for y in range(h):
            for x in range(w):
                d = (after[k, y, x] - cy) / g + cx - before[k, y, x]
                out[k, y, x] = d
                p[y + 1, x + 1] = d if np.isfinite(d) else zero
        _mirror_edges(p)
        for y in range(h):
            for x in range(w):
                m = _median9(
                    p[y, x], p[y, x + 1], p[y, x + 2],
                    p[y + 1, x], p[y + 1, x + 1], p[y + 1, x + 2],
                    p[y + 2, x], p[y + 2, x + 1], p[y + 2, x + 2],
                )  # fmt: skip
                out[k, y, x] = m if np.isfinite(out[k, y, x]) else nan
    return out


@ngjit_numpy_division
def _maximum(a: np.float32, b: np.float32) -> np.float32:
    """np.maximum of two numbers that are not NaN: `b` where they are equal, as numpy, which
    tells 0 from -0 (the evidence of a zero difference is -0)."""
    return a if a > b else b


@ngjit_numpy_division
def _minimum(a: np.float32, b: np.float32) -> np.float32:
    """np.minimum of two numbers that are not NaN: `b` where they are equal, as numpy."""
    return a if a < b else b


@ngjit_numpy_division
def decision(
    evidence: np.ndarray,
    plausible: np.ndarray,
    strict: np.float32,
    loose: np.float32,
    support_size: int,
    majority: np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Score and decision of each pixel from its evidence (`ChangeTest.evaluate`): changed on
    its own evidence above `strict`, or above `loose` where a `majority` share of its
    `support_size` neighbourhood passes `loose` too (a size of 0: no supported test); the score
    is the ratio of the evidence to its level over one plus it, 0 where a change is not
    plausible, NaN where the evidence is not finite.

    The levels come as float32: numpy compares a float32 array with a Python float in float32.
    The same float32 operations as numpy's, so its result to the bit."""
    h, w = evidence.shape
    score = np.empty((h, w), np.float32)
    disturbed = np.empty((h, w), np.bool_)
    support = support_size > 0
    passing = np.empty((h, w) if support else (0, 0), np.bool_)
    if support:
        for y in range(h):
            for x in range(w):
                passing[y, x] = evidence[y, x] > loose and plausible[y, x]
        share = share_passing(passing, support_size)
    else:
        share = np.empty((0, 0), np.float32)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    nan = np.float32(np.nan)
    for y in range(h):
        for x in range(w):
            e = evidence[y, x]
            if not np.isfinite(e):
                score[y, x] = nan
                disturbed[y, x] = False
                continue
            ok = plausible[y, x]
            changed = e > strict and ok
            ratio = e / strict
            if support:
                s = share[y, x]
                changed = changed or (passing[y, x] and s >= majority)
                ratio = _maximum(ratio, _minimum(e / loose, s / majority))
            score[y, x] = ratio / (one + ratio) if ok else zero
            disturbed[y, x] = changed
    return score, disturbed


@ngjit_numpy_division
def surface_rules(
    state: np.ndarray, vegetated: np.float32, bare: np.float32, water: np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """From the (8, y, x) layers of `surface_state`: whether a change could be a human
    disturbance, and the after / before ratio of the absorbing-band times NIR brightness, both
    brightnesses as 3x3 box means (`box_mean3x3`). Not plausible: densely vegetated after (NDVI
    above `vegetated`), open water on either date (MNDWI above `water`), or vegetation that faded
    without the ground getting brighter and without becoming bare (the 3x3 median of NDVI after
    below `bare`).

    "Brighter" compares the geometric mean of absorbing-band and NIR brightness, so each side of
    the red edge weighs the same whatever its absolute level. The thresholds come as float32, as
    numpy compares a float32 layer with a Python float; the same float32 products and ratio as
    numpy's, so its results to the bit."""
    _, h, w = state.shape
    boxes = np.empty((4, h, w), np.float32)
    for i in range(4):
        boxes[i] = box_mean3x3(state[4 + i])
    # on the 3x3 median of NDVI: a dark surface's own NDVI is mostly noise, and a box mean
    # would blend a small site into the vegetation around it
    ndvi_after = median3x3(state[1], 1.0)
    plausible = np.empty((h, w), np.bool_)
    ratio = np.empty((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            plausible[y, x], ratio[y, x] = _rules_at(
                state[0, y, x], state[1, y, x], state[2, y, x], state[3, y, x],
                ndvi_after[y, x],
                boxes[0, y, x], boxes[1, y, x], boxes[2, y, x], boxes[3, y, x],
                vegetated, bare, water,
            )  # fmt: skip
    return plausible, ratio


@ngjit_numpy_division
def _rules_at(
    ndvi_before: np.float32,
    ndvi_after: np.float32,
    mndwi_before: np.float32,
    mndwi_after: np.float32,
    ndvi_after_median: np.float32,
    brightness_before: np.float32,
    brightness_after: np.float32,
    nir_before: np.float32,
    nir_after: np.float32,
    vegetated: np.float32,
    bare: np.float32,
    water: np.float32,
) -> tuple[bool, np.float32]:
    """:func:`surface_rules` at one pixel, from its `surface_state` layers, the 3x3 median of
    its NDVI after and the box means of its brightness layers: whether the change is
    plausible, and the brightness ratio."""
    after = brightness_after * nir_after
    before = brightness_before * nir_before
    vegetated_after = ndvi_after > vegetated
    wet = mndwi_before > water or mndwi_after > water
    bare_after = ndvi_after_median < bare
    faded = ndvi_before > vegetated and after <= before and not bare_after
    return not (vegetated_after or wet or faded), after / before


# ----------------------------------------------------------------------------------------------
# The test's passes over a block fused, a row at a time, read from the block's tiles
# ----------------------------------------------------------------------------------------------


@ngjit_numpy_division
def block_test(
    origin: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    layers: tuple[tuple[np.ndarray, ...], ...],
    first: np.ndarray,
    spread: bool,
    line: tuple[np.ndarray, np.ndarray, np.ndarray],
    noise: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    lever: bool,
    lookup: tuple[np.float32, float, np.ndarray, np.ndarray, float],
    dark: tuple[np.ndarray, np.ndarray],
    bands: np.ndarray,
    absorbing: np.ndarray,
    levels: tuple[np.float32, np.float32, np.float32],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The change evidence, plausibility and brightness ratio of each pixel of a block whose
    float32 (band, y, x) layers are read from tiles (`origin`, `heights`, `widths` as
    `tiles.Tiles` holds them): before, after, and with `spread` their spreads, each from
    ``layers[i]`` at layer ``first[i]`` onwards.

    :func:`filtered_differences`, :func:`squared_z_sum` and :func:`evidence_lookup` in one (the
    normalisation `line` (gain, mx, my); `noise` the (loc, variance, gain_error, noise_before2,
    noise_after2) of `squared_z_sum`; `lookup` the (scale, step, grid, table, top) of
    `evidence_lookup`), and :func:`surface_state` then :func:`surface_rules` in one (`dark` the
    offsets before and after, `bands` green, red, NIR and SWIR, `levels` the rules' thresholds).
    A row of each layer is read once, and what the filters and boxes need of the rows around
    it is kept in rings of three rows, so no intermediate layer is stored whole. Each pixel sees
    the same float32 operations in the same order as in those kernels, so their results to
    the bit."""
    h, w = heights.sum(), widths.sum()
    n_bands = line[0].shape[0]
    evidence = np.empty((h, w), np.float32)
    plausible = np.empty((h, w), np.bool_)
    ratio = np.empty((h, w), np.float32)
    rows = np.empty((4, n_bands, w), np.float32)
    ring = _Ring(
        np.empty((n_bands, 3, w + 2), np.float32),
        np.empty((n_bands, 3, w), np.bool_),
        np.empty((n_bands, 3, w), np.float32),
        np.empty((8, 3, w), np.float32),
        np.empty((4, 3, w + 2), np.float32),
        np.empty((4, 3, w + 2), np.float32),
        np.empty((3, w + 2), np.float32),
    )
    clipped = np.empty((2, n_bands, w), np.float32)
    total = np.empty(w, np.float32)
    q = np.empty(w, np.float32)
    boxes = np.empty((4, w), np.float32)
    median = np.empty(w, np.float32)
    scale, step, grid, table, most = lookup
    slopes = _slopes(grid, table)
    for y in range(h):
        for yy in range(0 if y == 0 else y + 1, min(y + 2, h)):
            for i in range(4 if spread else 2):
                fetch_rows(layers[i], origin, heights, widths, first[i], yy, rows[i])
            _differences_in(rows, spread, line, noise, lever, ring, yy % 3)
            _surface_in(rows, dark, bands, absorbing, clipped, total, ring, yy % 3)
        top, middle, bottom = max(y - 1, 0) % 3, y % 3, min(y + 1, h - 1) % 3
        _squared_z_out(ring, noise[0], top, middle, bottom, q)
        _interpolate(q, scale, step, grid, table, slopes, most, evidence[y])
        _surface_out(ring, levels, top, middle, bottom, boxes, median, plausible[y], ratio[y])
    return evidence, plausible, ratio


class _Ring(NamedTuple):
    """Rows of a block kept by :func:`block_test`, three of each (a row's slot: its index modulo
    3), so that a row's 3x3 neighbourhood is at hand; padded ones with their edges mirrored."""

    differences: np.ndarray  # (band, 3, x + 2): the normalised differences, 0 where missing
    finite: np.ndarray  # (band, 3, x): where they are not missing
    variance: np.ndarray  # (band, 3, x): of each band's difference (`squared_z_sum`)
    state: np.ndarray  # (8, 3, x): the layers of `surface_state`
    value: np.ndarray  # (4, 3, x + 2): its brightness layers (4-7), 0 where missing
    weight: np.ndarray  # (4, 3, x + 2): 1 where they are not missing, else 0
    ndvi_after: np.ndarray  # (3, x + 2): its NDVI after, 1 where missing


@ngjit_numpy_division
def _mirror_row(p: np.ndarray) -> None:
    """The two padding pixels of a padded row (`_mirror_edges`)."""
    w = p.shape[0] - 2
    p[0] = p[1]
    p[w + 1] = p[w]


@ngjit_numpy_division
def _differences_in(
    rows: np.ndarray,
    spread: bool,
    line: tuple[np.ndarray, np.ndarray, np.ndarray],
    noise: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    lever: bool,
    ring: _Ring,
    slot: int,
) -> None:
    """A row's normalised differences (:func:`filtered_differences`) and the variance of each
    (:func:`squared_z_sum`) into the ring's `slot`, from its (before, after, spreads) `rows`."""
    gain, mx, my = line
    _, variance, gain_error, noise_before2, noise_after2 = noise
    n_bands, w = rows.shape[1], rows.shape[2]
    zero = np.float32(0.0)
    big = np.float32(np.finfo(np.float32).max)
    for k in range(n_bands):
        g, cx, cy = gain[k], mx[k], my[k]
        var0, e = variance[k], gain_error[k]
        nb2, na2 = (noise_before2[k], noise_after2[k]) if spread else (zero, zero)
        b_row, a_row, sb_row, sa_row = rows[0, k], rows[1, k], rows[2, k], rows[3, k]
        p, ok_row, var_row = ring.differences[k, slot], ring.finite[k, slot], ring.variance[k, slot]
        for x in range(w):
            d = (a_row[x] - cy) / g + cx - b_row[x]
            ok = np.isfinite(d)
            ok_row[x] = ok
            p[x + 1] = d if ok else zero
            var_row[x] = _pixel_variance(
                var0, b_row[x], cx, g, e, lever, sb_row[x], sa_row[x], nb2, na2, spread, big
            )
        _mirror_row(p)


@ngjit_numpy_division
def _squared_z_out(
    ring: _Ring, loc: np.ndarray, top: int, middle: int, bottom: int, q: np.ndarray
) -> None:
    """The sum over bands of the squared z-scores of the middle row's median-filtered
    differences (:func:`filtered_differences`, :func:`squared_z_sum`) into `q`."""
    n_bands, w = ring.finite.shape[0], ring.finite.shape[2]
    nan = np.float32(np.nan)
    for x in range(w):
        q[x] = np.float32(0.0)
    for k in range(n_bands):
        centre = loc[k]
        pt, pm, pb = (
            ring.differences[k, top],
            ring.differences[k, middle],
            ring.differences[k, bottom],
        )
        ok_row, var_row = ring.finite[k, middle], ring.variance[k, middle]
        for x in range(w):
            m = _median9(
                pt[x], pt[x + 1], pt[x + 2],
                pm[x], pm[x + 1], pm[x + 2],
                pb[x], pb[x + 1], pb[x + 2],
            )  # fmt: skip
            f = m if ok_row[x] else nan
            z = (f - centre) / np.sqrt(var_row[x])
            q[x] = q[x] + z * z


@ngjit_numpy_division
def _surface_in(
    rows: np.ndarray,
    dark: tuple[np.ndarray, np.ndarray],
    bands: np.ndarray,
    absorbing: np.ndarray,
    clipped: np.ndarray,
    total: np.ndarray,
    ring: _Ring,
    slot: int,
) -> None:
    """A row's :func:`surface_state` layers into the ring's `slot`, and what the boxes and the
    median of :func:`surface_rules` read of them."""
    n_bands, w = rows.shape[1], rows.shape[2]
    green, red, nir, swir = bands[0], bands[1], bands[2], bands[3]
    n_abs = absorbing.shape[0]
    count = np.float32(n_abs)
    zero, one = np.float32(0.0), np.float32(1.0)
    nan = np.float32(np.nan)
    state = ring.state
    for date in range(2):
        offsets, c = dark[date], clipped[date]
        for k in range(n_bands):
            d, row, out = offsets[k], rows[date, k], c[k]
            for x in range(w):
                v = row[x] - d
                out[x] = zero if v < zero else v
        # the absorbing bands summed in order, a row at a time
        for x in range(w):
            total[x] = c[absorbing[0], x]
        for i in range(1, n_abs):
            band = c[absorbing[i]]
            for x in range(w):
                total[x] += band[x]
        g_row, r_row, n_row, s_row = c[green], c[red], c[nir], c[swir]
        ndvi, mndwi = state[date, slot], state[2 + date, slot]
        brightness, nir_row = state[4 + date, slot], state[6 + date, slot]
        for x in range(w):
            g, r, n, s = g_row[x], r_row[x], n_row[x], s_row[x]
            vegetation = n + r
            water = g + s
            ndvi[x] = (n - r) / vegetation if vegetation != 0 else nan
            mndwi[x] = (g - s) / water if water != 0 else nan
            brightness[x] = total[x] / count
            nir_row[x] = n
    for i in range(4):
        layer, value, weight = state[4 + i, slot], ring.value[i, slot], ring.weight[i, slot]
        for x in range(w):
            v = layer[x]
            ok = np.isfinite(v)
            value[x + 1] = v if ok else zero
            weight[x + 1] = one if ok else zero
        _mirror_row(value)
        _mirror_row(weight)
    ndvi_after, padded = state[1, slot], ring.ndvi_after[slot]
    for x in range(w):
        v = ndvi_after[x]
        padded[x + 1] = v if np.isfinite(v) else one
    _mirror_row(padded)


@ngjit_numpy_division
def _surface_out(
    ring: _Ring,
    levels: tuple[np.float32, np.float32, np.float32],
    top: int,
    middle: int,
    bottom: int,
    boxes: np.ndarray,
    median: np.ndarray,
    plausible: np.ndarray,
    ratio: np.ndarray,
) -> None:
    """:func:`surface_rules` of the middle row: its boxes (:func:`box_mean3x3`) and median
    (:func:`median3x3`) from the rows around it."""
    vegetated, bare, water = levels
    w = plausible.shape[0]
    zero = np.float32(0.0)
    nan = np.float32(np.nan)
    for i in range(4):
        layer, out = ring.state[4 + i, middle], boxes[i]
        vt, vm, vb = ring.value[i, top], ring.value[i, middle], ring.value[i, bottom]
        wt, wm, wb = ring.weight[i, top], ring.weight[i, middle], ring.weight[i, bottom]
        for x in range(w):
            # the nine added from 0 row by row, as box_mean3x3 adds them
            total = zero + vt[x] + vt[x + 1] + vt[x + 2]
            total = total + vm[x] + vm[x + 1] + vm[x + 2]
            total = total + vb[x] + vb[x + 1] + vb[x + 2]
            n = zero + wt[x] + wt[x + 1] + wt[x + 2]
            n = n + wm[x] + wm[x + 1] + wm[x + 2]
            n = n + wb[x] + wb[x + 1] + wb[x + 2]
            out[x] = total / n if np.isfinite(layer[x]) else nan
    pt, pm, pb = ring.ndvi_after[top], ring.ndvi_after[middle], ring.ndvi_after[bottom]
    for x in range(w):
        median[x] = _median9(
            pt[x], pt[x + 1], pt[x + 2],
            pm[x], pm[x + 1], pm[x + 2],
            pb[x], pb[x + 1], pb[x + 2],
        )  # fmt: skip
    state = ring.state
    for x in range(w):
        plausible[x], ratio[x] = _rules_at(
            state[0, middle, x], state[1, middle, x], state[2, middle, x], state[3, middle, x],
            median[x],
            boxes[0, x], boxes[1, x], boxes[2, x], boxes[3, x],
            vegetated, bare, water,
        )  # fmt: skip
