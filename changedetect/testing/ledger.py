"""Nights of synthetic clues for the tracker: many separate small patches, as the pipeline writes
them, to measure and test ingest and the API at scale.

Patches are 60 m squares on a 300 m lattice (position ``i`` always at the same place) from a point of the Qinling north slope (UTM 49N),
so no two overlap and each opens its own case; a later night at the same lattice positions, shifted
a few metres, updates those cases instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pyproj import Transformer

ORIGIN_LONLAT = (108.25, 34.0)
UTM = 32649
SPACING_M = 300.0
SIDE_M = 60.0
#: Lattice positions per row (300 km): a position's place does not depend on the night's size.
COLUMNS = 1000
COUNTIES = ("Zhouzhi", "Huyi", "Chang'an", "Lantian")
CHANGE_TYPES = ("quarry", "construction", "vegetation_loss")
PRIORITIES = ("urgent", "high", "normal", "low")


def synthetic_night(
    count: int,
    *,
    start: int = 0,
    day: str = "2025-06-23",
    shift_m: float = 0.0,
    prefix: str = "n1",
    counties: Sequence[str] = COUNTIES,
) -> dict[str, Any]:
    """A FeatureCollection of ``count`` clues at lattice positions ``start`` … ``start+count-1``."""
    index = np.arange(start, start + count)
    to_utm = Transformer.from_crs(4326, UTM, always_xy=True)
    to_wgs = Transformer.from_crs(UTM, 4326, always_xy=True)
    x0, y0 = to_utm.transform(*ORIGIN_LONLAT)
    west = x0 + (index % COLUMNS) * SPACING_M + shift_m
    south = y0 + (index // COLUMNS) * SPACING_M + shift_m
    corners_x = np.stack([west, west + SIDE_M, west + SIDE_M, west, west], axis=1)
    corners_y = np.stack([south, south, south + SIDE_M, south + SIDE_M, south], axis=1)
    lon, lat = to_wgs.transform(corners_x, corners_y)
    centre_lon, centre_lat = lon[:, :4].mean(axis=1).tolist(), lat[:, :4].mean(axis=1).tolist()
    lon, lat = lon.tolist(), lat.tolist()
    features = []
    for k, i in enumerate(index.tolist()):
        ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon[k], lat[k], strict=True)]
        clue_id = f"{prefix}-{i:07d}"
        properties = {
            "clue_id": clue_id,
            "aoi": "synthetic",
            "detected_at": day,
            "before": ["2024-04-01", "2024-06-30"],
            "after": ["2025-04-01", day],
            "area_m2": SIDE_M * SIDE_M,
            "centroid": [round(centre_lon[k], 6), round(centre_lat[k], 6)],
            "change_type": CHANGE_TYPES[i % len(CHANGE_TYPES)],
            "confidence": 0.5 + (i % 50) / 100,
            "confidence_level": "high",
            "d_ndvi": -0.3,
            "d_bsi": 0.2,
            "d_ndbi": 0.1,
            "zone": "Qinling red line core",
            "zone_tier": "red_line_core",
            "county": counties[i % len(counties)],
            "priority": PRIORITIES[i % len(PRIORITIES)],
            "status": "new",
        }
        geometry = {"type": "Polygon", "coordinates": [ring]}
        features.append(
            {"type": "Feature", "id": clue_id, "geometry": geometry, "properties": properties}
        )
    return {"type": "FeatureCollection", "features": features}
