"""Coordinates for Chinese map apps, areas in mu and navigation links, against published values."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from changedetect.navigation import MU_M2, gcj02_to_bd09, navigation, wgs84_to_gcj02

#: (WGS84 lon, lat) -> GCJ-02 (lon, lat), as published with two independent implementations:
#: googollee/eviltransform's test table (Shanghai, Shenzhen, Beijing) and the example in
#: wandergis/coordtransform's README (also hutool's CoordinateUtil tests).
GCJ02_REFERENCE = [
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),
    ((116.404, 39.915), (116.41024449916938, 39.91640428150164)),
]


@pytest.mark.parametrize(("wgs", "gcj"), GCJ02_REFERENCE)
def test_gcj02_matches_published_reference_points(wgs, gcj):
    assert wgs84_to_gcj02(*wgs) == pytest.approx(gcj, abs=1e-9)


def test_bd09_matches_the_published_reference_point():
    # wandergis/coordtransform: gcj02tobd09(116.404, 39.915)
    assert gcj02_to_bd09(116.404, 39.915) == pytest.approx(
        (116.41036949371029, 39.92133699351021), abs=1e-9
    )


def test_the_shift_is_hundreds_of_metres_in_china_and_none_outside():
    lon, lat = 108.26, 34.0  # the Qinling demo
    gcj = wgs84_to_gcj02(lon, lat)
    metres = ((gcj[0] - lon) * 92_000) ** 2 + ((gcj[1] - lat) * 111_000) ** 2
    assert 100 < metres**0.5 < 1_000
    assert wgs84_to_gcj02(2.35, 48.85) == (2.35, 48.85)  # Paris: the apps use WGS84 there


def test_navigation_fields_and_links():
    nav = navigation(108.26, 34.0, 6_666.7, "qinling-demo-20250623-ab12cd34")
    assert nav["area_ha"] == pytest.approx(0.6667, abs=1e-4)
    assert nav["area_mu"] == 10.0 and MU_M2 == pytest.approx(666.67, abs=0.01)
    gcj = wgs84_to_gcj02(108.26, 34.0)
    assert nav["centroid_gcj02"] == [round(gcj[0], 6), round(gcj[1], 6)]
    assert [nav["gcj02_lon"], nav["gcj02_lat"]] == nav["centroid_gcj02"]  # for flat exports
    assert [nav["bd09_lon"], nav["bd09_lat"]] == nav["centroid_bd09"]
    amap = urlsplit(nav["link_amap"])
    query = parse_qs(amap.query)
    assert amap.netloc == "uri.amap.com" and query["coordinate"] == ["gaode"]
    assert query["position"] == [f"{gcj[0]:.6f},{gcj[1]:.6f}"]  # lon,lat in GCJ-02
    assert query["name"] == ["qinling-demo-20250623-ab12cd34"]
    baidu = parse_qs(urlsplit(nav["link_baidu"]).query)
    bd = nav["centroid_bd09"]
    assert baidu["location"] == [f"{bd[1]:.6f},{bd[0]:.6f}"]  # lat,lon in BD-09
    assert baidu["coord_type"] == ["bd09ll"]
    assert nav["link_geo"] == "geo:34.000000,108.260000"  # RFC 5870: WGS84 lat,lon
