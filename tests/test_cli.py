"""The command line on real files: happy path, and one-line errors for bad input."""

import json
import os
import sys

import numpy as np
import pytest

from changedetect.cli import main
from changedetect.testing.rasters import (
    make_grid,
    truncate_file,
    write_band_folder,
    write_multiband,
)
from tests.factories import FOREST, ROCK

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
    write_multiband(before, scene_dn(grid.shape.yx, 1), grid, nodata=0)
    write_multiband(after, scene_dn(grid.shape.yx, 2, quarry=True), grid, nodata=0)
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


def test_compare_reads_each_band_chunk_once(pair, tmp_path, monkeypatch):
    """A two-date comparison decodes each chunk of each file once: the sample, the pass and
    nothing after it (no patch can recur with one before acquisition, so no site is read
    again)."""
    import functools
    from collections import Counter

    import changedetect.io.sources.local as local

    before, after, _ = pair
    reads: Counter = Counter()
    read_chunk = local._read_chunk

    @functools.wraps(read_chunk)  # dask passes block_id to a function whose signature has it
    def counted(*args, **kwargs):
        reads[(kwargs["path"], kwargs["indexes"], kwargs["block_id"][-2:])] += 1
        return read_chunk(*args, **kwargs)

    monkeypatch.setattr(local, "_read_chunk", counted)
    out = tmp_path / "out"
    argv = ["compare", str(before), str(after), "--out", str(out), "--quiet", "--chunk-size", "64"]
    assert main(argv) == 0
    assert len(json.loads((out / "clues.geojson").read_text())["features"]) == 1
    every_chunk = {(i, j) for i in range(2) for j in range(2)}  # 96 x 112 px in 64 px chunks
    for path in (before, after):
        blocks = [key[2] for key in reads if key[0] == str(path)]
        assert set(blocks) == every_chunk, (path, blocks)
    assert set(reads.values()) == {1}, sorted(k for k, v in reads.items() if v > 1)


def test_compare_dates_what_the_files_do_not_and_refuses_to_guess(tmp_path, capsys):
    grid = make_grid("EPSG:32649", shape=(96, 112))
    before, after = tmp_path / "old.tif", tmp_path / "new.tif"
    write_multiband(before, scene_dn(grid.shape.yx, 1), grid, nodata=0)
    write_multiband(after, scene_dn(grid.shape.yx, 2, quarry=True), grid, nodata=0)
    out = tmp_path / "out"
    argv = ["compare", str(before), str(after), "--out", str(out), "--quiet"]
    expect_error(capsys, argv, "old", "no date", "--before-date")
    assert not out.exists()
    dates = ["--before-date", "2024-05-01", "--after-date", "2025-05-03"]
    swapped = ["--before-date", "2025-06-01", "--after-date", "2025-05-03"]
    expect_error(capsys, [*argv, *swapped], "not later than the before one")
    assert main([*argv, *dates]) == 0
    (clue,) = (f["properties"] for f in json.loads((out / "clues.geojson").read_text())["features"])
    assert clue["detected_at"] == "2025-05-03" and clue["clue_id"].startswith("compare-20250503-")
    assert clue["before"] == ["2024-05-01", "2024-05-01"]


def test_compare_band_folder_with_explicit_bands(tmp_path):
    grid = make_grid("EPSG:32649", shape=(64, 64))
    for name, seed in (("a_20240501", 1), ("b_20250501", 2)):
        arrays = scene_dn(grid.shape.yx, seed, quarry=seed == 2)
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
    arrays = scene_dn(grid.shape.yx, 1)
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
    far = make_grid("EPSG:32649", left=900_000, shape=grid.shape.yx)
    other = tmp_path / "far_20250501.tif"
    write_multiband(other, scene_dn(grid.shape.yx, 3), far, nodata=0)
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
            folder / f"S2_{day}.tif", scene_dn(grid.shape.yx, seed, quarry), grid, nodata=0
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
    write_multiband(folder / "S2_20240503.tif", scene_dn(grid.shape.yx, 1), grid, nodata=0)
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


