"""The API, its tables and the webhook outbox on PostgreSQL (the multi-user engine).

Uses the core tests' PostgreSQL server fixture (``tests/tracker/conftest.py``): the local
cluster, started if needed, or skipped with the reason when none can be had.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import inspect  # noqa: E402

from changedetect.errors import ConfigError  # noqa: E402
from changedetect.tracker import TrackerDB, downgrade, upgrade  # noqa: E402
from changedetect.tracker.api import create_app  # noqa: E402
from changedetect.tracker.api.deps import COOKIE_NAME  # noqa: E402
from changedetect.tracker.auth import add_user, create_token  # noqa: E402
from changedetect.tracker.db import make_engine  # noqa: E402
from changedetect.tracker.migrate import schema_differences  # noqa: E402
from changedetect.tracker.webhook import (  # noqa: E402
    WebhookConfig,
    deliver_pending,
    ingest_and_hand_off,
    outbox_events,
)
from tests.tracker.conftest import pg_server  # noqa: E402,F401 - the core's server fixture
from tests.tracker.helpers import NOW, collection, feature, rect  # noqa: E402

from .conftest import API_NOW  # noqa: E402

SECRET = "whsec_cG9zdGdyZXMgd2ViaG9vayB0ZXN0IHNlY3JldCAwMTI="
TAKEN_AT = "2025-07-02T10:31:05+08:00"


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 40)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def pg_api_url(pg_server):  # noqa: F811 - the imported fixture
    """A database of our own on the server, migrated to head."""
    if pg_server.fixed_url is not None:
        pytest.skip("the API's PostgreSQL test needs a server it may create a database on")
    url = pg_server.create_database("api")
    upgrade(url)
    return url


def test_api_and_outbox_on_postgresql(pg_api_url, httpserver, tmp_path):
    assert schema_differences(pg_api_url) == []

    received = []
    httpserver.expect_request("/hook", method="POST").respond_with_handler(
        lambda request: received.append(request.get_data()) or "ok"
    )
    hook = WebhookConfig(
        url=httpserver.url_for("/hook"), secret=SECRET, budget_s=5, backoff_base_s=0.2
    )
    with TrackerDB.open(pg_api_url) as db:
        night = collection(
            [
                feature("pg-z", rect(0, 0, 80), county="Zhouzhi"),
                feature("pg-h", rect(900, 0, 80), county="Huyi"),
            ]
        )
        report, delivery = ingest_and_hand_off(db, night, webhook=hook, now=NOW)
        assert report.created == 2 and delivery.delivered == 2 and len(received) == 2
        ids = {o.clue_id: o.case_id for o in report.outcomes}
        add_user(db, "pg.analyst", "analyst", now=NOW)
        add_user(db, "pg.officer", "officer", county="Zhouzhi", now=NOW)
        analyst = {"Authorization": f"Bearer {create_token(db, 'pg.analyst')}"}
        officer_token = create_token(db, "pg.officer")
        officer = {"Authorization": f"Bearer {officer_token}"}

        with pytest.raises(ConfigError, match="photo folder"):
            create_app(db)  # a PostgreSQL ledger has no folder to keep photos beside
        app = create_app(db, now=API_NOW, webhook=hook, photo_dir=tmp_path / "photos")
        with TestClient(app) as client:
            page = client.get("/cases", headers=officer).json()
            assert [c["id"] for c in page["items"]] == [ids["pg-z"]]
            assert client.get(f"/cases/{ids['pg-h']}", headers=officer).status_code == 404
            r = client.post(
                f"/cases/{ids['pg-z']}/transitions", json={"to": "verifying"}, headers=analyst
            )
            assert r.status_code == 200
            photo = client.post(
                f"/cases/{ids['pg-z']}/photos",
                files={"photo": ("site.png", png_bytes(), "image/png")},
                headers=officer,
            )
            assert photo.status_code == 201, photo.text
            position = {"lat": 34.0, "lon": 108.25, "accuracy_m": 6.5, "taken_at": TAKEN_AT}
            r = client.post(
                f"/cases/{ids['pg-z']}/verification",
                json={
                    "verdict": "violation",
                    "position": position,
                    "photo_ids": [photo.json()["id"]],
                },
                headers=officer,
            )
            assert r.status_code == 200 and r.json()["state"] == "violation"
            [event] = [
                e
                for e in client.get(f"/cases/{ids['pg-z']}", headers=officer).json()["events"]
                if e["position"] is not None
            ]
            assert event["position"]["accuracy_m"] == 6.5
            assert event["position"]["taken_at"] == "2025-07-02T02:31:05Z"
            assert [p["id"] for p in event["photos"]] == [photo.json()["id"]]
            r = client.post(
                f"/cases/{ids['pg-z']}/transitions", json={"to": "closed"}, headers=analyst
            )
            assert r.status_code == 409
            r = client.post(
                f"/cases/{ids['pg-z']}/assign", json={"county": "a\u0000"}, headers=analyst
            )
            assert r.status_code == 422  # NUL refused before PostgreSQL sees it
            # both were first detected in June (2025-06-23)
            report_rows = client.get("/reports/monthly?month=2025-06", headers=analyst).json()
            assert {r["county"] for r in report_rows["counties"]} == {"Zhouzhi", "Huyi"}
            # the review page's session: log in, use it, log out; the copied cookie then fails
            assert client.post("/login", json={"token": officer_token}).status_code == 200
            session_id = client.cookies[COOKIE_NAME]
            assert client.get("/me").json()["name"] == "pg.officer"
            assert client.post("/logout").status_code == 204
            client.cookies.set(COOKIE_NAME, session_id)
            assert client.get("/me").status_code == 401
        deliver_pending(db, hook)
        kinds = [e.kind for e in outbox_events(db) if e.delivered_at is not None]
        assert kinds == ["case.created", "case.created", "case.transitioned", "case.transitioned"]

    downgrade(pg_api_url, "0001")
    engine = make_engine(pg_api_url)
    try:
        assert "users" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    upgrade(pg_api_url)
