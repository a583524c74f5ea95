"""Detection quality with quarries and construction painted into real Sentinel-2 imagery.

A real OSCD date-1 scene is the *before*; the *after* is the same scene with a slight radiometric
shift, fresh noise and blobs of bare rock/soil or concrete (12-600 px) painted into vegetated
ground (changedetect.testing.planting). Targets: patch recall >= 0.95, precision >= 0.90, change
type right for >= 85 %.
"""

import numpy as np
import pytest

from changedetect.testing.planting import plant_disturbances
from changedetect.testing.scenes import analyse_pair, oscd_before, planted_quality, unseen_before

OSCD_CITIES = ("abudhabi", "aguasclaras", "bercy", "bordeaux", "cupertino", "hongkong", "mumbai")


@pytest.mark.parametrize(("city", "seed"), [("hongkong", 7), ("mumbai", 11), ("bordeaux", 3)])
def test_planted_changes_in_real_imagery(shared_data, tmp_path, city, seed):
    grid, before = oscd_before(shared_data, city)
    after, blobs = plant_disturbances(before, seed=seed, n_blobs=24)
    assert len(blobs) >= 15, "not enough vegetated ground to plant into"
    quality = planted_quality(analyse_pair(grid, before, after, tmp_path, city), blobs, grid)
    summary = (
        f"{city}: recall {quality.recall:.2f} precision {quality.precision:.2f} "
        f"type {quality.type_accuracy:.2f} ({quality.n_clues} clues, {len(blobs)} planted, "
        f"missed {quality.missed})"
    )
    assert quality.recall >= 0.95, summary
    assert quality.precision >= 0.90, summary
    assert quality.type_accuracy >= 0.85, summary


@pytest.mark.slow
def test_change_type_with_varied_materials(shared_data, tmp_path):
    """The material library (changedetect.testing.planting.MATERIALS) under each scene's haze:
    five rocks and soils as quarries, mosaics of built materials as construction sites, in three
    cities (one of them desert). Recall is lower than with the fixed set (dark spoil replacing
    forest hardly changes but in the NIR); precision is held to the same target, and type
    accuracy to 85 % over all the hits (80 % in each city: one wrong type in a city of 18 hits is
    already 5.6 points)."""
    hits = right = 0
    for city, seed in (("hongkong", 7), ("mumbai", 11), ("abudhabi", 5)):
        grid, before = oscd_before(shared_data, city)
        with np.errstate(invalid="ignore", divide="ignore"):
            nd = (before["B08"] - before["B04"]) / (before["B08"] + before["B04"])
        # a city with little vegetation (abudhabi) is planted into its greenest fifth
        min_ndvi = min(0.45, float(np.nanquantile(nd, 0.8)))
        after, blobs = plant_disturbances(
            before, seed=seed, n_blobs=24, materials="varied", min_ndvi=min_ndvi
        )
        assert len(blobs) >= 15, "not enough ground to plant into"
        assert {b.change_type for b in blobs} == {"quarry", "construction"}
        q = planted_quality(analyse_pair(grid, before, after, tmp_path, city), blobs, grid)
        summary = (
            f"{city}: recall {q.recall:.2f} precision {q.precision:.2f} "
            f"type {q.type_accuracy:.2f} over {q.hits} hits"
        )
        assert q.recall >= 0.75, summary
        assert q.precision >= 0.90, summary
        assert q.type_accuracy >= 0.80, summary
        hits, right = hits + q.hits, right + q.type_right
    assert right / hits >= 0.85, f"type right for {right} of {hits} hits"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 100])
def test_a_second_overpass_with_nothing_changed_gives_no_clue(shared_data, tmp_path, seed):
    """The planting helper with nothing planted, in all seven cities and in the scene no rule
    was chosen on: the after image is the before image with a calibration gain, an offset and
    fresh sensor noise, as a second overpass over unchanged ground looks. Every clue is a false
    alarm sent into the field.

    The after image carries the before image's noise besides its own (a real pair does not), so
    it is twice as noisy as the observation counts say; where a band's contrast is low (hazy
    Mumbai's blue, winter farmland) that tilted the normalisation line fitted on pixels (gains
    of 1.05-1.06 for 1.03) and bright unchanged ground became clues (one in Mumbai, one or two
    in the unseen scene). The line is fitted on local means now."""
    false_clues = []
    for city in (*OSCD_CITIES, "unseen"):
        grid, before = (
            unseen_before(shared_data) if city == "unseen" else oscd_before(shared_data, city)
        )
        after, blobs = plant_disturbances(before, seed=seed, n_blobs=0)
        assert blobs == []
        result = analyse_pair(grid, before, after, tmp_path, city)
        false_clues += [(city, round(c.area_m2)) for c in result.clues]
    assert false_clues == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("materials", "min_recall", "min_type"), [("fixed", 0.95, 0.85), ("varied", 0.75, 0.80)]
)
def test_planted_changes_in_a_scene_no_rule_was_chosen_on(
    shared_data, tmp_path, materials, min_recall, min_type
):
    """The targets above on a scene outside the development set: Sentinel-2 L1C over Brandenburg
    in February (winter farmland, forest and water, not a city), which no rule or constant of the
    detector was chosen on. Little is green in winter: sites go into the greenest fifth."""
    grid, before = unseen_before(shared_data)
    with np.errstate(invalid="ignore", divide="ignore"):
        nd = (before["B08"] - before["B04"]) / (before["B08"] + before["B04"])
    min_ndvi = min(0.45, float(np.nanquantile(nd, 0.8)))
    after, blobs = plant_disturbances(
        before, seed=1, n_blobs=24, materials=materials, min_ndvi=min_ndvi
    )
    assert len(blobs) >= 20, "not enough ground to plant into"
    q = planted_quality(analyse_pair(grid, before, after, tmp_path, "unseen"), blobs, grid)
    summary = (
        f"recall {q.recall:.2f} precision {q.precision:.2f} type {q.type_accuracy:.2f} "
        f"({q.n_clues} clues, {len(blobs)} planted, missed {q.missed})"
    )
    assert q.recall >= min_recall, summary
    assert q.precision >= 0.90, summary
    assert q.type_accuracy >= min_type, summary
