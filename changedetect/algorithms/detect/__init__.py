"""Per-pixel change decision: robust, data-adaptive statistics on before/after composites.

The test, in order. The constants are physics or conventional statistical levels; none is fitted
to a scene, and the scene-dependent quantities (gains, scales, correlations, noise floors, dark
offsets) are estimated from the data every run.

1. **Relative radiometric normalisation.** The after composite is mapped onto the before one, band
   by band, with an errors-in-variables (Deming) line fitted on the likely-unchanged half of the
   sample's 3x3 local means (the half with the smallest initial change; a ninth of the noise,
   the ground's contrast kept): a uniform gain or offset between dates (sun angle,
   calibration, haze, processing baseline) is not change. The line weighs each composite by its
   noise, the variance of a median of its observations: equal for two single acquisitions (the
   orthogonal, total least squares line), several times larger for one night's acquisition than
   for a season's median. The gain's standard error (a jackknife over nine parts of the sample)
   enters each pixel's variance in proportion to its distance from the line's centre: where the
   scene does not agree on one gain, a surface far from its typical reflectance is allowed more.
2. **Band differences**, a ``median_size`` median filter on each (drops misregistration edges and
   speckle without blurring object borders), robust standardisation per band (median, MAD). Where
   the composites carry a temporal spread (>= 3 observations), each pixel is also judged against
   its own natural variability: the within-window spread in excess of the scene's sensor-noise
   floor (the median composite averages the noise away, so only the excess is real variability:
   crops, phenology). Fields that move inside a window need a larger difference to count.
3. **Change magnitude as a p-value.** The sum of the squared band z-scores of an unchanged pixel
   follows a scaled chi-square (Welch-Satterthwaite) whose scale and degrees of freedom come from
   the robust correlation between bands; the evidence is ``-log10 p``. ``false_alarm_rate`` so
   means what it says for Gaussian noise, whatever the band correlation.
4. **Two-scale decision.** A pixel is changed on its own evidence at ``false_alarm_rate``, or at
   the looser ``support_level`` when at least half of its ``support_size`` neighbourhood passes that
   level too: a coherent object is believed on weaker per-pixel evidence than an isolated pixel,
   which is how scattered misregistration and shadow edges are told from compact disturbances.
5. **Plausibility of a human disturbance.** Not reported: pixels densely vegetated after (greening,
   crops, regrowth); open water on either date (water level, turbidity, glint); and vegetation that
   gave way to ground that did not get brighter and is not bare (harvest, senescence, drought:
   some cover stays; ``BARE_AFTER_NDVI``). Clearing a canopy
   exposes ground far brighter in the visible and SWIR, where leaves absorb, than it is darker in
   the NIR; a bright green crop that is cut loses as much in the NIR as it gains elsewhere. These
   rules read indices after a dark-object subtraction whose offsets may not increase with
   wavelength (path radiance does not), so hazy top-of-atmosphere or raw-count imagery does not
   look like water or bare ground everywhere.

Global statistics come from a bounded sample: the whole grid when it is small, else 9 windows on
a fixed lattice, computed eagerly in one pass. The sample depends only on the grid shape and every
neighbourhood operation runs with a full overlap, so the result does not depend on the chunking.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed
from dask.optimization import cull
from scipy import ndimage, special

from ...engine.chunks import ChunkGraph, KeptChunk, compute_chunk, map_chunk, save_chunk
from ...models import Composite
from ...types import ANALYSIS_BANDS
from ..arrays import as_dask
from ..composite import MAD_TO_SIGMA, CompositeChunk, CompositeLayers, layer_blocks
from ..tiles import Tiles, whole
from . import kernels, statistics_kernels
from .features import index_features

#: Default per-pixel false-alarm rate of the stand-alone test (Gaussian no-change model). Real
#: imagery has heavier tails than Gaussian noise, so the realised rate on unchanged ground is higher.
#: Origin: a conventional "5 sigma"-class level (z = 4.75) for a test applied to 10^6-10^8 pixels,
#: so that pure noise yields about one pixel per Mpx (tests/test_detect.py checks the rate).
DEFAULT_FALSE_ALARM_RATE = 1e-6
#: Default per-pixel level of the neighbourhood-supported test. Origin: a weak per-pixel level
#: (z = 1.9) made strict by the majority rule below: under independent noise the chance that 41
#: of 81 pixels pass it together is below 1e-30.
DEFAULT_SUPPORT_LEVEL = 0.03
#: Default edge (pixels) of the neighbourhood whose majority must agree for the supported test
#: (the pipeline derives it from `detection.support_m`, 90 m of ground: 9 px at 10 m).
DEFAULT_SUPPORT_SIZE = 9
#: Default edge of the median filter on the band differences: the smallest odd window, which
#: removes one-pixel misregistration edges and speckle without moving object borders.
DEFAULT_MEDIAN_SIZE = 3
#: Share of the neighbourhood that must pass the supported test: a majority.
SUPPORT_SHARE = 0.5
#: NDVI above which ground counts as densely vegetated (after dark-object subtraction): closed
#: canopy and green crops lie above 0.5, sparse cover and grass below (the usual NDVI classes).
VEGETATED_NDVI = 0.5
#: NDVI (after dark-object subtraction, on its 3x3 median) below which the ground after is bare:
#: rock, spoil and dark soil lie at about 0.05-0.15, a harvested field keeps stubble and litter
#: (0.2 and more) and a drying crop its leaves. Vegetation that gave way to bare ground is a
#: disturbance even when the ground is dark (coal spoil, shale, asphalt); the "faded without
#: brightening" rule is for harvests. 0.17 sits between the two ranges, nearer the residue side.
#: The median, not the pixel's own NDVI (mostly noise on a dark surface: bare harvested soil
#: slipped through, tests/test_detect.py) nor a box mean (it blends a small site into the forest
#: around it: 6 of 15 small dark-spoil quarries were missed on the planted bench, 2 now).
BARE_AFTER_NDVI = 0.17
#: MNDWI above which a pixel counts as open water (after dark-object subtraction): Xu (2006)'s
#: threshold of the modified normalised difference water index.
WATER_MNDWI = 0.0
#: Percentile of a band taken as its dark-object value (dark-object subtraction, Chavez 1988; a
#: low percentile rather than the minimum, which is one noisy or defective pixel).
DARK_PERCENTILE = 0.1
#: Percentile of the temporal spread taken as the sensor-noise floor: the quietest pixels (deep
#: water, dense shadow, stable rooftops) vary by sensor noise alone.
NOISE_PERCENTILE = 15.0
#: Edge of the box over which brightness is averaged for the brightening rule: the smallest
#: window that evens out mixed pixels at a patch's rim (`kernels.box_mean3x3`).
BRIGHTNESS_BOX = 3
#: A grid up to this many pixels is sampled whole; larger grids through a lattice of windows.
FULL_SAMPLE_PIXELS = 768 * 768
#: Lattice of sample windows (per axis) and their edge in pixels.
SAMPLE_LATTICE = 3
SAMPLE_WINDOW = 256
#: Fewer valid sample pixels than this: sample more densely; none at all: nothing to test.
MIN_SAMPLE_PIXELS = 500
#: The denser fallback lattice when clouds hide most of the first sample.
FALLBACK_LATTICE, FALLBACK_WINDOW = 8, 96
#: Evidence (-log10 p) is capped here: beyond it, numbers only say "certain".
MAX_EVIDENCE = 300.0

_K = len(ANALYSIS_BANDS)
_B03, _B04, _B08, _B11 = (ANALYSIS_BANDS.index(b) for b in ("B03", "B04", "B08", "B11"))
#: Bands where leaves absorb (chlorophyll in the visible, water in the SWIR).
_ABSORBING = [ANALYSIS_BANDS.index(b) for b in ("B02", "B03", "B04", "B11", "B12")]
_ABSORBING_INDEX = np.array(_ABSORBING, dtype=np.int64)
#: Green, red, NIR and SWIR-1, as `kernels.block_test` reads them.
_SURFACE_BANDS = np.array([_B03, _B04, _B08, _B11], dtype=np.int64)


@dataclass
class ChangeLayers:
    """Lazy per-pixel outputs of the change test on one grid (dims y, x)."""

    score: xr.DataArray
    """Confidence 0-1 that the pixel is a disturbance (0.5 at the decision boundary, rising with
    the evidence); 0 where the change is implausible as a disturbance, NaN where either date has
    no valid data."""
    disturbed: xr.DataArray
    """Boolean decision before spatial cleaning."""
    features: xr.Dataset
    """Per-pixel quantities averaged per patch later: indices on both dates and their changes
    (d_ndvi, d_bsi, d_ndbi, d_brightness), the after-state colour (redness_after and its square),
    the change evidence (-log10 p) and the brightening of the ground (log ratio, > 0 brighter)."""
    threshold: float
    """Gaussian-equivalent z of the stand-alone per-pixel test (its upper-tail quantile)."""
    diagnostics: dict[str, Any] = field(default_factory=dict)
    """Global statistics estimated from the sample (gains, scales, chi-square fit, offsets)."""


# ----------------------------------------------------------------------------------------------
# Small robust statistics
# ----------------------------------------------------------------------------------------------


def median(values: np.ndarray, *, overwrite: bool = False) -> float:
    """``float(np.median(values))`` to the bit, by one selection where `values` is 1-D float64
    or float32: numpy's median selects three ranks at once (the two middle ones and the last,
    to tell NaN), several times slower on the half million values of the statistics sample.
    The middle value or values are averaged by np.mean, as np.median does. With `overwrite`,
    float64 `values` (an array the caller no longer needs in its order) are partitioned in place
    rather than copied, as np.median's `overwrite_input`."""
    a = np.asarray(values)
    if a.ndim != 1 or a.size == 0 or a.dtype not in (np.float64, np.float32):
        return float(np.median(a, overwrite_input=overwrite))
    k = a.size // 2
    # float32 is selected in a copy: np.median may have to take over (below) on the original
    if overwrite and a.dtype == np.float64:
        a.partition(k)
        part = a
    else:
        part = np.partition(a, k)
    # the selection orders NaN last: any NaN now lies at k or above, where max() meets it
    if np.isnan(part[k:].max()):
        return float("nan")
    middle = part[k : k + 1] if a.size % 2 else np.array([part[:k].max(), part[k]])
    # float32: 0.0 and -0.0 compare equal, and which of them a selection leaves in the middle
    # depends on how it selects (other values are the same whichever finds them): np.median's
    # own where a middle value is zero
    if a.dtype == np.float32 and not middle.all():
        return float(np.median(a))
    return float(np.mean(middle))


