"""Result and metadata types that pass between the layers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from .navigation import navigation


@dataclass(frozen=True)
class TimeWindow:
    """A closed date interval [start, end]."""

    start: dt.date
    end: dt.date

    def contains(self, when: dt.datetime | dt.date) -> bool:
        day = when.date() if isinstance(when, dt.datetime) else when
        return self.start <= day <= self.end

    def as_list(self) -> list[str]:
        return [self.start.isoformat(), self.end.isoformat()]


@dataclass(frozen=True)
class Acquisition:
    """One image in time, as metadata only (cheap to list)."""

    id: str
    datetime: dt.datetime
    source: str
    #: Where the bands live: band name -> (path, band index starting at 1).
    assets: dict[str, tuple[str, int]] = field(default_factory=dict)
    cloud_cover: float | None = None
    grid: GeoBox | None = None


@dataclass
class Composite:
    """Per-pixel median of the valid observations in one time window (lazy, dask-backed)."""

    window: TimeWindow
    bands: xr.Dataset
    valid_count: xr.DataArray
    acquisitions: list[str]
    #: Robust temporal standard deviation per band (NaN where fewer than 3 valid observations).
    spread: xr.Dataset | None = None
    #: The cloud mask its observations were screened with (changedetect.algorithms.masking).
    cloud_mask: str = "scl"
    #: Where each acquisition of the stack it was built from is valid (time, y, x; lazy).
    valid: xr.DataArray | None = None
    #: Which acquisitions of that stack the median was taken over (None: all of them).
    members: np.ndarray | None = None
    #: How a chunk of its medians, spreads and valid count is computed from the stack's chunks
    #: by one call (changedetect.algorithms.composite.CompositeLayers); None where the composite
    #: was not built from a lazy stack.
    layers: Any | None = None


@dataclass
class Patch:
    """A connected group of changed pixels, with its per-patch statistics (analysis CRS)."""

    label: int
    geometry: Any  # shapely geometry in the grid CRS
    area_m2: float
    n_pixels: int
    stats: dict[str, float]
    bbox_rc: tuple[int, int, int, int]  # row0, col0, row1, col1 (exclusive)


@dataclass
class PatchClue:
    """A suspect change as sent to the county for field verification."""

    clue_id: str
    aoi: str
    detected_at: str
    before: list[str]
    after: list[str]
    geometry_wgs84: Any
    area_m2: float
    centroid: tuple[float, float]
    change_type: str
    confidence: float
    confidence_level: str
    d_ndvi: float
    d_bsi: float
    d_ndbi: float
    zone: str | None = None
    zone_tier: str | None = None
    county: str | None = None
    priority: str = "normal"
    chip_before: str | None = None
    chip_after: str | None = None
    chip_change: str | None = None
    """The NDVI change (after - before) over the before/after chips' frame."""
    status: str = "new"
    model: str | None = None
    """The model that gave `confidence` (name@version)."""
    baseline: str | None = None
    """What the acquisitions were compared with: `window` (the before window) or the same season
    of earlier years (e.g. `same_season ±15 d over 3 years`; `before` then spans those seasons)."""
    cloud_mask: str | None = None
    """The cloud mask the change was found under (`scl`, `s2cloudless`, `multitemporal`,
    `none`; `before/after` when the two windows had different ones)."""
    alert_id: str | None = None
    """The alert this clue continues or opens (runs from a config; None for `compare`)."""
    alert_status: str | None = None
    """`probable` (first sighting), `confirmed` (seen again on later clear acquisitions) or
    `dropped` (the newest clear acquisition shows the ground as before)."""
    first_detected: str | None = None
    last_detected: str | None = None
    supporting_observations: int | None = None
    """Clear acquisitions that showed the change, on this run and earlier ones."""
    extra: dict[str, Any] = field(default_factory=dict)

    def properties(self) -> dict[str, Any]:
        props = {
            "clue_id": self.clue_id,
            "aoi": self.aoi,
            "detected_at": self.detected_at,
            "before": self.before,
            "after": self.after,
            # each list also as scalars: GeoPackage and Shapefile have no list fields, so an
            # export (ogr2ogr, QGIS "save as") would drop the lists or turn them into text
            "before_start": self.before[0],
            "before_end": self.before[-1],
            "after_start": self.after[0],
            "after_end": self.after[-1],
            "area_m2": round(self.area_m2, 1),
            "centroid": [round(self.centroid[0], 6), round(self.centroid[1], 6)],
            "centroid_lon": round(self.centroid[0], 6),
            "centroid_lat": round(self.centroid[1], 6),
            **navigation(*self.centroid, self.area_m2, self.clue_id),
            "change_type": self.change_type,
            "confidence": round(self.confidence, 3),
            "confidence_level": self.confidence_level,
            "d_ndvi": round(self.d_ndvi, 4),
            "d_bsi": round(self.d_bsi, 4),
            "d_ndbi": round(self.d_ndbi, 4),
            "zone": self.zone,
            "zone_tier": self.zone_tier,
            "county": self.county,
            "priority": self.priority,
            "chip_before": self.chip_before,
            "chip_after": self.chip_after,
            "chip_change": self.chip_change,
            "status": self.status,
            "model": self.model,
            "baseline": self.baseline,
            "cloud_mask": self.cloud_mask,
            "alert_id": self.alert_id,
            "alert_status": self.alert_status,
            "first_detected": self.first_detected,
            "last_detected": self.last_detected,
            "supporting_observations": self.supporting_observations,
        }
        props.update(self.extra)
        return props


@dataclass
class AoiResult:
    """What one AOI run produced."""

    aoi: str
    out_dir: Path
    clues: list[PatchClue]
    files: dict[str, Path]
    grid: GeoBox
    patches: list[Patch] = field(default_factory=list)
    note: str | None = None
    """Why the AOI produced nothing this time (e.g. no new acquisition), None when it ran."""
    alerts: list[Any] | None = None
    """The AOI's alert state after this run (changedetect.algorithms.alerts.Alert), for
    :func:`changedetect.pipeline.record_aoi`; None when the run does not follow alerts."""

    def counts_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for clue in self.clues:
            counts[clue.change_type] = counts.get(clue.change_type, 0) + 1
        return counts
