"""Detection quality with quarries and construction painted into real Sentinel-2 imagery.

A real OSCD date-1 scene is the *before*; the *after* is the same scene with a slight radiometric
shift, fresh noise and blobs of bare rock/soil or concrete (12-600 px) painted into vegetated
ground (changedetect.testing.planting). Targets: patch recall >= 0.95, precision >= 0.90, change
type right for >= 85 %.
"""

import datetime as dt

import numpy as np
import pytest

from changedetect.algorithms.patches import polygonise
from changedetect.config import SensorConfig
from changedetect.evaluation import evaluate_patches
from changedetect.io.sources.local import LocalSource, acquisition_from_path
from changedetect.models import TimeWindow
from changedetect.pipeline import AnalysisOptions, analyse
from changedetect.testing.memory import MemorySource
from changedetect.testing.planting import plant_disturbances

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
BEFORE, AFTER = dt.date(2017, 5, 1), dt.date(2018, 5, 1)


def real_scene(shared_data, city):
    sensor = SensorConfig(preset="sentinel2_l1c")
    acq = acquisition_from_path(shared_data / "oscd" / city / "imgs_1", sensor)
    ds = LocalSource(None, sensor, [acq]).load([acq], BANDS, acq.grid, 512).compute()
    return acq.grid, {b: ds[b].values[0] for b in BANDS}


@pytest.mark.parametrize(("city", "seed"), [("hongkong", 7), ("mumbai", 11), ("bordeaux", 3)])
def test_planted_changes_in_real_imagery(shared_data, tmp_path, city, seed):
    grid, before = real_scene(shared_data, city)
    after, blobs = plant_disturbances(before, seed=seed, n_blobs=24)
    assert len(blobs) >= 15, "not enough vegetated ground to plant into"
    source = MemorySource(grid, {BEFORE: before, AFTER: after})
    windows = TimeWindow(BEFORE, BEFORE), TimeWindow(AFTER, AFTER)
    b = source.load(source.search(grid, windows[0]), BANDS, grid, 256)
    a = source.load(source.search(grid, windows[1]), BANDS, grid, 256)
    options = AnalysisOptions(city, chips=False, chip_size=64)
    result = analyse(b, a, grid, *windows, options, tmp_path / city)

    truth_geoms = []
    for blob in blobs:
        (geom,) = polygonise(blob.mask.astype(np.int32), grid.transform).values()
        truth_geoms.append(geom)
    quality = evaluate_patches(
        [p.geometry for p in result.patches],
        [c.change_type for c in result.clues],
        truth_geoms,
        [blob.change_type for blob in blobs],
        [blob.id for blob in blobs],
        [True] * len(blobs),
    )
    summary = (
        f"{city}: recall {quality.recall:.2f} precision {quality.precision:.2f} "
        f"type {quality.type_accuracy:.2f} ({quality.n_clues} clues, {len(blobs)} planted, "
        f"missed {quality.missed})"
    )
    assert quality.recall >= 0.95, summary
    assert quality.precision >= 0.90, summary
    assert quality.type_accuracy >= 0.85, summary


def _varied_site_quality(shared_data, tmp_path, city, seed):
    grid, before = real_scene(shared_data, city)
    with np.errstate(invalid="ignore", divide="ignore"):
        nd = (before["B08"] - before["B04"]) / (before["B08"] + before["B04"])
    # a city with little vegetation (abudhabi) is planted into its greenest fifth
    min_ndvi = min(0.45, float(np.nanquantile(nd, 0.8)))
    after, blobs = plant_disturbances(
        before, seed=seed, n_blobs=24, materials="varied", min_ndvi=min_ndvi
    )
    assert len(blobs) >= 15, "not enough ground to plant into"
    assert {b.change_type for b in blobs} == {"quarry", "construction"}
    source = MemorySource(grid, {BEFORE: before, AFTER: after})
    windows = TimeWindow(BEFORE, BEFORE), TimeWindow(AFTER, AFTER)
    b = source.load(source.search(grid, windows[0]), BANDS, grid, 256)
    a = source.load(source.search(grid, windows[1]), BANDS, grid, 256)
    result = analyse(b, a, grid, *windows, AnalysisOptions(city, chips=False), tmp_path / city)
    truth_geoms = [
        next(iter(polygonise(blob.mask.astype(np.int32), grid.transform).values()))
        for blob in blobs
    ]
    return evaluate_patches(
        [p.geometry for p in result.patches],
        [c.change_type for c in result.clues],
        truth_geoms,
        [blob.change_type for blob in blobs],
        [blob.id for blob in blobs],
        [True] * len(blobs),
    )


@pytest.mark.slow
def test_change_type_with_varied_materials(shared_data, tmp_path):
    """The material library (changedetect.testing.planting.MATERIALS) under each scene's haze:
    five rocks and soils as quarries, mosaics of built materials as construction sites, in three
    cities (one of them desert). Recall is lower than with the fixed set (dark spoil replacing
    forest does not brighten the ground, which the detector does not report); precision is held
    to the same target, and type accuracy to 85 % over all the hits (80 % in each city: one
    wrong type in a city of 18 hits is already 5.6 points)."""
    hits = right = 0
    for city, seed in (("hongkong", 7), ("mumbai", 11), ("abudhabi", 5)):
        q = _varied_site_quality(shared_data, tmp_path, city, seed)
        summary = (
            f"{city}: recall {q.recall:.2f} precision {q.precision:.2f} "
            f"type {q.type_accuracy:.2f} over {q.hits} hits"
        )
        assert q.recall >= 0.75, summary
        assert q.precision >= 0.90, summary
        assert q.type_accuracy >= 0.80, summary
        hits, right = hits + q.hits, right + q.type_right
    assert right / hits >= 0.85, f"type right for {right} of {hits} hits"
