"""Change type of a patch from its mean spectral features."""

from __future__ import annotations

from collections.abc import Mapping


def classify_patch(stats: Mapping[str, float]) -> str:
    """quarry / construction / vegetation_loss / other from per-patch means of the features."""
    if stats["ndvi_after"] > 0.4:
        return "other"
    if stats["bsi_after"] > 0.1 and stats["brightness_after"] > 0.2:
        return "quarry"
    if stats["ndbi_after"] > 0.0:
        return "construction"
    if stats["d_ndvi"] < -0.2:
        return "vegetation_loss"
    return "other"
