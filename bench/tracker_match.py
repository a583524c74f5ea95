"""Matching a clue against a big ledger on PostgreSQL: PostGIS GiST index vs bounding boxes.

    python bench/tracker_match.py                      # 1,000,000 cases, 500 clues
    python bench/tracker_match.py --cases 100000 --clues 200 --pg-url postgresql+psycopg://…

A fresh database at the newest schema is filled with ``--cases`` cases by COPY: 60 m squares on
the 300 m lattice of :mod:`changedetect.testing.ledger` (1,000 a row, so a million cover 300 ×
300 km), one case per lattice position. ``--clues`` clues at random positions, shifted 5 m (as a
second night would see them), are each matched — in one transaction, as ingest does, once to
warm the cache and then measured — by:

- ``gist``: :func:`~changedetect.tracker.ingest.overlapping_cases` as it runs on PostgreSQL
  (``ST_Intersects`` in the GiST index on ``cases.geom_union``, then shapely's overlap share);
- ``bbox``: the bounding-box query SQLite uses (the ``min_lon`` … ``max_lat`` columns with the
  schema's B-tree indexes), then the same shapely share;
- ``gist+sql-share``: the GiST lookup with the share measured in SQL as well
  (``ST_Area(ST_Intersection(…)::geography)``), to see what moving the share into SQL would give.

Each prints ms per clue (mean and p95) and the plan PostgreSQL chose. Every clue must find its
one case on every path, and the SQL share must agree with shapely's. PostgreSQL needs root to
start the local cluster (``changedetect/testing/postgres.py``) or ``--pg-url`` (with PostGIS).
"""

from __future__ import annotations

import argparse
import io
import random
import time
from collections.abc import Callable
from statistics import fmean, quantiles

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from changedetect.testing.ledger import COLUMNS, ORIGIN_LONLAT, SIDE_M, SPACING_M, UTM
from changedetect.testing.postgres import PgServer, PostgresUnavailable, local_server
from changedetect.tracker import TrackerDB, upgrade
from changedetect.tracker.geometry import area_m2, from_wkb, overlap_share
from changedetect.tracker.ingest import overlapping_cases
from changedetect.tracker.models import Case
from changedetect.tracker.settings import TrackerSettings

SETTINGS = TrackerSettings()
_TO_WGS = Transformer.from_crs(UTM, 4326, always_xy=True)
_X0, _Y0 = Transformer.from_crs(4326, UTM, always_xy=True).transform(*ORIGIN_LONLAT)


