"""Alembic migrations: upgrade and downgrade on both engines; the models match the head."""

from __future__ import annotations

import datetime as dt
import importlib
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from changedetect.tracker import (
    SchemaOutdatedError,
    TrackerDatabaseError,
    TrackerDB,
    current_revision,
    downgrade,
    get_case,
    head_revision,
    list_cases,
    transition,
    upgrade,
)
from changedetect.tracker.db import make_engine
from changedetect.tracker.geometry import to_geojson
from changedetect.tracker.migrate import schema_differences
from changedetect.tracker.models import CaseEvent
from changedetect.tracker.photos import PhotoFacts, StoredPhoto
from changedetect.tracker.spatial import POSTGIS_TABLES
from changedetect.tracker.verification import FieldPosition, add_photo, record_verification

from .helpers import NOW, rect, seed_case, stored_footprints

TABLES = {"cases", "detections", "case_events", "case_tags", "known_sites", "site_observations"}
PACKAGE = Path(__file__).resolve().parents[2] / "changedetect" / "tracker"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path) -> Iterator[str]:
    """An empty database on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server = request.getfixturevalue("pg_server")
    if server.fixed_url is None:
        yield server.create_database("migrations")
        return
    # one fixed database: empty it for the test, leave it migrated for the others
    url = request.getfixturevalue("pg_session_url")
    downgrade(url, "base")
    yield url
    upgrade(url)


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version", *POSTGIS_TABLES}
    finally:
        engine.dispose()


def test_upgrade_and_downgrade(empty_url):
    assert current_revision(empty_url) is None
    upgrade(empty_url, "0001")
    assert current_revision(empty_url) == "0001"
    assert tables(empty_url) == TABLES
    footprint = rect(0, 0, 60)
    case_id = seed_case(empty_url, "m1", footprint)  # a ledger the first version wrote
    wkb = stored_footprints(empty_url)
    upgrade(empty_url)  # the rest of the chain, over existing data
    assert current_revision(empty_url) == head_revision()
    assert tables(empty_url) >= TABLES
    with TrackerDB.open(empty_url) as db, db.session() as s:
        assert list_cases(s, now=NOW).total == 1
        case = get_case(s, case_id, now=NOW)
        assert case.geometry_union == to_geojson(footprint)
        assert [d.geometry for d in case.detections] == [to_geojson(footprint)]
    upgrade(empty_url)  # at head already: a no-op
    downgrade(empty_url, "0001")  # later revisions come off, the ledger stays
    assert (current_revision(empty_url), tables(empty_url)) == ("0001", TABLES)
    assert stored_footprints(empty_url) == wkb  # the very bytes the first version wrote
    downgrade(empty_url, "base")
    assert current_revision(empty_url) is None
    assert tables(empty_url) == set()
    upgrade(empty_url)  # and back up again, from nothing
    assert current_revision(empty_url) == head_revision()


def test_migration_0004_adds_the_field_record_and_takes_it_off_again(empty_url):
    """Positions and photos come with 0004 over an existing ledger, and go without it."""
    upgrade(empty_url, "0003")
    case_id = seed_case(empty_url, "m1", rect(0, 0, 60))
    assert not tables(empty_url) & {"event_positions", "case_photos"}
    upgrade(empty_url, "0004")
    assert {"event_positions", "case_photos"} <= tables(empty_url)
    upgrade(empty_url)  # the tracker records with the newest schema
    photo = StoredPhoto("ab" * 32, 1234, PhotoFacts("image/jpeg", 40, 30))
    position = FieldPosition(34.0, 108.25, 6.0, NOW, "device")
    with TrackerDB(empty_url) as db:
        transition(db, case_id, "verifying", actor="ana.lyst", now=NOW)
        view, _ = add_photo(db, case_id, photo, filename="a.jpg", actor="o", now=NOW)
        _, event_id = record_verification(
            db, case_id, "violation", actor="o", position=position, photo_ids=[view.id], now=NOW
        )
        with db.session() as s:
            [event] = [e for e in get_case(s, case_id, now=NOW).events if e.id == event_id]
    assert (event.position.lat, event.position.accuracy_m, event.position.taken_at) == (
        34.0,
        6.0,
        NOW,
    )
    assert [p.id for p in event.photos] == [view.id]
    downgrade(empty_url, "0003")  # the field record comes off; the case and its events stay
    assert not tables(empty_url) & {"event_positions", "case_photos"}
    with TrackerDB(empty_url) as db, db.session() as s:
        kinds = s.scalars(select(CaseEvent.to_state).where(CaseEvent.case_id == case_id)).all()
        assert kinds == ["issued", "verifying", "violation"]


def _as_utc(value: object) -> dt.datetime:
    """A timestamp read with plain SQL: PostgreSQL gives an aware datetime, SQLite text (UTC)."""
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    assert isinstance(value, dt.datetime)
    return value.astimezone(dt.UTC)


def test_0005_gives_existing_tokens_an_expiry_adds_sessions_and_comes_off_again(empty_url):
    upgrade(empty_url, "0004")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, name, role, active, created_at) "
                    "VALUES (1, 'ana.lyst', 'analyst', true, '2025-07-01 12:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO api_tokens (id, user_id, token_hash, prefix, created_at) "
                    "VALUES (1, 1, :hash, 'cdt_abcdef', '2025-07-01 12:00:00')"
                ),
                {"hash": "a" * 64},
            )
        before = dt.datetime.now(dt.UTC)
        upgrade(empty_url, "0005")
        after = dt.datetime.now(dt.UTC)
        assert "api_sessions" in tables(empty_url)
        with engine.connect() as conn:
            expires = _as_utc(conn.execute(text("SELECT expires_at FROM api_tokens")).scalar_one())
        # the default lifetime, counted from the upgrade: no token dies with the upgrade
        assert before + dt.timedelta(days=90) - dt.timedelta(seconds=1) <= expires
        assert expires <= after + dt.timedelta(days=90)
        columns = {c["name"]: c for c in inspect(engine).get_columns("api_tokens")}
        assert columns["expires_at"]["nullable"] is False
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO api_sessions (session_hash, user_id, token_id, created_at, "
                    "last_seen_at, expires_at) VALUES (:hash, 1, 1, '2025-07-02 08:00:00', "
                    "'2025-07-02 08:00:00', '2025-07-02 20:00:00')"
                ),
                {"hash": "b" * 64},
            )
        downgrade(empty_url, "0004")
        assert "api_sessions" not in tables(empty_url)
        assert "expires_at" not in {c["name"] for c in inspect(engine).get_columns("api_tokens")}
        with engine.connect() as conn:  # the users and their tokens stay
            assert conn.execute(text("SELECT prefix FROM api_tokens")).scalars().all() == [
                "cdt_abcdef"
            ]
    finally:
        engine.dispose()
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()


def _import_every_model_module() -> None:
    """Models of later features live beside ours on the same Base: load them all."""
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem not in ("__init__", "__main__"):
            importlib.import_module(f"changedetect.tracker.{path.stem}")


def test_models_match_the_migrated_schema(db_url):
    _import_every_model_module()
    assert schema_differences(db_url) == []


def test_open_refuses_an_unmigrated_database_and_names_the_command(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with pytest.raises(SchemaOutdatedError, match="run `changedetect tracker migrate`"):
        TrackerDB.open(url)
    with TrackerDB.open(url, migrate=True) as db:  # what the embedded default does
        assert current_revision(db.engine) == head_revision()


def test_open_refuses_a_database_from_a_newer_version(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    engine.dispose()
    with pytest.raises(SchemaOutdatedError, match="newer than this changedetect knows"):
        TrackerDB.open(sqlite_url, migrate=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:secret@h/db", "supports sqlite and postgresql"),
        ("not a url", "is not a URL"),
        ("sqlite:////nonexistent-folder/x.db", "does not exist; create it first"),
    ],
)
def test_bad_urls_are_clear_errors(url, message):
    with pytest.raises(TrackerDatabaseError, match=message) as info:
        TrackerDB.open(url)
    assert "secret" not in str(info.value)


def test_unreachable_server_is_a_clear_error_without_the_password():
    url = "postgresql://someone:hunter2@127.0.0.1:9/tracker"
    with pytest.raises(TrackerDatabaseError, match="cannot open tracker database") as info:
        TrackerDB.open(url)
    assert "hunter2" not in str(info.value)


def test_migrations_ship_inside_the_package_and_nothing_calls_create_all():
    versions = resources.files("changedetect.tracker.migrations.versions")
    assert any(p.name.startswith("0001_") for p in versions.iterdir())
    assert resources.files("changedetect.tracker.migrations").joinpath("env.py").is_file()
    for path in PACKAGE.rglob("*.py"):
        assert "create_all(" not in path.read_text(), path


def test_concurrent_first_use_migrates_once(empty_url):
    """Several clients opening a brand-new database at once: one migrates, none fails."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def first_use():
        try:
            barrier.wait(timeout=30)
            TrackerDB.open(empty_url, migrate=True).close()
        except BaseException as exc:  # collected: a failing thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert current_revision(empty_url) == head_revision()
