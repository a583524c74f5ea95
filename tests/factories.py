"""Test factories shared by every test package: clues built in code (rectangles placed in
metres, Features as the pipeline writes them), the API tests' ledger of seven sites, and the
worker functions the multi-process tests spawn.

Also the worker functions the multi-process tests spawn (they must be importable by module).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from PIL import Image, ImageDraw
from pyproj import Transformer
from shapely.geometry import box, mapping

#: Every test site sits near this point (Qinling north slope, UTM zone 49N).
ORIGIN_LONLAT = (108.25, 34.0)
UTM = 32649
NOW = dt.datetime(2025, 7, 1, 12, 0, tzinfo=dt.UTC)

_to_utm = Transformer.from_crs(4326, UTM, always_xy=True)
_to_wgs = Transformer.from_crs(UTM, 4326, always_xy=True)
_X0, _Y0 = _to_utm.transform(*ORIGIN_LONLAT)


def rect(x: float, y: float, w: float, h: float | None = None) -> Any:
    """A w×h metre rectangle whose south-west corner is (x, y) metres from the origin (WGS84)."""
    h = w if h is None else h
    geom = box(_X0 + x, _Y0 + y, _X0 + x + w, _Y0 + y + h)
    return shapely.transform(geom, lambda xy: _stack(_to_wgs.transform(xy[:, 0], xy[:, 1])))


def _stack(xy: tuple[Any, Any]) -> Any:
    return np.column_stack(xy)


def area_m2(geom: Any) -> float:
    """Area in metres² in the test UTM zone."""
    return shapely.transform(geom, lambda xy: _stack(_to_utm.transform(xy[:, 0], xy[:, 1]))).area


def feature(
    clue_id: str,
    geom: Any,
    day: str = "2025-06-23",
    **props: Any,
) -> dict[str, Any]:
    """A clue Feature with the pipeline's properties (overridable)."""
    c = geom.centroid
    properties = {
        "clue_id": clue_id,
        "aoi": "test-aoi",
        "detected_at": day,
        "before": ["2024-04-01", "2024-06-30"],
        "after": ["2025-04-01", day],
        "area_m2": round(area_m2(geom), 1),
        "centroid": [round(c.x, 6), round(c.y, 6)],
        "change_type": "quarry",
        "confidence": 0.8,
        "confidence_level": "high",
        "d_ndvi": -0.3,
        "d_bsi": 0.2,
        "d_ndbi": 0.1,
        "zone": "Qinling red line core",
        "zone_tier": "red_line_core",
        "county": "Zhouzhi",
        "priority": "high",
        "chip_before": f"chips/{clue_id}_before.png",
        "chip_after": f"chips/{clue_id}_after.png",
        "status": "new",
    }
    properties.update(props)
    return {"type": "Feature", "id": clue_id, "geometry": mapping(geom), "properties": properties}


def collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    """A FeatureCollection."""
    return {"type": "FeatureCollection", "features": features}


