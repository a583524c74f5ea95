"""Tokens that expire, rotate and revoke; review-page sessions kept on the server."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from changedetect.tracker.api import cli as api_cli
from changedetect.tracker.api import create_app
from changedetect.tracker.api.deps import COOKIE_NAME
from changedetect.tracker.auth import (
    DEFAULT_TOKEN_LIFETIME,
    AuthError,
    add_user,
    authenticate,
    create_token,
    list_tokens,
    revoke_tokens,
    rotate_token,
    set_user_active,
)
from changedetect.tracker.errors import DatabaseBusyError
from changedetect.tracker.sessions import ApiSession
from changedetect.tracker.settings import TrackerSettings

from .conftest import API_NOW
from .test_auth import cli

MINUTE = dt.timedelta(minutes=1)


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += dt.timedelta(**delta)


def log_in(client: TestClient, token: str) -> str:
    """POST /login; the session cookie's value."""
    r = client.post("/login", json={"token": token})
    assert r.status_code == 200, r.text
    return client.cookies[COOKIE_NAME]


def with_cookie(client: TestClient, value: str) -> TestClient:
    """The client holding exactly this session cookie (as a copied cookie would be replayed)."""
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, value)
    return client


# --- the cookie and the session ---------------------------------------------------------------


def test_the_cookie_holds_a_session_id_never_the_token(client, seeded, db, db_url):
    token = seeded.tokens["analyst"]
    r = client.post("/login", json={"token": token})
    assert r.status_code == 200
    assert token not in r.headers["set-cookie"]
    session_id = client.cookies[COOKIE_NAME]
    assert session_id != token and session_id.startswith("cds_")
    with db.session() as s:
        stored = s.scalars(select(ApiSession)).all()
    assert [row.session_hash for row in stored] == [hashlib.sha256(session_id.encode()).hexdigest()]
    assert stored[0].expires_at == API_NOW + dt.timedelta(hours=12)
    assert session_id.encode() not in Path(db_url.removeprefix("sqlite:///")).read_bytes()
    assert client.get("/me").json()["name"] == "ana.lyst"


def test_logout_ends_the_session_so_a_replayed_cookie_no_longer_works(client, seeded):
    session_id = log_in(client, seeded.tokens["analyst"])
    assert client.get("/cases").status_code == 200
    assert client.post("/logout").status_code == 204
    r = with_cookie(client, session_id).get("/cases")
    assert r.status_code == 401 and "log in again" in r.json()["detail"]
    # the API token itself still works: logging out of the page is not revoking the token
    assert (
        client.get(
            "/me", headers={"Authorization": f"Bearer {seeded.tokens['analyst']}"}
        ).status_code
        == 200
    )


def test_a_raw_token_in_the_cookie_is_not_a_session(client, seeded):
    r = with_cookie(client, seeded.tokens["analyst"]).get("/cases")
    assert r.status_code == 401


def test_a_session_ends_after_its_idle_time(db, seeded):
    clock = Clock(API_NOW)
    settings = TrackerSettings(session_idle_minutes=30, session_max_hours=12)
    with TestClient(create_app(db, now=clock, settings=settings)) as client:
        log_in(client, seeded.tokens["viewer"])
        for _ in range(4):  # a request every 25 minutes keeps it alive past the idle time
            clock.advance(minutes=25)
            assert client.get("/me").status_code == 200
        clock.advance(minutes=31)
        assert client.get("/me").status_code == 401
        log_in(client, seeded.tokens["viewer"])  # a fresh login works
        assert client.get("/me").status_code == 200


def test_a_busy_database_does_not_fail_a_session_read(db, seeded, monkeypatch):
    """Refreshing the idle clock is a write; while an ingest holds the write lock, the request
    still goes through on the valid session instead of answering 503."""
    clock = Clock(API_NOW)
    app = create_app(db, now=clock)
    with TestClient(app) as client:
        log_in(client, seeded.tokens["viewer"])
        clock.advance(minutes=5)
        store = app.state.tracker.db

        def busy(*args, **kwargs):
            raise DatabaseBusyError("another writer holds the database")

        monkeypatch.setattr(store, "run_write", busy)
        assert client.get("/me").status_code == 200


def test_a_session_ends_at_its_absolute_end_however_busy(db, seeded):
    clock = Clock(API_NOW)
    settings = TrackerSettings(session_idle_minutes=30, session_max_hours=2)
    with TestClient(create_app(db, now=clock, settings=settings)) as client:
        log_in(client, seeded.tokens["viewer"])
        for _ in range(7):
            clock.advance(minutes=17)
            assert client.get("/me").status_code == 200  # 119 minutes in
        clock.advance(minutes=2)
        assert client.get("/me").status_code == 401


def test_revoking_a_token_ends_the_sessions_opened_with_it(client, db, seeded):
    add_user(db, "two.tablets", "viewer", now=API_NOW)
    first = create_token(db, "two.tablets", now=API_NOW)
    second = create_token(db, "two.tablets", now=API_NOW)
    first_session = log_in(client, first)
    second_session = log_in(client, second)
    # the sessions are credentials of their own, not copies of the tokens ...
    assert first_session.startswith("cds_") and second_session.startswith("cds_")
    # ... yet revoking the token ends the session opened with it, and only that one
    revoke_tokens(db, "two.tablets", prefix=first[:10], now=API_NOW)
    assert with_cookie(client, first_session).get("/me").status_code == 401
    assert with_cookie(client, second_session).get("/me").status_code == 200
    assert client.post("/login", json={"token": first}).status_code == 401


