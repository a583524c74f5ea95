"""Change type from patch statistics, on surfaces built from the material library.

The patch statistics are made the way the pipeline makes them: per-pixel features
(detect.features.index_feature_values) on before/after spectra, averaged over the patch's pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from changedetect.algorithms.classify import (
    MOSAIC_ANGLE_DEG,
    ROUGH_LOG_SWIR,
    classify_patch,
    spectral_angle_spread,
)
from changedetect.algorithms.detect.features import index_feature_values
from changedetect.testing.planting import BANDS, MATERIALS

FOREST = np.array([0.03, 0.05, 0.03, 0.30, 0.15, 0.07], np.float32)
#: A hazy scene's path reflectance (falls with wavelength), added to every after pixel.
HAZE = np.array([0.06, 0.045, 0.03, 0.015, 0.004, 0.002], np.float32)


def patch_stats(after: np.ndarray, before: np.ndarray | None = None) -> dict[str, float]:
    """Patch means of the pipeline's per-pixel features for (n, 6) after spectra."""
    if before is None:
        before = np.tile(FOREST, (len(after), 1))
    b = {band: before[:, i] for i, band in enumerate(BANDS)}
    a = {band: after[:, i] for i, band in enumerate(BANDS)}
    with np.errstate(invalid="ignore", divide="ignore"):
        feats = index_feature_values(b, a)
    feats["brightening"] = np.log(after.mean(axis=1) / before.mean(axis=1))
    # the patch mean of a feature no pixel has (a bare-only feature on a green patch) is NaN
    with np.errstate(invalid="ignore"):
        return {k: float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else np.nan
                for k, v in feats.items()}  # fmt: skip


def rock_face(name: str, n: int = 300, seed: int = 0, shading: float = 0.15) -> np.ndarray:
    """One material under bench shading (brightness varies by +-`shading`, hue does not)."""
    rng = np.random.default_rng(seed)
    spectrum = np.asarray(MATERIALS[name].reflectance, np.float32)
    light = 1 + shading * np.clip(rng.normal(size=(n, 1)), -2, 2)
    return (spectrum * light * (1 + rng.normal(0, 0.02, (n, 6)))).astype(np.float32)


def slab(name: str, n: int = 300, seed: int = 0) -> np.ndarray:
    """One smooth built surface (2 % sensor and surface noise)."""
    rng = np.random.default_rng(seed)
    spectrum = np.asarray(MATERIALS[name].reflectance, np.float32)
    return (spectrum * (1 + rng.normal(0, 0.02, (n, 6)))).astype(np.float32)


