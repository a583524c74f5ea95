"""The review page's map of the listed cases, in a real headless Chromium against uvicorn."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image
from shapely.geometry import shape

from changedetect.tracker.api import create_app
from changedetect.tracker.api.basemap import Basemap

from ..browser import browser_page
from .conftest import API_NOW, serve_app
from .test_review_browser import log_in

#: A tile server that does not exist: the browser's requests to it are answered by the test.
TILES = "https://tiles.example.test"
#: Wide enough for the map beside the list (the layout an analyst has at a desk).
DESK = {"width": 1440, "height": 900}

MAP_READY = "n => window.caseMap && window.caseMap.ids().length === n"


@pytest.fixture
def served(db) -> Iterator[str]:
    """The app without a basemap: its base URL."""
    with serve_app(create_app(db, now=API_NOW)) as url:
        yield url


def listed_ids(page) -> list[int]:  # noqa: ANN001 - playwright.sync_api.Page
    ids = page.eval_on_selector_all("article.case", "els => els.map(e => e.dataset.caseId)")
    return [int(i) for i in ids]


def current_card(page) -> int:  # noqa: ANN001
    return int(page.eval_on_selector("article.case.current", "e => e.dataset.caseId"))


def wait_for_map(page) -> list[int]:  # noqa: ANN001
    """The listed case ids, once the map shows that many cases."""
    page.wait_for_selector("article.case.current")
    ids = listed_ids(page)
    page.wait_for_function(MAP_READY, arg=len(ids))
    # a card has its final height once its chips have loaded (or were left out): scrolling to
    # a card before then leaves it where the cards above it grow
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#cases img.chip')).every(i => i.complete)"
    )
    return ids


def map_centre_is_on(page, case_id: int) -> None:  # noqa: ANN001
    """Wait until the map has panned to the case's marker (within a pixel)."""
    page.wait_for_function(
        """id => {
            const m = window.caseMap.map, at = window.caseMap.layersOf(id).marker.getLatLng();
            const a = m.latLngToContainerPoint(m.getCenter()), b = m.latLngToContainerPoint(at);
            return Math.abs(a.x - b.x) <= 1 && Math.abs(a.y - b.y) <= 1;
        }""",
        arg=case_id,
    )


def test_the_map_shows_each_listed_case_where_the_api_puts_it(served, seeded, ids, artefact_dir):
    allowed = lambda url: url.startswith(f"{served}/")  # noqa: E731
    with browser_page(allowed, **DESK) as (page, requests):
        log_in(page, served, seeded.tokens["analyst"])
        listed = wait_for_map(page)
        assert sorted(page.evaluate("window.caseMap.ids()")) == sorted(listed)
        assert set(listed) == set(ids.values())  # every open case of every county

        cookie_auth = page.request  # the page's session cookie, outside the page's routing
        summaries = {
            c["id"]: c for c in cookie_auth.get(f"{served}/cases?limit=50").json()["items"]
        }
        for case_id in listed:
            lon, lat = summaries[case_id]["centroid"]
            placed = page.evaluate(
                """id => {
                    const l = window.caseMap.layersOf(id), b = l.outline.getBounds();
                    const at = l.marker.getLatLng();
                    return {lat: at.lat, lon: at.lng, south: b.getSouth(), west: b.getWest(),
                            north: b.getNorth(), east: b.getEast(),
                            inView: window.caseMap.map.getBounds().contains(at)};
                }""",
                case_id,
            )
            # the marker on the API's centroid, the outline on the case's footprint
            assert placed["lat"] == pytest.approx(lat, abs=1e-9)
            assert placed["lon"] == pytest.approx(lon, abs=1e-9)
            detail = cookie_auth.get(f"{served}/cases/{case_id}").json()
            west, south, east, north = shape(detail["geometry_union"]).bounds
            got = (placed["west"], placed["south"], placed["east"], placed["north"])
            assert got == pytest.approx((west, south, east, north), abs=1e-9)
            assert placed["inView"], case_id  # the first view frames every listed case
        # coloured by state: the open cases here are all issued, in the legend's colour
        colours = page.eval_on_selector_all(
            "path.case-marker", "ps => ps.map(p => p.getAttribute('fill'))"
        )
        legend = page.eval_on_selector(
            "#map-legend .state-issued", "s => getComputedStyle(s).backgroundColor"
        )
        assert len(colours) == len(listed) and set(colours) == {"#1f6feb"}
        assert legend == "rgb(31, 111, 235)"
        # beside the list, not above it, and on screen while the list scrolls
        map_box = page.locator("#map").bounding_box()
        card_box = page.locator("article.case").first.bounding_box()
        assert map_box["x"] > card_box["x"] + card_box["width"]
        page.screenshot(path=str(artefact_dir / "review-map.png"))

        # no basemap: no tile, nothing requested outside the app, no script error
        assert page.locator(".leaflet-tile").count() == 0
        assert "No basemap" in page.inner_text("#map-msg")
        assert requests.seen and requests.refused == [], requests.refused
        assert all(url.startswith(f"{served}/") for url in requests.seen)
        assert requests.errors == [], requests.errors