def robust_location_scale(sample: np.ndarray, *, overwrite: bool = False) -> tuple[float, float]:
    """Median and MAD-based sigma of the finite values of `sample`. With `overwrite`, `sample`
    may be reordered (see :func:`median`)."""
    ok = np.isfinite(sample)
    # the statistics' samples are mostly all finite: copy out the finite values only if not
    if ok.all():
        finite = sample.reshape(-1)
    else:
        finite, overwrite = np.compress(ok.reshape(-1), sample.reshape(-1)), True
    if finite.size == 0:
        return 0.0, 1.0
    med = median(finite, overwrite=overwrite)
    # the deviations' median does not depend on their order, so `finite` may be reordered
    deviations = np.subtract(finite, med)
    np.abs(deviations, out=deviations)
    return med, _mad_sigma(deviations)


def _mad_sigma(deviations: np.ndarray) -> float:
    """The MAD-based sigma of absolute deviations from the median (reordered in place), at
    least 1e-6."""
    return max(median(deviations, overwrite=True) * MAD_TO_SIGMA, 1e-6)


def robust_correlation(z: np.ndarray) -> np.ndarray:
    """Gnanadesikan-Kettenring correlation of the rows of `z` (k, n), robust through the MAD."""
    k = z.shape[0]
    corr = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            s_plus = robust_location_scale(z[i] + z[j], overwrite=True)[1] ** 2
            s_minus = robust_location_scale(z[i] - z[j], overwrite=True)[1] ** 2
            corr[i, j] = corr[j, i] = (s_plus - s_minus) / (s_plus + s_minus)
    return corr


def satterthwaite(corr: np.ndarray) -> tuple[float, float]:
    """Scale c and degrees of freedom nu with sum(z_i^2) ~ c * chi2(nu) for correlated N(0, 1)."""
    lam = np.clip(np.linalg.eigvalsh(corr), 0.0, None)
    total, squares = float(lam.sum()), float((lam**2).sum())
    if squares <= 0:
        return 1.0, float(corr.shape[0])
    return squares / total, total**2 / squares


def median_variance(n: float) -> float:
    """Variance of the median of `n` Gaussian observations, in units of one observation's.

    The asymptotic pi / (2n) with n + 1/2 for n, which holds at small n too (exact values: 1 at
    n = 1, 0.449 at n = 3, 0.287 at n = 5; this gives 1.05, 0.449, 0.286)."""
    return float(np.pi / (2.0 * max(float(n), 1.0) + 1.0))


def _deming_line(x: np.ndarray, y: np.ndarray, noise_ratio: float) -> tuple[float, float, float]:
    """Gain of the errors-in-variables (Deming) regression y ~ x through the medians, and the
    medians. `noise_ratio` is the noise variance of y over that of x; at 1 this is the orthogonal
    (total least squares) line.

    The orthogonal line assumes both composites equally noisy. A night's single acquisition
    against the median of a season of them is several times noisier, and on the narrow range of
    the visible bands over vegetation the orthogonal line then tilts towards y: gains of 1.3-1.6
    where the true ones are within 3 % (bench/timeseries.py scene), which turns a stable bright
    surface (an old quarry, a roof) into a "change" every night."""
    mx, my = median(x), median(y)
    # np.cov(x - mx, y - my) stacks its two variables into one array: stacked here already
    centred = np.empty((2, x.size))
    np.subtract(x, mx, out=centred[0])
    np.subtract(y, my, out=centred[1])
    cov = np.cov(centred)
    gain = _deming_gain(cov[0, 0], cov[1, 1], cov[0, 1], noise_ratio)
    return float(gain), mx, my


def _deming_gain(sxx: Any, syy: Any, sxy: Any, noise_ratio: float) -> Any:
    """The Deming slope from the (co)variances (arrays allowed); 1 where the fit fails or gives a
    gain far from 1 (too little unchanged ground, not a calibration change)."""
    sxx, syy, sxy = (np.asarray(v, dtype=np.float64) for v in (sxx, syy, sxy))
    spread = syy - noise_ratio * sxx
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = (spread + np.sqrt(spread**2 + 4.0 * noise_ratio * sxy**2)) / (2.0 * sxy)
    fails = ~np.isfinite(gain) | (sxx <= 0) | (syy <= 0) | (sxy == 0)
    return np.where(fails | (gain < 0.5) | (gain > 2.0), 1.0, gain)


