"""The field record on a phone, in a real headless Chromium against the app served by uvicorn:
the officer's position from the browser, photos from the file picker, the verdict, and what
the API and the dossier then show."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from changedetect.tracker import transition
from tests.factories import API_NOW

from ..browser import browser_page
from .test_review_browser import log_in, served  # noqa: F401 - the served app fixture

PHONE = {"width": 390, "height": 844}
#: Where the emulated phone stands: beside the z1 patch.
HERE = {"latitude": 34.00031, "longitude": 108.25052, "accuracy": 7}


def site_photo(path: Path, size: tuple[int, int] = (120, 90)) -> Path:
    """A JPEG as a phone camera would give one (a gradient, so it is not one flat colour)."""
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    path.write_bytes(out.getvalue())
    return path


def test_an_officer_records_a_verdict_with_position_and_photos_on_a_phone(
    served,  # noqa: F811 - the imported fixture
    db,
    ids,
    seeded,
    tmp_path,
    artefact_dir,
):
    transition(db, ids["z1"], "verifying", actor="ana.lyst", now=API_NOW)
    photo = site_photo(tmp_path / "IMG_2041.jpg")
    fake = tmp_path / "notes.jpg"
    fake.write_text("not a photo at all", encoding="utf-8")
    card = f"article.case[data-case-id='{ids['z1']}']"
    form = f"{card} form.field-record"
    allowed = lambda url: url.startswith(f"{served}/")  # noqa: E731
    with browser_page(allowed, **PHONE) as (page, requests):
        page.context.grant_permissions(["geolocation"], origin=served)
        page.context.set_geolocation(HERE)
        log_in(page, served, seeded.tokens["officer"])
        page.wait_for_selector(f"{card} details.field-record")
        # only the case being verified has the form: an issued case is the analyst's to send
        assert page.locator("details.field-record").count() == 1
        page.click(f"{card} details.field-record > summary")

        page.select_option(f"{form} select[name=verdict]", "violation")
        page.fill(f"{form} textarea[name=note]", "quarry face cut since spring; no permit")
        page.click(f"{form} button.locate")
        page.wait_for_function(
            "sel => document.querySelector(sel).value !== ''", arg=f"{form} input[name=lat]"
        )
        assert page.input_value(f"{form} input[name=lat]") == "34.000310"
        assert page.input_value(f"{form} input[name=lon]") == "108.250520"
        assert page.input_value(f"{form} input[name=accuracy_m]") == "7"
        assert "±7 m" in page.inner_text(f"{form} .fix-status")

        # two files picked: the photo is kept, the text file is refused with the API's reason
        page.set_input_files(f"{form} input.photo-input", [str(photo), str(fake)])
        page.wait_for_selector(f"{form} li.photo.kept")
        page.wait_for_selector(f"{form} li.photo.error")
        assert "kept · 120×90" in page.inner_text(f"{form} li.photo.kept")
        assert "not a JPEG, PNG or WebP image" in page.inner_text(f"{form} li.photo.error")
        page.wait_for_function(
            "sel => { const i = document.querySelector(sel); return i.complete && "
            "i.naturalWidth > 0; }",
            arg=f"{form} li.photo.kept img.thumb",
        )
        # the phone layout: nothing wider than the screen, every control a thumb's size
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        heights = page.eval_on_selector_all(
            f"{card} details.field-record summary, {form} button, {form} select, "
            f"{form} input, {form} textarea",
            "es => es.map(e => [e.tagName, e.name || e.className, "
            "e.getBoundingClientRect().height])",
        )
        assert heights and all(h >= 44 for _, _, h in heights), heights
        page.screenshot(path=str(artefact_dir / "field-record-form.png"), full_page=True)

        page.click(f"{form} button.record")
        page.wait_for_selector(f"{card}[data-state=violation]")
        assert "field record with 1 photo(s)" in page.inner_text(f"{card} .msg")
        assert page.locator(f"{card} details.field-record").count() == 0  # verdict given
        page.screenshot(path=str(artefact_dir / "field-record-saved.png"), full_page=True)

        # what the API now holds, asked with the page's own session
        detail = page.request.get(f"{served}/cases/{ids['z1']}").json()
        assert detail["state"] == "violation"
        event = detail["events"][-1]
        assert (event["actor"], event["to_state"], event["comment"]) == (
            "zhou.officer",
            "violation",
            "quarry face cut since spring; no permit",
        )
        position = event["position"]
        assert (position["lat"], position["lon"], position["accuracy_m"]) == (
            34.00031,
            108.25052,
            7.0,
        )
        assert position["source"] == "device" and position["taken_at"]
        [kept] = event["photos"]
        assert (kept["filename"], kept["media_type"], kept["width"]) == (
            "IMG_2041.jpg",
            "image/jpeg",
            120,
        )
        assert page.request.get(f"{served}{kept['url']}").body() == photo.read_bytes()

        # the dossier: the officer's findings, the photo decoded from the page itself
        page.goto(f"{served}/cases/{ids['z1']}/dossier")
        page.wait_for_selector("h1")
        shown = page.eval_on_selector_all(
            "img[alt^='photo ']", "is => is.map(i => [i.complete, i.naturalWidth])"
        )
        assert shown == [[True, 120]]
        text = page.inner_text("body")
        assert "Findings on site" in text and "34.000310, 108.250520" in text
        assert "quarry face cut since spring; no permit" in text
        page.screenshot(path=str(artefact_dir / "dossier.png"), full_page=True)
        assert requests.refused == [], requests.refused
        assert requests.errors == [], requests.errors


def test_a_refused_location_leaves_the_position_to_type_in(
    served,  # noqa: F811 - the imported fixture
    db,
    ids,
    seeded,
):
    transition(db, ids["z2"], "verifying", actor="ana.lyst", now=API_NOW)
    card = f"article.case[data-case-id='{ids['z2']}']"
    form = f"{card} form.field-record"
    allowed = lambda url: url.startswith(f"{served}/")  # noqa: E731
    with browser_page(allowed, **PHONE) as (page, requests):
        page.context.clear_permissions()  # no location for this page
        log_in(page, served, seeded.tokens["officer"])
        page.wait_for_selector(f"{card} details.field-record")
        page.click(f"{card} details.field-record > summary")
        page.click(f"{form} button.locate")
        page.wait_for_function(
            "sel => document.querySelector(sel).textContent.includes('type the position in')",
            arg=f"{form} .fix-status",
        )
        # nothing to record without a position
        page.select_option(f"{form} select[name=verdict]", "false_alarm")
        page.click(f"{form} button.record")
        assert "position needed" in page.inner_text(f"{form} .msg")
        page.fill(f"{form} input[name=lat]", "34.0003")
        page.fill(f"{form} input[name=lon]", "108.2590")
        page.click(f"{form} button.record")
        page.wait_for_selector(f"{card}[data-state=false_alarm]")
        event = page.request.get(f"{served}/cases/{ids['z2']}").json()["events"][-1]
        assert event["position"]["source"] == "manual"
        assert (event["position"]["lat"], event["position"]["accuracy_m"]) == (34.0003, None)
        assert event["photos"] == []
        assert requests.refused == [], requests.refused
        assert requests.errors == [], requests.errors
