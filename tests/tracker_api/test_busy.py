"""The API while another writer holds the database: a short wait, then 503 with Retry-After,
never a request hanging for minutes; and a long ingest lets a transition in between chunks."""

from __future__ import annotations

import sqlite3
import threading
import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from changedetect.tracker import TrackerDB, ingest
from changedetect.tracker.api import create_app
from changedetect.tracker.models import Detection
from tests.factories import API_NOW, NOW, collection, feature, rect


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def test_a_write_while_another_writer_holds_the_lock_answers_503_with_retry_after(
    db, db_url, auth, ids
):
    holder = sqlite3.connect(sqlite_path(db_url), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write transaction, left open
    try:
        with TestClient(create_app(db, now=API_NOW, busy_wait_s=1.0)) as client:
            assert client.get(f"/cases/{ids['z1']}", headers=auth["analyst"]).status_code == 200
            started = time.monotonic()
            r = client.post(
                f"/cases/{ids['z1']}/transitions",
                json={"to": "verifying"},
                headers=auth["analyst"],
            )
            waited = time.monotonic() - started
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "1"
            assert "busy" in r.json()["detail"]
            assert 0.9 <= waited < 4.0  # the bound, not the 60 s busy timeout × retries
            holder.execute("ROLLBACK")
            r = client.post(
                f"/cases/{ids['z1']}/transitions",
                json={"to": "verifying"},
                headers=auth["analyst"],
            )
            assert r.status_code == 200 and r.json()["state"] == "verifying"
    finally:
        holder.close()


def test_a_transition_goes_in_between_the_chunks_of_a_long_ingest(db, db_url, auth, ids):
    night = collection(
        [
            feature(f"late-{i}", rect(20000 + (i % 20) * 300.0, 3000 + (i // 20) * 300.0, 60))
            for i in range(240)
        ]
    )
    with db.session() as s:
        before = s.scalar(select(func.count()).select_from(Detection))
    worker = TrackerDB(db_url)  # the nightly job: another connection, unbounded waits
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ingest(worker, night, now=NOW, chunk_clues=12)
        except BaseException as exc:  # handed to the test below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    try:
        with TestClient(create_app(db, now=API_NOW, busy_wait_s=5.0)) as client:
            thread.start()
            deadline = time.monotonic() + 60
            with db.session() as s:
                while time.monotonic() < deadline:  # wait until the first chunk is in
                    if s.scalar(select(func.count()).select_from(Detection)) > before:
                        break
                    s.rollback()
                    time.sleep(0.01)
            r = client.post(
                f"/cases/{ids['z2']}/transitions",
                json={"to": "verifying"},
                headers=auth["analyst"],
            )
            ingest_still_running = not done.is_set()
    finally:
        thread.join(timeout=120)
        worker.close()
    assert not errors, errors
    assert r.status_code == 200, r.text
    assert ingest_still_running  # answered between two chunks, not after the whole night
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Detection)) == before + 240
