"""Literal option lists and small aliases shared across the package."""

from typing import Literal

#: Reflectance bands the analysis uses, in Sentinel-2 naming.
ANALYSIS_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12")

ChangeType = Literal["quarry", "construction", "vegetation_loss", "other"]
CHANGE_TYPES: tuple[str, ...] = ("quarry", "construction", "vegetation_loss", "other")

ConfidenceLevel = Literal["low", "medium", "high"]

Priority = Literal["low", "normal", "high", "urgent"]
