"""``/docs`` is served by the app itself: no third-party host is referenced or contacted."""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import urlsplit

from changedetect.tracker.api import create_app

from ..browser import browser_page
from .conftest import API_NOW, serve_app

REFERENCE = re.compile(r"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""")


def test_docs_reference_no_external_host(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "http://" not in html and "https://" not in html
    references = REFERENCE.findall(html)
    assert {"/openapi.json"} < set(references)
    for ref in references:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert asset.headers["x-content-type-options"] == "nosniff"
    js = client.get(next(ref for ref in references if ref.endswith(".js")))
    assert "javascript" in js.headers["content-type"] and "SwaggerUIBundle" in js.text


def test_docs_policy_allows_only_the_app_and_its_own_start_up_script(client):
    r = client.get("/docs")
    csp = r.headers["content-security-policy"]
    assert "http" not in csp and "*" not in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    (inline,) = re.findall(r"<script>(.*?)</script>", r.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}'" in csp


def test_redoc_is_not_offered_and_the_openapi_document_stays(client):
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "changedetect case tracker"


def test_docs_render_in_a_browser_from_the_app_alone(db, artefact_dir):
    with serve_app(create_app(db, now=API_NOW)) as base:
        with browser_page(lambda url: url.startswith(f"{base}/")) as (page, requests):
            page.goto(f"{base}/docs")  # type: ignore[attr-defined]
            page.wait_for_selector(".opblock-summary-path")  # type: ignore[attr-defined]
            paths = page.eval_on_selector_all(  # type: ignore[attr-defined]
                ".opblock-summary-path", "els => els.map(e => e.dataset.path)"
            )
            page.screenshot(path=str(artefact_dir / "docs.png"))  # type: ignore[attr-defined]
    assert "/cases/{case_id}/transitions" in paths
    assert requests.refused == []
    assert {urlsplit(u).netloc for u in requests.seen} == {urlsplit(base).netloc}
    assert requests.errors == []  # a content-policy violation would be reported here
