"""The scene statistics' numpy code as it stood before it was rewritten to select and copy less
(`estimate_globals` in changedetect/algorithms/detect/__init__.py and the robust statistics it
calls), and the numpy and scipy compositions its compiled kernels replaced
(changedetect/algorithms/detect/statistics_kernels.py), kept as references: tests/test_detect.py
holds the rewrite and the kernels to them bit for bit, on samples with and without clouds,
spreads and whole local means, and bench/scene_statistics.py times one against the other."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..algorithms.composite import MAD_TO_SIGMA
from ..algorithms.detect import (
    _K,
    DARK_PERCENTILE,
    MIN_SAMPLE_PIXELS,
    NOISE_PERCENTILE,
    Sample,
    _deming_gain,
    _Globals,
    _median_bands,
    _sample_groups,
    _sample_z_scores,
    median_variance,
    satterthwaite,
)


def median_reference(values: np.ndarray) -> float:
    a = np.asarray(values)
    if a.ndim != 1 or a.dtype != np.float64 or a.size == 0 or np.isnan(a).any():
        return float(np.median(a))
    k = a.size // 2
    part = np.partition(a, k)
    middle = part[k : k + 1] if a.size % 2 else np.array([part[:k].max(), part[k]])
    return float(np.mean(middle))


def robust_location_scale_reference(sample: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(sample)
    finite = sample.reshape(-1) if ok.all() else sample[ok]
    if finite.size == 0:
        return 0.0, 1.0
    med = median_reference(finite)
    sigma = median_reference(np.abs(finite - med)) * MAD_TO_SIGMA
    return med, max(sigma, 1e-6)


def robust_correlation_reference(z: np.ndarray) -> np.ndarray:
    k = z.shape[0]
    corr = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            s_plus = robust_location_scale_reference(z[i] + z[j])[1] ** 2
            s_minus = robust_location_scale_reference(z[i] - z[j])[1] ** 2
            corr[i, j] = corr[j, i] = (s_plus - s_minus) / (s_plus + s_minus)
    return corr


def _deming_line_reference(
    x: np.ndarray, y: np.ndarray, noise_ratio: float
) -> tuple[float, float, float]:
    mx, my = median_reference(x), median_reference(y)
    cov = np.cov(x - mx, y - my)
    gain = _deming_gain(cov[0, 0], cov[1, 1], cov[0, 1], noise_ratio)
    return float(gain), mx, my


def _dark_offsets_reference(flat: np.ndarray) -> np.ndarray:
    ok = np.all(np.isfinite(flat), axis=0)
    if not ok.any():
        return np.zeros(flat.shape[0])
    dark = np.percentile(flat[:, ok], DARK_PERCENTILE, axis=1)
    return np.maximum(np.minimum.accumulate(dark), 0.0)


def estimate_globals_reference(samples: Sequence[Sample], median_size: int) -> _Globals | None:
    def flat(arrs: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([x.reshape(_K, -1) for x in arrs], axis=1)

    before = flat([s[0] for s in samples])
    after = flat([s[1] for s in samples])
    valid = np.all(np.isfinite(before), axis=0) & np.all(np.isfinite(after), axis=0)
    b, a = before[:, valid], after[:, valid]
    if b.shape[1] < MIN_SAMPLE_PIXELS:
        return None

    local_b = flat([_local_means_reference(s[0]) for s in samples])
    local_a = flat([_local_means_reference(s[1]) for s in samples])
    whole = np.all(np.isfinite(local_b), axis=0) & np.all(np.isfinite(local_a), axis=0)
    if whole.sum() >= MIN_SAMPLE_PIXELS:
        valid = whole
        b, a = local_b[:, whole], local_a[:, whole]
    del local_b, local_a
    noise_ratio = _noise_ratio_reference(samples, valid)
    gain, mx, my = np.ones(_K), np.zeros(_K), np.zeros(_K)
    diff = a - b
    for _ in range(3):
        z2 = np.zeros(diff.shape[1])
        for i in range(_K):
            loc, sig = robust_location_scale_reference(diff[i])
            z2 += ((diff[i] - loc) / sig) ** 2
        calm = z2 <= median_reference(z2)
        for i in range(_K):
            gain[i], mx[i], my[i] = _deming_line_reference(b[i, calm], a[i, calm], noise_ratio)
        diff = (a - my[:, None]) / gain[:, None] + mx[:, None] - b
    g = _Globals(gain, mx, my, _dark_offsets_reference(before), _dark_offsets_reference(after))
    groups = _sample_groups(samples)[valid]
    g.gain_error = _gain_errors_reference(b, a, calm, groups, noise_ratio, mx, my)
    del b, a, diff, after

    filtered = flat([_median_bands(g.normalised_diff(s[0], s[1]), median_size) for s in samples])
    ok = np.all(np.isfinite(filtered), axis=0)
    for i in range(_K):
        g.loc[i], g.sigma[i] = robust_location_scale_reference(filtered[i, ok])

    sb = sa = None
    if all(s[2] is not None and s[3] is not None for s in samples):
        sb, sa = flat([s[2] for s in samples]), flat([s[3] for s in samples])  # type: ignore[misc]
        has_b, has_a = np.all(np.isfinite(sb), axis=0), np.all(np.isfinite(sa), axis=0)
        if (has_b | has_a)[ok].mean() > 0.01:
            g.use_spread = True
            if has_b.any():
                g.noise_before = np.percentile(sb[:, has_b], NOISE_PERCENTILE, axis=1)
            if has_a.any():
                g.noise_after = np.percentile(sa[:, has_a], NOISE_PERCENTILE, axis=1)
            sb, sa = sb[:, ok], sa[:, ok]

    filtered, before = filtered[:, ok], before[:, ok]
    z = _sample_z_scores(g, filtered, before, sb, sa)
    g.chi_scale, g.chi_dof = satterthwaite(robust_correlation_reference(z))
    return g


def _local_means_reference(window: np.ndarray) -> np.ndarray:
    finite = np.isfinite(window)
    whole = ndimage.minimum_filter(np.all(finite, axis=0), size=3, mode="nearest")
    out = np.full(window.shape, np.nan)
    for i in range(window.shape[0]):
        means = ndimage.uniform_filter(np.where(finite[i], window[i], 0.0), size=3, mode="nearest")
        out[i][whole] = means[whole]
    return out


def local_means_reference(window: np.ndarray) -> np.ndarray:
    """What `statistics_kernels.local_means` writes for `window`: (band, y * x) float64."""
    return _local_means_reference(window).reshape(window.shape[0], -1)


def group_sums_reference(x_values, y_values, x_centre, y_centre, group, n):  # noqa: ANN001, ANN201
    """What `statistics_kernels.group_sums` returns, by np.bincount as `_gain_errors` added."""
    x, y = x_values - x_centre[:, None], y_values - y_centre[:, None]
    return np.stack(
        [
            np.stack([np.bincount(group, weights=row, minlength=n) for row in v])
            for v in (x, y, x * x, y * y, x * y)
        ]
    )


def _gain_errors_reference(
    b: np.ndarray,
    a: np.ndarray,
    calm: np.ndarray,
    groups: np.ndarray,
    noise_ratio: float,
    mx: np.ndarray,
    my: np.ndarray,
) -> np.ndarray:
    ids, group = np.unique(groups[calm], return_inverse=True)
    n = len(ids)
    if n < 3:
        return np.zeros(b.shape[0])
    x, y = b[:, calm] - mx[:, None], a[:, calm] - my[:, None]

    def sums(v: np.ndarray) -> np.ndarray:
        per_group = np.stack([np.bincount(group, weights=row, minlength=n) for row in v])
        return per_group.sum(axis=1, keepdims=True) - per_group

    count = sums(np.ones((1, group.size)))
    sx, sy, sxx, syy, sxy = (sums(v) for v in (x, y, x * x, y * y, x * y))
    cxx, cyy = sxx - sx * sx / count, syy - sy * sy / count
    cxy = sxy - sx * sy / count
    left_out = _deming_gain(cxx, cyy, cxy, noise_ratio)
    return np.sqrt((n - 1) / n * ((left_out - left_out.mean(axis=1, keepdims=True)) ** 2).sum(1))


def _noise_ratio_reference(samples: Sequence[Sample], valid: np.ndarray) -> float:
    def typical(k: int) -> float:
        if any(s[k] is None for s in samples):
            return 1.0
        counts = np.concatenate([np.asarray(s[k]).reshape(-1) for s in samples])[valid]
        return float(np.median(counts)) if counts.size else 1.0

    return median_variance(typical(5)) / median_variance(typical(4))


def statistics_sample(
    seed: int,
    *,
    windows: int = 9,
    shape: tuple[int, int] = (64, 64),
    clouds: bool = False,
    scattered: bool = False,
    spreads: tuple[bool, bool] | None = (True, True),
    counts: bool = True,
    dtype: type = np.float32,
) -> list[Sample]:
    """Sample windows for the scene statistics: textured ground quantised to 1e-4 (ties, exact
    zeros and a few negative zeros), the after date under a gain, an offset and noise with a
    changed block per window. `clouds`: a missing rectangle in every other window; `scattered`:
    every other pixel missing (no whole 3x3 box: the fit falls back to pixels); `spreads`: which
    dates carry a temporal spread (NaN for the other; None: neither, no spread layers); `counts`:
    valid-observation counts, else None."""
    rng = np.random.default_rng(seed)
    h, w = shape
    out: list[Sample] = []
    for k in range(windows):
        ground = ndimage.uniform_filter(rng.random((_K, h, w)), size=(1, 5, 5))
        before = np.round(0.02 + 0.3 * ground + 0.01 * rng.standard_normal((_K, h, w)), 4)
        gain = 1.0 + 0.02 * np.arange(_K)
        after = np.round(gain[:, None, None] * before + 0.005, 4)
        after += np.round(0.01 * rng.standard_normal((_K, h, w)), 4)
        after[:, h // 4 : h // 2, w // 3 : w // 2] += 0.15
        before[0, :3, :3], after[0, :3, :3] = 0.0, -0.0
        if clouds and k % 2:
            before[:, h // 3 : h // 2, : w // 2] = np.nan
        if scattered:
            before[:, (np.indices((h, w)).sum(axis=0) % 2) == 1] = np.nan
        layers: list[np.ndarray | None] = [before.astype(dtype), after.astype(dtype)]
        if spreads is None:
            layers += [None, None]
        else:
            for has in spreads:
                spread = np.abs(0.01 + 0.02 * rng.standard_normal((_K, h, w))).astype(dtype)
                spread[:, rng.random((h, w)) < 0.1] = np.nan
                layers.append(spread if has else np.full((_K, h, w), np.nan, dtype))
        for _ in range(2):
            layers.append(rng.integers(1, 10, (1, h, w)).astype(np.int16) if counts else None)
        out.append(tuple(layers))  # type: ignore[arg-type]
    return out
