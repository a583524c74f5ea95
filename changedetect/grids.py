"""Analysis grids: odc-geo GeoBoxes, from an AOI bounding box to a projected, pixel-snapped
grid, and the few measures of a grid the pipeline needs in metres."""

from __future__ import annotations

from typing import Any

import numpy as np
import rasterio.features
import shapely
from odc.geo import SomeCRS
from odc.geo.crs import CRS, norm_crs_or_error
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry
from odc.geo.roi import roi_is_empty, roi_shape
from pyproj import Transformer
from pyproj.geod import Geod

from .config import AoiConfig

WGS84 = CRS("EPSG:4326")


def utm_crs_for(lon: float, lat: float) -> CRS:
    """The WGS84 / UTM zone CRS containing (lon, lat)."""
    return CRS.utm(lon, lat)


def grid_for_bbox(
    bbox: tuple[float, float, float, float], resolution: float, crs: SomeCRS | None = None
) -> GeoBox:
    """A north-up grid covering a WGS84 bbox, edges snapped to multiples of the resolution."""
    west, south, east, north = bbox
    crs = CRS(crs) if crs is not None else utm_crs_for((west + east) / 2, (south + north) / 2)
    # pyproj's densified bounds (21 points an edge), not BoundingBox.to_crs, which projects the
    # corners only: a UTM grid must hold the bbox's curved edges
    tr = Transformer.from_crs(WGS84.proj, crs.proj, always_xy=True)
    bounds = tr.transform_bounds(west, south, east, north, densify_pts=21)
    # tol=0: edges snap outwards however little the bbox pokes past a pixel edge
    return GeoBox.from_bbox(bounds, crs, resolution=resolution, tol=0)


def grid_for_aoi(aoi: AoiConfig) -> GeoBox:
    if aoi.bbox is None:
        raise ValueError(f"AOI {aoi.name} has no bbox")
    return grid_for_bbox(aoi.bbox, aoi.resolution, aoi.crs or None)


def pixel_size(grid: GeoBox) -> float:
    """Pixel size along x, in CRS units (positive; GeoBox.resolution.y is negative north-up)."""
    return abs(grid.resolution.x)


def projected_pixel_area_m2(grid: GeoBox) -> float:
    """Area of one pixel of a projected grid; a geographic grid's pixels have no one area."""
    if not grid.crs.projected:
        raise ValueError("pixel area needs a projected CRS")
    t = grid.transform
    return abs(t.a * t.e)


def pixel_area_m2(grid: GeoBox) -> float:
    """Area of one pixel; for a geographic grid, the geodesic area at the grid centre."""
    if grid.crs.projected:
        return projected_pixel_area_m2(grid)
    left, bottom, right, top = grid.boundingbox
    cx, cy = (left + right) / 2, (bottom + top) / 2
    dx, dy = abs(grid.transform.a), abs(grid.transform.e)
    to_geo = Transformer.from_crs(grid.crs.proj, WGS84.proj, always_xy=True)
    lons, lats = to_geo.transform([cx, cx + dx, cx + dx, cx], [cy, cy, cy + dy, cy + dy])
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    return abs(area)


def reproject_geometry(geom: Any, src: SomeCRS, dst: SomeCRS) -> Any:
    """A shapely geometry transformed between CRSs (x/y axis order throughout)."""
    src, dst = norm_crs_or_error(src), norm_crs_or_error(dst)
    if src == dst:
        return geom
    tr = Transformer.from_crs(src.proj, dst.proj, always_xy=True)

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, apply)


def footprint_pixels(
    geometry: Any, grid: GeoBox, *, all_touched: bool = False
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The pixels of `grid` that a polygon in the grid's CRS covers: the rows and columns of its
    bounding window, clipped to the grid, and where inside that window the polygon is
    (``all_touched`` as rasterio.features). None when it lies outside the grid."""
    roi = grid.overlap_roi(grid.enclosing(Geometry(geometry, grid.crs)))
    if roi_is_empty(roi):
        return None
    inside = rasterio.features.geometry_mask(
        [geometry],
        out_shape=roi_shape(roi),
        transform=grid[roi].transform,
        invert=True,
        all_touched=all_touched,
    )
    return roi, inside


def wgs84_bounds(grid: GeoBox) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of the grid's extent (edges densified, so a UTM
    grid's curved edges stay inside)."""
    left, bottom, right, top = grid.boundingbox
    if grid.crs == WGS84:
        return (left, bottom, right, top)
    tr = Transformer.from_crs(grid.crs.proj, WGS84.proj, always_xy=True)
    west, south, east, north = tr.transform_bounds(left, bottom, right, top, densify_pts=21)
    return (west, south, east, north)
