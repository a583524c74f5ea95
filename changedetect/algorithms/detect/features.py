"""Per-pixel features the patches are described by: indices on both dates, their changes and the
after state's colour and material, from band arrays (numpy, dask or xarray alike)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from ...types import ANALYSIS_BANDS
from ..arrays import where
from ..indices import bsi, mndwi, ndbi, ndvi

#: NDVI below which a pixel's spectrum counts as bare or built ground for the surface-material
#: features (the classifier's BARE_NDVI, 0.22, plus a margin for haze, which lowers NDVI).
BARE_FEATURE_NDVI = 0.3


def index_feature_values(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Indices on both dates, their differences and the after-state colour the classifier uses,
    from band arrays (numpy, dask or xarray alike)."""
    feats: dict[str, Any] = {}
    for tag, ds in (("before", before), ("after", after)):
        feats[f"ndvi_{tag}"] = ndvi(ds["B04"], ds["B08"])
        feats[f"bsi_{tag}"] = bsi(ds["B02"], ds["B04"], ds["B08"], ds["B11"])
        feats[f"ndbi_{tag}"] = ndbi(ds["B08"], ds["B11"])
        feats[f"mndwi_{tag}"] = mndwi(ds["B03"], ds["B11"])
        feats[f"brightness_{tag}"] = sum(ds[b] for b in ANALYSIS_BANDS) / len(ANALYSIS_BANDS)
    feats["d_ndvi"] = feats["ndvi_after"] - feats["ndvi_before"]
    feats["d_bsi"] = feats["bsi_after"] - feats["bsi_before"]
    feats["d_ndbi"] = feats["ndbi_after"] - feats["ndbi_before"]
    feats["d_brightness"] = feats["brightness_after"] - feats["brightness_before"]
    # visible colour of the after state: soil and rock are red (B04 > B02), concrete is grey;
    visible = (after["B02"] + after["B03"] + after["B04"]) / 3.0
    feats["redness_after"] = (after["B04"] - after["B02"]) / _positive(visible)
    # its square: with the patch mean of both, the patch's colour variety (a mosaic of roofs is
    # varied, rock or soil is not)
    feats["redness_after_sq"] = feats["redness_after"] ** 2
    # on bare or built pixels only (NDVI after below BARE_FEATURE_NDVI; NaN elsewhere, which the
    # patch means skip, so vegetated pixels at a patch's rim do not count):
    bare = feats["ndvi_after"] < BARE_FEATURE_NDVI
    # the after spectrum as a unit vector: its patch means give the spread of spectral angles over
    # the new surface, 1 - |mean unit vector|^2, blind to brightness (shading, slope, sun)
    norm = _positive(sum(after[b] ** 2 for b in ANALYSIS_BANDS) ** 0.5)
    for b in ANALYSIS_BANDS:
        feats[f"unit_{b}_bare"] = _where_or_nan(bare, after[b] / norm)
    # log SWIR-1 brightness (the band least touched by haze) and its square: their patch means
    # give the spread of brightness over the surface (benches and faces of a rock cut; a slab or
    # a roof is smooth)
    log_swir = _where_or_nan(bare, np.log(_positive(after["B11"])))
    feats["log_swir_bare"] = log_swir
    feats["log_swir_bare_sq"] = log_swir**2
    return feats


#: The test's own per-pixel outputs the patches are also described by (means over the patch).
TEST_VALUES = ("evidence", "brightening", "score")


def kept_values(
    before: np.ndarray, after: np.ndarray, test_values: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """What the pass keeps of each changed pixel: its reflectance in each band (`before` and
    `after` as (band, pixel)) and the test's outputs, all float32. Fifteen values a pixel,
    where the features derived from them (:func:`pixel_features`) are some forty: with heavy
    change they were most of the pass's memory."""
    out = {f"{band}_before": before[k] for k, band in enumerate(ANALYSIS_BANDS)}
    out |= {f"{band}_after": after[k] for k, band in enumerate(ANALYSIS_BANDS)}
    out |= {name: test_values[name] for name in TEST_VALUES}
    return {name: np.asarray(v, dtype=np.float32) for name, v in out.items()}


def pixel_features(kept: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-pixel features of :func:`kept_values` (float32): :func:`index_feature_values`,
    then the test's outputs. Element by element, so a part of the pixels gives their part."""
    feats = index_feature_values(
        {band: kept[f"{band}_before"] for band in ANALYSIS_BANDS},
        {band: kept[f"{band}_after"] for band in ANALYSIS_BANDS},
    )
    out = {name: np.asarray(v, dtype=np.float32) for name, v in feats.items()}
    return out | {name: kept[name] for name in TEST_VALUES}


def _where_or_nan(cond: Any, x: Any) -> Any:
    """`x` where `cond`, NaN elsewhere (numpy, dask or xarray alike)."""
    return where(cond, x, np.nan)


def _positive(x: Any) -> Any:
    """`x` where it is > 0, NaN elsewhere (a safe denominator)."""
    with np.errstate(invalid="ignore"):
        return _where_or_nan(x > 0, x)


def index_features(before: xr.Dataset, after: xr.Dataset) -> xr.Dataset:
    """:func:`index_feature_values` of two composites as a float32 dataset."""
    feats = index_feature_values(before, after)
    return xr.Dataset({k: v.astype("float32") for k, v in feats.items()})
