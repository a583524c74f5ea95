"""Change type of a patch from its mean spectral features.

Rules on spectral physics that hold across sensors, not constants fitted to one scene:

- A patch that is green now, or greener than before, is not a disturbance: ``other``. (Water on
  either date never reaches a patch: the detector rules it out per pixel, on dark-object corrected
  bands, which raw indices here could not do on hazy or uncalibrated imagery.)
- Ground that still carries sparse vegetation after losing a canopy is a clearing
  (``vegetation_loss``): slash, litter and regrowth keep some NDVI, unlike rock or concrete, and
  the ground got brighter (visible and SWIR rise more than NIR falls). The same NDVI loss without
  brightening is a harvested or dried-out crop: ``other``.
- Bare ground and built surfaces (NDVI near zero) are told apart by their visible colour: soil and
  rock are red (iron oxides: B04 well above B02) and uniform in hue, while concrete, asphalt and
  most roofing are grey, and a building site is a mosaic of materials whose hue varies from pixel
  to pixel (red and blue roofs, concrete, soil). Uniformly reddish bare ground is ``quarry``
  (extraction or bare soil); grey or varied ground is ``construction``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: NDVI of dense vegetation (a canopy before, or green cover now).
VEGETATED_NDVI = 0.5
#: NDVI rise beyond which the patch greened (growth, not disturbance).
GREENING = 0.1
#: NDVI below which ground is bare or built (rock, soil, concrete, roofs); above it, sparse cover.
BARE_NDVI = 0.22
#: Relative visible redness (B04 - B02) / mean(B02, B03, B04) above which bare ground is soil/rock.
REDNESS_SOIL = 0.2
#: Standard deviation of that redness within a patch above which the patch is a mosaic of
#: materials (rock and soil vary in brightness, hardly in hue).
MOSAIC_REDNESS_STD = 0.15


def _get(stats: Mapping[str, float], key: str, default: float = math.nan) -> float:
    value = stats.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def classify_patch(stats: Mapping[str, float]) -> str:
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
    variety = math.sqrt(max(_get(stats, "redness_after_sq", redness**2) - redness**2, 0.0))
    if redness >= REDNESS_SOIL and variety < MOSAIC_REDNESS_STD:
        return "quarry"
    return "construction"
