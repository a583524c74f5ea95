"""The review page in a real headless Chromium, against the app served by uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from changedetect.io.sinks.chips import preview_bytes, render_chips
from changedetect.tracker import ingest, reassign, transition
from changedetect.tracker.api import create_app
from changedetect.tracker.models import Case, CaseEvent
from tests.factories import (
    API_NOW,
    CHANGE_CHIP_SIZE,
    COUNTIES,
    NO_CHANGE_CHIP,
    NOW,
    collection,
    feature,
    rect,
)
from tests.servers import serve_app

from ..browser import PageRequests, browser_page


@pytest.fixture
def served(db) -> Iterator[str]:
    """The app on a real socket (uvicorn in a thread); its base URL."""
    with serve_app(create_app(db, now=API_NOW)) as url:
        yield url


def log_in(page: object, served: str, token: str) -> None:
    """Open the review page and log in with `token` through its form."""
    page.goto(f"{served}/review")  # type: ignore[attr-defined]
    page.wait_for_selector("#login-form")  # type: ignore[attr-defined]
    page.fill("#token", token)  # type: ignore[attr-defined]
    page.click("#login-form button[type=submit]")  # type: ignore[attr-defined]


@pytest.fixture
def browser(served) -> Iterator[tuple[object, PageRequests]]:
    """A Chromium tab that may reach the app and nothing else; (page, its requests)."""
    with browser_page(lambda url: url.startswith(f"{served}/"), width=1200, height=900) as opened:
        yield opened


def test_officer_reviews_its_county_and_records_a_verdict(
    browser, served, db, ids, seeded, artefact_dir
):
    # the analyst has sent z1 for verification: the officer's verdict buttons appear on it
    transition(db, ids["z1"], "verifying", actor="ana.lyst", now=API_NOW)
    page, requests = browser

    log_in(page, served, seeded.tokens["officer"])
    page.wait_for_selector("article.case")
    assert page.inner_text("#who") == "zhou.officer · officer · Zhouzhi"
    # the token lives in an HttpOnly cookie: page scripts cannot read it
    assert seeded.tokens["officer"] not in page.evaluate("document.cookie")

    listed = {
        int(x)
        for x in page.eval_on_selector_all("article.case", "els => els.map(e => e.dataset.caseId)")
    }
    zhouzhi = {ids[k] for k, c in COUNTIES.items() if c == "Zhouzhi"} | {ids["evil"]}
    assert listed == zhouzhi
    assert not listed & {ids["h1"], ids["h2"]}  # another county's cases are not listed
    assert page.inner_text("#count") == f"1–{len(zhouzhi)} of {len(zhouzhi)}"

    # both chips of every real clue are shown, loaded, side by side
    for key in ("z1", "z2", "z3", "z4", "z5"):
        card = f"article.case[data-case-id='{ids[key]}']"
        for which in ("before", "after"):
            page.wait_for_function(
                "sel => { const i = document.querySelector(sel); return i && i.complete; }",
                arg=f"{card} img.chip-{which}",
            )
            width = page.eval_on_selector(f"{card} img.chip-{which}", "i => i.naturalWidth")
            assert width == 64, (key, which)
        before = page.locator(f"{card} img.chip-before").bounding_box()
        after = page.locator(f"{card} img.chip-after").bounding_box()
        assert after["x"] > before["x"] + before["width"] - 1 and after["y"] == before["y"]
    # what the officer navigates by: area in mu, both datums, links to the map apps
    z1_card = page.inner_text(f"article.case[data-case-id='{ids['z1']}']")
    assert "亩" in z1_card and "GCJ-02" in z1_card and "confidence" in z1_card
    links = page.eval_on_selector_all(
        f"article.case[data-case-id='{ids['z1']}'] .place a:not(.dossier)",
        "as => as.map(a => a.href)",
    )
    assert [link.split(":")[0] for link in links] == ["https", "https", "geo"]
    assert "uri.amap.com" in links[0] and "coordinate=gaode" in links[0]
    # the clue whose chips point outside its folder gets placeholders, not the files
    evil = f"article.case[data-case-id='{ids['evil']}']"
    assert page.locator(f"{evil} .nochip").count() == 2

    # the NDVI-change chip beside before and after, where the clue has one; left out (no
    # placeholder, no broken image) where it has none or it may not be served
    for key in ("z1", "z2", "z3", "z4", "z5", "evil"):
        card = f"article.case[data-case-id='{ids[key]}']"
        if key in NO_CHANGE_CHIP or key == "evil":
            page.wait_for_function(
                "sel => !document.querySelector(sel)", arg=f"{card} figure.change"
            )
            assert page.locator(f"{card} img.chip").count() == (0 if key == "evil" else 2)
            continue
        page.wait_for_selector(f"{card} figure.change figcaption:not([hidden])")
        width = page.eval_on_selector(f"{card} img.chip-change", "i => i.naturalWidth")
        assert width == CHANGE_CHIP_SIZE[0], key
        after = page.locator(f"{card} img.chip-after").bounding_box()
        change = page.locator(f"{card} img.chip-change").bounding_box()
        # three in a row on a desktop: the change chip right of the after chip
        assert change["x"] > after["x"] + after["width"] - 1 and change["y"] == after["y"]
    z2_card = page.locator(f"article.case[data-case-id='{ids['z2']}']")
    assert "NDVI change" in z2_card.inner_text()
    z2_card.screenshot(path=str(artefact_dir / "review-card-three-chips.png"))

    # exactly the transitions an officer may make, per state
    z1 = f"article.case[data-case-id='{ids['z1']}']"
    buttons = page.eval_on_selector_all(f"{z1} button.act", "bs => bs.map(b => b.dataset.to)")
    assert buttons == ["compliant", "false_alarm", "violation"]
    z2 = f"article.case[data-case-id='{ids['z2']}']"
    assert page.locator(f"{z2} button.act").count() == 0  # issued: the analyst's move
    assert page.locator("button[data-action=assign]").count() == 0
    assert not page.is_visible("#bulk")  # nor the bulk assignment bar

    page.fill(f"{z1} input.comment", "quarry face confirmed")
    page.click(f"{z1} button[data-to=violation]")
    page.wait_for_selector(f"{z1}[data-state=violation]")
    assert "Saved: case" in page.inner_text(f"{z1} .msg")
    buttons = page.eval_on_selector_all(f"{z1} button.act", "bs => bs.map(b => b.dataset.to)")
    assert buttons == ["rectifying"]
    page.screenshot(path=str(artefact_dir / "review.png"), full_page=True)

    with db.session() as s:
        assert s.scalar(select(Case.state).where(Case.id == ids["z1"])) == "violation"
        event = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == ids["z1"]).order_by(CaseEvent.id.desc())
        ).first()
    assert (event.actor, event.from_state, event.to_state, event.comment) == (
        "zhou.officer",
        "verifying",
        "violation",
        "quarry face confirmed",
    )
    # everything the page loaded came from the app itself
    assert requests.seen and requests.refused == [], requests.refused
    assert requests.errors == [], requests.errors

    # reload: the state persists, and the cookie still logs the officer in
    page.reload()
    page.wait_for_selector(f"{z1}[data-state=violation]")
    page.click("#logout")
    page.wait_for_selector("#login-form", state="visible")


def test_an_officer_triages_with_the_keyboard(browser, served, db, ids, seeded):
    transition(db, ids["z1"], "verifying", actor="ana.lyst", now=API_NOW)
    transition(db, ids["z2"], "verifying", actor="ana.lyst", now=API_NOW)
    page, requests = browser
    log_in(page, served, seeded.tokens["officer"])
    page.wait_for_selector("article.case.current")
    order = page.eval_on_selector_all("article.case", "els => els.map(e => e.dataset.caseId)")

    def current() -> str:
        return page.eval_on_selector("article.case.current", "e => e.dataset.caseId")

    assert current() == order[0]
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert current() == order[2]
    page.keyboard.press("k")
    assert current() == order[1]
    for _ in range(len(order)):  # past the last one it stays there
        page.keyboard.press("j")
    assert current() == order[-1]

    # to z2's card, a comment, then "x": a violation recorded, the card stays the current one
    for _ in range(len(order)):
        page.keyboard.press("k")
    for _ in range(order.index(str(ids["z2"]))):
        page.keyboard.press("j")
    assert current() == str(ids["z2"])
    page.keyboard.press("/")
    page.keyboard.type("spoil heaps on the slope")
    page.keyboard.press("Escape")
    page.keyboard.press("x")
    z2 = f"article.case[data-case-id='{ids['z2']}']"
    page.wait_for_selector(f"{z2}[data-state=violation]")
    assert current() == str(ids["z2"])
    # a key the role does not allow here does nothing: "d" (closed) from a violation
    page.keyboard.press("d")
    page.wait_for_timeout(300)
    assert page.get_attribute(z2, "data-state") == "violation"
    with db.session() as s:
        event = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == ids["z2"]).order_by(CaseEvent.id.desc())
        ).first()
    assert (event.actor, event.to_state, event.comment) == (
        "zhou.officer",
        "violation",
        "spoil heaps on the slope",
    )
    # typing in a field is not a command: "j" in the county filter moves nothing
    page.click("#filters input[name=tier]")
    page.keyboard.type("j")
    assert current() == str(ids["z2"])
    assert requests.refused == [], requests.refused
    assert requests.errors == [], requests.errors


def test_the_dossier_opens_from_the_review_page_and_prints(
    browser, served, db, ids, seeded, tmp_path
):
    page, requests = browser
    log_in(page, served, seeded.tokens["officer"])
    card = f"article.case[data-case-id='{ids['z1']}']"
    page.wait_for_selector(card)
    href = page.get_attribute(f"{card} a.dossier", "href")
    assert href == f"/cases/{ids['z1']}/dossier"
    page.goto(f"{served}{href}")  # the session cookie is enough, as for the page
    page.wait_for_selector("h1")
    assert page.inner_text("h1").startswith(f"Case {ids['z1']}")
    sizes = page.eval_on_selector_all("img", "is => is.map(i => [i.complete, i.naturalWidth])")
    assert sizes == [[True, 64], [True, 64]]  # both chips decoded from the page itself
    pdf = tmp_path / "dossier.pdf"
    page.pdf(path=str(pdf), format="A4")
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5_000
    assert requests.refused == [], requests.refused
    assert requests.errors == [], requests.errors


def _cleared_forest_night(folder: Path) -> Path:
    """A night with one clue and the chips the pipeline draws for it: a forest patch cleared to
    bare soil between the two dates."""
    rng = np.random.default_rng(7)
    forest = np.array([0.03, 0.05, 0.03, 0.35, 0.15, 0.08], np.float32)  # B02 B03 B04 B08 B11 B12
    soil = np.array([0.15, 0.17, 0.2, 0.25, 0.3, 0.28], np.float32)
    before = forest[:, None, None] + rng.normal(0, 0.006, (6, 32, 32)).astype(np.float32)
    after = before.copy()
    own = np.zeros((32, 32), bool)
    own[12:20, 11:22] = True
    after[:, own] = soil[:, None] + rng.normal(0, 0.01, (6, int(own.sum()))).astype(np.float32)
    data = preview_bytes(before, after)
    chips = render_chips(data, own, 10.0, 128)._asdict()
    (folder / "chips").mkdir(parents=True)
    for which, chip in chips.items():
        Image.fromarray(chip).save(folder / f"chips/clue-cleared_{which}.png")
    clue = feature(
        "clue-cleared",
        rect(20_000, 0, 110, 80),
        "2025-06-28",
        county="Zhouzhi",
        change_type="vegetation_loss",
        chip_change="chips/clue-cleared_change.png",
    )
    path = folder / "clues.geojson"
    path.write_text(json.dumps(collection([clue])), encoding="utf-8")
    return path


def test_a_review_card_shows_the_ndvi_change_beside_before_and_after(
    browser, served, db, seeded, tmp_path, artefact_dir
):
    report = ingest(db, _cleared_forest_night(tmp_path / "night-cleared"), now=NOW)
    case_id = report.outcomes[0].case_id
    page, requests = browser
    log_in(page, served, seeded.tokens["officer"])
    card = f"article.case[data-case-id='{case_id}']"
    page.wait_for_selector(f"{card} figure.change figcaption:not([hidden])")
    for which in ("before", "after"):
        page.wait_for_function(
            "sel => { const i = document.querySelector(sel); return i && i.complete; }",
            arg=f"{card} img.chip-{which}",
        )
    sizes = page.eval_on_selector_all(
        f"{card} img.chip", "is => is.map(i => [i.naturalWidth, i.naturalHeight])"
    )
    assert len(sizes) == 3 and sizes[0] == sizes[1] == sizes[2]  # the pipeline's own three
    boxes = [page.locator(f"{card} img.chip-{w}").bounding_box() for w in ("after", "change")]
    assert boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"] - 1  # in a row
    assert boxes[1]["width"] == boxes[0]["width"]
    page.locator(card).screenshot(path=str(artefact_dir / "review-card-ndvi-change.png"))
    assert requests.refused == [], requests.refused
    assert requests.errors == [], requests.errors


def test_the_review_page_fits_a_phone_in_the_field(served, db, ids, seeded, artefact_dir):
    transition(db, ids["z1"], "verifying", actor="ana.lyst", now=API_NOW)
    allowed = lambda url: url.startswith(f"{served}/")  # noqa: E731
    with browser_page(allowed, width=390, height=844) as (page, requests):
        log_in(page, served, seeded.tokens["officer"])
        card = f"article.case[data-case-id='{ids['z1']}']"
        page.wait_for_selector(f"{card} img.chip-after")
        # nothing wider than the screen: no sideways scrolling in the field
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        for which in ("before", "after"):
            box = page.locator(f"{card} img.chip-{which}").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        # the three chips one under the other, each the screen's width, none past its edge
        z2 = f"article.case[data-case-id='{ids['z2']}']"
        page.wait_for_selector(f"{z2} figure.change figcaption:not([hidden])")
        page.wait_for_function(
            "sel => document.querySelector(sel).getBoundingClientRect().width > 0",
            arg=f"{z2} img.chip-change",
        )
        boxes = [
            page.locator(f"{z2} img.chip-{which}").bounding_box()
            for which in ("before", "after", "change")
        ]
        assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]
        for box in boxes:
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] > 250
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # verdict buttons big enough for a thumb (44 px, the usual touch target)
        heights = page.eval_on_selector_all(
            f"{card} button.act", "bs => bs.map(b => b.getBoundingClientRect().height)"
        )
        assert heights and min(heights) >= 44, heights
        page.screenshot(path=str(artefact_dir / "review-phone.png"), full_page=True)
        assert requests.refused == [], requests.refused
        assert requests.errors == [], requests.errors


def test_an_analyst_assigns_ticked_cases_to_a_county_from_the_list(
    browser, served, db, ids, seeded
):
    page, requests = browser
    log_in(page, served, seeded.tokens["analyst"])
    page.wait_for_selector("#bulk:not([hidden])")
    # the counties come from the ledger, not from typing
    options = page.eval_on_selector_all("#bulk-county option", "os => os.map(o => o.value)")
    assert options == ["", "Huyi", "Zhouzhi"]
    z3, z4 = (f"article.case[data-case-id='{ids[k]}']" for k in ("z3", "z4"))
    page.check(f"{z3} input.pick")
    page.check(f"{z4} input.pick")
    page.select_option("#bulk-county", "Huyi")
    page.click("#bulk-assign")
    page.wait_for_function(
        "() => document.getElementById('bulk-msg').textContent.startsWith('2 case(s)')"
    )
    with db.session() as s:
        assigned = dict(
            s.execute(
                select(Case.id, Case.assigned_county).where(Case.id.in_([ids["z3"], ids["z4"]]))
            ).all()
        )
    assert assigned == {ids["z3"]: "Huyi", ids["z4"]: "Huyi"}
    # the untouched ones keep their county, and every card assigns from the same list
    with db.session() as s:
        assert s.scalar(select(Case.assigned_county).where(Case.id == ids["z5"])) == "Zhouzhi"
    per_card = page.eval_on_selector_all(
        f"article.case[data-case-id='{ids['z5']}'] select.assign-county option",
        "os => os.map(o => o.value)",
    )
    assert per_card == options
    # another analyst moves z5 after this page listed it: the page's assignment is refused
    # (it expected Zhouzhi), not laid over the other one
    reassign(db, ids["z5"], "Huyi", actor="other.analyst", now=API_NOW)
    page.check(f"article.case[data-case-id='{ids['z5']}'] input.pick")
    page.select_option("#bulk-county", "Huyi")
    page.click("#bulk-assign")
    page.wait_for_function(
        "() => document.getElementById('bulk-msg').textContent.startsWith('0 case(s)')"
    )
    assert f"not: {ids['z5']} (case {ids['z5']} is assigned to Huyi now" in page.inner_text(
        "#bulk-msg"
    )
    with db.session() as s:
        moves = s.scalars(
            select(CaseEvent.actor).where(
                CaseEvent.case_id == ids["z5"], CaseEvent.kind == "assigned"
            )
        ).all()
    assert moves == ["other.analyst"]
    assert requests.refused == [], requests.refused
    assert requests.errors == [], requests.errors


def test_the_monthly_report_of_a_detection_month_in_the_page(browser, served, db, ids, seeded):
    transition(db, ids["z1"], "verifying", actor="ana.lyst", now=API_NOW)
    page, requests = browser
    log_in(page, served, seeded.tokens["analyst"])
    page.wait_for_selector("article.case")
    page.click("#report summary")
    page.fill("#report-form input[name=month]", "2025-06")
    page.click("#report-form button[type=submit]")
    page.wait_for_selector("#report-table:not([hidden]) tbody tr")
    rows = page.eval_on_selector_all(
        "#report-table tbody tr", "rs => rs.map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    by_county = {row[1]: row for row in rows}
    # every case here was first detected in June 2025 (ingested in July)
    assert int(by_county["Zhouzhi"][2]) == sum(c == "Zhouzhi" for c in COUNTIES.values()) + 1
    assert int(by_county["Huyi"][2]) == sum(c == "Huyi" for c in COUNTIES.values())
    assert page.get_attribute("#report-csv", "href") == "/reports/monthly.csv?month=2025-06"
    page.fill("#report-form input[name=month]", "2024-01")
    page.click("#report-form button[type=submit]")
    page.wait_for_function(
        "() => document.getElementById('report-msg').textContent.includes('2024-01')"
    )
    assert requests.refused == [], requests.refused
    assert requests.errors == [], requests.errors
