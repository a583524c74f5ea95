"""Two textbook change detectors the project must beat, on (band, y, x) reflectance arrays.

Both threshold with Otsu's method (skimage.filters.threshold_otsu), which needs no fitting, so
their figures are honest on every scene. Bands are ANALYSIS_BANDS: B02, B03, B04, B08, B11, B12.

- **CVA + Otsu**: the magnitude of the band-difference vector, thresholded by Otsu.
- **Robust-z CVA**: each band difference standardised by its median and MAD, 3x3 median filtered,
  magnitude of the z vector thresholded by Otsu, with open water on either date (MNDWI > 0) and
  vegetation after (NDVI > 0.5) suppressed. The two indices are read after a dark-object
  subtraction (each band's 1st percentile, Chavez 1988): on top-of-atmosphere or raw-count imagery
  (the Landsat pair is 8-bit counts) they are meaningless without it, and a baseline that
  suppressed half the scene as "water" would flatter whatever is compared with it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

MAD_TO_SIGMA = 1.4826


def _otsu(x: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, bool)
    return finite & (np.nan_to_num(x) > threshold_otsu(x[finite]))


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a - b) / (a + b)


def _dark_object_corrected(cube: np.ndarray) -> np.ndarray:
    dark = np.nanpercentile(cube.reshape(cube.shape[0], -1), 1.0, axis=1)
    return np.maximum(cube - dark[:, None, None], 0.0)


def cva_otsu(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Plain change vector analysis: |after - before| > Otsu threshold."""
    return _otsu(np.sqrt(np.sum((after - before) ** 2, axis=0)))


def robust_cva(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Robust-z CVA with a 3x3 median and water / vegetation suppression."""
    diff = after - before
    z = np.empty_like(diff)
    for i, d in enumerate(diff):
        med = np.nanmedian(d)
        sigma = max(float(np.nanmedian(np.abs(d - med))) * MAD_TO_SIGMA, 1e-6)
        z[i] = ndimage.median_filter(np.nan_to_num((d - med) / sigma), size=3)
    changed = _otsu(np.sqrt(np.sum(z**2, axis=0)))
    b, a = _dark_object_corrected(before), _dark_object_corrected(after)
    water = (_nd(b[1], b[4]) > 0) | (_nd(a[1], a[4]) > 0)
    vegetated = _nd(a[3], a[2]) > 0.5
    return changed & ~water & ~vegetated
