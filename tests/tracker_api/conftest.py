"""API fixtures: a ledger seeded through the core's ingest from a real clues.geojson with chips,
users of every role with real tokens, and the app built by ``create_app``.

Seeding (migrate, write chips, ingest, create users) happens once per session into a template
SQLite file; each test gets its own copy, so tests may change cases freely.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from changedetect.tracker import TrackerDB, ingest, upgrade
from changedetect.tracker.api import create_app
from changedetect.tracker.auth import add_user, create_token, revoke_tokens
from tests.tracker.helpers import NOW, collection, feature, rect

#: The API's clock: the day after the clues were ingested.
API_NOW = NOW + dt.timedelta(days=1)

#: (key, x metres east of the origin, night, county, change type, tier, priority)
SITES = [
    ("z1", 0, "2025-06-03", "Zhouzhi", "quarry", "red_line_core", "urgent"),
    ("z2", 500, "2025-06-13", "Zhouzhi", "construction", "red_line_core", "high"),
    ("z3", 1000, "2025-06-23", "Zhouzhi", "vegetation_loss", "general_control", "normal"),
    ("z4", 1500, "2025-06-23", "Zhouzhi", "quarry", "general_control", "low"),
    ("z5", 2000, "2025-06-28", "Zhouzhi", "construction", "general_control", "normal"),
    ("h1", 5000, "2025-06-23", "Huyi", "quarry", "red_line_core", "high"),
    ("h2", 5500, "2025-06-28", "Huyi", "vegetation_loss", "general_control", "normal"),
]
COUNTIES = {key: county for key, _, _, county, *_ in SITES}

USERS = {
    # token key: (user name, role, county)
    "analyst": ("ana.lyst", "analyst", None),
    "officer": ("zhou.officer", "officer", "Zhouzhi"),
    "huyi": ("hu.officer", "officer", "Huyi"),
    "viewer": ("vi.ewer", "viewer", None),
    "revoked": ("old.analyst", "analyst", None),
}


def write_chip(path: Path, colour: tuple[int, int, int]) -> None:
    """A 64×64 chip with a yellow patch outline, as the pipeline draws it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (64, 64), colour)
    ImageDraw.Draw(img).rectangle((20, 20, 43, 43), outline=(255, 230, 0), width=2)
    img.save(path)


#: Sites whose clue comes from a run before the NDVI-change chip: before/after chips only.
NO_CHANGE_CHIP = {"z1"}
#: The NDVI-change chips' fixture size: wider than the before/after ones, to tell them apart.
CHANGE_CHIP_SIZE = (80, 64)


def write_night(folder: Path, features: list[dict]) -> Path:
    """A run's output folder: clues.geojson plus chips/<clue>_{before,after,change}.png (each
    that its clue names)."""
    for f in features:
        clue = f["properties"]["clue_id"]
        if f["properties"].get("chip_before", "").startswith("chips/"):
            write_chip(folder / f"chips/{clue}_before.png", (34, 90, 40))
            write_chip(folder / f"chips/{clue}_after.png", (170, 120, 90))
        if (f["properties"].get("chip_change") or "").startswith("chips/"):
            change = folder / f"chips/{clue}_change.png"
            Image.new("RGB", CHANGE_CHIP_SIZE, (120, 40, 10)).save(change)
    path = folder / "clues.geojson"
    path.write_text(json.dumps(collection(features)), encoding="utf-8")
    return path


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(app: FastAPI) -> Iterator[str]:
    """``app`` on a real socket (uvicorn in a thread) for a browser; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 15 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
