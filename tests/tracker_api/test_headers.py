"""Security headers on every answer of the JSON API, not only on the pages."""

from __future__ import annotations

import pytest

JSON_CSP_PARTS = ("default-src 'none'", "frame-ancestors 'none'")


def assert_hardened(response, *, cache: str = "no-store") -> None:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == cache
    for part in JSON_CSP_PARTS:
        assert part in headers["content-security-policy"]


@pytest.mark.parametrize(
    ("method", "path", "role", "status"),
    [
        ("GET", "/cases", "analyst", 200),
        ("GET", "/cases.geojson", "officer", 200),
        ("GET", "/cases/{z1}", "viewer", 200),
        ("GET", "/reports/monthly.csv?month=2025-06", "analyst", 200),
        ("GET", "/me", "officer", 200),
        ("GET", "/cases", None, 401),
        ("GET", "/cases/{h1}", "officer", 404),  # another county's case
        ("GET", "/cases?bbox=1,2", "analyst", 422),
        ("POST", "/cases/{z1}/transitions", "viewer", 403),
        ("GET", "/health", None, 200),
        ("GET", "/openapi.json", None, 200),
    ],
)
def test_json_api_answers_carry_the_security_headers(client, auth, ids, method, path, role, status):
    headers = auth[role] if role else {}
    url = path.format(z1=ids["z1"], h1=ids["h1"])
    r = client.request(method, url, headers=headers, json={"to": "verifying"})
    assert r.status_code == status, r.text
    assert_hardened(r)


def test_the_pages_keep_their_own_content_policies_and_get_the_rest(client, auth, ids):
    json_csp = client.get("/health").headers["content-security-policy"]
    page = client.get("/review")
    assert page.status_code == 200
    page_csp = page.headers["content-security-policy"]
    assert page_csp != json_csp and "script-src 'self'" in page_csp
    assert_hardened_frame_and_sniff(page)
    dossier = client.get(f"/cases/{ids['z1']}/dossier", headers=auth["officer"])
    assert dossier.status_code == 200
    assert dossier.headers["content-security-policy"] != json_csp
    assert_hardened_frame_and_sniff(dossier)


def assert_hardened_frame_and_sniff(response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "no-store" in response.headers["cache-control"]
