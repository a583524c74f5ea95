"""The planting helper: known disturbances painted into an image, fixed or from a material library."""

from __future__ import annotations

import numpy as np
import pytest

from changedetect.testing.planting import (
    BANDS,
    MATERIALS,
    path_radiance,
    plant_disturbances,
)
from tests.factories import FOREST


def hazy_forest(shape=(160, 160), seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    haze = dict(zip(BANDS, (0.06, 0.045, 0.03, 0.015, 0.004, 0.002), strict=True))
    scene = {b: np.full(shape, FOREST[b] + haze[b], np.float32) for b in BANDS}
    for b in BANDS:
        scene[b] += rng.normal(0, 0.003, shape).astype(np.float32)
    return scene


def test_the_fixed_set_is_unchanged_by_the_library():
    before = hazy_forest()
    after_default, blobs_default = plant_disturbances(before, seed=3, n_blobs=6)
    after_fixed, blobs_fixed = plant_disturbances(before, seed=3, n_blobs=6, materials="fixed")
    for b in BANDS:
        np.testing.assert_array_equal(after_default[b], after_fixed[b])
    assert [x.id for x in blobs_default] == [x.id for x in blobs_fixed]
    assert all(x.materials == () for x in blobs_fixed)


def test_varied_sites_are_one_rock_or_a_mosaic_of_built_materials():
    before = hazy_forest()
    after, blobs = plant_disturbances(before, seed=4, n_blobs=8, materials="varied")
    assert len(blobs) >= 6 and {x.change_type for x in blobs} == {"quarry", "construction"}
    for blob in blobs:
        kinds = {MATERIALS[m].change_type for m in blob.materials}
        assert kinds == {blob.change_type}
        if blob.change_type == "quarry":
            assert len(blob.materials) == 1
        else:
            assert len(blob.materials) >= 3 and "site_soil" in blob.materials
        # the painted pixels changed, the rest is the before scene with gain, offset and noise
        distance = np.sqrt(sum((after[b] - before[b]) ** 2 for b in BANDS))
        changed = distance > 0.05
        assert changed[blob.mask].mean() > 0.9
    outside = ~np.any([x.mask for x in blobs], axis=0)
    assert np.abs(after["B04"] - before["B04"])[outside].max() < 0.03


def test_path_radiance_falls_with_wavelength_and_is_read_off_dark_objects():
    path = path_radiance(hazy_forest())
    values = [path[b] for b in BANDS]
    assert values == sorted(values, reverse=True)
    # the forest's darkest blue pixels hold 0.03 of surface plus 0.06 of haze, less the 0.01 of
    # a dark surface: about 0.08 minus three noise sigmas
    assert path["B02"] == pytest.approx(0.07, abs=0.01)
    assert path["B12"] <= path["B02"] * 0.490 / 2.190 + 1e-9


def test_unknown_material_set_is_refused():
    with pytest.raises(ValueError, match="materials must be 'fixed' or 'varied'"):
        plant_disturbances(hazy_forest(), seed=0, materials="fancy")