def test_run_attempts_every_aoi_publishes_the_good_ones_and_names_the_failed(tmp_path, capsys):
    from changedetect.handoff import JsonlLedger

    from .regions import write_region

    config = write_region(tmp_path, ("valley", "ridge", "plain"), corrupt=("ridge",))
    out = tmp_path / "out"

    last = expect_error(capsys, ["run", "--config", str(config), "--quiet"], "1 of 3 AOI(s)")
    assert "ridge (CorruptInputError" in last and "valley" not in last and "plain" not in last
    for good in ("valley", "plain"):  # after the failed one too
        doc = json.loads((out / good / "20250508" / "clues.geojson").read_text())
        assert [f["properties"]["change_type"] for f in doc["features"]] == ["quarry"]
        # one date, the newest acquisition's (the window ends 2025-12-31), names all three
        (clue,) = (f["properties"] for f in doc["features"])
        assert clue["clue_id"].startswith(f"{good}-20250508-")
        assert clue["detected_at"] == "2025-05-08"
    assert not (out / "ridge").exists()
    # the good clues went to the clue sink once, the run is on record, ridge is redone next time
    handed = [e["clue_id"] for e in JsonlLedger(out / "handoff.jsonl").entries()]
    assert sorted(i.split("-")[0] for i in handed) == ["plain", "valley"]
    record = json.loads((out / "run.json").read_text())
    assert [(a["aoi"], a["status"]) for a in record["aois"]] == [
        ("valley", "published"),
        ("ridge", "failed"),
        ("plain", "published"),
    ]
    state = json.loads((out / "state.json").read_text())
    assert "ridge" not in json.dumps(state) and "valley" in json.dumps(state)
    # the next run retries ridge only, and hands nothing on twice
    expect_error(capsys, ["run", "--config", str(config), "--quiet"], "ridge")
    again = [e["clue_id"] for e in JsonlLedger(out / "handoff.jsonl").entries()]
    assert again == handed


def test_an_aoi_outside_the_imagery_is_told_apart_from_a_date_problem(tmp_path, capsys):
    grid = make_grid("EPSG:32649", shape=(32, 32))
    folder = tmp_path / "imagery"
    folder.mkdir()
    for day in ("20240503", "20250508"):
        write_multiband(folder / f"S2_{day}.tif", scene_dn(grid.shape.yx, 1), grid, nodata=0)
    config = tmp_path / "local.yaml"
    config.write_text(
        f"source: {{kind: local, path: {folder}}}\n"
        # the imagery lies near 111 E, 0 N (UTM 49N, x 500 km); this AOI is 2 degrees west
        "aois: [{name: valley, bbox: [109.0, 0.001, 109.01, 0.01]}]\n"
        "before: {start: 2024-04-01, end: 2024-06-30}\n"
        "after: {start: 2025-04-01, end: 2025-06-30}\n"
        f"output: {{dir: {tmp_path / 'out'}}}\n"
    )
    last = expect_error(capsys, ["run", "--config", str(config)], "no acquisition covers the AOI")
    assert "west 109.0000" in last  # the AOI's extent
    assert "west 110.99" in last or "west 111.00" in last  # and the imagery's
    assert "after window 2025-04-01..2025-06-30" in last


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path, monkeypatch, capsys):
    """`changedetect tracker list | head -1`: the pipe closes under the listing."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout = os.fdopen(write_end, "w", buffering=1)  # line-buffered: each line hits the pipe
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        code = main(["tracker", "list", "--db", f"sqlite:///{tmp_path / 't.db'}"])
    finally:
        monkeypatch.undo()
        stdout.close()
    assert code == 141  # as a shell reports a program ended by SIGPIPE
    assert "Traceback" not in capsys.readouterr().err


def test_impossible_dates_and_presets_are_one_line_errors_naming_the_input(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        "source: {kind: local, path: /nowhere}\n"
        "aois: [{name: valley, bbox: [109.0, 0.0, 109.1, 0.1]}]\n"
        "before: {start: 2024-02-30, end: 2024-06-30}\n"
        "after: {start: 2025-04-01, end: 2025-06-30}\n"
    )
    expect_error(capsys, ["run", "--config", str(config)], "before.start", "2024-02-30")
    for argv, fragment in (
        (["run", "--config", str(config), "--since", "2025-02-30"], "2025-02-30 does not exist"),
        (["compare", "a", "b", "--out", "o", "--preset", "nope"], "landsat_tm_dn"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert fragment in err[-1] and "Traceback" not in "\n".join(err)


def test_logs_carry_time_and_level_and_a_bar_shows_only_on_a_terminal(
    pair, tmp_path, capsys, monkeypatch
):
    import re

    before, after, _ = pair
    argv = ["compare", str(before), str(after), "--chunk-size", "64"]
    assert main([*argv, "--out", str(tmp_path / "piped")]) == 0
    err = capsys.readouterr().err.splitlines()
    stamp = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (INFO|WARNING|ERROR|DEBUG) "
    assert err and all(re.match(stamp, line) for line in err), err
    assert not any("block" in line and "%" in line for line in err)  # no bar in a pipe

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*argv, "--out", str(tmp_path / "terminal")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"\[compare\] change test: .*\d/4 ", err), err  # 96 x 112 px: 2 x 2 blocks
    assert main([*argv, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert "change test:" not in capsys.readouterr().err
