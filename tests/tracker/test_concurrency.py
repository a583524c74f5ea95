"""Concurrent ingests of the same nights, by threads and by processes, on SQLite and PostgreSQL.

Four writers ingest night 1 and night 2 (the same sites, shifted, with new clue ids) at the
same moment. Only serialisation in the database keeps them from each reading "no case here"
and opening one case per writer: the result must be one case per site, one detection per clue.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from changedetect.tracker import TrackerDB, ingest
from changedetect.tracker.db import is_retryable
from changedetect.tracker.geometry import to_wkb
from changedetect.tracker.models import Case, Detection

from .helpers import NOW, ingest_worker, rect, two_nights

N_SITES = 12
WORKERS = 4


def assert_one_case_per_site(url: str) -> None:
    db = TrackerDB(url)
    try:
        with db.session() as s:
            n_cases = s.scalar(select(func.count()).select_from(Case))
            rows = s.execute(select(Detection.clue_id, Detection.case_id)).all()
    finally:
        db.close()
    assert n_cases == N_SITES
    assert len(rows) == 2 * N_SITES  # every clue once, however many writers ingested it
    by_case: dict[int, set[str]] = {}
    for clue_id, case_id in rows:
        by_case.setdefault(case_id, set()).add(clue_id)
    for clues in by_case.values():  # each case holds exactly its site's two nights
        sites = {c.split("-", 1)[1] for c in clues}
        assert len(sites) == 1 and len(clues) == 2


def test_concurrent_ingests_threads(db_url):
    night1, night2 = two_nights(N_SITES)
    jobs = [night1, night2, night1, night2]
    barrier = threading.Barrier(WORKERS)
    outcomes: list[object] = []

    def work(clues):
        db = TrackerDB(db_url)  # a client of its own, as separate users would have
        try:
            barrier.wait(timeout=30)
            outcomes.append(ingest(db, clues, now=NOW))
        except Exception as exc:  # collected: a failing thread must fail the test
            outcomes.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=work, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert not errors, errors
    assert len(outcomes) == WORKERS
    assert_one_case_per_site(db_url)
    # every site was created by exactly one writer; the rest updated it or found it done
    assert sum(o.created for o in outcomes) == N_SITES
    assert sum(o.unchanged for o in outcomes) == 2 * N_SITES


def test_concurrent_ingests_processes(db_url):
    night1, night2 = two_nights(N_SITES)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding connections
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=ingest_worker, args=(db_url, clues, barrier, results))
        for clues in [night1, night2, night1, night2]
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(o[0] == "ok" for o in outcomes), outcomes
    assert sum(o[1] for o in outcomes) == N_SITES
    assert sum(o[3] for o in outcomes) == 2 * N_SITES
    assert_one_case_per_site(db_url)


def test_a_conflicting_insert_is_retried_and_then_sees_the_winner(db):
    """The retry path: the first attempt collides on the clue_id key, the retry finds it done."""
    night1, _ = two_nights(1)
    ingest(db, night1, now=NOW)
    attempts = Counter()

    def work(session):
        attempts["n"] += 1
        if attempts["n"] == 1:
            # what a racing writer would hit: the clue is already stored
            case_id = session.scalar(select(Case.id))
            session.add(
                Detection(
                    case_id=case_id,
                    clue_id="n1-site0",
                    detected_on=NOW.date(),
                    area_m2=1.0,
                    confidence=0.5,
                    change_type="other",
                    # a real footprint: PostGIS parses it before the key can collide
                    geometry=to_wkb(rect(0, 0, 60)),
                    properties={},
                    suppressed=False,
                    ingested_at=NOW,
                )
            )
            session.flush()
        return session.scalar(select(func.count()).select_from(Detection))

    assert db.run_write(work) == 1
    assert attempts["n"] == 2


def test_retryable_errors_are_told_apart(db):
    with pytest.raises(IntegrityError) as info, db.write() as session:
        session.execute(text("INSERT INTO known_sites (id) VALUES (NULL)"))
    assert not is_retryable(info.value)  # a NOT NULL violation is a bug, not a race


def test_sqlite_writers_wait_for_the_write_lock(sqlite_url):
    """BEGIN IMMEDIATE: a second writer blocks until the first commits, then sees its rows."""
    night1, _ = two_nights(2)
    holder, waiter = TrackerDB(sqlite_url), TrackerDB(sqlite_url)
    released = threading.Event()
    finished: list[float] = []

    def hold():
        with holder.write() as session:
            ingest(session, night1, now=NOW)
            time.sleep(0.5)
            released.set()

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.1)
    report = ingest(waiter, night1, now=NOW)
    finished.append(released.is_set())
    t.join()
    holder.close()
    waiter.close()
    assert finished == [True]  # it could only finish after the holder committed
    assert report.unchanged == 2 and report.created == 0