def test_a_click_on_the_map_selects_the_card_and_j_k_move_the_map(
    served, seeded, ids, artefact_dir
):
    allowed = lambda url: url.startswith(f"{served}/")  # noqa: E731
    with browser_page(allowed, **DESK) as (page, requests):
        log_in(page, served, seeded.tokens["analyst"])
        listed = wait_for_map(page)
        assert current_card(page) == listed[0]

        # a click on a case's marker makes its card the current one, scrolled into view
        target = listed[-1]
        page.click(f"path.case-marker[data-case-id='{target}']")
        page.wait_for_selector(f"article.case.current[data-case-id='{target}']")
        card = page.locator(f"article.case[data-case-id='{target}']").bounding_box()
        assert 0 <= card["y"] < DESK["height"]
        map_centre_is_on(page, target)
        assert page.get_attribute(f"path.case-marker[data-case-id='{target}']", "class").endswith(
            " current"
        )
        assert page.locator("path.case-marker.current").count() == 1
        page.screenshot(path=str(artefact_dir / "map-click.png"))

        # j/k move through the list: the map follows, one case highlighted at a time
        page.keyboard.press("k")
        assert current_card(page) == listed[-2]
        map_centre_is_on(page, listed[-2])
        page.keyboard.press("j")
        assert current_card(page) == target
        map_centre_is_on(page, target)
        highlighted = page.eval_on_selector_all(
            "path.case-marker.current", "ps => ps.map(p => p.dataset.caseId)"
        )
        assert highlighted == [str(target)]

        # and a click on a case's outline selects it too
        first = listed[0]
        page.evaluate(
            "id => window.caseMap.map.setView("
            "window.caseMap.layersOf(id).marker.getLatLng(), 16, {animate: false})",
            first,
        )
        box = page.locator(f"path.case-outline[data-case-id='{first}']").bounding_box()
        page.mouse.click(box["x"] + 3, box["y"] + box["height"] / 2)
        page.wait_for_selector(f"article.case.current[data-case-id='{first}']")
        assert requests.refused == [], requests.refused
        assert requests.errors == [], requests.errors


