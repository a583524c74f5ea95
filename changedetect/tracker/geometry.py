"""Geometry helpers: WKB storage, GeoJSON parsing, and areas/overlaps measured in metres.

Stored geometries are WGS84; anything measured (areas, overlap shares) is measured after
projecting onto the UTM zone of the geometry being judged, where a square metre is a square
metre to well under 1 % across a zone.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from ..io.sinks.geojson import rfc7946_geometry


def to_wkb(geom: BaseGeometry) -> bytes:
    """Geometry → WKB bytes (what the tables store)."""
    return shapely.to_wkb(geom)


def from_wkb(data: bytes) -> BaseGeometry:
    """WKB bytes → geometry."""
    return shapely.from_wkb(data)


def polygonal(geom: BaseGeometry) -> BaseGeometry:
    """A valid (Multi)Polygon made of the polygonal parts of ``geom`` (may be empty)."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def parse_geojson_geometry(obj: Any) -> BaseGeometry:
    """A GeoJSON geometry mapping → a valid polygonal shapely geometry (raises ValueError)."""
    if not isinstance(obj, dict) or "type" not in obj:
        raise ValueError("geometry is missing or not a GeoJSON geometry object")
    try:
        geom = shape(obj)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise ValueError(f"geometry cannot be read: {exc}") from None
    geom = polygonal(geom)
    if geom.is_empty:
        raise ValueError(f"geometry of type {obj['type']} has no polygon area")
    return geom


def to_geojson(geom: BaseGeometry) -> dict[str, Any]:
    """RFC 7946 geometry as the clue writer writes it (exterior rings counter-clockwise, 7
    decimals, valid after the rounding)."""
    return rfc7946_geometry(geom)


def union(a: BaseGeometry, b: BaseGeometry) -> BaseGeometry:
    """Valid polygonal union of two geometries."""
    return polygonal(shapely.union(a, b))


def bbox(geom: BaseGeometry) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat)."""
    minx, miny, maxx, maxy = geom.bounds
    return (float(minx), float(miny), float(maxx), float(maxy))


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 / UTM zone containing (lon, lat) (standard 6° zones)."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return (32600 if lat >= 0 else 32700) + zone


def local_epsg(geom: BaseGeometry) -> int:
    """The UTM zone in which to measure ``geom`` (the zone of its bounding-box centre)."""
    minx, miny, maxx, maxy = geom.bounds
    return utm_epsg((minx + maxx) / 2, (miny + maxy) / 2)


@lru_cache(maxsize=64)
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


def project(geom: BaseGeometry, epsg: int) -> BaseGeometry:
    """``geom`` (WGS84) in the projected CRS ``epsg``."""
    transformer = _to_utm(epsg)

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, apply)


def area_m2(geom: BaseGeometry, epsg: int | None = None) -> float:
    """Area in m², measured in ``epsg`` (default: the geometry's own UTM zone)."""
    if geom.is_empty:
        return 0.0
    return float(project(geom, epsg or local_epsg(geom)).area)


def overlap_share(a: BaseGeometry, b: BaseGeometry, epsg: int) -> float:
    """Intersection area over the smaller of the two areas, measured in ``epsg`` (0 … 1)."""
    pa, pb = project(a, epsg), project(b, epsg)
    smaller = min(pa.area, pb.area)
    if smaller <= 0.0:
        return 0.0
    return float(shapely.intersection(pa, pb).area / smaller)
