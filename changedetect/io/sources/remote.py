"""What the networked sources share: stable grid ids for cache keys, WGS84 search bounds and a
request-rate limit across threads."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from typing import Any

from pyproj import CRS, Transformer

from ...models import GridSpec

_WGS84 = CRS.from_epsg(4326)


def _num(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def grid_id(grid: GridSpec) -> str:
    """``epsg32610_x585570_y4135590_300x240_r10``: CRS, top-left corner, size, pixel size."""
    epsg = grid.crs.to_epsg()
    crs = (
        f"epsg{epsg}" if epsg else "crs" + hashlib.sha1(grid.crs.to_wkt().encode()).hexdigest()[:10]
    )
    t = grid.transform
    res = _num(t.a) if math.isclose(t.a, -t.e) else f"{_num(t.a)}x{_num(-t.e)}"
    return f"{crs}_x{_num(t.c)}_y{_num(t.f)}_{grid.width}x{grid.height}_r{res}"


def wgs84_bounds(grid: GridSpec) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of the grid's extent (edges densified, so a UTM
    grid's curved edges stay inside)."""
    left, bottom, right, top = grid.bounds
    if grid.crs.equals(_WGS84):
        return (left, bottom, right, top)
    tr = Transformer.from_crs(grid.crs, _WGS84, always_xy=True)
    west, south, east, north = tr.transform_bounds(left, bottom, right, top, densify_pts=21)
    return (west, south, east, north)


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
