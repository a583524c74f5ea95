"""Geometry helpers: WKB storage, GeoJSON parsing and checking, areas and overlaps in metres.

Stored geometries are WGS84 longitude/latitude as RFC 7946 has them: edges are straight lines in
degrees, and a polygon crossing the antimeridian comes split there (§3.1.9). Areas and overlap
shares are measured on the WGS84 ellipsoid (:class:`pyproj.Geod`), which is right for a patch
of a few pixels and for a polygon the size of the world alike. Site matching still measures in
the UTM zone of the geometry being judged (:func:`local_epsg`, :func:`project`), where a square
metre is a square metre to well under 1 % across a zone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import Polygon, shape
from shapely.geometry.base import BaseGeometry

from ..io.sinks.geojson import rfc7946_geometry

_GEOD = Geod(ellps="WGS84")
_E = math.sqrt(_GEOD.es)
#: Surface of the WGS84 ellipsoid (m²): a ring's geodesic area is only known modulo it.
EARTH_AREA_M2 = 2 * math.pi * _GEOD.a**2 + math.pi * _GEOD.b**2 / _E * math.log((1 + _E) / (1 - _E))
#: RFC 7946 edges are straight in degrees; a geodesic follows such an edge closely only over a
#: short step, so longer edges are measured in steps of at most this many degrees.
_EDGE_STEP_DEG = 0.25
#: To a geodesic, a ring's stretch along a pole is one point: a polygon reaching both poles
#: (the whole world) would enclose nothing. Latitudes are held this far off the poles instead
#: (about a metre), which costs a few m² of the Earth's 5.1e14.
_POLE_MARGIN_DEG = 1e-5
#: The least a ring can cover in square degrees and still enclose half the ellipsoid (a square
#: degree is at most 1.24e10 m², at the equator): only such a ring's negative geodesic area
#: means "more than half the Earth" rather than rounding.
_HALF_EARTH_MIN_DEG2 = 20_000.0


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
    """A GeoJSON geometry mapping → a valid polygonal shapely geometry of positive area.

    Raises ValueError with one reason: unreadable, coordinates that are not finite WGS84
    degrees, a ring crossing the antimeridian unsplit, no polygon area (after repair).
    """
    if not isinstance(obj, dict) or "type" not in obj:
        raise ValueError("geometry is missing or not a GeoJSON geometry object")
    try:
        with np.errstate(invalid="ignore"):  # NaN coordinates are reported below, by name
            geom = shape(obj)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise ValueError(f"geometry cannot be read: {exc}") from None
    problem = wgs84_problem(geom) or antimeridian_problem(geom)
    if problem:
        raise ValueError(problem)
    geom = polygonal(geom)
    if geom.is_empty:
        raise ValueError(f"geometry of type {obj['type']} has no polygon area")
    area = area_m2(geom)
    if not (math.isfinite(area) and area > 0.0):
        raise ValueError(f"geometry of type {obj['type']} has no polygon area ({area} m²)")
    return geom


def wgs84_problem(geom: BaseGeometry) -> str | None:
    """Why ``geom``'s coordinates are not finite WGS84 degrees (RFC 7946 §4), or None."""
    xy = shapely.get_coordinates(geom)
    if xy.size == 0:
        return None
    finite = np.isfinite(xy)
    if not finite.all():
        x, y = xy[~finite.all(axis=1)][0]
        return f"coordinate ({x}, {y}) is not a finite number"
    lon, lat = xy[:, 0], xy[:, 1]
    outside = (np.abs(lon) > 180.0) | (np.abs(lat) > 90.0)
    if not outside.any():
        return None
    x, y = xy[outside][0]
    if np.abs(xy).max() > 1000.0:  # far beyond any degree: a projected CRS
        return (
            f"coordinate ({x}, {y}) is not longitude/latitude in degrees (projected metres?): "
            "RFC 7946 GeoJSON is WGS84 longitude -180..180, latitude -90..90"
        )
    which = f"longitude {x}" if abs(x) > 180.0 else f"latitude {y}"
    span = "-180..180" if abs(x) > 180.0 else "-90..90"
    return f"{which} is outside {span} (WGS84 degrees, RFC 7946)"