def _dark_offsets(flat: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Dark-object value per band of (band, n) reflectance, not increasing with wavelength, from
    the pixels `ok` (finite in every band)."""
    if not ok.any():
        return np.zeros(flat.shape[0])
    dark = _percentiles(flat, ok, DARK_PERCENTILE)
    return np.maximum(np.minimum.accumulate(dark), 0.0)


def _columns(flat: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``flat[:, keep]`` by np.compress (several times faster than a boolean index on half a
    million columns, and the same values in the same order); `flat` itself, not a copy, where
    `keep` holds every column."""
    return flat if keep.all() else np.compress(keep, flat, axis=1)


def _all_finite(flat: np.ndarray) -> np.ndarray:
    """The columns of (band, n) `flat` finite in every band."""
    return np.all(np.isfinite(flat), axis=0)


# ----------------------------------------------------------------------------------------------
# Per-block steps (numpy, and the compiled kernels); the pass maps them over chunks with a halo
# ----------------------------------------------------------------------------------------------


def _median_bands(diff: np.ndarray, size: int) -> np.ndarray:
    """Median filter of each band of (band, y, x) differences; missing pixels count as 0."""
    if size <= 1:
        return diff
    if size == 3:
        return kernels.median3x3_bands(np.ascontiguousarray(diff, dtype=np.float32))
    filled = np.where(np.isfinite(diff), diff, 0.0).astype(np.float32)
    out = np.empty_like(filled)
    for i in range(filled.shape[0]):
        out[i] = ndimage.median_filter(filled[i], size=size, mode="reflect")
    return np.where(np.isfinite(diff), out, np.nan).astype(np.float32)


def _filtered_differences(g: _Globals, b: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
    """The median-filtered normalised differences of a block, in one compiled pass where the
    filter is 3x3 and the statistics float32 (:meth:`_Globals.as_float32`), else in numpy."""
    line = (g.gain, g.mx, g.my)
    if size != 3 or any(np.asarray(v).dtype != np.float32 for v in (b, a, *line)):
        return _median_bands(g.normalised_diff(b, a), size)
    return kernels.filtered_differences(np.ascontiguousarray(b), np.ascontiguousarray(a), *line)


def _natural_var(sb: np.ndarray, sa: np.ndarray, nb: Any, na: Any) -> np.ndarray:
    """Within-window variance above the sensor-noise floor, both windows summed (NaN -> 0)."""
    vb = np.clip(np.nan_to_num(sb) ** 2 - nb**2, 0.0, None)
    va = np.clip(np.nan_to_num(sa) ** 2 - na**2, 0.0, None)
    return vb + va


def _evidence(q: np.ndarray, scale: float, dof: float) -> np.ndarray:
    """-log10 of the chi-square tail probability of q / scale.

    Interpolated in a table of the exact function (smooth and monotone; the table is dense where it
    bends), since evaluating the incomplete gamma function per pixel dominates the run time."""
    return kernels.evidence_lookup(q, *_lookup(scale, dof))


def _lookup(scale: float, dof: float) -> tuple[np.float32, float, np.ndarray, np.ndarray, float]:
    """The arguments of :func:`kernels.evidence_lookup` after q: (scale, step, grid, table,
    top)."""
    grid, table = _evidence_table(round(dof, 6))
    step = float(np.sqrt(grid[-1]) / (len(grid) - 1))
    return np.float32(scale), step, grid, table, MAX_EVIDENCE


@functools.lru_cache(maxsize=16)
def _evidence_table(dof: float) -> tuple[np.ndarray, np.ndarray]:
    q_max = float(special.chdtri(dof, 10.0**-MAX_EVIDENCE))
    grid = np.linspace(0.0, np.sqrt(q_max), 8192) ** 2
    table = np.clip(-_chi2_logsf(grid, dof) / np.log(10.0), 0.0, MAX_EVIDENCE)
    return grid, table


def _chi2_logsf(x: np.ndarray, dof: float) -> np.ndarray:
    """log of the chi-square survival function at `x` (>= 0) as ``scipy.stats.chi2.logsf``
    computes it (``tests/test_detect.py`` holds them equal to the bit), without importing
    scipy.stats (half a second of every run's start): log of the upper tail above the median,
    log1p of minus the lower tail below it, 0 at 0."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape)
    inside = x > 0
    median = 2 * special.gammaincinv(dof / 2, 0.5)
    upper, lower = inside & (x > median), inside & ~(x > median)
    with np.errstate(divide="ignore"):
        out[upper] = np.log(special.chdtrc(dof, x[upper]))
        out[lower] = np.log1p(-special.chdtr(dof, x[lower]))
    return out


def gaussian_isf(p: float) -> float:
    """The standard normal's upper-tail quantile, as ``scipy.stats.norm.isf``."""
    return 0.0 - float(special.ndtri(p))


def _surface_state(
    b: np.ndarray, a: np.ndarray, dark_b: np.ndarray, dark_a: np.ndarray
) -> np.ndarray:
    """NDVI, MNDWI, absorbing-band and NIR brightness per date, dark-object corrected (8, y, x)."""
    return kernels.surface_state(
        np.ascontiguousarray(b, dtype=np.float32),
        np.ascontiguousarray(a, dtype=np.float32),
        np.asarray(dark_b, dtype=np.float32),
        np.asarray(dark_a, dtype=np.float32),
        _B03,
        _B04,
        _B08,
        _B11,
        _ABSORBING_INDEX,
    )


def _surface_rules(state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether a change could be a human disturbance (rule 5 of the module doc), and the
    brightening of the ground: the log of the after / before ratio of the geometric mean of
    absorbing-band and NIR brightness over 3x3 boxes (> 0: brighter, as when a canopy is
    removed), from the layers of `_surface_state` (:func:`kernels.surface_rules`)."""
    plausible, ratio = _surface_ratio(state)
    return plausible, brightening(ratio)


def _surface_ratio(state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_surface_rules` with the brightness ratio in place of its logarithm."""
    return kernels.surface_rules(np.ascontiguousarray(state, dtype=np.float32), *_SURFACE_LEVELS)


#: The thresholds of the surface rules as the kernels take them: numpy compares float32 layers
#: with a Python float threshold in float32.
_SURFACE_LEVELS = (np.float32(VEGETATED_NDVI), np.float32(BARE_AFTER_NDVI), np.float32(WATER_MNDWI))


def brightening(ratio: np.ndarray) -> np.ndarray:
    """The brightening of the ground from its brightness ratio (:func:`_surface_rules`): half
    its logarithm, NaN where the ratio is not positive. numpy's float32 logarithm, not the
    compiled one (the two may differ in the last bit); numpy's takes each value alone, whatever
    the array's length, alignment or strides (tests/test_detect.py), so the brightening of a few
    pixels is that of the whole block at those pixels."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (0.5 * np.log(np.where(ratio > 0, ratio, np.nan))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Global statistics from a bounded sample
# ----------------------------------------------------------------------------------------------


def sample_windows(
    shape: tuple[int, int], lattice: int | None = None, window: int | None = None
) -> list[tuple[slice, slice]]:
    """Windows the global statistics are estimated on: they depend on the grid shape only.

    The whole grid when it is small, else a `lattice` x `lattice` grid of `window`-pixel windows
    centred on the cells of an even partition of the grid.
    """
    height, width = shape
    lattice = lattice or SAMPLE_LATTICE
    window = window or SAMPLE_WINDOW
    if height * width <= FULL_SAMPLE_PIXELS:
        return [(slice(0, height), slice(0, width))]
    h, w = min(window, height), min(window, width)
    out = []
    for i in range(lattice):
        for j in range(lattice):
            r0 = int(round((i + 0.5) * height / lattice - h / 2))
            c0 = int(round((j + 0.5) * width / lattice - w / 2))
            r0, c0 = min(max(r0, 0), height - h), min(max(c0, 0), width - w)
            out.append((slice(r0, r0 + h), slice(c0, c0 + w)))
    return out


@dataclass
class _Globals:
    """What the lazy per-pixel test needs from the sample."""

    gain: np.ndarray  # per band: after = my + gain * (before - mx) on unchanged ground
    mx: np.ndarray
    my: np.ndarray
    dark_before: np.ndarray  # dark-object offsets per band
    dark_after: np.ndarray
    loc: np.ndarray = field(default_factory=lambda: np.zeros(_K))  # of the filtered difference
    sigma: np.ndarray = field(default_factory=lambda: np.ones(_K))  # its robust scale
    noise_before: np.ndarray = field(default_factory=lambda: np.zeros(_K))  # spread noise floor
    noise_after: np.ndarray = field(default_factory=lambda: np.zeros(_K))
    use_spread: bool = False
    chi_scale: float = 1.0
    chi_dof: float = float(_K)
    gain_error: np.ndarray = field(default_factory=lambda: np.zeros(_K))  # standard error

    def normalised_diff(self, b: np.ndarray, a: np.ndarray) -> np.ndarray:
        """The after composite on the before radiometry, minus before (band, ...)."""
        shape = (-1,) + (1,) * (b.ndim - 1)
        gain, mx, my = (v.reshape(shape) for v in (self.gain, self.mx, self.my))
        return (a - my) / gain + mx - b

    def z_scores(
        self,
        filtered: np.ndarray,
        sb: np.ndarray | None,
        sa: np.ndarray | None,
        before: np.ndarray | None = None,
    ) -> np.ndarray:
        """Band z-scores of the filtered differences against scene and own variability, and
        against the uncertainty of the normalisation at the `before` reflectance: an error in
        the gain moves a pixel by as much as it lies from the line's centre, so a bright surface
        far from the scene's typical reflectance is allowed more."""
        shape = (-1,) + (1,) * (filtered.ndim - 1)
        centred = filtered - self.loc.reshape(shape)
        var = self.sigma.reshape(shape) ** 2
        if before is not None and np.any(self.gain_error > 0):
            lever = np.nan_to_num(before - self.mx.reshape(shape)) / self.gain.reshape(shape)
            var = var + (lever * self.gain_error.reshape(shape)) ** 2
        if self.use_spread and sb is not None and sa is not None:
            var = var + _natural_var(
                sb, sa, self.noise_before.reshape(shape), self.noise_after.reshape(shape)
            )
        return centred / np.sqrt(var)

    def squared_z_sum(
        self,
        filtered: np.ndarray,
        sb: np.ndarray | None,
        sa: np.ndarray | None,
        before: np.ndarray,
    ) -> np.ndarray:
        """``np.sum(z * z, axis=0)`` of :meth:`z_scores` on float32 (band, y, x) blocks, in one
        compiled pass where the statistics are float32 (:meth:`as_float32`), else in numpy."""
        arrays = [filtered, before, self.loc, self.sigma, self.mx, self.gain, self.gain_error]
        spread = self.use_spread and sb is not None and sa is not None
        if spread:
            arrays += [sb, sa, self.noise_before, self.noise_after]  # type: ignore[list-item]
        if any(np.asarray(a).dtype != np.float32 for a in arrays):
            z = self.z_scores(filtered, sb, sa, before=before)
            return np.sum(z * z, axis=0)
        empty = np.empty((0, 1, 1), np.float32)
        return kernels.squared_z_sum(
            np.ascontiguousarray(filtered),
            np.ascontiguousarray(before),
            self.loc,
            self.sigma**2,
            self.mx,
            self.gain,
            self.gain_error,
            bool(np.any(self.gain_error > 0)),
            np.ascontiguousarray(sb) if spread else empty,
            np.ascontiguousarray(sa) if spread else empty,
            self.noise_before**2,
            self.noise_after**2,
            spread,
        )

    def as_float32(self) -> _Globals:
        """The same statistics as float32, so block kernels do not promote pixels to float64."""

        def f32(v: np.ndarray) -> np.ndarray:
            return np.asarray(v, dtype=np.float32)

        return _Globals(
            f32(self.gain), f32(self.mx), f32(self.my), f32(self.dark_before),
            f32(self.dark_after), f32(self.loc), f32(self.sigma), f32(self.noise_before),
            f32(self.noise_after), self.use_spread, self.chi_scale, self.chi_dof,
            f32(self.gain_error),
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        def per_band(values: np.ndarray, digits: int) -> dict[str, float]:
            return dict(zip(ANALYSIS_BANDS, np.round(values, digits).tolist(), strict=True))

        return {
            "gain": per_band(self.gain, 4),
            "gain_error": per_band(self.gain_error, 4),
            "difference_sigma": per_band(self.sigma, 5),
            "uses_temporal_spread": self.use_spread,
            "spread_noise_before": per_band(self.noise_before, 5),
            "spread_noise_after": per_band(self.noise_after, 5),
            "chi2_scale": round(self.chi_scale, 3),
            "chi2_dof": round(self.chi_dof, 3),
            "dark_before": per_band(self.dark_before, 4),
            "dark_after": per_band(self.dark_after, 4),
        }


#: (before, after, spread_before, spread_after, count_before, count_after): bands as (band, y, x),
#: counts of valid observations as (1, y, x); spreads and counts None where a composite has none.
Sample = tuple[
    np.ndarray,
    np.ndarray,
    np.ndarray | None,
    np.ndarray | None,
    np.ndarray | None,
    np.ndarray | None,
]


def estimate_globals(samples: Sequence[Sample], median_size: int) -> _Globals | None:
    """Normalisation, scales, noise floors, chi-square law and dark offsets from sample windows.

    Each sample is a :data:`Sample`. None when the sample holds too few pixels valid on both
    dates (clouds, no data).
    """

    before = _flat([s[0] for s in samples])
    after = _flat([s[1] for s in samples])
    finite_b, finite_a = _all_finite(before), _all_finite(after)
    valid = finite_b & finite_a
    if np.count_nonzero(valid) < MIN_SAMPLE_PIXELS:
        return None

    # 1. likely-unchanged pixels from the differences, then an errors-in-variables fit per band
    # weighted by how noisy each composite is (the median of its observations), refined; on the
    # sample's 3x3 local means where enough of them are whole (see _flat_local_means)
    local_b = _flat_local_means([s[0] for s in samples])
    local_a = _flat_local_means([s[1] for s in samples])
    whole = _all_finite(local_b) & _all_finite(local_a)
    if np.count_nonzero(whole) >= MIN_SAMPLE_PIXELS:
        valid = whole
        b, a = _columns(local_b, whole), _columns(local_a, whole)
    else:
        b, a = _columns(before, valid), _columns(after, valid)
    del local_b, local_a
    noise_ratio = _noise_ratio(samples, valid)
    gain, mx, my = np.ones(_K), np.zeros(_K), np.zeros(_K)
    diff = a - b
    for step in range(3):
        z2 = np.zeros(diff.shape[1])
        for i in range(_K):
            z2 += _squared_z(diff[i])
        calm = z2 <= median(z2)
        calm_b, calm_a = np.compress(calm, b, axis=1), np.compress(calm, a, axis=1)
        for i in range(_K):
            gain[i], mx[i], my[i] = _deming_line(calm_b[i], calm_a[i], noise_ratio)
        if step < 2:  # the last fit's differences are not used
            diff = a - my[:, None]
            diff /= gain[:, None]
            diff += mx[:, None]
            diff -= b
    g = _Globals(gain, mx, my, _dark_offsets(before, finite_b), _dark_offsets(after, finite_a))
    groups = np.compress(calm, _columns(_sample_groups(samples)[None], valid)[0])
    g.gain_error = _gain_errors(calm_b, calm_a, groups, noise_ratio, mx, my)
    del b, a, diff, after, calm_b, calm_a

    # 2. the filtered differences as the lazy pass sees them (the filter runs inside each window)
    filtered = _flat([_median_bands(g.normalised_diff(s[0], s[1]), median_size) for s in samples])
    ok = _all_finite(filtered)
    every = ok.all()
    for i in range(_K):
        row = filtered[i] if every else np.compress(ok, filtered[i])
        g.loc[i], g.sigma[i] = robust_location_scale(row, overwrite=not every)

    # 3. own temporal variability, where either composite has it (a night's single acquisition
    # has none, a multi-year seasonal baseline has the spread across those years)
    sb = sa = None
    if all(s[2] is not None and s[3] is not None for s in samples):
        sb, sa = _flat([s[2] for s in samples]), _flat([s[3] for s in samples])  # type: ignore[misc]
        has_b, has_a = _all_finite(sb), _all_finite(sa)
        if (has_b | has_a)[ok].mean() > 0.01:
            g.use_spread = True
            if has_b.any():
                g.noise_before = _percentiles(sb, has_b, NOISE_PERCENTILE)
            if has_a.any():
                g.noise_after = _percentiles(sa, has_a, NOISE_PERCENTILE)
            sb, sa = _columns(sb, ok), _columns(sa, ok)

    # 4. chi-square law of the sum of squares of the correlated z-scores, computed in parts
    # (the scene statistics are float64: whole, their temporaries held 150 MB more)
    filtered, before = _columns(filtered, ok), _columns(before, ok)
    z = _sample_z_scores(g, filtered, before, sb, sa)
    g.chi_scale, g.chi_dof = satterthwaite(robust_correlation(z))
    return g


def _sample_z_scores(
    g: _Globals,
    filtered: np.ndarray,
    before: np.ndarray,
    sb: np.ndarray | None,
    sa: np.ndarray | None,
) -> np.ndarray:
    """The z-scores of the sample's (band, n) filtered differences, :data:`Z_PART` columns at a
    time."""
    z = np.empty(filtered.shape)
    for k in range(0, filtered.shape[1], Z_PART):
        part = slice(k, k + Z_PART)
        z[:, part] = g.z_scores(
            filtered[:, part],
            sb[:, part] if sb is not None else None,
            sa[:, part] if sa is not None else None,
            before=before[:, part],
        )
    return z


def _flat(windows: Sequence[np.ndarray]) -> np.ndarray:
    """(band, y, x) sample windows side by side as one (band, n) array."""
    return np.concatenate([x.reshape(_K, -1) for x in windows], axis=1)


def _squared_z(row: np.ndarray) -> np.ndarray:
    """``((row - loc) / sig) ** 2`` with ``loc, sig = robust_location_scale(row)``, the
    deviations computed once for the MAD and the z-scores."""
    if not np.isfinite(row).all():
        loc, sig = robust_location_scale(row)
        return ((row - loc) / sig) ** 2
    loc = median(row)
    centred = row - loc
    sig = _mad_sigma(np.abs(centred))
    centred /= sig
    return np.square(centred, out=centred)


def _percentiles(flat: np.ndarray, keep: np.ndarray, q: float) -> np.ndarray:
    """``np.percentile(flat[:, keep], q, axis=1)``, selecting in the copy it makes anyway."""
    values = _columns(flat, keep)
    return np.percentile(values, q, axis=1, overwrite_input=values is not flat)


#: Sample pixels per part of the z-scores' computation in :func:`estimate_globals`.
Z_PART = 2**16


def _flat_local_means(windows: Sequence[np.ndarray]) -> np.ndarray:
    """3x3 means of each band of (band, y, x) sample windows, side by side as in :func:`_flat`,
    NaN where any of the nine pixels of any band is missing: what the normalisation line is
    fitted on (:func:`statistics_kernels.local_means`: scipy's uniform filter, in one pass).

    A gain and an offset between dates hold for local means as they hold for pixels (the
    relation is linear), but the mean of nine pixels carries a ninth of each date's sensor noise
    while keeping the ground's contrast, which varies over larger distances. The errors-in-
    variables line needs the ratio of the two noises, known only from the observation counts;
    with pixels, an error in that ratio on a scene of little contrast (hazy blue, winter
    farmland) tilted the line by 3-6 % and made bright unchanged ground a clue, with means it
    does not (tests/test_quality_planted.py: a second overpass of unchanged ground)."""
    # float64, as the rest of the scene statistics
    out = np.empty((_K, sum(w[0].size for w in windows)))
    start = 0
    for window in windows:
        statistics_kernels.local_means(np.ascontiguousarray(window), out, start)
        start += window[0].size
    return out


def _sample_groups(samples: Sequence[Sample]) -> np.ndarray:
    """A group number for each sample pixel (flattened as :func:`estimate_globals` does): its
    sample window when there are several, else its ninth of the one window (3 x 3 blocks)."""
    groups = []
    for k, sample in enumerate(samples):
        h, w = sample[0].shape[1:]
        if len(samples) > 1:
            groups.append(np.full(h * w, k))
        else:
            rows, cols = np.indices((h, w))
            groups.append(((3 * rows) // max(h, 1) * 3 + (3 * cols) // max(w, 1)).reshape(-1))
    return np.concatenate(groups)


def _gain_errors(
    calm_b: np.ndarray,
    calm_a: np.ndarray,
    groups: np.ndarray,
    noise_ratio: float,
    mx: np.ndarray,
    my: np.ndarray,
) -> np.ndarray:
    """Standard error of each band's gain, by the delete-a-group jackknife over the sample's
    parts, from the calm pixels' (band, n) values and their group numbers (>= 0). A calibration
    change is the same over the whole scene; a gain that moves when one part of the scene is
    left out was set by what the ground did there (phenology, a harvest), not by the sensor, and
    the test must not trust it at surfaces far from the scene's typical reflectance. `mx` and
    `my` are the line's centres (the calm pixels' medians): the sums are taken about them."""
    # the groups present and each pixel's rank among them (np.unique's, without its sort)
    present = np.bincount(groups) > 0
    n = int(np.count_nonzero(present))
    if n < 3:
        return np.zeros(calm_b.shape[0])
    group = (np.cumsum(present) - 1)[groups]

    def left_out(per_group: np.ndarray) -> np.ndarray:  # per band and group: the others' total
        return per_group.sum(axis=1, keepdims=True) - per_group

    # sums of ones are the counts, exactly
    count = left_out(np.bincount(group, minlength=n)[None].astype(np.float64))
    sums = statistics_kernels.group_sums(
        np.ascontiguousarray(calm_b), np.ascontiguousarray(calm_a), mx, my, group, n
    )
    sx, sy, sxx, syy, sxy = (left_out(v) for v in sums)
    cxx, cyy = sxx - sx * sx / count, syy - sy * sy / count
    cxy = sxy - sx * sy / count
    gains = _deming_gain(cxx, cyy, cxy, noise_ratio)
    return np.sqrt((n - 1) / n * ((gains - gains.mean(axis=1, keepdims=True)) ** 2).sum(1))


def _noise_ratio(samples: Sequence[Sample], valid: np.ndarray) -> float:
    """Noise variance of the after composite over the before one, from the typical number of
    observations each pixel's median was taken over (1 where a composite carries no count)."""

    def typical(k: int) -> float:
        if any(s[k] is None for s in samples):
            return 1.0
        counts = np.concatenate([np.asarray(s[k]).reshape(-1) for s in samples])
        counts = _columns(counts[None], valid)[0]  # a copy either way: selected in place
        return float(np.median(counts, overwrite_input=True)) if counts.size else 1.0

    return median_variance(typical(5)) / median_variance(typical(4))


# ----------------------------------------------------------------------------------------------
# The lazy test
# ----------------------------------------------------------------------------------------------


def _cube(ds: xr.Dataset, chunks: Any | None = None) -> da.Array:
    """(band, y, x) float32 dask array of the analysis bands."""
    layers = [as_dask(ds[b].data, chunks).astype(np.float32) for b in ANALYSIS_BANDS]
    return da.stack(layers).rechunk({0: _K})


def _spread_cube(comp: Composite, chunks: Any) -> da.Array | None:
    if comp.spread is None or any(b not in comp.spread for b in ANALYSIS_BANDS):
        return None
    return _cube(comp.spread, chunks)


#: At most this many of the sample's chunks are kept for the pass: the first lattice's windows
#: overlap up to four chunks each, the denser fallback lattice's (for a cloudy scene) up to 256
#: in all, which the pass computes again rather than the scratch disk holding them all.
KEPT_SAMPLE_CHUNKS = 4 * SAMPLE_LATTICE**2
#: Sample windows computed per dask call: a window reads the whole chunks it overlaps (up to
#: four), so computing all nine at once held some 36 chunks of every layer at a time.
SAMPLE_WINDOWS_PER_CALL = 2


def _sample(
    cubes: Sequence[da.Array | None], windows: Sequence[tuple[slice, slice]]
) -> list[Sample]:
    """The sample windows of each cube, a couple of windows at a time."""
    out: list[Sample] = []
    for k in range(0, len(windows), SAMPLE_WINDOWS_PER_CALL):
        group = windows[k : k + SAMPLE_WINDOWS_PER_CALL]
        lazy = [[c[:, ys, xs] if c is not None else None for c in cubes] for ys, xs in group]
        (computed,) = dask.compute(lazy)
        out += [tuple(part) for part in computed]  # type: ignore[misc]
    return out


#: The sample windows' values, given the windows.
Sampler = Callable[[Sequence[tuple[slice, slice]]], list[Sample]]


def _globals_for(shape: tuple[int, int], sample: Sampler, median_size: int) -> _Globals:
    """Global statistics from the sample windows, a denser lattice if clouds hide them, or
    neutral values when there is no valid pixel to learn from (then every pixel is NaN anyway)."""
    for lattice, window in ((SAMPLE_LATTICE, SAMPLE_WINDOW), (FALLBACK_LATTICE, FALLBACK_WINDOW)):
        g = estimate_globals(sample(sample_windows(shape, lattice, window)), median_size)
        if g is not None:
            return g
        if shape[0] * shape[1] <= FULL_SAMPLE_PIXELS:
            break  # the sample was the whole grid already
    zeros = np.zeros(_K)
    return _Globals(np.ones(_K), zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy())


class _ChunkSample:
    """The sample windows cut out of whole chunks of the layers' cube (`everything`: bands,
    spreads when `with_spread`, counts), each chunk computed once. With `keep`, each chunk is
    written to that folder as it is computed, for the pass to read rather than compute again
    (see :attr:`kept`)."""

    def __init__(self, everything: da.Array, with_spread: bool, keep: Path | None) -> None:
        self.everything, self.with_spread, self.keep = everything, with_spread, keep
        self.name = tokenize(everything.name)
        self.starts = [np.cumsum((0, *sizes)) for sizes in everything.chunks[1:]]
        if everything.shape[0] != (4 if with_spread else 2) * _K + 2:
            raise ValueError(f"a sample cube of {everything.shape[0]} layers: not the inputs'")
        self.files: dict[tuple[int, int], Path] = {}
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)

    def __call__(self, windows: Sequence[tuple[slice, slice]]) -> list[Sample]:
        """The samples of `windows`, a couple of windows per dask call."""
        out: list[Sample] = []
        for k in range(0, len(windows), SAMPLE_WINDOWS_PER_CALL):
            group = windows[k : k + SAMPLE_WINDOWS_PER_CALL]
            out += [self._split(window) for window in self._windows(group)]
        return out

    def kept(self, use_spread: bool) -> dict[tuple[int, int], KeptChunk]:
        """The chunks written so far, as chunks of the test's cube: with the spreads when the
        test uses them, else without."""
        whole = use_spread or not self.with_spread  # the files hold the cube's layers
        layers = None if whole else (*range(2 * _K), 4 * _K, 4 * _K + 1)
        return {k: KeptChunk(path, layers) for k, path in self.files.items()}

    def _windows(self, group: Sequence[tuple[slice, slice]]) -> list[np.ndarray]:
        """Each window of `group` with the sample's layers, joined from its parts in the
        chunks it overlaps."""
        spans = [[self._span(axis, part) for axis, part in enumerate(w)] for w in group]
        chunks = list(dict.fromkeys((i, j) for rows, cols in spans for i in rows for j in cols))
        tasks = [self._cut(i, j, self._cuts(i, j, group, spans)) for i, j in chunks]
        parts = dict(zip(chunks, dask.compute(*tasks), strict=True))
        return [
            np.block([[parts[i, j][n] for j in cols] for i in rows])
            for n, (rows, cols) in enumerate(spans)
        ]

    def _span(self, axis: int, part: slice) -> range:
        """The chunks along `axis` (0: rows, 1: columns) that `part` overlaps."""
        starts = self.starts[axis]
        first = int(np.searchsorted(starts, part.start, side="right")) - 1
        last = int(np.searchsorted(starts, part.stop, side="left")) - 1
        return range(first, last + 1)

    def _cuts(
        self, i: int, j: int, group: Sequence[tuple[slice, slice]], spans: list[list[range]]
    ) -> list[tuple[slice, slice] | None]:
        """The part of each window of `group` in chunk (i, j), in the chunk's pixels; None
        where the window does not reach the chunk."""
        out: list[tuple[slice, slice] | None] = []
        for window, (rows, cols) in zip(group, spans, strict=True):
            if i not in rows or j not in cols:
                out.append(None)
                continue
            y0, y1 = (int(v) for v in self.starts[0][i : i + 2])
            x0, x1 = (int(v) for v in self.starts[1][j : j + 2])
            ys, xs = window
            inside_rows = slice(max(ys.start, y0) - y0, min(ys.stop, y1) - y0)
            inside_cols = slice(max(xs.start, x0) - x0, min(xs.stop, x1) - x0)
            out.append((inside_rows, inside_cols))
        return out

    def _cut(self, i: int, j: int, cuts: list[tuple[slice, slice] | None]) -> Delayed:
        if (i, j) in self.files:  # a chunk of the first lattice, for the fallback one
            task = dask.delayed(_cut_kept, traverse=False)
            return task(self.files[i, j], cuts, dask_key_name=(f"sample_kept-{self.name}", i, j))
        path = None
        if self.keep is not None and len(self.files) < KEPT_SAMPLE_CHUNKS:
            path = self.files[i, j] = self.keep / f"{i}-{j}.npy"
        key = (self.everything.name, 0, i, j)
        chunk = ChunkGraph(self._graph_of(key), key)
        task = dask.delayed(_cut_chunk, traverse=False)
        return task(chunk, cuts, path, dask_key_name=(f"sample_chunk-{self.name}", i, j))

    def _graph_of(self, key: tuple[str, int, int, int]) -> dict[Any, Any]:
        """The tasks chunk `key` needs. Culled from the whole graph's layers first: the sample
        reads a few chunks of a large grid, whose whole graph is slow to build (the pass builds
        it once, for the cube it tests); and then task by task, as a layer keeps more than its
        chunk needs (a neighbour's slices of a source's blocks)."""
        layers = dict(self.everything.__dask_graph__().cull({key}))
        return cull(layers, [key])[0]

    def _split(self, window: np.ndarray) -> Sample:
        """A window of the sample's layers as a :data:`Sample`."""
        spreads = (window[2 * _K : 3 * _K], window[3 * _K : 4 * _K])
        counts = (window[-2:-1].astype(np.int16), window[-1:].astype(np.int16))
        before, after = window[:_K], window[_K : 2 * _K]
        if not self.with_spread:
            return before, after, None, None, *counts
        return before, after, *spreads, *counts


def _cut_chunk(
    chunk: ChunkGraph, cuts: list[tuple[slice, slice] | None], path: Path | None
) -> list[np.ndarray | None]:
    """The windows' parts in one chunk (`cuts`: each window's pixels in the chunk, None where
    it does not reach it), the whole chunk written to `path` first."""
    block = compute_chunk(chunk)
    if path is not None:
        save_chunk(path, block)
    return _window_parts(block, cuts)


def _cut_kept(path: Path, cuts: list[tuple[slice, slice] | None]) -> list[np.ndarray | None]:
    return _window_parts(map_chunk(path), cuts)


def _window_parts(
    block: np.ndarray, cuts: list[tuple[slice, slice] | None]
) -> list[np.ndarray | None]:
    """Each window's part of a chunk (`cuts`), copied out (None where it has none)."""
    return [None if cut is None else np.array(block[:, cut[0], cut[1]]) for cut in cuts]


class BlockChange(NamedTuple):
    """The test's per-pixel outputs on one block (y, x)."""

    score: np.ndarray
    disturbed: np.ndarray
    evidence: np.ndarray
    brightening: np.ndarray


class BlockTest(NamedTuple):
    """:class:`BlockChange` with the brightness ratio in place of the brightening, which is
    its logarithm (:func:`brightening`): taken where it is read, at the few changed pixels."""

    score: np.ndarray
    disturbed: np.ndarray
    evidence: np.ndarray
    ratio: np.ndarray

    def change(self) -> BlockChange:
        return BlockChange(self.score, self.disturbed, self.evidence, brightening(self.ratio))


@dataclass(frozen=True)
class ChangeTest:
    """The per-pixel test with the statistics of its scene: a pure function of a block of the
    composites and its neighbourhood (``halo`` pixels on each side)."""

    g: _Globals
    ev_strict: float
    ev_loose: float
    support_size: int
    median_size: int

    @property
    def uses_support(self) -> bool:
        return self.support_size > 1 and self.ev_loose < self.ev_strict

    @property
    def halo(self) -> int:
        """Pixels of neighbourhood a block needs for its result to be exact: the neighbourhood
        support is taken over pixels that each need their median and brightness boxes."""
        support = self.support_size // 2 if self.uses_support else 0
        return support + max(self.median_size // 2, BRIGHTNESS_BOX // 2)

    def evaluate(
        self,
        b: np.ndarray,
        a: np.ndarray,
        sb: np.ndarray | None = None,
        sa: np.ndarray | None = None,
    ) -> BlockChange:
        """The test on (band, y, x) composites (and spreads); results are exact `halo` pixels
        away from a block edge that is not the grid's edge."""
        return self._evaluate(b, a, sb, sa).change()

    def evaluate_tiles(self, tiles: Tiles) -> BlockTest:
        """:meth:`evaluate` on a block of a :class:`ChangeInputs` cube's layers
        (:func:`split_inputs`) given as the tiles it is joined from: read from the tiles
        themselves where the compiled pass runs the test, joined otherwise."""
        n_layers = tiles.arrays[4].shape[0]
        spread = self.g.use_spread and n_layers >= 4 * _K + 2
        if not self._compiled([tiles.dtype]):
            b, a, sb, sa, _ = split_inputs(tiles.joined())
            return self._evaluate(b, a, sb, sa)
        first = np.array([0, _K, 2 * _K, 3 * _K], np.int64)
        return self._compiled_test(tiles, (tiles.arrays,) * 4, first, spread)

    def _evaluate(
        self, b: np.ndarray, a: np.ndarray, sb: np.ndarray | None, sa: np.ndarray | None
    ) -> BlockTest:
        g = self.g
        spread = g.use_spread and sb is not None and sa is not None
        inputs = [b, a, sb, sa] if spread else [b, a]
        if self._compiled([np.asarray(x).dtype for x in inputs]):
            parts = [whole(x) for x in inputs]  # type: ignore[arg-type]
            layers = tuple(p.arrays for p in parts) + (parts[0].arrays,) * (4 - len(parts))
            return self._compiled_test(parts[0], layers, np.zeros(4, np.int64), spread)
        # step by step, where the statistics or the composites are not float32 or the median
        # filter not 3x3
        diff = _filtered_differences(g, b, a, self.median_size)
        spreads = (sb, sa) if g.use_spread else (None, None)
        q = g.squared_z_sum(diff, *spreads, before=b)
        del diff
        evidence = _evidence(q, g.chi_scale, g.chi_dof)
        del q
        plausible, ratio = _surface_ratio(_surface_state(b, a, g.dark_before, g.dark_after))
        score, disturbed = _decision(self, evidence, plausible)
        return BlockTest(score, disturbed, evidence, ratio)

    def _compiled(self, dtypes: list[np.dtype]) -> bool:
        """Whether :func:`kernels.block_test` runs the test: on float32 composites and
        statistics (:meth:`_Globals.as_float32`) with a 3x3 median, where each step would run
        its own compiled kernel, which it gives the results of."""
        g = self.g
        stats = (g.gain, g.mx, g.my, g.loc, g.sigma, g.gain_error, g.noise_before, g.noise_after)
        return (
            self.median_size == 3
            and all(dtype == np.float32 for dtype in dtypes)
            and all(np.asarray(v).dtype == np.float32 for v in stats)
        )

    def _compiled_test(
        self,
        tiles: Tiles,
        layers: tuple[tuple[np.ndarray, ...], ...],
        first: np.ndarray,
        spread: bool,
    ) -> BlockTest:
        """The test by :func:`kernels.block_test` on before, after, and with `spread` their
        spreads, each `layers[i]` from layer `first[i]` on, laid out as `tiles`."""
        g = self.g
        evidence, plausible, ratio = kernels.block_test(
            *tiles.geometry(),
            layers,
            first,
            spread,
            (g.gain, g.mx, g.my),
            (g.loc, g.sigma**2, g.gain_error, g.noise_before**2, g.noise_after**2),
            bool(np.any(g.gain_error > 0)),
            _lookup(g.chi_scale, g.chi_dof),
            (np.asarray(g.dark_before, np.float32), np.asarray(g.dark_after, np.float32)),
            _SURFACE_BANDS,
            _ABSORBING_INDEX,
            _SURFACE_LEVELS,
        )
        score, disturbed = _decision(self, evidence, plausible)
        return BlockTest(score, disturbed, evidence, ratio)


def _decision(
    test: ChangeTest, evidence: np.ndarray, plausible: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Score and decision of each pixel of a block (:func:`kernels.decision`)."""
    # numpy compares float32 evidence with a Python float level in float32: so does the kernel
    return kernels.decision(
        np.ascontiguousarray(evidence, dtype=np.float32),
        np.ascontiguousarray(plausible),
        np.float32(test.ev_strict),
        np.float32(test.ev_loose),
        test.support_size if test.uses_support else 0,
        np.float32(SUPPORT_SHARE),
    )


@dataclass
class ChangeInputs:
    """The lazy composites the test reads, stacked (layer, y, x): before bands, after bands, when
    the test uses them the before and after spreads, and last the before and after valid-
    observation counts (:func:`split_inputs` tells them apart by the number of layers)."""

    cube: da.Array
    kept: Mapping[tuple[int, int], KeptChunk] = field(default_factory=dict)
    """Chunks of `cube` (by their row and column in its grid of chunks) the statistics sample
    computed already, as files to read instead."""


def split_inputs(block: np.ndarray) -> tuple[np.ndarray, ...]:
    """A block of a :class:`ChangeInputs` cube as (before, after, spread_before, spread_after,
    valid counts (2, y, x))."""
    b, a, counts = block[:_K], block[_K : 2 * _K], block[-2:]
    if block.shape[0] >= 4 * _K + 2:
        return b, a, block[2 * _K : 3 * _K], block[3 * _K : 4 * _K], counts
    return b, a, None, None, counts  # type: ignore[return-value]


def _valid_count(comp: Composite, chunks: Any) -> da.Array:
    if comp.valid_count is not None:
        return as_dask(comp.valid_count.data, chunks)
    # a composite without counts: one observation wherever it has data
    return da.isfinite(as_dask(comp.bands[ANALYSIS_BANDS[0]].data, chunks)).astype(np.int16)


def _stack_layers(*layers: np.ndarray) -> np.ndarray:
    return np.stack(layers).astype(np.float32, copy=False)


def prepare_change_test(
    before: Composite,
    after: Composite,
    *,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
    support_level: float = DEFAULT_SUPPORT_LEVEL,
    support_size: int = DEFAULT_SUPPORT_SIZE,
    median_size: int = DEFAULT_MEDIAN_SIZE,
    use_spread: bool = True,
    keep: Path | None = None,
) -> tuple[ChangeTest, ChangeInputs]:
    """Estimate the scene statistics (one eager pass over a bounded sample) and stack the lazy
    inputs of the test. See :func:`detect_change` for the parameters.

    With `keep` (a scratch folder the caller removes), the whole chunks the sample computes
    from the composites' one-call layers are written there and listed in the inputs'
    :attr:`ChangeInputs.kept`, so that the pass reads them instead of computing them again."""
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    if not 0.0 < support_level < 1.0:
        raise ValueError(f"support_level must be in (0, 1), got {support_level}")
    median_size = max(1, int(median_size)) | 1  # odd, so the filter stays centred
    support_size = max(1, int(support_size)) | 1
    if _has_layers(before) and _has_layers(after):
        g, inputs = _inputs_from_layers(before, after, median_size, use_spread, keep)
    else:
        g, cube = _inputs_from_bands(before, after, median_size, use_spread)
        inputs = ChangeInputs(cube)
    test = ChangeTest(
        g.as_float32(),
        float(-np.log10(false_alarm_rate)),
        float(-np.log10(support_level)),
        support_size,
        median_size,
    )
    return test, inputs


def _inputs_from_bands(
    before: Composite, after: Composite, median_size: int, use_spread: bool
) -> tuple[_Globals, da.Array]:
    """The scene statistics and the stacked input cube of the test from the composites' band,
    spread and count arrays."""
    b_cube = _cube(before.bands)
    chunks = b_cube.chunks[1:]
    a_cube = _cube(after.bands, chunks)
    sb = _spread_cube(before, chunks) if use_spread else None
    sa = _spread_cube(after, chunks) if use_spread else None
    # a window without a spread (one acquisition) adds no variability of its own
    if sb is None and sa is not None:
        sb = da.full_like(sa, np.nan)
    if sa is None and sb is not None:
        sa = da.full_like(sb, np.nan)
    counts = [_valid_count(c, chunks) for c in (before, after)]
    cubes = [b_cube, a_cube, sb, sa, *(c[None] for c in counts)]
    g = _globals_for(b_cube.shape[1:], functools.partial(_sample, cubes), median_size)
    # every layer of a chunk stacked by one copy (a stack-then-concatenate graph copies each
    # chunk three or four times, which costs as much as the test itself)
    composites = [before.bands, after.bands]
    layers = [as_dask(ds[b].data, chunks) for ds in composites for b in ANALYSIS_BANDS]
    if g.use_spread:
        for comp in (before, after):
            if comp.spread is not None and all(b in comp.spread for b in ANALYSIS_BANDS):
                layers += [as_dask(comp.spread[b].data, chunks) for b in ANALYSIS_BANDS]
            else:
                missing = da.full(b_cube.shape[1:], np.nan, dtype=np.float32, chunks=chunks)
                layers += [missing] * _K
    layers += counts
    cube = da.map_blocks(
        _stack_layers,
        *layers,
        new_axis=0,
        chunks=((len(layers),), *chunks),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
    return g, cube


def _has_layers(comp: Composite) -> bool:
    """Whether `comp` carries the one-call form of its layers (:class:`CompositeLayers`) for
    the analysis bands."""
    layers = comp.layers
    return (
        isinstance(layers, CompositeLayers)
        and layers.chunk.names[:_K] == tuple(ANALYSIS_BANDS)
        and layers.chunk.n_bands == _K
        and list(comp.bands.data_vars) == list(ANALYSIS_BANDS)
    )


def _inputs_from_layers(
    before: Composite, after: Composite, median_size: int, use_spread: bool, keep: Path | None
) -> tuple[_Globals, ChangeInputs]:
    """:func:`_inputs_from_bands` from the composites' one-call layers: the same statistics and
    cube, each chunk of the cube one task reading the stacks' chunks. With `keep`, the chunks
    the sample computes are kept in that folder for the pass."""
    layers: list[CompositeLayers] = [before.layers, after.layers]
    chunks = layers[0].arrays[0].chunks[1:]
    if any(a.chunks[1:] != chunks for c in layers for a in c.arrays):
        layers = [
            CompositeLayers(
                tuple(a.rechunk({1: chunks[0], 2: chunks[1]}) for a in c.arrays), c.chunk
            )
            for c in layers
        ]
    parts = [c.chunk for c in layers]
    # the sample reads every layer: bands, spreads (NaN for a window without one, as
    # prepare_change_test fills them) when either composite has them, and counts; its chunks
    # are the cube's when the test uses the spreads, and hold the cube's layers when it does not
    # (without spreads on either date, the test cannot use them: the chunks are the cube's)
    with_spread = use_spread and any(p.has_spread for p in parts)
    n_sampled = (4 if with_spread else 2) * _K + 2
    everything = layer_blocks(_inputs_chunk, n_sampled, layers, parts=parts, use_spread=with_spread)
    sample = _ChunkSample(everything, with_spread, keep)
    g = _globals_for(everything.shape[1:], sample, median_size)
    n_layers = (4 if g.use_spread else 2) * _K + 2
    if n_layers == n_sampled:  # the same layers: the same graph
        cube = everything
    else:
        cube = layer_blocks(_inputs_chunk, n_layers, layers, parts=parts, use_spread=g.use_spread)
    return g, ChangeInputs(cube, sample.kept(g.use_spread))


def _inputs_chunk(
    blocks: list[list[np.ndarray]], parts: list[CompositeChunk], use_spread: bool
) -> np.ndarray:
    """A chunk of :class:`ChangeInputs` from the stacks' chunks of the before and after
    composites (`parts`)."""
    shape = blocks[0][0].shape[1:]
    out = np.empty(((4 if use_spread else 2) * _K + 2, *shape), np.float32)
    if use_spread:
        out[2 * _K : 4 * _K] = np.nan
    for k, (part, chunks) in enumerate(zip(parts, blocks, strict=True)):
        spreads = out[(2 + k) * _K : (3 + k) * _K] if use_spread else None
        part.fill(chunks, out[k * _K : (k + 1) * _K], spreads, out[out.shape[0] - 2 + k])
    return out


def _evaluate_stacked(block: np.ndarray, test: ChangeTest) -> np.ndarray:
    result = test.evaluate(*split_inputs(block)[:4])
    return np.stack(
        [result.score, result.disturbed.astype(np.float32), result.evidence, result.brightening]
    )


def detect_change(
    before: Composite,
    after: Composite,
    *,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
    support_level: float = DEFAULT_SUPPORT_LEVEL,
    support_size: int = DEFAULT_SUPPORT_SIZE,
    median_size: int = DEFAULT_MEDIAN_SIZE,
    use_spread: bool = True,
) -> ChangeLayers:
    """Test every pixel for a disturbance between two composites (lazy; see the module doc).

    `false_alarm_rate` is the per-pixel level for a pixel standing alone; `support_level` the level
    for a pixel whose `support_size` x `support_size` neighbourhood mostly passes it too (a size of
    1, or a level not looser than `false_alarm_rate`, turns the supported test off).
    `use_spread=False` ignores the composites' temporal spread.
    """
    test, inputs = prepare_change_test(
        before,
        after,
        false_alarm_rate=false_alarm_rate,
        support_level=support_level,
        support_size=support_size,
        median_size=median_size,
        use_spread=use_spread,
    )
    cube = inputs.cube
    depth = {0: 0, 1: test.halo, 2: test.halo}
    expanded = da.overlap.overlap(cube, depth=depth, boundary="none")
    out = da.map_blocks(
        _evaluate_stacked,
        expanded,
        dtype=np.float32,
        chunks=((4,), *expanded.chunks[1:]),
        meta=np.empty((0, 0, 0), np.float32),
        test=test,
    )
    out = da.overlap.trim_internal(out, depth, boundary="none")
    coords = {d: before.bands.coords[d] for d in ("y", "x") if d in before.bands.coords}
    attrs = dict(before.bands.attrs)

    def wrap(arr: da.Array, name: str) -> xr.DataArray:
        return xr.DataArray(arr, dims=("y", "x"), coords=coords, name=name, attrs=attrs)

    def as_dataset(bands: da.Array) -> xr.Dataset:
        return xr.Dataset({b: wrap(bands[i], b) for i, b in enumerate(ANALYSIS_BANDS)})

    features = index_features(as_dataset(cube[:_K]), as_dataset(cube[_K : 2 * _K]))
    features["evidence"] = wrap(out[2], "evidence")
    features["brightening"] = wrap(out[3], "brightening")
    return ChangeLayers(
        score=wrap(out[0], "score"),
        disturbed=wrap(out[1] > 0.5, "disturbed"),
        features=features,
        threshold=gaussian_isf(false_alarm_rate),
        diagnostics=test.g.as_dict()
        | {"evidence_strict": test.ev_strict, "evidence_loose": test.ev_loose},
    )
