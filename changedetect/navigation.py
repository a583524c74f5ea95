"""Getting an officer to a clue: the coordinates Chinese map apps use, areas in the units county
staff use, and links that open the point in a map app. Pure functions, no I/O.

Chinese map services (Amap/Gaode, Tencent) draw their maps in GCJ-02, an obfuscated datum, and
Baidu adds its own shift on top (BD-09): a WGS84 point typed into them lands a few hundred metres
off. The transforms below are the public, widely used reimplementations (Krasovsky ellipsoid
parameters); they agree with independent published implementations to the last digit
(tests/test_navigation.py). Outside China both services use WGS84, and so does the transform.
"""

from __future__ import annotations

import math
from urllib.parse import quote

#: One mu (市亩), the unit of land area in Chinese county records: 1/15 ha = 666.67 m².
MU_M2 = 10_000.0 / 15.0

_A = 6378245.0  # semi-major axis of the Krasovsky 1940 ellipsoid, as GCJ-02 uses it
_EE = 0.00669342162296594323  # its first eccentricity squared
_BD_X_PI = math.pi * 3000.0 / 180.0


def in_china(lon: float, lat: float) -> bool:
    """Inside the rough box where GCJ-02 applies (the services use WGS84 elsewhere)."""
    return 73.66 < lon < 135.05 and 3.86 < lat < 53.55


def _shift_lat(x: float, y: float) -> float:
    out = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    out += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    out += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    out += (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return out


def _shift_lon(x: float, y: float) -> float:
    out = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    out += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    out += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    out += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return out


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """(lon, lat) in GCJ-02, the datum of Amap and Tencent maps."""
    if not in_china(lon, lat):
        return lon, lat
    dlat = _shift_lat(lon - 105.0, lat - 35.0)
    dlon = _shift_lon(lon - 105.0, lat - 35.0)
    rad = lat / 180.0 * math.pi
    magic = 1.0 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * math.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return lon + dlon, lat + dlat


def gcj02_to_bd09(lon: float, lat: float) -> tuple[float, float]:
    """(lon, lat) in BD-09, Baidu's datum, from GCJ-02."""
    z = math.sqrt(lon * lon + lat * lat) + 0.00002 * math.sin(lat * _BD_X_PI)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * _BD_X_PI)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def navigation(lon: float, lat: float, area_m2: float, label: str) -> dict[str, object]:
    """What an officer needs to find a place: its GCJ-02 and BD-09 centroids ([lon, lat], and
    each as two scalars, which GeoPackage and Shapefile exports keep), the area in ha and mu,
    and links that open it in Amap, in Baidu Maps and in any map app (a ``geo:`` URI, RFC 5870,
    WGS84). `label` names the marker."""
    gcj = wgs84_to_gcj02(lon, lat)
    bd = gcj02_to_bd09(*gcj) if in_china(lon, lat) else (lon, lat)
    name = quote(label, safe="")
    return {
        "area_ha": round(area_m2 / 10_000.0, 4),
        "area_mu": round(area_m2 / MU_M2, 2),
        "centroid_gcj02": [round(gcj[0], 6), round(gcj[1], 6)],
        "gcj02_lon": round(gcj[0], 6),
        "gcj02_lat": round(gcj[1], 6),
        "centroid_bd09": [round(bd[0], 6), round(bd[1], 6)],
        "bd09_lon": round(bd[0], 6),
        "bd09_lat": round(bd[1], 6),
        "link_amap": (
            f"https://uri.amap.com/marker?position={gcj[0]:.6f},{gcj[1]:.6f}&name={name}"
            "&coordinate=gaode"
        ),
        "link_baidu": (
            f"https://api.map.baidu.com/marker?location={bd[1]:.6f},{bd[0]:.6f}&title={name}"
            f"&content={name}&output=html&coord_type=bd09ll"
        ),
        "link_geo": f"geo:{lat:.6f},{lon:.6f}",
    }
