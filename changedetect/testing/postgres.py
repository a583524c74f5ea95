"""A PostgreSQL server to test and measure the tracker on: the local Debian cluster, started if
needed, with a role and databases of our own (dropped again by :meth:`PgServer.close`).

The tracker's schema needs PostGIS on PostgreSQL; our role may not create the extension (that
takes a superuser), so each database gets it from the admin when it is made, as a DBA would.

Used by the tracker's tests (which skip, with the reason, when no server can be had) and by
``bench/tracker_load.py``. It needs root (to start the cluster and run ``psql`` as ``postgres``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

ROLE = "changedetect_test"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be had here; the message says why and what would help."""


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

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser; its output, unaligned, without headers."""
        command = [*self.admin, "psql", "-qAt", "-v", "ON_ERROR_STOP=1", "-p", str(self.port)]
        return subprocess.run(
            [*command, "-d", database, "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()

    def create_database(self, suffix: str, *, postgis: bool = True) -> str:
        """A fresh empty database owned by our role, with PostGIS enabled (unless not asked
        for: a DBA has not been by yet); its URL."""
        if self.fixed_url is not None:
            raise RuntimeError("a fixed CHANGEDETECT_TEST_PG_URL offers one database only")
        name = f"{ROLE}_{os.getpid()}_{suffix}"
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        self.databases.append(name)
        if postgis:
            self.psql("CREATE EXTENSION IF NOT EXISTS postgis", database=name)
        return self.url(name)

    def url(self, database: str) -> str:
        """Our role's URL for ``database``."""
        return f"postgresql+psycopg://{ROLE}:{self.password}@{self.host}:{self.port}/{database}"

    def close(self) -> None:
        """Drop our databases, and stop the cluster if we started it."""
        for name in self.databases:
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.clear()
        if self.started_by_us:
            version, name = self.started_by_us.split("/")
            subprocess.run(
                ["pg_ctlcluster", version, name, "stop"], capture_output=True, timeout=120
            )
            self.started_by_us = None


def local_server() -> PgServer:
    """Start the local cluster if needed and make our role (PostgresUnavailable if we cannot)."""
    if shutil.which("pg_lsclusters") is None:
        raise PostgresUnavailable("no pg_lsclusters here (apt-get install postgresql)")
    if os.geteuid() != 0:
        raise PostgresUnavailable(
            "starting the local cluster and creating a role needs root "
            "(or set CHANGEDETECT_TEST_PG_URL to a database to use)"
        )
    lines = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout.split()
    if len(lines) < 4:
        raise PostgresUnavailable("PostgreSQL is installed but has no cluster (pg_createcluster)")
    version, name, port, status = lines[:4]
    started = None
    if status != "online":
        proc = subprocess.run(
            ["pg_ctlcluster", version, name, "start"], capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            raise PostgresUnavailable(f"cannot start PostgreSQL {version}/{name}: {proc.stderr}")
        started = f"{version}/{name}"
    admin = ["runuser", "-u", "postgres", "--"]
    server = PgServer("127.0.0.1", int(port), secrets.token_hex(12), admin, started)
    try:
        postgis = server.psql("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
    except subprocess.CalledProcessError as exc:
        raise PostgresUnavailable(
            f"cannot query PostgreSQL {version}/{name}: {exc.stderr}"
        ) from None
    if not postgis:
        server.close()
        raise PostgresUnavailable(
            f"PostgreSQL {version} has no PostGIS, which the tracker's schema needs there "
            f"(apt-get install postgresql-{version}-postgis-3)"
        )
    try:
        server.psql(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
            f"CREATE ROLE {ROLE} LOGIN; END IF; END$$"
        )
        server.psql(f"ALTER ROLE {ROLE} LOGIN PASSWORD '{server.password}'")
    except subprocess.CalledProcessError as exc:
        raise PostgresUnavailable(f"cannot create the role: {exc.stderr.strip()}") from None
    return server
