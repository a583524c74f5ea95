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
    folder = tmp_path / "imagery"
    folder.mkdir()
    write_multiband(folder / "S2_20240503.tif", scene_dn(GRID.shape, 1), GRID, nodata=0)
    write_multiband(folder / "S2_20250508.tif", scene_dn(GRID.shape, 2, True), GRID, nodata=0)
    url = f"sqlite:///{tmp_path / 'cases.db'}"
    config = parse_config(
        {
            **BASE,
            "source": {"kind": "local", "path": str(folder)},
            "output": {"dir": str(tmp_path / "out")},
            "tracker": {"db": url},
        }
    )
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
    config = parse_config({**BASE, "output": {"dir": str(tmp_path)}})
    assert isinstance(default_sink(config), JsonlLedger)
    monkeypatch.setenv("CHANGEDETECT_DB", f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(default_sink(config), TrackerSink)


def test_a_password_in_the_tracker_url_is_refused_without_echoing_it():
    with pytest.raises(ConfigError, match="CHANGEDETECT_DB") as err:
        parse_config({**BASE, "tracker": {"db": "postgresql+psycopg://ops:hunter2@db/cases"}})
    assert "hunter2" not in str(err.value)
