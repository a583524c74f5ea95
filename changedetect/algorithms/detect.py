"""Per-pixel change decision: robust, data-adaptive statistics on before/after composites."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy.stats import norm

from ..models import Composite
from ..types import ANALYSIS_BANDS
from .composite import MAD_TO_SIGMA
from .indices import bsi, mndwi, ndbi, ndvi


@dataclass
class ChangeLayers:
    """Lazy per-pixel outputs of the change test on one grid (dims y, x)."""

    score: xr.DataArray
    """Confidence 0-1 that the pixel changed; NaN where either date has no valid data."""
    disturbed: xr.DataArray
    """Boolean decision before spatial cleaning."""
    features: xr.Dataset
    """Per-pixel quantities averaged per patch later (d_ndvi, d_bsi, d_ndbi, after-state ...)."""
    threshold: float
    """Robust z threshold used for the decision."""


def index_features(before: xr.Dataset, after: xr.Dataset) -> xr.Dataset:
    """Indices on both dates and their differences."""
    feats = {}
    for tag, ds in (("before", before), ("after", after)):
        feats[f"ndvi_{tag}"] = ndvi(ds["B04"], ds["B08"])
        feats[f"bsi_{tag}"] = bsi(ds["B02"], ds["B04"], ds["B08"], ds["B11"])
        feats[f"ndbi_{tag}"] = ndbi(ds["B08"], ds["B11"])
        feats[f"mndwi_{tag}"] = mndwi(ds["B03"], ds["B11"])
        feats[f"brightness_{tag}"] = sum(ds[b] for b in ANALYSIS_BANDS) / len(ANALYSIS_BANDS)
    feats["d_ndvi"] = feats["ndvi_after"] - feats["ndvi_before"]
    feats["d_bsi"] = feats["bsi_after"] - feats["bsi_before"]
    feats["d_ndbi"] = feats["ndbi_after"] - feats["ndbi_before"]
    return xr.Dataset({k: v.astype("float32") for k, v in feats.items()})


def robust_location_scale(sample: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based sigma of the finite values of `sample`."""
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0, 1.0
    med = float(np.median(finite))
    sigma = float(np.median(np.abs(finite - med))) * MAD_TO_SIGMA
    return med, max(sigma, 1e-6)


def detect_change(before: Composite, after: Composite, *, false_alarm_rate: float) -> ChangeLayers:
    """Change-vector magnitude standardised by robust global statistics."""
    diffs = {b: (after.bands[b] - before.bands[b]) for b in ANALYSIS_BANDS}
    z2 = None
    for band, d in diffs.items():
        med, sigma = robust_location_scale(np.asarray(d.data[::7, ::7]))
        term = ((d - med) / sigma) ** 2
        z2 = term if z2 is None else z2 + term
    magnitude = np.sqrt(z2)
    med, sigma = robust_location_scale(np.asarray(magnitude.data[::7, ::7]))
    z = (magnitude - med) / sigma
    threshold = float(norm.isf(false_alarm_rate))
    feats = index_features(before.bands, after.bands)
    stable_veg = (feats["ndvi_before"] > 0.5) & (feats["ndvi_after"] > 0.5)
    stable_water = (feats["mndwi_before"] > 0) & (feats["mndwi_after"] > 0)
    disturbed = (z > threshold) & ~stable_veg & ~stable_water
    score = (1.0 / (1.0 + np.exp(-(z - threshold)))).astype("float32")
    return ChangeLayers(score=score, disturbed=disturbed, features=feats, threshold=threshold)
