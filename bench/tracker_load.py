"""The case tracker under load: ingest throughput and API latency on SQLite and PostgreSQL.

    python bench/tracker_load.py                       # both engines, 10,000 and 1,000,000 cases
    python bench/tracker_load.py --engines sqlite --cases 10000 --seconds 5

Per engine, in one run: a fresh database; a night of ``--ingest`` new clues ingested (each opens a
case: creation) and a second night at the same sites a few metres off (each updates its case:
matching), in clues per second; then the ledger is grown to each ``--cases`` size by copying the
ingested cases with their detections and events in SQL (the ingest figure is measured on the first
night; copying only makes the big ledger quickly), the API is started with uvicorn in its own
process on loopback, and ``--clients`` keep-alive connections ask for ``--seconds`` each:

- ``health``: ``GET /health`` (one ``SELECT 1``): the floor, what the server and framework cost;
- ``list``: ``GET /cases?limit=50&county=…`` (the review page's first request);
- ``detail``: ``GET /cases/{random id}`` (a case with its detections and events).

The API runs with ``--workers`` processes (default: one per core, as a deployment would).

Requests per second, p50 and p95 latency, and each endpoint's rate as a ratio to the health floor
of the same run. The load comes from this process (plain HTTP/1.1 on asyncio streams, cheaper than
an HTTP library) on the same two cores as the server, so the figures are for this machine's whole
budget. PostgreSQL needs root to start the local cluster (``changedetect/testing/postgres.py``) or
``--pg-url``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles

from sqlalchemy import func, select, text

from changedetect.testing.ledger import COUNTIES, synthetic_night
from changedetect.testing.postgres import PgServer, PostgresUnavailable, local_server
from changedetect.tracker import TrackerDB, ingest, upgrade
from changedetect.tracker.auth import add_user, create_token
from changedetect.tracker.models import Case

# ingested "today", so the server (on the real clock) sees open cases within their deadline
NOW = dt.datetime.now(dt.UTC)
LATER = NOW + dt.timedelta(hours=1)
#: A grown ledger is mostly history: of the copies, one in OPEN_EVERY stays open and one in
#: ESCALATED_EVERY carries the overdue flag, the rest are closed.
OPEN_EVERY = 20
ESCALATED_EVERY = 400


# --- ledger -----------------------------------------------------------------------------------


def measure_ingest(db: TrackerDB, count: int) -> tuple[float, float]:
    """Clues per second for a night of new sites, then for a night that updates them."""
    rates = []
    for night, (day, shift, prefix, now) in enumerate(
        (("2025-06-23", 0.0, "n1", NOW), ("2025-07-03", 5.0, "n2", LATER))
    ):
        clues = synthetic_night(count, day=day, shift_m=shift, prefix=prefix)
        start = time.perf_counter()
        report = ingest(db, clues, now=now)
        rates.append(count / (time.perf_counter() - start))
        expected = report.created if night == 0 else report.updated
        if expected != count:
            raise RuntimeError(f"night {night + 1}: {expected} of {count} clues did what was meant")
    return rates[0], rates[1]


def _columns(db: TrackerDB, table: str) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(text(f"SELECT * FROM {table} WHERE 1 = 0")).keys())


def grow_ledger(db: TrackerDB, target: int) -> int:
    """Copy the ledger's cases (with detections and events) until it holds ``target`` cases,
    most of the copies closed (a big ledger is mostly history), a few escalated."""
    case_cols = _columns(db, "cases")
    det_cols = _columns(db, "detections")
    event_cols = _columns(db, "case_events")

    def copy(table: str, columns: list[str], shift: dict[str, str], where: str) -> str:
        chosen = ", ".join(shift.get(c, c) for c in columns)
        return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {chosen} FROM {table} {where}"

    with db.engine.begin() as conn:
        total = conn.scalar(select(func.count()).select_from(Case))
        while total < target:
            top = conn.scalar(select(func.max(Case.id)))
            take = min(total, target - total)
            det_top = conn.scalar(text("SELECT max(id) FROM detections"))
            event_top = conn.scalar(text("SELECT max(id) FROM case_events"))
            params = {"off": top, "take": take, "tag": f"-c{top}"}
            open_copy = f"(id + :off) % {OPEN_EVERY} = 0"
            history = {
                "id": "id + :off",
                "state": f"CASE WHEN {open_copy} THEN state ELSE 'closed' END",
                "verified_at": f"CASE WHEN {open_copy} THEN verified_at ELSE updated_at END",
                "closed_at": f"CASE WHEN {open_copy} THEN closed_at ELSE updated_at END",
                "escalated": f"((id + :off) % {ESCALATED_EVERY} = 0)",
            }
            conn.execute(
                text(copy("cases", case_cols, history, "WHERE id <= :take") + " ORDER BY id"),
                params,
            )
            conn.execute(
                text(
                    copy(
                        "detections",
                        det_cols,
                        {
                            "id": f"id + {det_top}",
                            "case_id": "case_id + :off",
                            "clue_id": "clue_id || :tag",
                        },
                        "WHERE case_id <= :take",
                    )
                ),
                params,
            )
            conn.execute(
                text(
                    copy(
                        "case_events",
                        event_cols,
                        {"id": f"id + {event_top}", "case_id": "case_id + :off"},
                        "WHERE case_id <= :take",
                    )
                ),
                params,
            )
            total += take
        if db.engine.dialect.name == "postgresql":
            for table in ("cases", "detections", "case_events"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    if db.engine.dialect.name == "postgresql":
        # what autovacuum does to a live ledger: statistics, and the visibility map that lets a
        # count read an index alone
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE cases, detections, case_events"))
    else:
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))  # the planner sees the grown tables
    return total


# --- load -------------------------------------------------------------------------------------


async def _client(
    port: int, paths, token: str, deadline: float, latencies: list[float], failures: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            path = paths()
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
            start = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != b"200":
                failures.append(f"{path}: {status.decode()}")
    finally:
        writer.close()


def load(port: int, token: str, paths, clients: int, seconds: float) -> dict[str, float]:
    """Requests per second and p50/p95 latency (ms) of ``clients`` connections for ``seconds``."""
    latencies: list[float] = []
    failures: list[str] = []

    async def run() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(
            *(_client(port, paths, token, deadline, latencies, failures) for _ in range(clients))
        )

    start = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[:3]}")
    cuts = quantiles(latencies, n=20)
    return {
        "rps": len(latencies) / elapsed,
        "p50": 1000 * quantiles(latencies, n=2)[0],
        "p95": 1000 * cuts[18],
        "n": len(latencies),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(url: str, workers: int) -> tuple[subprocess.Popen, int]:
    """The tracker API in its own processes (the URL through the environment, never argv)."""
    port = _free_port()
    env = {**os.environ, "CHANGEDETECT_DB": url}
    command = [sys.executable, "-m", "changedetect.tracker", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--photo-dir", tempfile.mkdtemp(prefix="photos-")]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the API did not start: {server.stderr.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, port
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the API did not listen within 60 s")


# --- run --------------------------------------------------------------------------------------


def bench_engine(name: str, url: str, args: argparse.Namespace) -> list[str]:
    upgrade(url)
    lines = []
    with TrackerDB.open(url) as db:
        created, updated = measure_ingest(db, args.ingest)
        lines.append(
            f"| {name} | ingest {args.ingest:,} clues | new sites {created:,.0f} clues/s | "
            f"same sites again {updated:,.0f} clues/s |"
        )
        print(lines[-1], flush=True)
        add_user(db, "bench.analyst", "analyst", now=NOW)
        token = create_token(db, "bench.analyst", now=NOW)
        for size in args.cases:
            start = time.perf_counter()
            total = grow_ledger(db, size)
            grown = time.perf_counter() - start
            server, port = serve(url, args.workers)
            try:
                rng = random.Random(1)
                endpoints = {
                    "health": lambda: "/health",
                    "list": lambda r=rng: f"/cases?limit=50&county={r.choice(COUNTIES)}",
                    "detail": lambda r=rng, t=total: f"/cases/{r.randint(1, t)}",
                }
                load(port, token, endpoints["health"], args.clients, 1.0)  # warm-up
                figures = {
                    key: load(port, token, paths, args.clients, args.seconds)
                    for key, paths in endpoints.items()
                }
            finally:
                server.terminate()
                server.wait(timeout=30)
            floor = figures["health"]["rps"]
            for key, f in figures.items():
                lines.append(
                    f"| {name} | {total:,} cases | {key} | {f['rps']:.0f} req/s "
                    f"({f['rps'] / floor:.2f}× health) | p50 {f['p50']:.0f} ms | "
                    f"p95 {f['p95']:.0f} ms | {f['n']:,} requests |"
                )
                print(lines[-1], flush=True)
            print(f"  (ledger grown to {total:,} cases in {grown:.0f} s)", flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--cases", nargs="+", type=int, default=[10_000, 1_000_000])
    parser.add_argument("--ingest", type=int, default=10_000, help="clues per measured night")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="API worker processes"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint")
    parser.add_argument("--pg-url", help="an empty PostgreSQL database to use")
    args = parser.parse_args(argv)
    if args.ingest > min(args.cases):
        parser.error("--ingest must not exceed the smallest --cases")
    lines = []
    pg: PgServer | None = None
    try:
        for engine in args.engines:
            if engine == "sqlite":
                folder = tempfile.mkdtemp(prefix="tracker-bench-")
                lines += bench_engine("SQLite", f"sqlite:///{Path(folder) / 'ledger.db'}", args)
            elif engine == "postgresql":
                if args.pg_url:
                    url = args.pg_url
                else:
                    try:
                        pg = local_server()
                    except PostgresUnavailable as exc:
                        print(f"PostgreSQL skipped: {exc}", flush=True)
                        continue
                    url = pg.create_database("bench")
                lines += bench_engine("PostgreSQL", url, args)
            else:
                parser.error(f"unknown engine {engine!r} (sqlite, postgresql)")
    finally:
        if pg is not None:
            pg.close()
    print("\n".join(["", *lines]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
