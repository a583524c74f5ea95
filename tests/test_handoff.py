"""Nightly hand-on: clues reach the case tracker through its own ingest, once each."""

import json

import pytest

from changedetect.config import parse_config
from changedetect.errors import ConfigError
from changedetect.handoff import JsonlLedger, TrackerSink, default_sink
from changedetect.pipeline import run
from changedetect.testing.rasters import make_grid, write_multiband

from .test_cli import scene_dn

GRID = make_grid("EPSG:32649", shape=(96, 112))
BASE = {
    "aois": [{"name": "valley"}],
    "before": {"start": "2024-04-01", "end": "2024-06-30"},
    "after": {"start": "2025-04-01", "end": "2025-06-30"},
}


def test_tracker_sink_ingests_each_clue_once(tmp_path):
    config = _local_config(tmp_path)
    url = config.tracker.db
    sink = default_sink(config)
    assert isinstance(sink, TrackerSink)
    (result,) = run(config)
    assert len(result.clues) == 1
    assert sink.hand_on(result.clues, out_dir=result.out_dir) == [result.clues[0].clue_id]
    assert sink.hand_on(result.clues, out_dir=result.out_dir) == []  # the same night again

    from changedetect.tracker import CaseQuery, TrackerDB, get_case, list_cases

    db = TrackerDB.open(url)
    try:
        with db.session() as session:
            page = list_cases(session, CaseQuery())
            assert page.total == 1
            case = get_case(session, page.items[0].id)
    finally:
        db.close()
    assert case.case.change_type == "quarry" and case.case.state == "issued"
    assert [d.clue_id for d in case.detections] == [result.clues[0].clue_id]
    # the evidence points at the published outputs
    assert str(result.out_dir / "clues.geojson") in json.dumps(case.evidence)


def test_without_a_tracker_the_ledger_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("CHANGEDETECT_DB", raising=False)
    monkeypatch.delenv("CHANGEDETECT_DB_FILE", raising=False)
    config = parse_config({**BASE, "output": {"dir": str(tmp_path)}})
    assert isinstance(default_sink(config), JsonlLedger)
    monkeypatch.setenv("CHANGEDETECT_DB", f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(default_sink(config), TrackerSink)


def test_the_tracker_url_can_come_from_a_secret_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CHANGEDETECT_DB", raising=False)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    secret = tmp_path / "db-url"
    secret.write_text(url + "\n")
    monkeypatch.setenv("CHANGEDETECT_DB_FILE", str(secret))
    sink = default_sink(parse_config({**BASE, "output": {"dir": str(tmp_path)}}))
    assert isinstance(sink, TrackerSink) and sink.db_url == url


def test_a_password_in_the_tracker_url_is_refused_without_echoing_it():
    with pytest.raises(ConfigError, match="CHANGEDETECT_DB") as err:
        parse_config({**BASE, "tracker": {"db": "postgresql+psycopg://ops:hunter2@db/cases"}})
    assert "hunter2" not in str(err.value)


def _local_config(tmp_path, quarry_after=True):
    folder = tmp_path / "imagery"
    folder.mkdir(exist_ok=True)
    write_multiband(folder / "S2_20240503.tif", scene_dn(GRID.shape.yx, 1), GRID, nodata=0)
    # three clear acquisitions after: a quarry on them is confirmed, so the tracker issues it
    for day, seed in (("20250508", 2), ("20250518", 3), ("20250528", 5)):
        arrays = scene_dn(GRID.shape.yx, seed, quarry_after)
        write_multiband(folder / f"S2_{day}.tif", arrays, GRID, nodata=0)
    return parse_config(
        {
            **BASE,
            "source": {"kind": "local", "path": str(folder)},
            "output": {"dir": str(tmp_path / "out")},
            "tracker": {"db": f"sqlite:///{tmp_path / 'cases.db'}"},
        }
    )


def _measure(config):
    from changedetect.pipeline import footprint_measure, load_aoi, make_source, plan_aoi

    source = make_source(config)
    plan = plan_aoi(config, 0, source)
    return footprint_measure(config, plan, *load_aoi(config, plan, source)), plan


def _wgs84_box(rows, cols):
    from shapely.geometry import box

    from changedetect.grids import WGS84, reproject_geometry

    t = GRID.transform
    x0, y0 = t * (cols[0], rows[0])
    x1, y1 = t * (cols[1], rows[1])
    return reproject_geometry(
        box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), GRID.crs, WGS84
    )


