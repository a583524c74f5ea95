"""The review map's optional online basemap: its checks, the page's CSP, the serve option."""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient

from changedetect.errors import ConfigError
from changedetect.tracker.api import create_app
from changedetect.tracker.api.basemap import Basemap
from tests.factories import API_NOW

from .test_auth import cli

TIANDITU = "https://t0.tianditu.gov.cn/img_w/wmts?tilematrix={z}&tilecol={x}&tilerow={y}&tk=SECRET"


def img_src(csp: str) -> str:
    return re.search(r"img-src ([^;]*);", csp).group(1)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://tiles.example.org/{z}/{x}/{y}.png", "https://tiles.example.org"),
        ("http://10.1.2.3:8080/osm/{z}/{x}/{y}.png", "http://10.1.2.3:8080"),
        ("https://Tiles.Example.org:443/{z}/{y}/{x}", "https://tiles.example.org"),
        ("http://[fd00::7]:81/{z}/{x}/{y}.png", "http://[fd00::7]:81"),
        (TIANDITU, "https://t0.tianditu.gov.cn"),
    ],
)
def test_a_basemap_allows_exactly_its_tile_servers_origin(url, origin):
    assert Basemap(url).origin == origin


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("tiles.example.org/{z}/{x}/{y}.png", "must be an http(s) URL"),
        ("ftp://tiles.example.org/{z}/{x}/{y}.png", "must be an http(s) URL"),
        ("javascript:alert(1)//{z}{x}{y}", "must be an http(s) URL"),
        ("https://{s}.tile.example.org/{z}/{x}/{y}.png", "name one host"),
        ("https://tiles.example.org/{z}/{x}.png", "lacks {y}"),
        ("https://user:pw@tiles.example.org/{z}/{x}/{y}.png", "user name or password"),
    ],
)
def test_a_basemap_url_that_cannot_work_is_refused_with_the_reason(url, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Basemap(url)


def test_a_refused_basemap_url_does_not_repeat_its_key():
    with pytest.raises(ConfigError) as refused:
        Basemap(TIANDITU.replace("{y}", "0"))
    assert "SECRET" not in str(refused.value) and "tianditu" in str(refused.value)


def test_with_a_basemap_the_page_may_load_its_tiles_and_nothing_else(client, db):
    # without one: images from the app only, and no tile URL for the map
    r = client.get("/review")
    assert img_src(r.headers["content-security-policy"]) == "'self'"
    assert "data-basemap-url" not in r.text and 'id="map"' in r.text

    basemap = Basemap("https://tiles.example.org:8443/{z}/{x}/{y}.png?a=1&b=2", '© "Tiles" <Co>')
    with TestClient(create_app(db, now=API_NOW, basemap=basemap)) as client:
        r = client.get("/review")
    csp = r.headers["content-security-policy"]
    assert img_src(csp) == "'self' https://tiles.example.org:8443"
    # nothing else widens: scripts, styles and requests stay the app's own
    assert "script-src 'self';" in csp and "connect-src 'self';" in csp
    assert "style-src 'self';" in csp and "default-src 'none';" in csp
    # the URL and the credit reach the script as attribute text, never as markup
    url = re.search(r'data-basemap-url="([^"]*)"', r.text).group(1)
    credit = re.search(r'data-basemap-attribution="([^"]*)"', r.text).group(1)
    assert html.unescape(url) == basemap.url and html.unescape(credit) == basemap.attribution
    assert "<Co>" not in r.text


def test_serve_hands_the_basemap_to_the_app_and_prints_its_origin_only(db_url, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: served.append(app))
    out, _ = cli(db_url, "serve", "--basemap-url", TIANDITU, "--basemap-attribution", "天地图")
    basemap = served[0].state.tracker.basemap
    assert basemap == Basemap(TIANDITU, "天地图")
    assert "https://t0.tianditu.gov.cn" in out and "SECRET" not in out
    served.clear()
    cli(db_url, "serve")
    assert served[0].state.tracker.basemap is None


def test_serve_refuses_a_bad_basemap_before_it_starts(db_url, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **_: pytest.fail("served anyway"))
    with pytest.raises(ConfigError, match="lacks"):
        cli(db_url, "serve", "--basemap-url", "https://tiles.example.org/{z}.png")
