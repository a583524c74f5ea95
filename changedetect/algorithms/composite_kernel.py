"""Compiled kernel of a composite's chunk: the validity mask, the valid count, the medians and
the spreads in one pass over the stack's chunks (numba).

It replaces a numpy composition (changedetect/testing/kernel_references.py keeps it) that went
over the chunk a dozen times: NaN tests per band, the cloud lookup, the count, then a `where`,
a sort along time and two gathers per band. Here each row of the chunk is masked once, and a
row's observations of a band are sorted down its columns by a sorting network, the same
exchanges for every pixel so that the compiler vectorises them across the row (a sort pixel
by pixel branches on the data: 8x slower with 9 acquisitions). `tests/test_kernels.py` holds it
to the numpy composition bit for bit: a median picks or averages the same two values, and every
operation is done in the bands' own float type, as numpy does. (Only a pixel whose observations
hold both -0.0 and +0.0 could differ: numpy's sort leaves equal values in no set order.)
"""

from __future__ import annotations

import numpy as np

from .jit import ngjit_numpy_division


@ngjit_numpy_division
def sorting_network(n: int) -> np.ndarray:
    """The compare-exchanges (i, j), i < j, that sort `n` values in order: Batcher's odd-even
    merge sort, whose exchanges past `n` are dropped (as if padded with the largest values).
    A fixed sequence of exchanges sorts a row of pixels at once, without a branch the data
    decides."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k > 0:
            j = k % p
            while j + k < n:
                for i in range(k):
                    if i + j + k < n and (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
                j += 2 * k
            k //= 2
        p *= 2
    out = np.empty((len(pairs), 2), np.int64)
    for q in range(len(pairs)):
        out[q, 0], out[q, 1] = pairs[q]
    return out


@ngjit_numpy_division
def _sort_columns(values: np.ndarray, network: np.ndarray) -> None:
    """Sort each column of `values` (observation, pixel) in place by the exchanges of
    `network` (no NaN among them)."""
    for q in range(network.shape[0]):
        low, high = values[network[q, 0]], values[network[q, 1]]
        for x in range(values.shape[1]):
            a, b = low[x], high[x]
            smaller = a < b
            low[x] = a if smaller else b
            high[x] = b if smaller else a


@ngjit_numpy_division
def _sort(values: np.ndarray, n: int) -> None:
    """Sort ``values[:n]`` ascending in place (no NaN among them)."""
    for k in range(1, n):
        v = values[k]
        j = k
        while j > 0 and values[j - 1] > v:
            values[j] = values[j - 1]
            j -= 1
        values[j] = v


@ngjit_numpy_division
def _middle(ordered: np.ndarray, n: int):  # noqa: ANN202 (the bands' float type)
    """The median of sorted ``ordered[:n]``, n > 0: the mean of its two middle values, in
    their own float type (x * 0.5 rounds as x / 2 does)."""
    return (ordered[(n - 1) // 2] + ordered[n // 2]) * np.float32(0.5)


@ngjit_numpy_division
def _spread_of(ordered: np.ndarray, n: int, med, sigma: np.float32) -> np.float32:  # noqa: ANN001
    """`sigma` times the median absolute deviation of sorted ``ordered[:n]`` from `med`, for
    any `med`: deviations that are NaN (from an infinite median) are left out, as numpy's
    sort puts them last; NaN when all are."""
    deviations = np.empty(n, ordered.dtype)
    k = 0
    for j in range(n):
        d = abs(ordered[j] - med)
        if not np.isnan(d):
            deviations[k] = d
            k += 1
    if k == 0:
        return np.float32(np.nan)
    _sort(deviations, k)
    # numpy rounds the MAD to float32, then scales it in float32
    return np.float32(_middle(deviations, k)) * sigma


@ngjit_numpy_division
def _valid_row(
    tested: tuple[np.ndarray, ...],
    n_tested: int,
    quality: np.ndarray,
    rejected: np.ndarray,
    has_quality: bool,
    members: np.ndarray,
    y: int,
    valid: np.ndarray,
    n_valid: np.ndarray,
) -> None:
    """Whether each member's observation of row `y` is valid (member, x), and how many are
    (x): every `tested` layer has data and the quality layer's value is not rejected."""
    n_valid[:] = 0
    for j in range(members.size):
        t = members[j]
        for x in range(valid.shape[1]):
            valid[j, x] = not (has_quality and rejected[quality[t, y, x]])
        for b in range(n_tested):
            layer = tested[b]
            for x in range(valid.shape[1]):
                valid[j, x] &= not np.isnan(layer[t, y, x])
        for x in range(valid.shape[1]):
            n_valid[x] += valid[j, x]