def two_nights(n_sites: int = 12) -> tuple[dict[str, Any], dict[str, Any]]:
    """Night 1: n_sites patches 500 m apart; night 2: each shifted by 15 m, new clue ids."""
    night1, night2 = [], []
    for i in range(n_sites):
        x = (i % 4) * 500.0
        y = (i // 4) * 500.0
        night1.append(feature(f"n1-site{i}", rect(x, y, 80), "2025-06-23"))
        night2.append(feature(f"n2-site{i}", rect(x + 15, y + 10, 85), "2025-07-03"))
    return collection(night1), collection(night2)


def ingest_worker(url: str, clues: dict[str, Any], barrier: Any, results: Any) -> None:
    """One process of the concurrency tests: open the db, wait for the others, ingest."""
    from changedetect.tracker import TrackerDB, ingest

    db = TrackerDB(url)
    try:
        barrier.wait(timeout=60)
        report = ingest(db, clues, now=NOW)
        results.put(("ok", report.created, report.updated, report.unchanged))
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put(("error", f"{type(exc).__name__}: {exc}", 0, 0))
    finally:
        db.close()


def seed_case(url: str, clue_id: str, geom: Any, day: str = "2025-06-23") -> int:
    """A case with its detection and creation event, written into whatever schema revision the
    database is at (its tables as reflected, footprints as plain WKB): a ledger made by an older
    version, for the migrations to carry. The new case's id."""
    from sqlalchemy import MetaData, Table, insert

    from changedetect.tracker.db import make_engine

    engine = make_engine(url)
    # SQLite's DATETIME takes naive UTC (what the tracker stores there)
    now = NOW if engine.dialect.name == "postgresql" else NOW.replace(tzinfo=None)
    on = dt.date.fromisoformat(day)
    wkb = shapely.to_wkb(geom)
    minx, miny, maxx, maxy = geom.bounds
    try:
        with engine.begin() as conn:
            meta = MetaData()
            cases, detections, events = (
                Table(name, meta, autoload_with=conn)
                for name in ("cases", "detections", "case_events")
            )
            case_id = conn.execute(
                insert(cases).returning(cases.c.id),
                {
                    "state": "issued",
                    "change_type": "quarry",
                    "confidence": 0.8,
                    "clue_priority": "high",
                    "priority": "high",
                    "priority_rank": 1,
                    "escalated": False,
                    "county": "Zhouzhi",
                    "assigned_county": "Zhouzhi",
                    "geom_first": wkb,
                    "geom_latest": wkb,
                    "geom_union": wkb,
                    "area_m2": area_m2(geom),
                    "first_detected_on": on,
                    "last_detected_on": on,
                    "deadline": now + dt.timedelta(days=30),
                    "created_at": now,
                    "updated_at": now,
                    "min_lon": minx,
                    "min_lat": miny,
                    "max_lon": maxx,
                    "max_lat": maxy,
                },
            ).scalar_one()
            conn.execute(
                insert(detections),
                {
                    "case_id": case_id,
                    "clue_id": clue_id,
                    "detected_on": on,
                    "area_m2": area_m2(geom),
                    "confidence": 0.8,
                    "change_type": "quarry",
                    "geometry": wkb,
                    "properties": {"clue_id": clue_id},
                    "suppressed": False,
                    "ingested_at": now,
                },
            )
            conn.execute(
                insert(events),
                {
                    "case_id": case_id,
                    "at": now,
                    "actor": "ingest",
                    "kind": "created",
                    "to_state": "issued",
                },
            )
    finally:
        engine.dispose()
    return case_id


def stored_footprints(url: str) -> list[bytes]:
    """Every footprint the ledger holds, as the bytes in its columns (read as reflected)."""
    from sqlalchemy import MetaData, Table, select

    from changedetect.tracker.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            meta = MetaData()
            cases = Table("cases", meta, autoload_with=conn)
            detections = Table("detections", meta, autoload_with=conn)
            rows = conn.execute(select(cases.c.geom_first, cases.c.geom_latest, cases.c.geom_union))
            found = [bytes(v) for row in rows for v in row]
            found += [bytes(v) for v in conn.scalars(select(detections.c.geometry))]
            return found
    finally:
        engine.dispose()


# --- the API tests' ledger: seven sites in two counties, with chips ----------------------

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


# --- scenes: small grids and in-memory reflectance with planted changes ---------------------

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FOREST = {"B02": 0.03, "B03": 0.05, "B04": 0.03, "B08": 0.30, "B11": 0.15, "B12": 0.07}
ROCK = {"B02": 0.20, "B03": 0.24, "B04": 0.29, "B08": 0.33, "B11": 0.40, "B12": 0.35}

BEFORE_DAY = dt.date(2024, 5, 1)
AFTER_DAY = dt.date(2025, 5, 1)


def make_grid(height: int = 200, width: int = 200) -> GeoBox:
    return GeoBox((height, width), Affine(10, 0, 300000, 0, -10, 3750000), "EPSG:32649")


def forest_scene(shape: tuple[int, int], seed: int, noise: float = 0.008) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        b: (np.full(shape, v) + rng.normal(0, noise, shape)).astype(np.float32)
        for b, v in FOREST.items()
    }


def paint(scene: dict[str, np.ndarray], mask: np.ndarray, spectrum: dict[str, float]) -> None:
    for band, value in spectrum.items():
        scene[band][mask] = value
