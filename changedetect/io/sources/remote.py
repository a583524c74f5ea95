"""What the networked sources share: stable grid ids for cache keys, WGS84 search bounds, a
request-rate limit across threads, and cutting a grid into fetchable pieces that a VRT stitches
back together."""

from __future__ import annotations

import hashlib
import math
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from odc.geo.geobox import GeoBox, bounding_box_in_pixel_domain


def _num(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def grid_id(grid: GeoBox) -> str:
    """``epsg32610_x585570_y4135590_300x240_r10``: CRS, top-left corner, size, pixel size."""
    epsg = grid.crs.epsg
    crs = (
        f"epsg{epsg}" if epsg else "crs" + hashlib.sha1(grid.crs.to_wkt().encode()).hexdigest()[:10]
    )
    t = grid.transform
    res = _num(t.a) if math.isclose(t.a, -t.e) else f"{_num(t.a)}x{_num(-t.e)}"
    return f"{crs}_x{_num(t.c)}_y{_num(t.f)}_{grid.width}x{grid.height}_r{res}"


class RateLimiter:
    """Spaces request starts at least 1 / `per_second` apart, across all threads. Call `wait()`
    before a request, or use the limiter itself as a ``request_modifier`` hook."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)

    def __call__(self, request: Any = None) -> None:
        self.wait()


def split_lengths(size: int, max_px: int) -> list[tuple[int, int]]:
    """(start, length) pieces of `size` pixels, at most `max_px` each, as equal as possible (no
    sliver at the end)."""
    if max_px < 1:
        raise ValueError(f"the largest piece must be at least 1 px, got {max_px}")
    count = -(-size // max_px)
    base, extra = divmod(size, count)
    pieces, start = [], 0
    for i in range(count):
        length = base + (1 if i < extra else 0)
        pieces.append((start, length))
        start += length
    return pieces


def split_grid(grid: GeoBox, max_px: int) -> list[tuple[int, int, GeoBox]]:
    """(row, col, window) pieces of `grid`, at most `max_px` pixels a side, row by row; their
    edges are the grid's pixel edges, so they stitch back pixel for pixel."""
    return [
        (row, col, grid[row : row + height, col : col + width])
        for row, height in split_lengths(grid.height, max_px)
        for col, width in split_lengths(grid.width, max_px)
    ]


def vrt_mosaic(
    grid: GeoBox,
    pieces: Sequence[tuple[GeoBox, str]],
    bands: Sequence[str],
    dtype: str,
    nodata: float | None,
) -> str:
    """A GDAL VRT of `grid` whose band i is band i of every piece file (path relative to the VRT),
    each placed at its own window of the grid; `dtype` is GDAL's name (e.g. UInt16)."""
    t = grid.transform
    root = ET.Element("VRTDataset", rasterXSize=str(grid.width), rasterYSize=str(grid.height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = grid.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e)
    )
    # where each piece starts in the grid; raises unless it lies on the grid's pixels
    origins = [bounding_box_in_pixel_domain(piece, grid)[:2] for piece, _ in pieces]
    for index, band in enumerate(bands, start=1):
        element = ET.SubElement(root, "VRTRasterBand", dataType=dtype, band=str(index))
        ET.SubElement(element, "Description").text = band
        if nodata is not None:
            ET.SubElement(element, "NoDataValue").text = repr(nodata)
        for (piece, relpath), (col, row) in zip(pieces, origins, strict=True):
            source = ET.SubElement(element, "SimpleSource")
            ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = relpath
            ET.SubElement(source, "SourceBand").text = str(index)
            size = {"xSize": str(piece.width), "ySize": str(piece.height)}
            ET.SubElement(source, "SrcRect", xOff="0", yOff="0", **size)
            ET.SubElement(source, "DstRect", xOff=str(col), yOff=str(row), **size)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
