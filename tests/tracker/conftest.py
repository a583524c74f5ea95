"""Tracker fixtures: a migrated SQLite file per test, and a PostgreSQL database per session.

PostgreSQL: ``CHANGEDETECT_TEST_PG_URL`` names a database to use (it is reset to an empty
schema; PostGIS must be enabled in it); otherwise the local cluster is started if needed
(``pg_ctlcluster``, as root) and a role and databases of our own are created, each with PostGIS
enabled by the admin, then dropped at the end. PostgreSQL tests are skipped, with the reason,
only when no server with PostGIS can be had.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from changedetect.testing.postgres import PgServer
from changedetect.tracker import TrackerDB, downgrade, upgrade


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
