"""Analysis grids (odc-geo GeoBoxes): planning from a bbox, pixel measures, footprints to pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from changedetect.grids import (
    WGS84,
    footprint_pixels,
    grid_for_bbox,
    pixel_area_m2,
    pixel_size,
    projected_pixel_area_m2,
    reproject_geometry,
    utm_crs_for,
    wgs84_bounds,
)
from changedetect.io.raster import overlap_fraction
from changedetect.io.sources.remote import split_grid, vrt_mosaic

QINLING = (108.20, 34.00, 108.30, 34.06)


def test_a_bbox_grid_is_utm_snapped_to_the_resolution_and_holds_the_bbox() -> None:
    grid = grid_for_bbox(QINLING, 10.0)
    assert grid.crs == utm_crs_for(108.25, 34.03) and grid.crs.epsg == 32649
    t = grid.transform
    assert (t.a, t.b, t.d, t.e) == (10.0, 0.0, 0.0, -10.0)
    assert t.c % 10 == 0 and t.f % 10 == 0
    # every point of the bbox's edges (not only its corners) lies inside the grid, and the grid
    # reaches less than a pixel beyond them
    west, south, east, north = QINLING
    along = np.linspace(0.0, 1.0, 50)
    lons = np.r_[
        west + (east - west) * along, west + (east - west) * along, [west] * 50, [east] * 50
    ]
    lats = np.r_[
        [south] * 50, [north] * 50, south + (north - south) * along, south + (north - south) * along
    ]
    x, y = Transformer.from_crs(WGS84.proj, grid.crs.proj, always_xy=True).transform(lons, lats)
    left, bottom, right, top = grid.boundingbox
    assert left <= x.min() < left + 10 and right - 10 < x.max() <= right
    assert bottom <= y.min() < bottom + 10 and top - 10 < y.max() <= top


def test_a_bbox_grid_takes_a_given_crs() -> None:
    grid = grid_for_bbox(QINLING, 20.0, "EPSG:32650")
    assert grid.crs.epsg == 32650 and pixel_size(grid) == 20.0


def test_pixel_measures() -> None:
    grid = GeoBox((10, 20), Affine(10, 0, 300000, 0, -20, 3750000), "EPSG:32649")
    assert pixel_size(grid) == 10.0 and grid.resolution.y == -20.0
    assert projected_pixel_area_m2(grid) == pixel_area_m2(grid) == 200.0

    degrees = GeoBox((10, 10), Affine(1e-4, 0, 108.0, 0, -1e-4, 34.0), "EPSG:4326")
    with pytest.raises(ValueError, match="projected CRS"):
        projected_pixel_area_m2(degrees)
    # about 9.2 m x 11.1 m at 34° N
    assert pixel_area_m2(degrees) == pytest.approx(9.23 * 11.09, rel=0.01)


def test_footprint_pixels_are_the_window_it_covers_clipped_to_the_grid() -> None:
    grid = GeoBox((100, 100), Affine(10, 0, 0, 0, -10, 1000), "EPSG:32649")
    # columns 10-14 and rows 4-9, the outer ones covered short of their centres
    square = shapely.box(107, 907, 143, 953)
    (rows, cols), inside = footprint_pixels(square, grid)
    assert (rows, cols) == (slice(4, 10), slice(10, 15))
    assert inside.shape == (6, 5) and inside.sum() == 4 * 3 and inside[1:-1, 1:-1].all()
    (rows, cols), _ = footprint_pixels(shapely.box(-50, 950, 30, 1050), grid)
    assert (rows, cols) == (slice(0, 5), slice(0, 3))
    assert footprint_pixels(shapely.box(2000, 0, 2100, 100), grid) is None


def test_footprints_from_wgs84_land_on_the_grid() -> None:
    grid = grid_for_bbox(QINLING, 10.0)
    left, bottom, right, top = grid.boundingbox
    local = shapely.box(left + 1000, bottom + 1000, left + 1100, bottom + 1050)
    back = reproject_geometry(reproject_geometry(local, grid.crs, WGS84), WGS84, grid.crs)
    (rows, cols), inside = footprint_pixels(back, grid)
    assert inside.sum() == 50
    assert rows.stop == grid.height - 100 and cols.start == 100


def test_wgs84_bounds_hold_the_grid() -> None:
    grid = grid_for_bbox(QINLING, 10.0)
    west, south, east, north = wgs84_bounds(grid)
    assert west <= QINLING[0] and south <= QINLING[1]
    assert east >= QINLING[2] and north >= QINLING[3]
    assert wgs84_bounds(GeoBox((10, 10), Affine(0.1, 0, 108, 0, -0.1, 34), WGS84)) == (
        108.0,
        33.0,
        109.0,
        34.0,
    )


def test_overlap_fraction_compares_bounding_boxes() -> None:
    a = GeoBox((100, 100), Affine(10, 0, 0, 0, -10, 1000), "EPSG:32649")
    assert overlap_fraction(a, a) == 1.0
    assert overlap_fraction(a, a[50:150, 0:100]) == pytest.approx(0.5)
    assert overlap_fraction(a, a[100:200, 0:100]) == 0.0
    # another CRS: compared after transforming the other grid's bounds
    elsewhere = grid_for_bbox(QINLING, 10.0)
    assert overlap_fraction(elsewhere, elsewhere) == 1.0
    assert overlap_fraction(a, elsewhere) == 0.0


def test_split_grid_pieces_stitch_back_in_a_vrt() -> None:
    grid = GeoBox((250, 130), Affine(10, 0, 500000, 0, -10, 4000000), "EPSG:32650")
    pieces = split_grid(grid, 100)
    assert [(r, c, g.shape.yx) for r, c, g in pieces[:3]] == [
        (0, 0, (84, 65)),
        (0, 65, (84, 65)),
        (84, 0, (83, 65)),
    ]
    assert sum(g.width * g.height for _, _, g in pieces) == grid.width * grid.height
    text = vrt_mosaic(grid, [(g, f"{r}_{c}.tif") for r, c, g in pieces], ["B02"], "UInt16", 0)
    for r, c, g in pieces:
        assert g == grid[r : r + g.height, c : c + g.width]
        assert f'<DstRect xOff="{c}" yOff="{r}" xSize="{g.width}" ySize="{g.height}"' in text
    assert math.isclose(float(text.split("<GeoTransform>")[1].split(",")[0]), 500000)
