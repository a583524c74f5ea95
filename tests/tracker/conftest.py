"""Tracker fixtures: a migrated SQLite file per test, and a PostgreSQL database per session.

PostgreSQL: ``CHANGEDETECT_TEST_PG_URL`` names a database to use (it is reset to an empty
schema; PostGIS must be enabled in it); otherwise the local cluster is started if needed
(``pg_ctlcluster``, as root) and a role and databases of our own are created, each with PostGIS
enabled by the admin, then dropped at the end. PostgreSQL tests are skipped, with the reason,
only when no server with PostGIS can be had.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from changedetect.testing.postgres import PgServer, PostgresUnavailable, local_server
from changedetect.tracker import TrackerDB, downgrade, upgrade
from changedetect.tracker.db import make_engine


def _local_server() -> PgServer:
    """The local cluster with our role, or skip with the reason."""
    try:
        return local_server()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL tests need a server: {exc}")


def _require_postgis(url: str) -> None:
    """Skip, saying why, unless PostGIS is enabled in the database at ``url``."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            enabled = conn.scalar(text("SELECT 1 FROM pg_extension WHERE extname = 'postgis'"))
    finally:
        engine.dispose()
    if not enabled:
        pytest.skip(
            "PostgreSQL tests need PostGIS in CHANGEDETECT_TEST_PG_URL's database: "
            "have a superuser run CREATE EXTENSION postgis in it"
        )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A reachable PostgreSQL server (or the whole PostgreSQL half is skipped)."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL tests need the driver: pip install 'psycopg[binary]'")
    fixed = os.environ.get("CHANGEDETECT_TEST_PG_URL")
    if fixed:
        _require_postgis(fixed)
        server = PgServer("", 0, "", [], fixed_url=fixed)
        yield server
        return
    server = _local_server()
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg_session_url(pg_server: PgServer) -> str:
    """The migrated session database (tests empty it before use)."""
    if pg_server.fixed_url is not None:
        url = pg_server.fixed_url
        downgrade(url, "base")
    else:
        url = pg_server.create_database("main")
    upgrade(url)
    return url


@pytest.fixture
def pg_url(pg_session_url: str) -> str:
    """The session PostgreSQL database, emptied (ids restart at 1)."""
    db = TrackerDB(pg_session_url)
    with db.engine.begin() as conn:
        # every table the migrations made (later revisions add some), not just this suite's,
        # and none an extension owns (PostGIS's spatial_ref_sys)
        names = conn.scalars(
            text(
                "SELECT quote_ident(c.relname) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname = current_schema() "
                "AND c.relname <> 'alembic_version' AND NOT EXISTS ("
                "SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')"
            )
        ).all()
        conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
    db.close()
    return pg_session_url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is faster)."""
    path = tmp_path_factory.mktemp("tracker-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh migrated SQLite database for this test."""
    path = tmp_path / "tracker.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty migrated database on each engine."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def db(db_url: str) -> Iterator[TrackerDB]:
    """An open tracker database on each engine."""
    tracker = TrackerDB.open(db_url)
    yield tracker
    tracker.close()


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[TrackerDB]:
    """An open tracker database, SQLite only (for tests whose logic is engine-independent)."""
    tracker = TrackerDB.open(sqlite_url)
    yield tracker
    tracker.close()
