"""API fixtures: a ledger seeded through the core's ingest from a real clues.geojson with chips,
users of every role with real tokens, and the app built by ``create_app``.

Seeding (migrate, write chips, ingest, create users) happens once per session into a template
SQLite file; each test gets its own copy, so tests may change cases freely.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from changedetect.tracker import TrackerDB, ingest, upgrade
from changedetect.tracker.api import create_app
from changedetect.tracker.auth import add_user, create_token, revoke_tokens
from tests.factories import (
    API_NOW,
    NO_CHANGE_CHIP,
    NOW,
    SITES,
    USERS,
    feature,
    rect,
    write_chip,
    write_night,
)


@dataclass
class Seeded:
    """The template ledger: where it is, its case ids by site key, and the tokens by role."""

    template: Path
    data_dir: Path
    case_ids: dict[str, int]
    tokens: dict[str, str]


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """Migrate, ingest one night of seven clues (two counties) with chips, add users."""
    root = tmp_path_factory.mktemp("tracker-api")
    template = root / "template.db"
    url = f"sqlite:///{template}"
    upgrade(url)
    features = [
        feature(
            f"clue-{key}",
            rect(x, 0, 80),
            night,
            county=county,
            change_type=kind,
            zone_tier=tier,
            priority=priority,
            **({} if key in NO_CHANGE_CHIP else {"chip_change": f"chips/clue-{key}_change.png"}),
        )
        for key, x, night, county, kind, tier, priority in SITES
    ]
    # evidence that tries to leave its folder: must never be served
    features.append(
        feature(
            "clue-evil",
            rect(9000, 0, 80),
            "2025-06-23",
            county="Zhouzhi",
            chip_before="../../../../../../etc/passwd",
            chip_after="chips/link_after.png",
            chip_change="../outside.png",  # a real image, beside the folder but not in it
        )
    )
    night = write_night(root / "night1", features)
    secret = root / "outside.png"
    write_chip(secret, (255, 0, 0))
    (root / "night1/chips/link_after.png").symlink_to(secret)

    tokens: dict[str, str] = {}
    with TrackerDB.open(url) as db:
        report = ingest(db, night, now=NOW)
        ids = {o.clue_id.removeprefix("clue-"): o.case_id for o in report.outcomes}
        for key, (name, role, county) in USERS.items():
            add_user(db, name, role, county=county, now=NOW)
            tokens[key] = create_token(db, name, label="tests", now=NOW)
        revoke_tokens(db, "old.analyst", now=NOW)
    return Seeded(template, root, ids, tokens)  # type: ignore[arg-type]


@pytest.fixture
def db_url(seeded: Seeded, tmp_path: Path) -> str:
    """A private copy of the seeded ledger."""
    path = tmp_path / "tracker.db"
    shutil.copyfile(seeded.template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def db(db_url: str) -> Iterator[TrackerDB]:
    """The test's ledger, open (for asserting what the API stored)."""
    tracker = TrackerDB.open(db_url)
    yield tracker
    tracker.close()


@pytest.fixture
def client(db: TrackerDB) -> Iterator[TestClient]:
    """The real app over the test's ledger, with the clock fixed at ``API_NOW``."""
    with TestClient(create_app(db, now=API_NOW)) as c:
        yield c


@pytest.fixture
def auth(seeded: Seeded) -> dict[str, dict[str, str]]:
    """Authorization headers by role key."""
    return {k: {"Authorization": f"Bearer {t}"} for k, t in seeded.tokens.items()}


@pytest.fixture
def ids(seeded: Seeded) -> dict[str, int]:
    """Case ids by site key."""
    return seeded.case_ids
