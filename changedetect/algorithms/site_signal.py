"""What the imagery says inside one footprint: how much of it is bare or built, and how its
vegetation changed. Used to re-examine rectified and restoration sites night after night."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .indices import bsi, mndwi, ndvi

#: Below this NDVI the ground is open (no closed canopy or crop): bare, built or water.
OPEN_GROUND_NDVI = 0.3
#: A footprint needs this share of valid pixels on the after date to be judged at all.
MIN_VALID_SHARE = 0.5


@dataclass(frozen=True)
class FootprintSignal:
    """Shares of the footprint's valid pixels, and the mean NDVI change there."""

    bare_fraction: float
    built_fraction: float
    ndvi_change: float | None
    valid_share: float


def footprint_signal(
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    inside: np.ndarray,
) -> FootprintSignal | None:
    """Bare and built shares of the pixels `inside` the footprint on the after composite.

    Open ground that is not water counts as disturbed; the sign of the bare-soil index tells
    bare soil and rock (BSI > 0) from built-up surfaces. None when too few pixels are valid (clouds,
    no data) to say anything.
    """
    n_inside = int(np.count_nonzero(inside))
    if n_inside == 0:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        nd_a = ndvi(after["B04"], after["B08"])
        water = mndwi(after["B03"], after["B11"]) > 0
        soil = bsi(after["B02"], after["B04"], after["B08"], after["B11"]) > 0
        nd_b = ndvi(before["B04"], before["B08"])
    valid = inside & np.isfinite(nd_a)
    n_valid = int(np.count_nonzero(valid))
    if n_valid < MIN_VALID_SHARE * n_inside:
        return None
    open_ground = valid & (nd_a < OPEN_GROUND_NDVI) & ~water
    bare = np.count_nonzero(open_ground & soil) / n_valid
    built = np.count_nonzero(open_ground & ~soil) / n_valid
    both = valid & np.isfinite(nd_b)
    change = float(np.mean(nd_a[both] - nd_b[both])) if both.any() else None
    return FootprintSignal(float(bare), float(built), change, n_valid / n_inside)
