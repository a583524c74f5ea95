"""Change type of a patch from its mean spectral features.

Rules on spectral physics that hold across sensors and illumination (ratios, spectral shape,
texture), not absolute brightness; the two thresholds of the bare-ground split are cross-validated
fits inside ranges physics gives (see their comments):

- A patch that is green now, or greener than before, is not a disturbance: ``other``. (Water on
  either date never reaches a patch: the detector rules it out per pixel, on dark-object corrected
  bands, which raw indices here could not do on hazy or uncalibrated imagery.)
- Ground that still carries sparse vegetation after losing a canopy is a clearing
  (``vegetation_loss``): slash, litter and regrowth keep some NDVI, unlike rock or concrete, and
  the ground got brighter (visible and SWIR rise more than NIR falls). The same NDVI loss without
  brightening is a harvested or dried-out crop: ``other``.
- Bare ground and built surfaces (NDVI near zero), in this order:

  1. *Iron oxides.* Clearly red ground (B04 about 1.4 x B02 or more: ferric iron in soil,
     laterite, sandstone) is ``quarry`` (extraction or bare soil). It comes first because the
     rim of a patch mixes it with its surroundings, which would read as several materials.
  2. *How many materials.* A building site at 10 m is a mosaic of distinct man-made materials
     (concrete, asphalt, red, blue and metal roofs, bare soil between them) whose spectra point in
     different directions; a quarry or stripped ground exposes one rock or soil. The measure is
     the spread of spectral angles over the patch's bare pixels, ``asin(sqrt(1 - |mean unit
     spectrum|^2))``: blind to brightness (a shaded face has the angle of a lit one) and only
     slightly narrowed by haze. A spread of ``MOSAIC_ANGLE_DEG`` or more is ``construction``.
  3. *Texture.* One grey material is the hard case: granite, limestone and coal spoil have nearly
     the spectra of concrete, paving and asphalt in these bands (concrete is made of limestone).
     A rock cut is rough at 10 m (benches, faces towards and away from the sun, shadow), a slab,
     a roof or a paved yard is smooth: the spread of log SWIR-1 brightness over the patch of
     ``ROUGH_LOG_SWIR`` or more is ``quarry``, less is ``construction``.

  Known limits: a site dominated by red roofs reads as a quarry, and so does a mosaic of grey
  materials alone (concrete, asphalt, metal) under haze, whose spectra then point almost the same
  way while their brightness varies; a quarry whose overburden has
  another colour than its rock reads as a building site; a single smooth slab of rock (a fresh
  level cut) reads as construction. Patch shape (straight edges) would help; the classifier sees
  only per-pixel features.

  Where the surface-material features are missing (no bare pixel), the patch's visible colour
  decides as before: uniformly reddish ``quarry``, grey or varied ``construction``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..types import ANALYSIS_BANDS

#: NDVI of dense vegetation (a canopy before, or green cover now).
VEGETATED_NDVI = 0.5
#: NDVI rise beyond which the patch greened (growth, not disturbance).
GREENING = 0.1
#: NDVI below which ground is bare or built (rock, soil, concrete, roofs); above it, sparse cover.
BARE_NDVI = 0.22
#: Relative visible redness (B04 - B02) / mean(B02, B03, B04) above which bare ground is soil/rock.
REDNESS_SOIL = 0.2
#: Redness at and above which ground is iron-stained soil or rock: ferric iron absorbs in the
#: blue, so B04 is about 1.4 x B02 or more (redness 0.35; laterite reaches 1.0, sandy soil 0.6),
#: where grey rock, limestone, concrete and metal stay near 0.2 and dark asphalt and coal spoil
#: near 0.3 (their ratio inflated by their darkness). The physics gives a range, 0.3-0.4; 0.35,
#: its middle, also scored best of 0.3 / 0.35 / 0.4 / 0.5 on the planted bench.
IRON_REDNESS = 0.35
#: Spread of spectral angles (degrees) over a patch's bare pixels at and above which the patch
#: holds several materials. Spectral-angle-mapper practice treats spectra within about 0.05-0.1
#: rad (3-6 degrees) as one material (Kruse et al. 1993); the value inside that range is the
#: cross-validated fit of bench/type_accuracy.py (planted sites in the seven OSCD cities), which
#: re-chooses it leave-one-scene-out from FITTED_CONSTANTS to report an honest figure.
MOSAIC_ANGLE_DEG = 4.5
#: Spread (standard deviation) of log SWIR-1 brightness over a patch at and above which one grey
#: material is rough rock rather than a smooth built surface: 0.05 is a 5 % brightness
#: variation, above the 2-4 % of a uniform surface seen through sensor noise. Chosen like
#: MOSAIC_ANGLE_DEG.
ROUGH_LOG_SWIR = 0.05
#: The constants chosen from data, each with its candidates: bench/type_accuracy.py chooses them
#: without the scene it scores (keyword arguments of classify_patch).
FITTED_CONSTANTS: dict[str, tuple[float, ...]] = {
    "mosaic_angle_deg": (3.5, 4.0, 4.5, 5.0, 5.5),
    "rough_log_swir": (0.03, 0.04, 0.05, 0.06, 0.08, 0.1),
}
#: Standard deviation of that redness within a patch above which the patch is a mosaic of
#: materials (rock and soil vary in brightness, hardly in hue).
MOSAIC_REDNESS_STD = 0.15


def _get(stats: Mapping[str, float], key: str, default: float = math.nan) -> float:
    value = stats.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def spectral_angle_spread(stats: Mapping[str, float]) -> float:
    """Spread (degrees) of the spectral angles of the patch's bare pixels around their mean
    direction, from the patch means of their unit spectra; NaN when the patch has none."""
    means = [_get(stats, f"unit_{b}_bare") for b in ANALYSIS_BANDS]
    if not all(math.isfinite(m) for m in means):
        return math.nan
    spread = min(max(1.0 - sum(m * m for m in means), 0.0), 1.0)
    return math.degrees(math.asin(math.sqrt(spread)))


def _spread(stats: Mapping[str, float], key: str) -> float:
    """Standard deviation over the patch from the means of a value and of its square (0 when only
    the mean is known)."""
    mean = _get(stats, key)
    return math.sqrt(max(_get(stats, f"{key}_sq", mean**2) - mean**2, 0.0))


def classify_patch(
    stats: Mapping[str, float],
    *,
    mosaic_angle_deg: float = MOSAIC_ANGLE_DEG,
    rough_log_swir: float = ROUGH_LOG_SWIR,
) -> str:
    """quarry / construction / vegetation_loss / other from per-patch means of the features."""
    ndvi_before = _get(stats, "ndvi_before")
    ndvi_after = _get(stats, "ndvi_after")
    if not (math.isfinite(ndvi_before) and math.isfinite(ndvi_after)):
        return "other"
    if ndvi_after > VEGETATED_NDVI or ndvi_after - ndvi_before > GREENING:
        return "other"
    if ndvi_after >= BARE_NDVI and ndvi_before >= VEGETATED_NDVI:
        return "vegetation_loss" if _get(stats, "brightening", 0.0) > 0.0 else "other"
    redness = _get(stats, "redness_after")
    if not math.isfinite(redness):
        return "other"
    angle = spectral_angle_spread(stats)
    if math.isfinite(angle):
        if redness >= IRON_REDNESS:
            return "quarry"
        if angle >= mosaic_angle_deg:
            return "construction"
        rough = _spread(stats, "log_swir_bare")
        return "quarry" if math.isfinite(rough) and rough >= rough_log_swir else "construction"
    if redness >= REDNESS_SOIL and _spread(stats, "redness_after") < MOSAIC_REDNESS_STD:
        return "quarry"
    return "construction"
