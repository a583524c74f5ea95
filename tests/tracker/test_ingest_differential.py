"""The chunked ingest against the per-clue reference it replaced: randomized nights in, the same
outcome for every clue and the same ledger rows out (ids, footprints' WKB, areas, boxes,
priorities, tags, detections and events).

Each scenario is a few nights of clues crowded on a small area (clues overlapping cases of
earlier nights, each other within a chunk and across chunk borders, backfilled older dates,
identical copies, re-sent clues), confirmed / probable / dropped alerts, permits and a
restoration site, and cases moved between nights to verifying, violation, rectifying, closed,
false alarm and compliant, so that clues grow, suppress over, regrow over and relapse over them.
The same scenario runs on an empty ledger through each implementation; the transitions between
nights pick cases by id from the ledger as it stands, so both ledgers stay comparable as long
as they agree.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from sqlalchemy import text

from changedetect.testing.reference_ingest import reference_ingest
from changedetect.tracker import SiteRecord, TrackerDB, TrackerSettings, import_sites, ingest
from changedetect.tracker import transition as move
from tests.factories import NOW, collection, feature, rect

TABLES = ("cases", "detections", "case_events", "case_tags", "known_sites")
#: Where a verdict may lead, and the walks through the lifecycle a case takes between nights.
WALKS = (
    ("verifying",),
    ("verifying", "false_alarm"),
    ("verifying", "compliant"),
    ("verifying", "violation"),
    ("verifying", "violation", "rectifying"),
    ("verifying", "violation", "rectifying", "closed"),
)
NIGHTS = 4


@pytest.fixture(autouse=True)
def no_handoff_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """No writer waits here: chunks of one clue need not pause for one."""
    monkeypatch.setattr("changedetect.tracker.db.SQLITE_HANDOFF_S", 0.0)


def scenario(seed: int) -> dict[str, Any]:
    """A seeded scenario: the nights' clues, the sites, the settings and the chunk sizes."""
    rng = random.Random(seed)
    settings = TrackerSettings(
        issue_probable=rng.random() < 0.3,
        regrowth_min_added_m2=rng.choice([1000.0, 300.0]),
    )
    start = dt.date(2025, 6, 1)
    nights = []
    sent: list[dict[str, Any]] = []
    for night in range(NIGHTS):
        day = start + dt.timedelta(days=10 * night)
        features = []
        for i in range(rng.randint(25, 60)):
            # a 1 km square on a 40 m grid: clues of a night overlap each other and old cases
            x, y = rng.randrange(0, 25) * 40.0, rng.randrange(0, 25) * 40.0
            w, h = rng.uniform(20, 160), rng.uniform(20, 160)
            on = day - dt.timedelta(days=rng.choice([0, 0, 0, 3, 12]))  # some backfilled
            props: dict[str, Any] = {
                "priority": rng.choice(["urgent", "high", "normal", "low"]),
                "confidence": round(rng.uniform(0.3, 1.0), 3),
                "confidence_level": rng.choice(["high", "medium", None]),
                "change_type": rng.choice(["quarry", "construction", "vegetation_loss"]),
                "county": rng.choice(["Zhouzhi", "Huyi", None]),
                "zone": rng.choice(["Qinling red line core", None]),
                "aoi": rng.choice(["qinling", None]),
                "alert_status": rng.choice([None, "confirmed", "confirmed", "probable", "dropped"]),
            }
            features.append(
                feature(f"s{seed}-n{night}-c{i:03d}", rect(x, y, w, h), str(on), **props)
            )
        if features and rng.random() < 0.5:
            features.append(dict(rng.choice(features)))  # an identical copy: stored once
        if sent and rng.random() < 0.5:
            features.extend(rng.sample(sent, min(3, len(sent))))  # re-sent from earlier nights
        rng.shuffle(features)
        sent.extend(features)
        nights.append(
            {
                "clues": collection(features),
                "now": NOW + dt.timedelta(days=10 * night),
                "chunk": rng.choice([1, 4, 9, 250]),
            }
        )
    sites = [
        SiteRecord("quarry A", "permit", rect(0, 0, 400, 300), None, None),
        SiteRecord("quarry B", "permit", rect(400, 0, 300, 300), start, start + dt.timedelta(15)),
        SiteRecord("wetland", "restoration", rect(200, 500, 500, 400), start, None),
    ]
    return {"seed": seed, "settings": settings, "nights": nights, "sites": sites}


def run(db: TrackerDB, plan: dict[str, Any], ingest_night) -> list[Any]:
    """Play the scenario on ``db`` with ``ingest_night``; every clue's outcome, night by night."""
    rng = random.Random(plan["seed"] * 7919)  # the same moves on both ledgers
    import_sites(db, plan["sites"], now=NOW, settings=plan["settings"])
    outcomes = []
    for night in plan["nights"]:
        report = ingest_night(
            db,
            night["clues"],
            now=night["now"],
            settings=plan["settings"],
            chunk_clues=night["chunk"],
        )
        outcomes.append(report.outcomes)
        with db.engine.connect() as conn:
            cases = conn.execute(text("SELECT id, state FROM cases ORDER BY id")).all()
        later = night["now"] + dt.timedelta(hours=1)
        for case_id, state in cases:
            if state != "issued" or rng.random() < 0.4:
                continue
            for step in rng.choice(WALKS):
                move(db, case_id, step, actor="county", now=later)
    return outcomes


def ledger(db: TrackerDB) -> dict[str, list[tuple]]:
    """Every row of the tables ingest writes, in key order."""
    with db.engine.connect() as conn:
        return {
            table: [
                tuple(row)
                for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))  # noqa: S608
            ]
            for table in TABLES
        }


def empty(db: TrackerDB) -> None:
    """Back to an empty ledger whose ids start at 1 again."""
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for table in ("case_tags", "case_events", "detections", "cases", "known_sites"):
                conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608


def compare(db: TrackerDB, seed: int) -> None:
    plan = scenario(seed)
    expected_outcomes = run(db, plan, reference_ingest)
    expected = ledger(db)
    empty(db)
    outcomes = run(db, plan, ingest)
    got = ledger(db)
    assert sum(len(o) for o in outcomes) > 100
    for night, (want, have) in enumerate(zip(expected_outcomes, outcomes, strict=True)):
        assert have == want, f"seed {seed} night {night}"
    for table in TABLES:
        assert got[table] == expected[table], f"seed {seed}: {table} differ"


@pytest.mark.parametrize("seed", range(8))
def test_chunked_ingest_matches_the_per_clue_reference_on_sqlite(sqlite_db, seed):
    compare(sqlite_db, seed)


@pytest.mark.parametrize("seed", range(100, 103))
def test_chunked_ingest_matches_the_per_clue_reference(db, seed):
    compare(db, seed)


def test_the_scenarios_reach_every_outcome(sqlite_db):
    """The scenarios are worth comparing on: every action and both kinds of link happen."""
    actions: set[str] = set()
    notes: list[str] = []
    for seed in range(8):
        for night in run(sqlite_db, scenario(seed), ingest):
            actions.update(o.action for o in night)
            notes.extend(o.note for o in night)
        empty(sqlite_db)
    assert actions == {"created", "updated", "suppressed", "unchanged", "held"}
    assert any("grew from" in n for n in notes)
    assert any("disturbed again" in n for n in notes)
