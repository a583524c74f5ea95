"""Fixtures for every test package: a small grid, the shared data, a folder for screenshots, and
one PostgreSQL server (with PostGIS) per session for the tracker's tests."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from odc.geo.geobox import GeoBox
from sqlalchemy import text

from changedetect.testing.postgres import PgServer, PostgresUnavailable, local_server
from changedetect.tracker.db import make_engine
from tests.factories import DATA, make_grid

#: Where tests leave what a person should look at after a run (browser screenshots); kept, unlike
#: ``tmp_path``, and ignored by git. CI may point it elsewhere to upload it.
ARTEFACTS = Path(
    os.environ.get("CHANGEDETECT_TEST_ARTEFACTS", Path(__file__).resolve().parent / "artefacts")
)


@pytest.fixture
def grid() -> GeoBox:
    return make_grid()


@pytest.fixture
def artefact_dir(request: pytest.FixtureRequest) -> Path:
    """A fresh folder for this test's artefacts, named after the test."""
    folder = ARTEFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    return folder


@pytest.fixture
def shared_data() -> Path:
    if not DATA.exists():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


# --- PostgreSQL: one server per session for the tracker's tests (tests/tracker, tests/tracker_api)


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
