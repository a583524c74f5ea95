"""Ingest in committed chunks: other writers get the lock between chunks, and a stopped ingest
run again ends exactly where one clean run would, nothing lost or stored twice."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import delete, func, select

from changedetect.tracker import TrackerDB, ingest, transition
from changedetect.tracker.db import CASE_WRITE_LOCK_KEY
from changedetect.tracker.errors import DatabaseBusyError
from changedetect.tracker.models import Case, CaseEvent, CaseTag, Detection
from tests.factories import NOW, collection, feature, rect

SITES = 8
NIGHTS = ("2025-06-03", "2025-06-13", "2025-06-23")


def three_nights():
    """Each site seen on three nights, growing a little: later nights update earlier cases."""
    return collection(
        [
            feature(f"n{n}-s{i}", rect((i % 4) * 600.0, (i // 4) * 600.0, 70 + 10 * n), day)
            for n, day in enumerate(NIGHTS)
            for i in range(SITES)
        ]
    )


def ledger(db: TrackerDB) -> list[tuple]:
    """The cases as people see them, without row ids (they differ between two fillings)."""
    with db.session() as s:
        clues_of: dict[int, tuple[str, ...]] = {}
        for case_id, clue_id in s.execute(select(Detection.case_id, Detection.clue_id)):
            clues_of[case_id] = tuple(sorted((*clues_of.get(case_id, ()), clue_id)))
        return sorted(
            (
                clues_of[c.id],
                c.state,
                c.priority,
                c.change_type,
                c.geom_first,
                c.geom_latest,
                c.geom_union,
                round(c.area_m2, 6),
                c.first_detected_on,
                c.last_detected_on,
            )
            for c in s.scalars(select(Case))
        )


def empty(db: TrackerDB) -> None:
    with db.write() as s:
        for model in (CaseTag, CaseEvent, Detection, Case):
            s.execute(delete(model))


def n_detections(db: TrackerDB) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Detection))


def test_a_stopped_ingest_run_again_gives_the_cases_of_one_clean_run(db):
    night = three_nights()
    clean = ingest(db, night, now=NOW, chunk_clues=5)
    assert (clean.created, clean.updated) == (SITES, 2 * SITES)
    expected = ledger(db)
    assert len(expected) == SITES
    empty(db)

    chunks_seen = []

    def crash_in_the_third_chunk(session, part):
        chunks_seen.append(len(part.outcomes))
        if len(chunks_seen) == 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        ingest(db, night, now=NOW, chunk_clues=5, on_chunk=crash_in_the_third_chunk)
    assert chunks_seen == [5, 5, 5]
    assert n_detections(db) == 10  # two chunks committed, the third rolled back whole

    rerun = ingest(db, night, now=NOW, chunk_clues=5)
    assert rerun.unchanged == 10
    assert rerun.created + rerun.updated == 3 * SITES - 10
    assert n_detections(db) == 3 * SITES
    assert ledger(db) == expected


def test_each_chunk_commits_before_the_next_begins(sqlite_url):
    """A reader sees the first chunk's cases while the ingest is still on later chunks."""
    db = TrackerDB(sqlite_url)
    seen_mid_ingest = []

    def look(session, part):
        with db.session() as reader:  # another connection: sees only what was committed
            seen_mid_ingest.append(reader.scalar(select(func.count()).select_from(Detection)))

    try:
        ingest(db, three_nights(), now=NOW, chunk_clues=10, on_chunk=look)
    finally:
        db.close()
    assert seen_mid_ingest == [0, 10, 20]


def hold_case_write_lock(db: TrackerDB, held: threading.Event, release: threading.Event):
    """Another writer holding the lock ingests take (SQLite: the write lock; PostgreSQL: the
    case-write advisory lock), until told to let go."""
    from sqlalchemy import text

    with db.write() as s:
        s.connection()  # begins the transaction: on SQLite, BEGIN IMMEDIATE takes the lock
        if db.dialect == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CASE_WRITE_LOCK_KEY})
        held.set()
        release.wait(timeout=60)


def test_a_bounded_write_gives_up_on_a_held_lock_with_database_busy(db):
    holder = TrackerDB(db.url)
    held, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=hold_case_write_lock, args=(holder, held, release))
    thread.start()
    bounded = db.with_busy_wait(1.0)
    try:
        assert held.wait(timeout=30)
        started = time.monotonic()
        with pytest.raises(DatabaseBusyError, match="is busy") as info:
            ingest(bounded, collection([feature("b1", rect(0, 0, 60))]), now=NOW)
        waited = time.monotonic() - started
        assert 0.9 <= waited < 4.0
        assert info.value.retry_after_s == pytest.approx(1.0)
    finally:
        release.set()
        thread.join(timeout=30)
        holder.close()
    # the lock released, the same write goes through
    assert ingest(bounded, collection([feature("b1", rect(0, 0, 60))]), now=NOW).created == 1


def test_a_transition_gets_through_while_a_long_ingest_runs(db):
    (first,) = ingest(db, collection([feature("t0", rect(0, 0, 60))]), now=NOW).outcomes
    many = collection(
        [feature(f"m{i}", rect(5000 + (i % 20) * 300.0, (i // 20) * 300.0, 60)) for i in range(240)]
    )
    worker = TrackerDB(db.url)
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ingest(worker, many, now=NOW, chunk_clues=12)
        except BaseException as exc:  # handed to the test below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while n_detections(db) < 13 and time.monotonic() < deadline:
            time.sleep(0.01)  # the first chunk is in: the ingest is under way
        moved = transition(db.with_busy_wait(5.0), first.case_id, "verifying", actor="county")
        ingest_still_running = not done.is_set()
    finally:
        thread.join(timeout=120)
        worker.close()
    assert not errors, errors
    assert moved.state == "verifying"
    assert ingest_still_running  # it went in between two chunks, not after the last
    assert n_detections(db) == 241


def count_statements(db: TrackerDB) -> list[str]:
    """Every statement sent to the database from now on (an executemany counts once)."""
    from sqlalchemy import event

    sent: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    return sent


def test_a_chunk_costs_a_few_statements_however_many_clues_it_holds(db):
    """Clue by clue, a chunk cost about seven statements a clue; now a few per table."""
    sites = 200
    first = collection(
        [feature(f"a{i}", rect((i % 20) * 300.0, (i // 20) * 300.0, 60)) for i in range(sites)]
    )
    again = collection(
        [
            feature(f"b{i}", rect((i % 20) * 300.0 + 5, (i // 20) * 300.0, 60), "2025-07-03")
            for i in range(sites)
        ]
    )
    sent = count_statements(db)
    assert ingest(db, first, now=NOW, chunk_clues=sites).created == sites
    opened = len(sent)
    sent.clear()
    assert ingest(db, again, now=NOW, chunk_clues=sites).updated == sites
    assert opened < 20, sent
    assert len(sent) < 20, sent


@pytest.mark.parametrize(
    ("clues", "seconds", "size"),
    [
        (250, 0.1, 1000),  # fast: grows, but at most fourfold a chunk
        (1000, 0.5, 2000),  # about CHUNK_SECONDS of work at the pace measured
        (5000, 0.5, 5000),  # never more than MAX_CHUNK_CLUES
        (250, 10.0, 50),  # slow (a lock waited for): never fewer than MIN_CHUNK_CLUES
    ],
)
def test_chunks_are_sized_by_the_pace_of_the_last_one(clues, seconds, size):
    from changedetect.tracker.ingest import paced_chunk_size

    assert paced_chunk_size(clues, seconds) == size
