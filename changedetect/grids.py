"""Analysis grids: from an AOI bounding box to a projected, pixel-snapped grid."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import rasterio.features
import rasterio.windows
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from pyproj.geod import Geod

from .config import AoiConfig
from .models import GridSpec

WGS84 = CRS.from_epsg(4326)


def utm_crs_for(lon: float, lat: float) -> CRS:
    """The WGS84 / UTM zone CRS containing (lon, lat)."""
    infos = query_utm_crs_info(
        datum_name="WGS 84",
        area_of_interest=AreaOfInterest(lon, lat, lon, lat),
    )
    return CRS.from_epsg(infos[0].code)


def grid_for_bbox(
    bbox: tuple[float, float, float, float], resolution: float, crs: CRS | None = None
) -> GridSpec:
    """A north-up grid covering a WGS84 bbox, edges snapped to multiples of the resolution."""
    west, south, east, north = bbox
    crs = crs or utm_crs_for((west + east) / 2, (south + north) / 2)
    tr = Transformer.from_crs(WGS84, crs, always_xy=True)
    left, bottom, right, top = tr.transform_bounds(west, south, east, north, densify_pts=21)
    left = math.floor(left / resolution) * resolution
    top = math.ceil(top / resolution) * resolution
    right = math.ceil(right / resolution) * resolution
    bottom = math.floor(bottom / resolution) * resolution
    width = int(round((right - left) / resolution))
    height = int(round((top - bottom) / resolution))
    return GridSpec(crs, Affine(resolution, 0, left, 0, -resolution, top), height, width)


def grid_for_aoi(aoi: AoiConfig) -> GridSpec:
    if aoi.bbox is None:
        raise ValueError(f"AOI {aoi.name} has no bbox")
    crs = CRS.from_user_input(aoi.crs) if aoi.crs else None
    return grid_for_bbox(aoi.bbox, aoi.resolution, crs)


def pixel_area_m2(grid: GridSpec) -> float:
    """Area of one pixel; for a geographic grid, the geodesic area at the grid centre."""
    if grid.crs.is_projected:
        return grid.pixel_area_m2
    left, bottom, right, top = grid.bounds
    cx, cy = (left + right) / 2, (bottom + top) / 2
    dx, dy = abs(grid.transform.a), abs(grid.transform.e)
    to_geo = Transformer.from_crs(grid.crs, WGS84, always_xy=True)
    lons, lats = to_geo.transform([cx, cx + dx, cx + dx, cx], [cy, cy, cy + dy, cy + dy])
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    return abs(area)


def reproject_geometry(geom: Any, src: CRS, dst: CRS) -> Any:
    """A shapely geometry transformed between CRSs (x/y axis order throughout)."""
    if src.equals(dst):
        return geom
    tr = Transformer.from_crs(src, dst, always_xy=True)

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, apply)


def footprint_pixels(
    geometry: Any, transform: Affine, shape: tuple[int, int], *, all_touched: bool = False
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The pixels of a grid (`transform`, `shape`) that a polygon in the grid's CRS covers: the
    rows and columns of its bounding window, clipped to the grid, and where inside that window
    the polygon is (``all_touched`` as rasterio.features). None when it lies outside the grid."""
    window = rasterio.windows.from_bounds(*geometry.bounds, transform=transform)
    row0, col0 = max(int(np.floor(window.row_off)), 0), max(int(np.floor(window.col_off)), 0)
    row1 = min(int(np.ceil(window.row_off + window.height)), shape[0])
    col1 = min(int(np.ceil(window.col_off + window.width)), shape[1])
    if row1 <= row0 or col1 <= col0:
        return None
    inside = rasterio.features.geometry_mask(
        [geometry],
        out_shape=(row1 - row0, col1 - col0),
        transform=transform * Affine.translation(col0, row0),
        invert=True,
        all_touched=all_touched,
    )
    return (slice(row0, row1), slice(col0, col1)), inside


def wgs84_bounds(grid: GridSpec) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of the grid's extent (edges densified, so a UTM
    grid's curved edges stay inside)."""
    left, bottom, right, top = grid.bounds
    if grid.crs.equals(WGS84):
        return (left, bottom, right, top)
    tr = Transformer.from_crs(grid.crs, WGS84, always_xy=True)
    west, south, east, north = tr.transform_bounds(left, bottom, right, top, densify_pts=21)
    return (west, south, east, north)
