"""Users, roles and tokens; the CLI that manages them; the migration that stores them."""

from __future__ import annotations

import argparse
import hashlib
import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from changedetect.errors import ConfigError
from changedetect.tracker import (
    TrackerDB,
    current_revision,
    downgrade,
    ingest,
    list_cases,
    upgrade,
)
from changedetect.tracker.api.cli import add_api_commands
from changedetect.tracker.auth import (
    ROLE_TRANSITIONS,
    ApiToken,
    AuthError,
    add_user,
    authenticate,
    create_token,
    looks_like_token,
    revoke_tokens,
)
from changedetect.tracker.db import make_engine
from changedetect.tracker.migrate import schema_differences
from changedetect.tracker.states import TRANSITIONS
from tests.tracker.helpers import NOW, collection, feature, rect

from .conftest import API_NOW


def test_only_a_hash_of_each_token_is_stored(db, seeded, db_url):
    token = seeded.tokens["analyst"]
    assert looks_like_token(token) and len(token) == 47
    with db.session() as s:
        rows = s.scalars(select(ApiToken)).all()
    assert hashlib.sha256(token.encode()).hexdigest() in {r.token_hash for r in rows}
    raw = Path(db_url.removeprefix("sqlite:///")).read_bytes()
    for t in seeded.tokens.values():
        assert t.encode() not in raw  # not in the database file at all
    assert len(set(seeded.tokens.values())) == len(seeded.tokens)


def test_authenticate(db, seeded):
    token = seeded.tokens["officer"]
    with db.session() as s:
        user = authenticate(s, token, now=API_NOW)
        assert (user.name, user.role, user.county) == ("zhou.officer", "officer", "Zhouzhi")
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        assert authenticate(s, tampered, now=API_NOW) is None
        assert authenticate(s, token + "x", now=API_NOW) is None
        assert authenticate(s, "", now=API_NOW) is None
        assert authenticate(s, seeded.tokens["revoked"], now=API_NOW) is None


def test_user_rules(db):
    with pytest.raises(AuthError, match="an officer needs a county"):
        add_user(db, "no.county", "officer")
    with pytest.raises(AuthError, match="role 'admin' is not one of analyst, officer, viewer"):
        add_user(db, "boss", "admin")
    with pytest.raises(AuthError, match="user 'ana.lyst' exists already"):
        add_user(db, "ana.lyst", "viewer")
    with pytest.raises(AuthError, match="is not valid"):
        add_user(db, "bad name!", "viewer")
    with pytest.raises(AuthError, match="no user 'ghost'"):
        create_token(db, "ghost")
    # an analyst's county is irrelevant: it sees everything
    analyst = add_user(db, "second.analyst", "analyst", county="Zhouzhi")
    assert analyst.county_scope is None and analyst.can_see("Huyi")


def test_revoking_by_prefix_leaves_the_other_tokens(db):
    add_user(db, "two.tokens", "viewer")
    first = create_token(db, "two.tokens")
    second = create_token(db, "two.tokens")
    assert revoke_tokens(db, "two.tokens", prefix=first[:10]) == 1
    with db.session() as s:
        assert authenticate(s, first) is None
        assert authenticate(s, second) is not None


def test_role_transitions_never_widen_the_lifecycle():
    for role, pairs in ROLE_TRANSITIONS.items():
        assert all(t in TRANSITIONS[s] for s, t in pairs), role
    every = {(s, t) for s, ts in TRANSITIONS.items() for t in ts}
    assert ROLE_TRANSITIONS["analyst"] == every
    assert ROLE_TRANSITIONS["viewer"] == frozenset()
    assert ROLE_TRANSITIONS["officer"] == {
        ("verifying", "compliant"),
        ("verifying", "false_alarm"),
        ("verifying", "violation"),
        ("violation", "rectifying"),
    }


# --- CLI --------------------------------------------------------------------------------------


def cli(url: str, *argv: str) -> tuple[str, str]:
    """Run one API command through a parser wired as the tracker CLI will wire it."""
    parser = argparse.ArgumentParser(prog="changedetect tracker")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db")
    db.add_argument("--db-file")
    sub = parser.add_subparsers(dest="tracker_command", required=True)
    add_api_commands(sub, db_parent=db)
    args = parser.parse_args([*argv, "--db", url])
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert args.func(args) == 0
    return out.getvalue(), err.getvalue()


def test_cli_user_and_token_commands(db_url):
    out, _ = cli(db_url, "user", "add", "li.wei", "--role", "officer", "--county", "Zhouzhi")
    assert out == "user li.wei: officer (county Zhouzhi)\n"
    out, err = cli(db_url, "token", "create", "li.wei", "--label", "field tablet")
    token = out.strip()
    assert looks_like_token(token) and "shown once" in err  # stdout holds just the token
    with TrackerDB.open(db_url) as db, db.session() as s:
        assert authenticate(s, token).name == "li.wei"
    out, _ = cli(db_url, "user", "list")
    line = next(x for x in out.splitlines() if x.startswith("li.wei"))
    assert "officer" in line and "Zhouzhi" in line and "1 token(s)" in line
    cli(db_url, "user", "disable", "li.wei")
    with TrackerDB.open(db_url) as db, db.session() as s:
        assert authenticate(s, token) is None
    cli(db_url, "user", "enable", "li.wei")
    out, _ = cli(db_url, "token", "revoke", "li.wei")
    assert out == "1 token(s) of li.wei revoked\n"
    out, _ = cli(db_url, "webhook", "requeue")
    assert out == "0 event(s) re-queued\n"


def test_cli_webhook_deliver_needs_a_configured_webhook(db_url, monkeypatch):
    monkeypatch.delenv("CHANGEDETECT_WEBHOOK_URL", raising=False)
    with pytest.raises(ConfigError, match="no webhook configured"):
        cli(db_url, "webhook", "deliver")


def test_cli_serve_parses_its_options():
    parser = argparse.ArgumentParser()
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db")
    add_api_commands(parser.add_subparsers(dest="c"), db_parent=db)
    args = parser.parse_args(["serve", "--port", "8123", "--evidence-root", "/data/runs"])
    assert (args.host, args.port, args.evidence_root) == ("127.0.0.1", 8123, ["/data/runs"])


# --- migration --------------------------------------------------------------------------------


def test_migration_0002_upgrades_keeps_data_and_downgrades(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0001")
    with TrackerDB(url) as db:
        ingest(db, collection([feature("m1", rect(0, 0, 60))]), now=NOW)
    upgrade(url, "0002")
    assert current_revision(url) == "0002"
    upgrade(url)  # and on to the newest, which the models must match
    engine = make_engine(url)
    try:
        assert {"users", "api_tokens", "webhook_outbox"} <= set(inspect(engine).get_table_names())
        assert schema_differences(engine) == []  # models == migrations
    finally:
        engine.dispose()
    with TrackerDB.open(url) as db:
        add_user(db, "x.y", "viewer")
        with db.session() as s:
            assert list_cases(s, now=NOW).total == 1
    downgrade(url, "0001")
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert not tables & {"users", "api_tokens", "webhook_outbox"} and "cases" in tables
