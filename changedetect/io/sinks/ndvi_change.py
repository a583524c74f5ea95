"""The NDVI change a change chip shows, and the fixed diverging palette it is shown in.

Pure numerics on arrays: chips.py reads the reflectance out of the preview raster and draws.
The palette has one fixed scale for every clue (saturating at :data:`CHANGE_LIMIT`) rather than
a stretch per chip, so that the same colour means the same loss of vegetation on every card: a
stretch would paint a faint change as strongly as a cleared forest.
"""

from __future__ import annotations

import numpy as np

#: NDVI change at which the palette saturates: a forest cleared to bare soil loses 0.5-0.7.
CHANGE_LIMIT = 0.5
#: Where a date has no data (cloud, outside the scene): grey, apart from every change colour.
NO_DATA_RGB = (128, 128, 128)
#: The palette's stops, NDVI change -> colour, linear between them: loss red-brown, near zero
#: pale, gain green.
CHANGE_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (-CHANGE_LIMIT, (120, 40, 10)),
    (-CHANGE_LIMIT / 2, (205, 110, 55)),
    (0.0, (245, 244, 238)),
    (CHANGE_LIMIT / 2, (120, 190, 100)),
    (CHANGE_LIMIT, (25, 105, 45)),
)


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """NDVI from red and NIR reflectance; NaN where either is missing or both are zero."""
    red, nir = np.asarray(red, np.float32), np.asarray(nir, np.float32)
    total = nir + red
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (nir - red) / total, np.float32(np.nan)).astype(np.float32)


def ndvi_change(
    red_before: np.ndarray, nir_before: np.ndarray, red_after: np.ndarray, nir_after: np.ndarray
) -> np.ndarray:
    """After NDVI minus before NDVI (negative: vegetation lost); NaN where a date has no NDVI."""
    return ndvi(red_after, nir_after) - ndvi(red_before, nir_before)


def change_rgb(change: np.ndarray) -> np.ndarray:
    """Colours of an NDVI change on the fixed palette (:data:`CHANGE_STOPS`): an (..., 3) uint8
    array, saturated beyond ±:data:`CHANGE_LIMIT`, :data:`NO_DATA_RGB` where it is NaN."""
    change = np.asarray(change, np.float32)
    at = np.clip(np.nan_to_num(change, nan=0.0), -CHANGE_LIMIT, CHANGE_LIMIT)
    stops = np.array([s for s, _ in CHANGE_STOPS], np.float32)
    colours = np.array([c for _, c in CHANGE_STOPS], np.float32)
    rgb = np.stack([np.interp(at, stops, colours[:, k]) for k in range(3)], axis=-1)
    rgb = np.round(rgb).astype(np.uint8)
    rgb[np.isnan(change)] = NO_DATA_RGB
    return rgb