@ngjit_numpy_division
def _sorted_row(
    layer: np.ndarray,
    members: np.ndarray,
    y: int,
    valid: np.ndarray,
    network: np.ndarray,
    ordered: np.ndarray,
    n_kept: np.ndarray,
) -> None:
    """Row `y` of `layer`'s valid observations that are not NaN, sorted down each column of
    `ordered` (member, x), `n_kept` of them; the others are +inf, which sort last (and equal
    any +inf observed)."""
    n_kept[:] = 0
    for j in range(members.size):
        t = members[j]
        for x in range(ordered.shape[1]):
            v = layer[t, y, x]
            kept = valid[j, x] and not np.isnan(v)
            ordered[j, x] = v if kept else np.inf
            n_kept[x] += kept
    _sort_columns(ordered, network)


@ngjit_numpy_division
def _row_spreads(
    ordered: np.ndarray,
    n_kept: np.ndarray,
    med: np.ndarray,
    n_valid: np.ndarray,
    network: np.ndarray,
    deviations: np.ndarray,
    sigma: np.float32,
    out: np.ndarray,
) -> None:
    """`sigma` times the median absolute deviation from `med` of each column's sorted
    observations into `out` (x), where at least 3 are valid; NaN elsewhere."""
    for j in range(ordered.shape[0]):
        for x in range(ordered.shape[1]):
            deviation = abs(ordered[j, x] - med[x])
            deviations[j, x] = deviation if j < n_kept[x] else np.inf
    _sort_columns(deviations, network)
    for x in range(ordered.shape[1]):
        n = n_kept[x]
        if n == 0 or n_valid[x] < 3:
            out[x] = np.nan
        elif np.isfinite(med[x]):
            mad = (deviations[(n - 1) // 2, x] + deviations[n // 2, x]) * np.float32(0.5)
            # numpy rounds the MAD to float32, then scales it in float32
            out[x] = np.float32(mad) * sigma
        else:  # NaN deviations: rare, pixel by pixel
            out[x] = _spread_of(ordered[:, x], n, med[x], sigma)


@ngjit_numpy_division
def masked_composite(
    bands: tuple[np.ndarray, ...],
    tested: tuple[np.ndarray, ...],
    n_tested: int,
    quality: np.ndarray,
    rejected: np.ndarray,
    has_quality: bool,
    members: np.ndarray,
    min_valid: int,
    sigma: np.float32,
    medians: np.ndarray,
    spreads: np.ndarray,
    with_spread: bool,
    count: np.ndarray,
) -> None:
    """One chunk of a composite of the acquisitions `members` (positions along time) of a stack.

    Inputs, each (time, y, x) and the same float type within `bands` and within `tested`:
    `bands`, the composite's bands; the first `n_tested` of `tested`, the layers that must all
    have data (not NaN) for an observation to be valid; `quality`, an integer layer whose
    values v are rejected where ``rejected[v]`` (with `has_quality`; else it is not read).

    Writes (as the caller's slices of a larger chunk, which is why the kernel does not return
    new arrays: copying them in would be one more pass) `count` (y, x), the valid observations;
    `medians` (band, y, x), the median of each band's valid observations that are not NaN
    where the count reaches `min_valid`, NaN elsewhere; with `with_spread`, `spreads` (band, y,
    x): `sigma` times the median absolute deviation from that median where the count is at
    least 3, NaN elsewhere. A single member is its own median and leaves `spreads` as it is.
    """
    m = members.size
    h, w = count.shape
    valid = np.empty((m, w), np.bool_)
    n_valid = np.empty(w, np.int64)
    dtype = bands[0].dtype
    ordered = np.empty((m, w), dtype)
    deviations = np.empty((m, w), dtype)
    n_kept = np.empty(w, np.int64)
    med = np.empty(w, dtype)
    network = sorting_network(m)
    nan = np.float32(np.nan)
    for y in range(h):
        _valid_row(tested, n_tested, quality, rejected, has_quality, members, y, valid, n_valid)
        for x in range(w):
            count[y, x] = n_valid[x]
        for i in range(len(bands)):
            layer = bands[i]
            if m == 1:
                t = members[0]
                for x in range(w):
                    alone = valid[0, x] and n_valid[x] >= min_valid
                    medians[i, y, x] = layer[t, y, x] if alone else nan
                continue
            _sorted_row(layer, members, y, valid, network, ordered, n_kept)
            for x in range(w):
                n = n_kept[x]
                # the two middle values (the same one for odd n; +inf where n is 0)
                med[x] = (ordered[max(n - 1, 0) // 2, x] + ordered[n // 2, x]) * np.float32(0.5)
                enough = n > 0 and n_valid[x] >= min_valid
                medians[i, y, x] = med[x] if enough else nan
            if with_spread:
                _row_spreads(
                    ordered, n_kept, med, n_valid, network, deviations, sigma, spreads[i, y]
                )