def squares(index: np.ndarray, shift_m: float = 0.0) -> np.ndarray:
    """The lattice squares at ``index`` (WGS84), as shapely polygons."""
    west = _X0 + (index % COLUMNS) * SPACING_M + shift_m
    south = _Y0 + (index // COLUMNS) * SPACING_M + shift_m
    xs = np.stack([west, west + SIDE_M, west + SIDE_M, west, west], axis=1)
    ys = np.stack([south, south, south + SIDE_M, south + SIDE_M, south], axis=1)
    lon, lat = _TO_WGS.transform(xs, ys)
    return shapely.polygons(np.stack([lon, lat], axis=2))


COPY_COLUMNS = (
    "state, change_type, confidence, clue_priority, priority, priority_rank, escalated, "
    "county, assigned_county, geom_first, geom_latest, geom_union, area_m2, first_detected_on, "
    "last_detected_on, deadline, created_at, updated_at, min_lon, min_lat, max_lon, max_lat"
)


def fill(db: TrackerDB, count: int, batch: int = 50_000) -> None:
    """``count`` cases, one per lattice position, by COPY (text: hex EWKB for the geometry)."""
    raw = db.engine.raw_connection()
    try:
        with raw.cursor() as cur:
            for start in range(0, count, batch):
                index = np.arange(start, min(count, start + batch))
                geoms = squares(index)
                ewkb = shapely.to_wkb(shapely.set_srid(geoms, 4326), hex=True, include_srid=True)
                bounds = shapely.bounds(geoms)
                area = SIDE_M * SIDE_M
                lines = io.StringIO()
                for k, i in enumerate(index.tolist()):
                    g = ewkb[k]
                    # most of a big ledger is history: one case in twenty still open
                    state = "issued" if i % 20 == 0 else "closed"
                    minx, miny, maxx, maxy = bounds[k].tolist()
                    lines.write(
                        f"{state}\tquarry\t0.8\thigh\thigh\t1\tf\tZhouzhi\tZhouzhi\t{g}\t{g}\t{g}\t"
                        f"{area}\t2025-06-23\t2025-06-23\t2025-07-23 00:00:00+00\t"
                        f"2025-06-23 00:00:00+00\t2025-06-23 00:00:00+00\t"
                        f"{minx!r}\t{miny!r}\t{maxx!r}\t{maxy!r}\n"
                    )
                with cur.copy(f"COPY cases ({COPY_COLUMNS}) FROM STDIN") as copy:
                    copy.write(lines.getvalue())
                raw.commit()
                print(f"  {min(count, start + batch):,} cases", end="\r", flush=True)
        raw.commit()
    finally:
        raw.close()
    with db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE cases")
    print()


def bbox_cases(session: Session, geom: BaseGeometry) -> list[tuple[float, Case]]:
    """The lookup SQLite runs (bounding boxes in SQL), then shapely's share, as ingest does."""
    minx, miny, maxx, maxy = geom.bounds
    candidates = session.scalars(
        select(Case)
        .where(
            Case.max_lon >= minx,
            Case.min_lon <= maxx,
            Case.max_lat >= miny,
            Case.min_lat <= maxy,
        )
        .with_for_update()
    ).all()
    matches = [(overlap_share(geom, from_wkb(c.geom_union)), c) for c in candidates]
    return sorted((m for m in matches if m[0] >= SETTINGS.min_overlap), key=lambda m: -m[0])


SQL_SHARE = text(
    "SELECT id, ST_Area(ST_Intersection(geom_union, g)::geography) "
    "/ LEAST(ST_Area(geom_union::geography), ST_Area(g::geography)) AS share "
    "FROM cases, ST_GeomFromWKB(:wkb, 4326) AS g WHERE ST_Intersects(geom_union, g)"
)


def sql_share_cases(session: Session, geom: BaseGeometry) -> list[tuple[float, Case]]:
    """The GiST lookup with the overlap share measured by PostGIS (on the spheroid)."""
    rows = session.execute(SQL_SHARE, {"wkb": shapely.to_wkb(geom)}).all()
    shares = {case_id: share for case_id, share in rows if share >= SETTINGS.min_overlap}
    if not shares:
        return []
    cases = session.scalars(select(Case).where(Case.id.in_(shares)).with_for_update()).all()
    return sorted(((shares[c.id], c) for c in cases), key=lambda m: -m[0])


def gist_cases(session: Session, geom: BaseGeometry) -> list[tuple[float, Case]]:
    return overlapping_cases(session, geom, SETTINGS)


def plan(db: TrackerDB, sql: str, wkb: bytes, bounds: tuple[float, ...]) -> str:
    """The access path PostgreSQL chose (its plan's first scan node)."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(f"EXPLAIN {sql}"),
            {
                "wkb": wkb,
                "minx": bounds[0],
                "miny": bounds[1],
                "maxx": bounds[2],
                "maxy": bounds[3],
            },
        ).scalars()
        scans = [r.strip().lstrip("-> ") for r in rows if "Scan" in r]
    return scans[-1].split("  (")[0] if scans else "?"


def measure(
    db: TrackerDB,
    lookup: Callable[[Session, BaseGeometry], list[tuple[float, Case]]],
    clues: list[tuple[int, BaseGeometry]],
    expected_case: Callable[[int], int],
) -> tuple[list[float], list[float]]:
    """Per clue: ms, and the share found; each clue must find its one case."""
    times, shares = [], []
    with db.write() as session:
        for position, clue in clues:
            start = time.perf_counter()
            matches = lookup(session, clue)
            times.append(1000 * (time.perf_counter() - start))
            if [c.id for _, c in matches] != [expected_case(position)]:
                raise RuntimeError(f"clue at {position} matched {[c.id for _, c in matches]}")
            shares.append(matches[0][0])
        session.rollback()
    return times, shares


def bench(url: str, args: argparse.Namespace) -> list[str]:
    upgrade(url)
    lines = []
    with TrackerDB.open(url) as db:
        start = time.perf_counter()
        fill(db, args.cases)
        print(f"  filled in {time.perf_counter() - start:.0f} s", flush=True)
        with db.engine.connect() as conn:
            first = conn.scalar(text("SELECT min(id) FROM cases"))
        rng = random.Random(7)
        positions = [rng.randrange(args.cases) for _ in range(args.clues)]
        clues = list(zip(positions, squares(np.array(positions), shift_m=5.0), strict=True))
        some = clues[0][1]
        wkb, bounds = shapely.to_wkb(some), some.bounds
        plans = {
            "gist": plan(
                db,
                "SELECT id FROM cases WHERE ST_Intersects(geom_union, ST_GeomFromWKB(:wkb, 4326))",
                wkb,
                bounds,
            ),
            "bbox": plan(
                db,
                "SELECT id FROM cases WHERE max_lon >= :minx AND min_lon <= :maxx "
                "AND max_lat >= :miny AND min_lat <= :maxy",
                wkb,
                bounds,
            ),
        }
        plans["gist+sql-share"] = plans["gist"]
        lookups = {"gist": gist_cases, "bbox": bbox_cases, "gist+sql-share": sql_share_cases}
        # a first round warms the cache and sets the fresh rows' hint bits for every path alike
        for lookup in lookups.values():
            measure(db, lookup, clues, lambda p: first + p)
        results = {}
        for name, lookup in lookups.items():
            times, shares = measure(db, lookup, clues, lambda p: first + p)
            results[name] = shares
            line = (
                f"| PostgreSQL | {args.cases:,} cases | {name} | {fmean(times):.2f} ms/clue | "
                f"p95 {quantiles(times, n=20)[18]:.2f} ms | {args.clues} clues | {plans[name]} |"
            )
            lines.append(line)
            print(line, flush=True)
        worst = max(
            abs(a - b) for a, b in zip(results["gist"], results["gist+sql-share"], strict=True)
        )
        lines.append(
            f"  shapely vs PostGIS overlap share: largest difference {worst:.2e} "
            f"(share ≈ {fmean(results['gist']):.4f}; clue area {area_m2(some):.1f} m²)"
        )
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--clues", type=int, default=500)
    parser.add_argument("--pg-url", help="an empty PostgreSQL database with PostGIS to use")
    args = parser.parse_args(argv)
    pg: PgServer | None = None
    try:
        if args.pg_url:
            url = args.pg_url
        else:
            try:
                pg = local_server()
            except PostgresUnavailable as exc:
                print(f"PostgreSQL unavailable: {exc}")
                return 1
            url = pg.create_database("match")
        lines = bench(url, args)
    finally:
        if pg is not None:
            pg.close()
    print("\n".join(["", *lines]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