def mosaic(names: list[str], n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [slab(name, n // len(names), seed + i) for i, name in enumerate(names)]
    out = np.concatenate(parts)
    return out[rng.permutation(len(out))]


QUARRY_ROCKS = ["red_laterite", "sandy_soil", "grey_rock", "white_limestone", "dark_spoil"]


@pytest.mark.parametrize("haze", [False, True])
@pytest.mark.parametrize("name", QUARRY_ROCKS)
def test_one_rock_or_soil_face_is_a_quarry(name, haze):
    after = rock_face(name) + (HAZE if haze else 0)
    stats = patch_stats(after)
    assert spectral_angle_spread(stats) < MOSAIC_ANGLE_DEG
    assert classify_patch(stats) == "quarry"


@pytest.mark.parametrize("haze", [False, True])
@pytest.mark.parametrize(
    "names",
    [
        ["concrete", "blue_roof", "site_soil"],
        ["asphalt", "metal_roof", "site_soil"],
        ["concrete", "asphalt", "site_soil"],
        ["concrete", "asphalt", "red_roof", "blue_roof", "metal_roof"],
    ],
)
def test_a_mosaic_of_built_materials_is_construction(names, haze):
    stats = patch_stats(mosaic(names) + (HAZE if haze else 0))
    assert spectral_angle_spread(stats) >= MOSAIC_ANGLE_DEG
    assert classify_patch(stats) == "construction"


@pytest.mark.parametrize("name", ["concrete", "metal_roof", "asphalt"])
def test_one_smooth_grey_surface_is_construction(name):
    stats = patch_stats(slab(name))
    assert classify_patch(stats) == "construction"


def test_grey_rock_and_a_concrete_slab_differ_only_in_texture():
    rock, concrete = patch_stats(rock_face("grey_rock")), patch_stats(slab("concrete"))
    assert abs(spectral_angle_spread(rock) - spectral_angle_spread(concrete)) < 1.5
    assert classify_patch(rock) == "quarry" and classify_patch(concrete) == "construction"
    # and the texture threshold is what tells them apart
    assert classify_patch(rock, rough_log_swir=1.0) == "construction"


def test_red_ground_is_a_quarry_even_when_smooth_or_mixed_at_its_rim():
    assert classify_patch(patch_stats(slab("red_laterite"))) == "quarry"
    laterite, rim = rock_face("red_laterite", n=240), slab("concrete", n=60)
    stats = patch_stats(np.concatenate([laterite, rim]))
    assert spectral_angle_spread(stats) >= MOSAIC_ANGLE_DEG  # the rim reads as another material
    assert classify_patch(stats) == "quarry"


def test_shading_does_not_make_a_mosaic():
    flat, shaded = patch_stats(slab("grey_rock")), patch_stats(rock_face("grey_rock", shading=0.3))
    assert abs(spectral_angle_spread(shaded) - spectral_angle_spread(flat)) < 1.0


def test_vegetated_rim_pixels_do_not_count():
    rock = rock_face("grey_rock", n=200)
    rim = np.tile(FOREST, (60, 1))  # the patch's edge, still forest
    with_rim = patch_stats(np.concatenate([rock, rim]))
    assert spectral_angle_spread(with_rim) == pytest.approx(
        spectral_angle_spread(patch_stats(rock)), abs=0.2
    )


def test_vegetation_rules_come_first():
    greener = np.tile(np.array([0.02, 0.05, 0.02, 0.45, 0.18, 0.08], np.float32), (50, 1))
    assert classify_patch(patch_stats(greener)) == "other"
    cleared = np.tile(np.array([0.07, 0.09, 0.10, 0.22, 0.26, 0.17], np.float32), (50, 1))
    assert classify_patch(patch_stats(cleared)) == "vegetation_loss"


def test_the_thresholds_move_the_boundaries():
    stats = patch_stats(mosaic(["concrete", "blue_roof", "site_soil"]))
    angle = spectral_angle_spread(stats)
    assert classify_patch(stats, mosaic_angle_deg=angle - 0.1) == "construction"
    # below the mosaic bound the texture decides: a rough surface is then a quarry
    assert classify_patch(stats, mosaic_angle_deg=angle + 0.1, rough_log_swir=0.0) == "quarry"
    grey = patch_stats(rock_face("grey_rock", shading=0.05))
    assert classify_patch(grey, rough_log_swir=ROUGH_LOG_SWIR * 10) == "construction"
    assert classify_patch(grey, rough_log_swir=0.0) == "quarry"


def test_statistics_without_surface_features_fall_back_to_colour():
    red = {k: v for k, v in patch_stats(slab("red_laterite")).items() if "_bare" not in k}
    grey = {k: v for k, v in patch_stats(slab("concrete")).items() if "_bare" not in k}
    assert np.isnan(spectral_angle_spread(red))
    assert classify_patch(red) == "quarry"
    assert classify_patch(grey) == "construction"


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(QUARRY_ROCKS + ["concrete", "asphalt", "metal_roof"]),
    mosaic_of=st.sampled_from(
        [None, ("concrete", "blue_roof", "site_soil"), ("asphalt", "metal_roof", "site_soil")]
    ),
    light=st.floats(0.6, 1.5),
    seed=st.integers(0, 1000),
)
def test_the_type_of_bare_ground_does_not_depend_on_illumination(name, mosaic_of, light, seed):
    """Sun angle, slope and a sensor's gain scale every band alike: the type of bare or built
    ground must not change with them (ratios, angles and log spreads are blind to a scale)."""
    pixels = mosaic(list(mosaic_of), seed=seed) if mosaic_of else rock_face(name, seed=seed)
    assert classify_patch(patch_stats(pixels * light)) == classify_patch(patch_stats(pixels))