def test_the_filters_change_the_cases_on_the_map(served, seeded, ids, db):
    from changedetect.tracker import transition

    transition(db, ids["z1"], "verifying", actor="ana.lyst", now=API_NOW)
    allowed = lambda url: url.startswith(f"{served}/")  # noqa: E731
    with browser_page(allowed, width=1200, height=900) as (page, requests):
        log_in(page, served, seeded.tokens["analyst"])
        wait_for_map(page)
        page.select_option("#filters select[name=change_type]", "quarry")
        page.click("#filters button[type=submit]")
        quarries = {ids[k] for k in ("z1", "z4", "h1", "evil")}
        page.wait_for_function(
            "ids => { const on = window.caseMap.ids(); return on.length === ids.length &&"
            " ids.every(i => on.includes(i)); }",
            arg=sorted(quarries),
        )
        assert set(listed_ids(page)) == quarries
        # the verifying one in its own colour
        fill = page.get_attribute(f"path.case-marker[data-case-id='{ids['z1']}']", "fill")
        assert fill == "#c77700"

        # a verdict recolours the case on the map without reloading the list
        page.click(f"path.case-marker[data-case-id='{ids['z4']}']")
        page.keyboard.press("v")
        page.wait_for_function(
            "id => document.querySelector(`path.case-marker[data-case-id='${id}']`)"
            ".getAttribute('fill') === '#c77700'",
            arg=ids["z4"],
        )
        page.select_option("#filters select[name=state]", "violation")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("#count:text('no cases')")
        page.wait_for_function("() => window.caseMap.ids().length === 0")
        assert page.locator("path.case-marker").count() == 0
        assert requests.refused == [], requests.refused
        assert requests.errors == [], requests.errors


def test_the_map_fits_a_phone(served, seeded, artefact_dir):
    allowed = lambda url: url.startswith(f"{served}/")  # noqa: E731
    with browser_page(allowed, width=390, height=844) as (page, requests):
        log_in(page, served, seeded.tokens["officer"])
        listed = wait_for_map(page)
        box = page.locator("#map").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["height"] >= 200
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # one column: the map above the cards
        assert box["y"] + box["height"] < page.locator("article.case").first.bounding_box()["y"]
        page.screenshot(path=str(artefact_dir / "review-map-phone.png"))
        # the officer folds the map away to see more cards, and opens it again
        page.click("#map-panel summary")
        assert not page.is_visible("#map")
        page.click("#map-panel summary")
        page.wait_for_selector("#map", state="visible")
        page.click(f"path.case-marker[data-case-id='{listed[1]}']")
        page.wait_for_selector(f"article.case.current[data-case-id='{listed[1]}']")
        assert requests.refused == [], requests.refused
        assert requests.errors == [], requests.errors


def tile_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 220, 190)).save(out, "PNG")
    return out.getvalue()


def test_a_configured_basemap_loads_tiles_from_its_origin_only(db, seeded, artefact_dir):
    basemap = Basemap(f"{TILES}/wmts/{{z}}/{{x}}/{{y}}.png?tk=k3y", "© Example <b>tiles</b>")
    with serve_app(create_app(db, now=API_NOW, basemap=basemap)) as served:
        allowed = lambda url: url.startswith(f"{served}/")  # noqa: E731
        with browser_page(allowed, **DESK) as (page, requests):
            tiles: list[tuple[str, str | None]] = []
            png = tile_png()

            def stub(route) -> None:  # noqa: ANN001 - playwright.sync_api.Route
                tiles.append((route.request.url, route.request.headers.get("referer")))
                route.fulfill(status=200, content_type="image/png", body=png)

            page.route(f"{TILES}/**", stub)
            log_in(page, served, seeded.tokens["analyst"])
            wait_for_map(page)
            page.wait_for_selector(".leaflet-tile-loaded")
            # zooming out and in again drops tiles half-loaded: still nothing from elsewhere
            for zoom in (9, 14):
                page.evaluate("z => window.caseMap.map.setZoom(z)", zoom)
                page.wait_for_timeout(500)
            page.wait_for_selector(".leaflet-tile-loaded")
            assert tiles
            for url, referer in tiles:
                assert url.startswith(f"{TILES}/wmts/") and url.endswith(".png?tk=k3y"), url
                assert referer == f"{served}/"  # the origin only, never the page's path
            # everything else from the app itself
            assert requests.refused == [], requests.refused
            assert all(url.startswith(f"{served}/") for url in requests.seen)
            # the credit is shown as the text it is
            assert "© Example <b>tiles</b>" in page.inner_text(".leaflet-control-attribution")
            assert page.locator(".leaflet-control-attribution b").count() == 0
            assert page.inner_text("#map-msg") == ""
            page.screenshot(path=str(artefact_dir / "review-map-basemap.png"))
            assert requests.errors == [], requests.errors
