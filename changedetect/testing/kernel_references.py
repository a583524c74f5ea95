"""The numpy and scipy compositions the change test's compiled kernels replaced
(changedetect/algorithms/detect/kernels.py), and the composites' (`CompositeChunk.fill`, now
changedetect/algorithms/composite_kernel.py), kept as references: tests/test_kernels.py holds
each kernel to its reference, and bench/kernels.py and bench/composite_chunk.py time one against
the other."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..algorithms.composite import MAD_TO_SIGMA, _nan_median_mad
from ..algorithms.detect import kernels
from ..algorithms.indices import mndwi, ndvi
from ..algorithms.tiles import Tiles


def median3x3_reference(image: np.ndarray, fill: float) -> np.ndarray:
    filled = np.where(np.isfinite(image), image, np.float32(fill)).astype(np.float32)
    return ndimage.median_filter(filled, size=3, mode="reflect")


def median3x3_bands_reference(cube: np.ndarray) -> np.ndarray:
    out = np.stack([median3x3_reference(band, 0.0) for band in cube])
    return np.where(np.isfinite(cube), out, np.nan).astype(np.float32)


def box_mean3x3_reference(image: np.ndarray) -> np.ndarray:
    ok = np.isfinite(image)
    num = ndimage.uniform_filter(np.where(ok, image, 0.0), 3, mode="nearest")
    den = ndimage.uniform_filter(ok.astype(np.float32), 3, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, num / den, np.nan).astype(np.float32)


def share_passing_reference(passing: np.ndarray, size: int) -> np.ndarray:
    return ndimage.uniform_filter(passing.astype(np.float32), size=size, mode="constant", cval=0.0)


def evidence_lookup_reference(q, scale, step, grid, table, top):  # noqa: ANN001, ANN201
    with np.errstate(invalid="ignore"):
        ev = np.interp(q / scale, grid, table, right=top)
    return np.where(np.isfinite(q), ev, np.nan).astype(np.float32)


def surface_state_reference(b, a, dark_b, dark_a, green, red, nir, swir, absorbing):  # noqa: ANN001, ANN201
    bc = np.maximum(b - dark_b[:, None, None], 0.0)
    ac = np.maximum(a - dark_a[:, None, None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        layers = [
            ndvi(bc[red], bc[nir]),
            ndvi(ac[red], ac[nir]),
            mndwi(bc[green], bc[swir]),
            mndwi(ac[green], ac[swir]),
            bc[absorbing].mean(axis=0),
            ac[absorbing].mean(axis=0),
            bc[nir],
            ac[nir],
        ]
    return np.stack(layers).astype(np.float32)


def filtered_differences_reference(b, a, gain, mx, my):  # noqa: ANN001, ANN201
    shape = (-1, 1, 1)
    diff = (a - my.reshape(shape)) / gain.reshape(shape) + mx.reshape(shape) - b
    return median3x3_bands_reference(diff)


def decision_reference(evidence, plausible, strict, loose, support_size, majority):  # noqa: ANN001, ANN201
    """What `ChangeTest.evaluate` computed in numpy, the levels as the Python floats it had and
    the support share from its kernel (or, swapped in, that kernel's reference)."""
    strict, loose, majority = float(strict), float(loose), float(majority)
    finite = np.isfinite(evidence)
    with np.errstate(invalid="ignore"):
        disturbed = (evidence > strict) & plausible
        ratio = evidence / np.float32(strict)
        if support_size > 0:
            passing = (evidence > loose) & plausible
            share = kernels.share_passing(passing, support_size)
            disturbed |= passing & (share >= majority)
            ratio = np.maximum(
                ratio, np.minimum(evidence / np.float32(loose), share / np.float32(majority))
            )
        score = np.where(plausible, ratio / (1.0 + ratio), 0.0)
    score = np.where(finite, score, np.nan).astype(np.float32)
    return score, disturbed & finite


def surface_rules_reference(state, vegetated, bare, water):  # noqa: ANN001, ANN201
    """What `ChangeTest.evaluate` computed in numpy, the thresholds as the Python floats it had
    and the boxes and median from their kernels (or, swapped in, their references)."""
    vegetated, bare, water = float(vegetated), float(bare), float(water)
    ndvi_b, ndvi_a, mndwi_b, mndwi_a = state[:4]
    abs_b, abs_a, nir_b, nir_a = (kernels.box_mean3x3(layer) for layer in state[4:])
    with np.errstate(invalid="ignore", divide="ignore"):
        vegetated_after = ndvi_a > vegetated
        wet = (mndwi_b > water) | (mndwi_a > water)
        not_brighter = abs_a * nir_a <= abs_b * nir_b
        bare_after = kernels.median3x3(ndvi_a, 1.0) < bare
        faded = (ndvi_b > vegetated) & not_brighter & ~bare_after
        ratio = (abs_a * nir_a) / (abs_b * nir_b)
    return ~(vegetated_after | wet | faded), ratio


def squared_z_sum_reference(
    filtered, before, loc, variance, mx, gain, gain_error, lever, sb, sa, noise_b2, noise_a2, spread
):  # noqa: ANN001, ANN201
    """What `_Globals.z_scores` and then ``np.sum(z * z, axis=0)`` computed, from the arguments
    of `kernels.squared_z_sum`."""
    shape = (-1, 1, 1)
    centred = filtered - loc.reshape(shape)
    var = variance.reshape(shape)
    # infinities made the largest finite values overflow as they did in the pass
    with np.errstate(over="ignore", invalid="ignore"):
        if lever:
            distance = np.nan_to_num(before - mx.reshape(shape)) / gain.reshape(shape)
            var = var + (distance * gain_error.reshape(shape)) ** 2
        if spread:
            vb = np.clip(np.nan_to_num(sb) ** 2 - noise_b2.reshape(shape), 0.0, None)
            va = np.clip(np.nan_to_num(sa) ** 2 - noise_a2.reshape(shape), 0.0, None)
            var = var + (vb + va)
        z = centred / np.sqrt(var)
        return np.sum(z * z, axis=0)


def block_test_reference(
    origin, heights, widths, layers, first, spread, line, noise, lever, lookup, dark, bands,
    absorbing, levels,
):  # noqa: ANN001, ANN201  # fmt: skip
    """What `ChangeTest.evaluate` computed step by step in numpy before the decision, on the
    block joined from its tiles (the boxes and the NDVI median from their kernels, or, swapped
    in, their references)."""
    k = line[0].shape[0]
    b, a, sb, sa = (
        Tiles(arrays, origin, heights, widths).joined()[start : start + k]
        for arrays, start in zip(layers, first, strict=True)
    )
    gain, mx, my = line
    loc, variance, gain_error, noise_b2, noise_a2 = noise
    filtered = filtered_differences_reference(b, a, gain, mx, my)
    q = squared_z_sum_reference(
        filtered, b, loc, variance, mx, gain, gain_error, lever, sb, sa, noise_b2, noise_a2,
        spread,
    )  # fmt: skip
    evidence = evidence_lookup_reference(q, *lookup)
    green, red, nir, swir = bands
    state = surface_state_reference(b, a, *dark, green, red, nir, swir, absorbing)
    plausible, ratio = surface_rules_reference(state, *levels)
    return evidence, plausible, ratio


REFERENCES = {
    "surface_state": surface_state_reference,
    "median3x3": median3x3_reference,
    "median3x3_bands": median3x3_bands_reference,
    "box_mean3x3": box_mean3x3_reference,
    "share_passing": share_passing_reference,
    "evidence_lookup": evidence_lookup_reference,
    "filtered_differences": filtered_differences_reference,
    "decision": decision_reference,
    "surface_rules": surface_rules_reference,
    "block_test": block_test_reference,
}


def composite_chunk_reference(chunk, blocks, bands, spreads, count) -> None:  # noqa: ANN001
    """What `CompositeChunk.fill` computed in numpy (before `masked_composite`): the pixel
    mask of the whole block, then the count, the `where`s and `_nan_median_mad` per band."""
    by_name = dict(zip(chunk.names, blocks, strict=False))
    valid = chunk.mask(by_name) if chunk.mask is not None else blocks[-1]
    everything = chunk.members == tuple(range(chunk.n_times))
    index = slice(None) if everything else list(chunk.members)
    valid = valid[index]
    counted = valid.sum(axis=0).astype("int16")
    count[...] = counted
    enough = counted >= chunk.min_valid
    nan = np.float32(np.nan)
    # one observation is its own median: the value where valid and enough
    alone = valid[0] & enough if len(chunk.members) == 1 else None
    for i, band in enumerate(chunk.names[: chunk.n_bands]):
        values = by_name[band][index]
        if alone is not None:
            bands[i] = np.where(alone, values[0], np.nan)
            continue
        med, mad = _nan_median_mad(np.where(valid, values, np.nan))
        bands[i] = np.where(enough, med, nan)
        if spreads is not None:
            spreads[i] = np.where(counted >= 3, mad * MAD_TO_SIGMA, nan)
