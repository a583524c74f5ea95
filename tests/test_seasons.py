"""The seasonal baseline: the same weeks of earlier years as the before side."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from changedetect.config import load_config, parse_config
from changedetect.demo import demo_config, score_against_truth
from changedetect.io.sources.synthetic import SyntheticSource
from changedetect.models import TimeWindow
from changedetect.pipeline import make_source, plan_aoi, plan_grid, run, run_aoi
from changedetect.seasons import same_season, years_back
from changedetect.testing.rasters import write_multiband
from changedetect.testing.synthetic import score_clues
from tests.factories import FOREST, ROCK

from .regions import GRID

D = dt.date


def test_same_season_windows_step_back_whole_years_and_never_reach_the_dates_analysed():
    assert same_season(D(2025, 7, 14), D(2025, 7, 24), days=20, years=2) == [
        TimeWindow(D(2023, 6, 24), D(2023, 8, 13)),
        TimeWindow(D(2024, 6, 24), D(2024, 8, 13)),
    ]
    # a long stretch of acquisitions: last year's window stops the day before the first
    (window,) = same_season(D(2025, 1, 10), D(2025, 12, 20), days=30, years=1)
    assert window == TimeWindow(D(2023, 12, 11), D(2025, 1, 9))
    assert years_back(D(2024, 2, 29), 1) == D(2023, 2, 28)
    with pytest.raises(ValueError, match="before first"):
        same_season(D(2025, 7, 2), D(2025, 7, 1), days=10, years=1)


# ------------------------------------------------------------------ on a scene built for it

#: Spring before, a July after: the winter wheat is harvested in between (bare, bright stubble),
#: and the other fields and the meadows are in another phase of their year.
BEFORE = TimeWindow(D(2024, 4, 1), D(2024, 5, 31))
AFTER = TimeWindow(D(2025, 7, 10), D(2025, 7, 31))
CHANGES = (D(2024, 9, 1), D(2025, 6, 30))


def harvest_config(tmp_path, baseline):
    return parse_config(
        {
            "source": {
                "kind": "synthetic",
                "seed": 11,
                "cloud_cover": 0.1,
                "changes_from": CHANGES[0].isoformat(),
                "changes_until": CHANGES[1].isoformat(),
            },
            "aois": [{"name": "valley", "bbox": [108.20, 33.95, 108.245, 33.988]}],
            "before": {"start": BEFORE.start.isoformat(), "end": BEFORE.end.isoformat()},
            "after": {"start": AFTER.start.isoformat(), "end": AFTER.end.isoformat()},
            "baseline": baseline,
            "detection": {"chunk_size": 512},
            "output": {"dir": str(tmp_path / baseline["kind"]), "chips": False},
        }
    )


def quality(tmp_path, baseline):
    config = harvest_config(tmp_path, baseline)
    # the changes happen after the baseline seasons, whatever the before window says
    source = SyntheticSource(config.source)  # type: ignore[arg-type]
    result = run_aoi(config, 0, source)
    grid = plan_grid(config, 0, source)
    truth = [t for t in source.planted(grid) if CHANGES[0] <= t.start <= CHANGES[1]]
    return result, score_clues(result, truth)


@pytest.mark.slow
def test_the_same_season_of_earlier_years_leaves_harvest_and_season_out(tmp_path):
    seasonal = {"kind": "same_season"}  # OPERA DIST-ALERT's: 3 years, ±15 days
    plan = plan_aoi(harvest_config(tmp_path, seasonal), 0, SyntheticSource())
    assert {a.datetime.year for a in plan.before} == {2022, 2023, 2024}
    assert all(D(2022, 6, 25) <= a.datetime.date() <= D(2024, 8, 15) for a in plan.before)

    window, against_spring = quality(tmp_path, {"kind": "window"})
    season, against_season = quality(tmp_path, seasonal)
    summary = f"spring baseline {against_spring}; same season {against_season}"
    # against last spring, the harvested fields and the summer greenery are "change" ...
    assert len(against_spring.false_clues) >= 10, summary
    # ... against the same weeks of the three years before, most of it is not (measured: 12 false
    # clues -> 0; 1 before the before window's history was looked at: a field whose crop this
    # year was in none of those weeks)
    assert len(against_season.false_clues) <= 0.3 * len(against_spring.false_clues), summary
    assert against_season.recall >= 0.9, summary
    assert {c.baseline for c in season.clues} == {"same_season ±15 d over 3 years"}
    assert {c.baseline for c in window.clues} == {"window"}


@pytest.mark.slow
def test_the_demo_against_the_same_season_has_no_false_clue(tmp_path):
    config = demo_config(tmp_path, baseline="same_season")
    (result,) = run(config)
    quality = score_against_truth(config, result).quality
    # its distractors (harvest, greening, crop rotation, clouds, the reservoir) give no clue;
    # measured: 30 clues, all real, 30 of 34 planted changes (two of the four missed are building
    # sites on fields that lay bare at that time of the earlier years: a recurrence at first)
    assert quality.false_clues == [], quality
    assert quality.recall >= 0.85 and quality.type_accuracy >= 0.85, quality


# ------------------------------------------------------------------ ground seen before


SOIL = {"B02": 0.09, "B03": 0.12, "B04": 0.16, "B08": 0.24, "B11": 0.34, "B12": 0.28}
FIELD = np.s_[10:40, 10:50]  # a field: green, or bare after harvest
QUARRY = np.s_[55:85, 60:100]  # forest, then a quarry


def scene(seed, *, field_bare=False, quarry=False):
    rng = np.random.default_rng(seed)
    out = {}
    for b in FOREST:
        values = np.full(GRID.shape.yx, FOREST[b]) * (1 + rng.normal(0, 0.03, GRID.shape.yx))
        if field_bare:
            values[FIELD] = SOIL[b] * (1 + rng.normal(0, 0.03, values[FIELD].shape))
        if quarry:
            values[QUARRY] = ROCK[b]
        out[b] = np.round(values * 1e4).astype(np.uint16)
    return out


def field_region(tmp_path, bare_on: dict[str, bool], before: str, baseline: str = "window"):
    """A folder of acquisitions on `bare_on`'s days (YYYYMMDD: is the field bare?) and one this
    June with the field bare and a new quarry, and the config of a run over it (`before` the
    before window as "start, end", `baseline` its kind)."""
    folder = tmp_path / "imagery"
    folder.mkdir()
    for k, (day, bare) in enumerate(bare_on.items()):
        write_multiband(folder / f"S2_{day}.tif", scene(k, field_bare=bare), GRID, nodata=0)
    write_multiband(
        folder / "S2_20250603.tif", scene(99, field_bare=True, quarry=True), GRID, nodata=0
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        f"source: {{kind: local, path: {folder}}}\n"
        "aois: [{name: valley}]\n"
        f"baseline: {{kind: {baseline}}}\n"
        f"before: {{start: {before.split(', ')[0]}, end: {before.split(', ')[1]}}}\n"
        "after: {start: 2025-04-01, end: 2025-06-30}\n"
        f"output: {{dir: {tmp_path / 'out'}, chips: false}}\n"
    )
    return load_config(config)


@pytest.mark.parametrize("bare_before", [2, 1])
def test_ground_seen_as_it_is_now_on_two_before_acquisitions_is_not_new(tmp_path, bare_before):
    days = ["20240503", "20240513", "20240523", "20240602", "20240612"]
    # the field was bare (harvested) on the last `bare_before`
    bare_on = {day: k >= len(days) - bare_before for k, day in enumerate(days)}
    (result,) = run(field_region(tmp_path, bare_on, "2024-04-01, 2024-06-30"))
    # the quarry is new whatever the field did; the bare field is the field's own past
    # when two clear acquisitions showed it (one might be haze), new when only one did
    sites = sorted(round(c.area_m2 / 1e4, 1) for c in result.clues)
    if bare_before == 2:
        assert sites == [12.0], sites
    else:
        assert sites == [12.0, 12.0], sites


@pytest.mark.parametrize("bare_last_summer", [True, False])
def test_a_field_bare_after_last_summers_harvest_is_seen_before_by_a_seasonal_baseline(
    tmp_path, bare_last_summer
):
    """Green in the same June weeks of three earlier years (wheat), bare this June (a crop
    rotation): the seasonal baseline alone would call it new. The before window's acquisitions
    of last summer are history beside that baseline: bare after the harvest there, the field is
    ground seen as it is now; green there too, it stays a clue. The quarry is new either way."""
    green_junes = dict.fromkeys(["20220603", "20230603", "20240603"], False)  # the baseline
    last_summer = dict.fromkeys(["20240720", "20240810", "20240830"], bare_last_summer)
    config = field_region(
        tmp_path, green_junes | last_summer, "2024-07-01, 2024-09-30", baseline="same_season"
    )
    plan = plan_aoi(config, 0, make_source(config))
    assert [a.datetime.year for a in plan.before] == [2022, 2023, 2024]
    assert [a.datetime.month for a in plan.history] == [7, 8, 8]
    (result,) = run(config)
    sites = sorted(round(c.area_m2 / 1e4, 1) for c in result.clues)
    assert sites == ([12.0] if bare_last_summer else [12.0, 12.0]), sites
