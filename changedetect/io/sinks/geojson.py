"""Patch clues as an RFC 7946 GeoJSON FeatureCollection (WGS84, right-hand rule)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping
from shapely.geometry.polygon import orient

from ...models import PatchClue
from ..atomic import atomic_path

COORD_DECIMALS = 7  # ~1 cm at the equator: well below a 10 m pixel


def rfc7946_geometry(geom: Any) -> dict[str, Any]:
    """GeoJSON geometry with exterior rings counter-clockwise and holes clockwise."""
    if geom.geom_type == "Polygon":
        geom = orient(geom, sign=1.0)
    elif geom.geom_type == "MultiPolygon":
        geom = type(geom)([orient(p, sign=1.0) for p in geom.geoms])
    # rounding keeps files small and stable between runs
    return mapping(shapely.transform(geom, lambda xy: np.round(xy, COORD_DECIMALS)))


def clues_feature_collection(clues: Sequence[PatchClue]) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": clue.clue_id,
                "geometry": rfc7946_geometry(clue.geometry_wgs84),
                "properties": clue.properties(),
            }
            for clue in clues
        ],
    }


def write_clues_geojson(clues: Sequence[PatchClue], path: Path) -> Path:
    """Write the clues atomically; an empty list gives an empty FeatureCollection."""
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(clues_feature_collection(clues), ensure_ascii=False, indent=1),
            encoding="utf-8",
        )
    return path
