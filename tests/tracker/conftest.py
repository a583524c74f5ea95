"""Tracker fixtures: a migrated SQLite file per test, and a PostgreSQL database per session.

PostgreSQL: ``CHANGEDETECT_TEST_PG_URL`` names a database to use (it is reset to an empty
schema); otherwise the local cluster is started if needed (``pg_ctlcluster``, as root) and a
role and databases of our own are created, then dropped at the end. PostgreSQL tests are
skipped, with the reason, only when no server can be had.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from changedetect.tracker import TrackerDB, downgrade, upgrade

ROLE = "changedetect_test"


@dataclass
class PgServer:
    """A PostgreSQL server we may create databases on."""

    host: str
    port: int
    password: str
    admin: list[str]  # command prefix that runs psql as the superuser
    started_by_us: str | None = None
    databases: list[str] = field(default_factory=list)
    fixed_url: str | None = None

    def psql(self, sql: str, database: str = "postgres") -> None:
        command = [*self.admin, "psql", "-q", "-v", "ON_ERROR_STOP=1", "-p", str(self.port)]
        subprocess.run(
            [*command, "-d", database, "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def create_database(self, suffix: str) -> str:
        """A fresh empty database owned by our role; its URL."""
        if self.fixed_url is not None:
            raise RuntimeError("a fixed CHANGEDETECT_TEST_PG_URL offers one database only")
        name = f"{ROLE}_{os.getpid()}_{suffix}"
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        self.databases.append(name)
        return f"postgresql+psycopg://{ROLE}:{self.password}@{self.host}:{self.port}/{name}"


def _local_server() -> PgServer:
    """Start the local cluster if needed and make our role; pytest.skip with the reason."""
    if shutil.which("pg_lsclusters") is None:
        pytest.skip("PostgreSQL tests need a server: no pg_lsclusters (apt-get install postgresql)")
    if os.geteuid() != 0:
        pytest.skip(
            "PostgreSQL tests need root to start the local cluster and create a role, "
            "or CHANGEDETECT_TEST_PG_URL naming a database"
        )
    lines = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout.split()
    if len(lines) < 4:
        pytest.skip("PostgreSQL is installed but has no cluster (pg_createcluster 15 main)")
    version, name, port, status = lines[:4]
    started = None
    if status != "online":
        proc = subprocess.run(
            ["pg_ctlcluster", version, name, "start"], capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot start PostgreSQL {version}/{name}: {proc.stderr.strip()}")
        started = f"{version}/{name}"
    admin = ["runuser", "-u", "postgres", "--"]
    server = PgServer("127.0.0.1", int(port), secrets.token_hex(12), admin, started)
    try:
        server.psql(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
            f"CREATE ROLE {ROLE} LOGIN; END IF; END$$"
        )
        server.psql(f"ALTER ROLE {ROLE} LOGIN PASSWORD '{server.password}'")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create the PostgreSQL test role: {exc.stderr.strip()}")
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A reachable PostgreSQL server (or the whole PostgreSQL half is skipped)."""
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL tests need the driver: pip install 'psycopg[binary]'")
    fixed = os.environ.get("CHANGEDETECT_TEST_PG_URL")
    if fixed:
        server = PgServer("", 0, "", [], fixed_url=fixed)
        yield server
        return
    server = _local_server()
    yield server
    for name in server.databases:
        server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if server.started_by_us:
        version, name = server.started_by_us.split("/")
        subprocess.run(["pg_ctlcluster", version, name, "stop"], capture_output=True, timeout=120)


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
        # every table the migrations made (later revisions add some), not just this suite's
        names = conn.scalars(
            text(
                "SELECT quote_ident(tablename) FROM pg_tables "
                "WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
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