def test_disabling_a_user_ends_its_sessions(client, db, seeded):
    log_in(client, seeded.tokens["viewer"])
    set_user_active(db, "vi.ewer", False)
    assert client.get("/me").status_code == 401


def test_the_csrf_header_is_still_needed_for_writes_through_a_session(client, seeded, ids):
    log_in(client, seeded.tokens["analyst"])
    path = f"/cases/{ids['z1']}/transitions"
    assert client.post(path, json={"to": "verifying"}).status_code == 403
    r = client.post(path, json={"to": "verifying"}, headers={"X-Changedetect-CSRF": "1"})
    assert r.status_code == 200


# --- tokens expire, rotate, revoke -------------------------------------------------------------


def test_tokens_expire_after_their_lifetime(db, seeded):
    add_user(db, "day.pass", "viewer", now=API_NOW)
    token = create_token(db, "day.pass", lifetime=dt.timedelta(days=1), now=API_NOW)
    bearer = {"Authorization": f"Bearer {token}"}
    clock = Clock(API_NOW)
    with TestClient(create_app(db, now=clock)) as client:
        assert client.get("/me", headers=bearer).status_code == 200
        log_in(client, token)
        clock.advance(days=1)
        r = client.get("/me", headers=bearer)
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        assert client.get("/me").status_code == 401  # its session ends with it
        assert client.post("/login", json={"token": token}).status_code == 401


def test_tokens_live_90_days_by_default(db, seeded):
    issued = API_NOW - dt.timedelta(days=1)  # when the fixtures issued them
    bearer = {"Authorization": f"Bearer {seeded.tokens['analyst']}"}
    for at, expected in (
        (issued + DEFAULT_TOKEN_LIFETIME - MINUTE, 200),
        (issued + DEFAULT_TOKEN_LIFETIME, 401),
    ):
        with TestClient(create_app(db, now=at)) as client:
            assert client.get("/me", headers=bearer).status_code == expected
    assert DEFAULT_TOKEN_LIFETIME == dt.timedelta(days=90)


def test_rotating_a_token_replaces_it_and_ends_its_sessions(client, db, seeded):
    add_user(db, "rota", "analyst", now=API_NOW)
    old = create_token(db, "rota", label="field tablet", now=API_NOW)
    old_session = log_in(client, old)
    new = rotate_token(db, "rota", now=API_NOW)
    assert new != old
    with db.session() as s:
        assert authenticate(s, old, now=API_NOW) is None
        assert authenticate(s, new, now=API_NOW).name == "rota"
        tokens = list_tokens(s, "rota")
    assert [(t.label, t.status(API_NOW)) for t in tokens] == [
        ("field tablet", "live"),
        ("field tablet", "revoked"),
    ]
    assert tokens[0].expires_at == API_NOW + DEFAULT_TOKEN_LIFETIME
    assert with_cookie(client, old_session).get("/me").status_code == 401
    assert client.get("/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert client.get("/me", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_rotation_needs_a_prefix_when_the_user_has_several_live_tokens(db):
    add_user(db, "many", "viewer", now=API_NOW)
    first = create_token(db, "many", now=API_NOW)
    create_token(db, "many", now=API_NOW)
    with pytest.raises(
        AuthError, match="has 2 live tokens .*: name the one to rotate with --prefix"
    ):
        rotate_token(db, "many", now=API_NOW)
    rotate_token(db, "many", prefix=first[:10], now=API_NOW)
    with db.session() as s:
        assert authenticate(s, first, now=API_NOW) is None
    with pytest.raises(AuthError, match="no live token starting with 'cdt_nope'"):
        rotate_token(db, "many", prefix="cdt_nope", now=API_NOW)
    with pytest.raises(AuthError, match="lifetime must be positive"):
        create_token(db, "many", lifetime=dt.timedelta(0))


def test_cli_token_lifetime_rotation_and_listing(db_url):
    cli(db_url, "user", "add", "li.wei", "--role", "viewer")
    out, err = cli(db_url, "token", "create", "li.wei", "--label", "tablet", "--expires-in", "7")
    old = out.strip()
    expected = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).strftime("%Y-%m-%d")
    assert f"valid until {expected}" in err
    out, _ = cli(db_url, "token", "list", "li.wei")
    assert out.split() == ["li.wei", old[:10], "live", "expires", expected, "tablet"]
    out, err = cli(db_url, "token", "rotate", "li.wei")
    new = out.strip()
    assert new != old and "the old one is revoked" in err
    out, _ = cli(db_url, "token", "list", "li.wei")
    assert [line.split()[1:3] for line in out.splitlines()] == [
        [new[:10], "live"],
        [old[:10], "revoked"],
    ]
    with pytest.raises(SystemExit):
        cli(db_url, "token", "create", "li.wei", "--expires-in", "0")
    assert api_cli.DEFAULT_TOKEN_LIFETIME == DEFAULT_TOKEN_LIFETIME
