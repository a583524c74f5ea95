"""Incremental nightly runs: only acquisitions newer than the last successful run are analysed,
the state advances only after a run succeeds, and --since/--until override it."""

import datetime as dt
import json

import pytest

from changedetect.cli import main
from changedetect.config import load_config
from changedetect.errors import ConfigError
from changedetect.io.sources.local import LocalSource
from changedetect.pipeline import run
from changedetect.state import RunState
from changedetect.testing.rasters import truncate_file, write_multiband

from .regions import GRID, write_nightly_region
from .test_cli import scene_dn


@pytest.fixture
def setup(tmp_path, monkeypatch):
    folder, config = write_nightly_region(tmp_path)
    write_multiband(
        folder / "S2_20250508.tif", scene_dn(GRID.shape.yx, 2, quarry=True), GRID, nodata=0
    )
    loaded: list[list[str]] = []
    original = LocalSource.load

    def spy(self, acquisitions, bands, grid, chunk_size):  # noqa: ANN001, ANN202
        loaded.append([a.id for a in acquisitions])
        return original(self, acquisitions, bands, grid, chunk_size)

    monkeypatch.setattr(LocalSource, "load", spy)
    return folder, config, tmp_path / "out", loaded


def add_after(folder, day, seed=5):
    write_multiband(
        folder / f"S2_{day}.tif", scene_dn(GRID.shape.yx, seed, quarry=True), GRID, nodata=0
    )


def test_second_night_without_new_imagery_does_nothing_and_says_so(setup, capsys):
    folder, config, out, loaded = setup
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    state = RunState(out / "state.json").get("valley")
    assert state is not None and state.last_acquisition == dt.datetime(2025, 5, 8)
    assert state.clues == 1 and (out / "valley" / "20250508" / "clues.geojson").exists()
    assert loaded == [["S2_20240503", "S2_20240513"], ["S2_20250508"]]
    capsys.readouterr()

    loaded.clear()
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    assert loaded == []  # nothing was read
    assert "no new acquisition after 2025-05-08" in capsys.readouterr().out
    assert RunState(out / "state.json").get("valley") == state


def test_only_acquisitions_newer_than_the_last_run_are_analysed(setup):
    folder, config, out, loaded = setup
    cfg = load_config(config)
    run(cfg)
    add_after(folder, "20250602")
    add_after(folder, "20250617", seed=6)
    loaded.clear()
    (result,) = run(cfg)
    assert loaded[1] == ["S2_20250602", "S2_20250617"]
    assert result.out_dir == out / "valley" / "20250617"
    assert RunState(out / "state.json").get("valley").last_acquisition == dt.datetime(2025, 6, 17)
    # the first night's clues are still where they were
    first = json.loads((out / "valley" / "20250508" / "clues.geojson").read_text())
    assert len(first["features"]) == 1


def test_a_failed_run_does_not_advance_the_state(setup, capsys):
    folder, config, out, loaded = setup
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    before = RunState(out / "state.json").get("valley")
    add_after(folder, "20250602")
    truncate_file(folder / "S2_20250602.tif")
    assert main(["run", "--config", str(config), "--quiet"]) != 0
    capsys.readouterr()
    assert RunState(out / "state.json").get("valley") == before
    assert not (out / "valley" / "20250602").exists()
    # repaired, the next night picks it up
    add_after(folder, "20250602")
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    assert RunState(out / "state.json").get("valley").last_acquisition.date() == dt.date(2025, 6, 2)


def test_since_and_until_override_the_state(setup):
    folder, config, out, loaded = setup
    cfg = load_config(config)
    run(cfg)
    add_after(folder, "20250602")
    loaded.clear()
    run(cfg, since=dt.date(2025, 5, 1), until=dt.date(2025, 5, 31))
    assert loaded[1] == ["S2_20250508"]  # analysed again although already done; June excluded
    loaded.clear()
    run(cfg, since=dt.date(2025, 5, 1))
    assert loaded[1] == ["S2_20250508", "S2_20250602"]
    with pytest.raises(ConfigError, match="after"):
        run(cfg, since=dt.date(2025, 7, 1), until=dt.date(2025, 6, 1))


def test_full_ignores_the_state(setup):
    folder, config, out, loaded = setup
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    loaded.clear()
    assert main(["run", "--config", str(config), "--quiet", "--full"]) == 0
    assert loaded[1] == ["S2_20250508"]


def test_unreadable_state_is_a_clear_error(setup, capsys):
    folder, config, out, loaded = setup
    out.mkdir()
    (out / "state.json").write_text("{not json")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "state.json" in err and "unreadable" in err