def antimeridian_problem(geom: BaseGeometry) -> str | None:
    """Why ``geom`` looks like a polygon crossing the antimeridian without being split, or None.

    A patch spanning more than 180° of longitude is a ring that jumps from +180 to -180 the
    short way round, read (rightly, under RFC 7946) as the long way round the globe. A ring
    running along both ±180 (a polar cap, the whole world) is how RFC 7946 draws such areas
    and is kept.
    """
    for poly in _polygons(geom):
        west, _, east, _ = poly.exterior.bounds
        span = east - west
        if span > 180.0 and not (west == -180.0 and east == 180.0):
            return (
                f"a ring spans {span:.1f}° of longitude ({west} to {east}): a polygon crossing "
                "the antimeridian must be split there into a MultiPolygon (RFC 7946 §3.1.9)"
            )
    return None


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


#: Boxes whose centres share a cell of this many degrees (about 5 km) are looked up together,
#: by their common envelope: a night's clues cluster, so a few envelopes stand for many boxes
#: and a query asks for each place once, while boxes far apart never make one huge envelope.
ENVELOPE_CELL_DEG = 0.05


def box_envelopes(
    boxes: Sequence[tuple[float, float, float, float]], cell_deg: float = ENVELOPE_CELL_DEG
) -> list[tuple[float, float, float, float]]:
    """Envelopes covering ``boxes`` (min_lon, min_lat, max_lon, max_lat): one per grid cell
    holding box centres, in the order the cells are first met. Whatever meets a box meets one
    of the envelopes."""
    cells: dict[tuple[int, int], list[float]] = {}
    for minx, miny, maxx, maxy in boxes:
        key = (math.floor((minx + maxx) / 2 / cell_deg), math.floor((miny + maxy) / 2 / cell_deg))
        envelope = cells.get(key)
        if envelope is None:
            cells[key] = [minx, miny, maxx, maxy]
        else:
            envelope[0] = min(envelope[0], minx)
            envelope[1] = min(envelope[1], miny)
            envelope[2] = max(envelope[2], maxx)
            envelope[3] = max(envelope[3], maxy)
    return [(e[0], e[1], e[2], e[3]) for e in cells.values()]


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


def _polygons(geom: BaseGeometry) -> Iterator[Polygon]:
    """The polygons of any geometry (parts of multi-geometries and collections)."""
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon":
            yield part
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            yield from _polygons(part)


def _ring_area_m2(ring: Any) -> float:
    """Area enclosed by one ring on the WGS84 ellipsoid, m² (orientation does not matter)."""
    if not ring.is_ccw:  # counter-clockwise: the enclosed side is the left one
        ring = shapely.reverse(ring)
    xy = shapely.get_coordinates(shapely.segmentize(ring, _EDGE_STEP_DEG))
    # np.minimum/np.maximum: what np.clip computes, without its dispatch (costly on a few points)
    lat = np.minimum(np.maximum(xy[:, 1], -90.0 + _POLE_MARGIN_DEG), 90.0 - _POLE_MARGIN_DEG)
    signed, _ = _GEOD.polygon_area_perimeter(xy[:, 0], lat)
    # Geod reports areas as -E/2..E/2: a ring enclosing more than half the Earth comes negative
    if signed < 0.0 and Polygon(ring).area > _HALF_EARTH_MIN_DEG2:
        signed += EARTH_AREA_M2
    return abs(signed)


def area_m2(geom: BaseGeometry) -> float:
    """Area in m² on the WGS84 ellipsoid (holes subtracted; non-polygonal parts count 0)."""
    if geom.geom_type == "Polygon" and not geom.is_empty and not geom.interiors:
        # most patches: one ring, measured without walking parts (the same sum as below)
        return max(_ring_area_m2(geom.exterior), 0.0)
    total = 0.0
    for poly in _polygons(geom):
        if poly.is_empty:
            continue
        total += _ring_area_m2(poly.exterior)
        total -= sum(_ring_area_m2(hole) for hole in poly.interiors)
    return max(total, 0.0)


def overlap_share(a: BaseGeometry, b: BaseGeometry) -> float:
    """Intersection area over the smaller of the two areas, on the ellipsoid (0 … 1)."""
    smaller = min(area_m2(a), area_m2(b))
    if smaller <= 0.0:
        return 0.0
    return min(1.0, area_m2(shapely.intersection(a, b)) / smaller)
