"""Literal option lists and small aliases shared across the package."""

from typing import Literal

#: Reflectance bands the analysis uses, in Sentinel-2 naming.
ANALYSIS_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12")

#: Per-pixel quality layers a source may carry beside the reflectance: class numbers or bit
#: flags, never scaled and resampled by nearest neighbour. Each with its pixel type and the value
#: that marks no data: ``SCL`` is the Sentinel-2 L2A scene classification (0 = no data),
#: ``QA_PIXEL`` the Landsat Collection 2 pixel quality bits (bit 0 = fill).
QUALITY_BANDS: dict[str, tuple[str, int]] = {"SCL": ("uint8", 0), "QA_PIXEL": ("uint16", 1)}

ChangeType = Literal["quarry", "construction", "vegetation_loss", "other"]
CHANGE_TYPES: tuple[str, ...] = ("quarry", "construction", "vegetation_loss", "other")

ConfidenceLevel = Literal["low", "medium", "high"]

Priority = Literal["low", "normal", "high", "urgent"]
