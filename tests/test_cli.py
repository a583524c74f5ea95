"""The command line on real files: happy path, and one-line errors for bad input."""

import json

import numpy as np
import pytest

from changedetect.cli import main
from changedetect.testing.rasters import (
    make_grid,
    truncate_file,
    write_band_folder,
    write_multiband,
)

from .conftest import FOREST, ROCK

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def scene_dn(shape, seed, quarry=False):
    rng = np.random.default_rng(seed)
    out = {}
    for b in BANDS:
        values = np.full(shape, FOREST[b]) * (1 + rng.normal(0, 0.03, shape))
        if quarry:
            values[30:60, 40:75] = ROCK[b]
        out[b] = np.round(values * 1e4).astype(np.uint16)
    return out


@pytest.fixture
def pair(tmp_path):
    grid = make_grid("EPSG:32649", shape=(96, 112))
    before = tmp_path / "S2_20240501.tif"
    after = tmp_path / "S2_20250501.tif"
    write_multiband(before, scene_dn(grid.shape, 1), grid, nodata=0)
    write_multiband(after, scene_dn(grid.shape, 2, quarry=True), grid, nodata=0)
    return before, after, grid


def test_compare_writes_outputs(pair, tmp_path, capsys):
    before, after, _ = pair
    out = tmp_path / "out"
    assert main(["compare", str(before), str(after), "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "clues.geojson").read_text())
    assert len(doc["features"]) == 1
    assert doc["features"][0]["properties"]["change_type"] == "quarry"
    assert (out / "change.tif").exists()
    assert "1 clues (quarry: 1)" in capsys.readouterr().out


def test_compare_band_folder_with_explicit_bands(tmp_path):
    grid = make_grid("EPSG:32649", shape=(64, 64))
    for name, seed in (("a_20240501", 1), ("b_20250501", 2)):
        arrays = scene_dn(grid.shape, seed, quarry=seed == 2)
        write_multiband(tmp_path / f"{name}.tif", arrays, grid, descriptions=False)
    out = tmp_path / "out"
    code = main(
        [
            "compare",
            str(tmp_path / "a_20240501.tif"),
            str(tmp_path / "b_20250501.tif"),
            "--out",
            str(out),
            "--bands",
            ",".join(BANDS),
            "--quiet",
        ]
    )
    assert code == 0
    assert len(json.loads((out / "clues.geojson").read_text())["features"]) == 1


def expect_error(capsys, argv, *fragments):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    last = err[-1]
    assert last.startswith("changedetect: error:"), err
    assert "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in last, last
    return last


def test_missing_band_is_a_clear_error(tmp_path, capsys):
    grid = make_grid("EPSG:32649", shape=(32, 32))
    arrays = scene_dn(grid.shape, 1)
    del arrays["B11"]
    write_band_folder(tmp_path / "a", "T49_20240501", arrays, grid)
    write_band_folder(tmp_path / "b", "T49_20250501", arrays, grid)
    out = tmp_path / "out"
    expect_error(
        capsys, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)], "B11"
    )
    assert not out.exists()


def test_corrupt_file_is_a_clear_error(pair, tmp_path, capsys):
    before, after, _ = pair
    truncate_file(after, keep=0.5)
    out = tmp_path / "out"
    expect_error(capsys, ["compare", str(before), str(after), "--out", str(out)], after.name)
    assert not out.exists()


def test_non_overlapping_pair_is_a_clear_error(pair, tmp_path, capsys):
    before, _, grid = pair
    far = make_grid("EPSG:32649", left=900_000, shape=grid.shape)
    other = tmp_path / "far_20250501.tif"
    write_multiband(other, scene_dn(grid.shape, 3), far, nodata=0)
    out = tmp_path / "out"
    expect_error(capsys, ["compare", str(before), str(other), "--out", str(out)], "overlap")
    assert not out.exists()


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "aois: [{name: a, bbox: [108.0, 34.0, 108.1, 34.1]}]\n"
        "before: {start: 2024-04-01, end: 2024-06-30}\n"
        "after: {start: 2025-04-01, end: 2025-06-30}\n"
        "detection: {chunk_size: tiny}\n"
    )
    expect_error(capsys, ["run", "--config", str(config)], "detection.chunk_size", "'tiny'")


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(Exception, match="cannot read config"):
        main(["run", "--config", str(tmp_path / "missing.yaml"), "--debug"])


def test_help_everywhere(capsys):
    for argv in (["--help"], ["demo", "--help"], ["compare", "--help"], ["run", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    assert "--bands" in capsys.readouterr().out


def test_run_with_local_folder_config(tmp_path, capsys):
    grid = make_grid("EPSG:32649", shape=(96, 112))
    folder = tmp_path / "imagery"
    folder.mkdir()
    for day, seed, quarry in (
        ("20240503", 1, False),
        ("20240513", 4, False),
        ("20250508", 2, True),
    ):
        write_multiband(
            folder / f"S2_{day}.tif", scene_dn(grid.shape, seed, quarry), grid, nodata=0
        )
    config = tmp_path / "local.yaml"
    config.write_text(
        f"source: {{kind: local, path: {folder}}}\n"
        "aois: [{name: valley}]\n"
        "before: {start: 2024-04-01, end: 2024-06-30}\n"
        "after: {start: 2025-04-01, end: 2025-06-30}\n"
        f"output: {{dir: {tmp_path / 'out'}}}\n"
    )
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    (folder,) = (tmp_path / "out" / "valley").iterdir()
    doc = json.loads((folder / "clues.geojson").read_text())
    assert [f["properties"]["change_type"] for f in doc["features"]] == ["quarry"]
    assert doc["features"][0]["properties"]["before"] == ["2024-04-01", "2024-06-30"]
    assert "valley: 1 clues" in capsys.readouterr().out


def test_run_window_without_imagery_is_a_clear_error(tmp_path, capsys):
    grid = make_grid("EPSG:32649", shape=(32, 32))
    folder = tmp_path / "imagery"
    folder.mkdir()
    write_multiband(folder / "S2_20240503.tif", scene_dn(grid.shape, 1), grid, nodata=0)
    config = tmp_path / "local.yaml"
    config.write_text(
        f"source: {{kind: local, path: {folder}}}\n"
        "aois: [{name: valley}]\n"
        "before: {start: 2024-04-01, end: 2024-06-30}\n"
        "after: {start: 2025-04-01, end: 2025-06-30}\n"
        f"output: {{dir: {tmp_path / 'out'}}}\n"
    )
    expect_error(capsys, ["run", "--config", str(config)], "no acquisition in the after window")
    assert not (tmp_path / "out" / "valley").exists()