def test_footprint_measure_reads_the_nights_composites(tmp_path):
    measure, _ = _measure(_local_config(tmp_path))
    quarry = measure(_wgs84_box((32, 58), (42, 73)))  # painted rock (test_cli.scene_dn)
    forest = measure(_wgs84_box((70, 90), (5, 30)))
    assert quarry is not None and forest is not None
    assert quarry.bare_fraction + quarry.built_fraction > 0.9 and quarry.ndvi_change < -0.4
    assert forest.bare_fraction + forest.built_fraction < 0.05 and abs(forest.ndvi_change) < 0.1
    # a triangle whose bounding box holds quarry and forest: only the pixels inside it count
    from shapely.affinity import affine_transform
    from shapely.geometry import Polygon, box

    from changedetect.grids import WGS84, reproject_geometry

    triangle_px = Polygon([(45, 35), (72, 35), (45, 90)])  # (col, row)
    in_quarry = triangle_px.intersection(box(40, 30, 75, 60)).area / triangle_px.area
    t = GRID.transform
    triangle = affine_transform(triangle_px, [t.a, t.b, t.d, t.e, t.c, t.f])
    mixed = measure(reproject_geometry(triangle, GRID.crs, WGS84))
    assert mixed is not None
    assert abs(mixed.bare_fraction + mixed.built_fraction - in_quarry) < 0.05

    assert measure(box(10.0, 10.0, 10.01, 10.01)) is None  # far outside the AOI


def test_a_rectified_case_disturbed_again_relapses_in_the_nightly_look_back(tmp_path):
    from changedetect.tracker import TrackerDB, transition
    from changedetect.tracker.queries import CaseQuery, get_case, list_cases

    config = _local_config(tmp_path)
    sink = default_sink(config)
    (result,) = run(config)
    sink.hand_on(result.clues, out_dir=result.out_dir)
    db = TrackerDB.open(config.tracker.db)
    try:
        with db.session() as session:
            (case,) = list_cases(session, CaseQuery()).items
        for state in ("verifying", "violation", "rectifying", "closed"):
            transition(db, case.id, state, actor="officer-a", comment="field visit")
    finally:
        db.close()
    measure, _ = _measure(config)
    counts = sink.look_back(measure)  # the site is still bare rock: a relapse
    assert counts["relapses"] == 1
    assert sink.look_back(measure)["relapses"] == 0  # the same night again opens nothing new
    db = TrackerDB.open(config.tracker.db)
    try:
        with db.session() as session:
            page = list_cases(session, CaseQuery())
            assert page.total == 2
            new = next(c for c in page.items if c.id != case.id)
            detail = get_case(session, new.id)
    finally:
        db.close()
    assert detail.case.state == "issued"
    assert detail.case.to_dict().get("linked_case_id") == case.id


def test_the_nightly_hand_on_posts_signed_cases_to_the_webhook(tmp_path, monkeypatch, httpserver):
    from changedetect.tracker.webhook import new_secret, verify

    secret = new_secret()
    received = []

    def handler(request):  # noqa: ANN001, ANN202
        from werkzeug import Response

        received.append((request.get_data(), dict(request.headers)))
        return Response("ok")

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handler)
    monkeypatch.setenv("CHANGEDETECT_WEBHOOK_URL", httpserver.url_for("/hook"))
    monkeypatch.setenv("CHANGEDETECT_WEBHOOK_SECRET", secret)
    config = _local_config(tmp_path)
    (result,) = run(config)
    assert default_sink(config).hand_on(result.clues, out_dir=result.out_dir)
    assert received, "no case was posted"
    body, headers = received[0]
    assert verify(body, headers, secret)
    assert result.clues[0].clue_id in body.decode()


def test_a_clue_the_tracker_cannot_store_is_set_aside_not_fatal(tmp_path, caplog):
    config = _local_config(tmp_path)
    (result,) = run(config)
    clues_file = result.out_dir / "clues.geojson"  # what the sink ingests
    data = json.loads(clues_file.read_text())
    data["features"][0]["properties"]["change_type"] = "c" * 41  # longer than the ledger keeps
    clues_file.write_text(json.dumps(data))
    sink = default_sink(config)
    with caplog.at_level("WARNING", logger="changedetect.handoff"):
        assert sink.hand_on(result.clues, out_dir=result.out_dir) == []
    rejects = json.loads((result.out_dir / "clues.rejects.geojson").read_text())
    (reject,) = rejects["features"]
    assert "change_type is 41 characters long" in reject["properties"]["reject_reason"]
    assert "1 clues could not go to the tracker" in caplog.text
