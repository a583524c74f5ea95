import numpy as np

from changedetect.algorithms.site_signal import footprint_signal
from tests.factories import FOREST, ROCK

# grey built-up surfaces: bright in the blue, no SWIR excess (bare-soil index below 0)
CONCRETE = {"B02": 0.25, "B03": 0.26, "B04": 0.27, "B08": 0.29, "B11": 0.26, "B12": 0.24}


def bands(spectrum, shape=(10, 10)):
    return {b: np.full(shape, v, np.float32) for b, v in spectrum.items()}


def test_shares_of_bare_and_built_ground_inside_the_footprint():
    inside = np.zeros((10, 10), bool)
    inside[:, :8] = True
    after = bands(FOREST)
    for b in after:
        after[b][:, :4] = ROCK[b]  # 40 of the 80 inside pixels
        after[b][:, 4:6] = CONCRETE[b]  # 20 of them
    signal = footprint_signal(bands(FOREST), after, inside)
    assert signal is not None
    assert signal.bare_fraction == 0.5 and signal.built_fraction == 0.25
    assert signal.ndvi_change < -0.3 and signal.valid_share == 1.0


def test_too_cloudy_or_empty_footprints_are_not_judged():
    inside = np.ones((10, 10), bool)
    after = bands(ROCK)
    for b in after:
        after[b][:6] = np.nan  # 60 % under cloud
    assert footprint_signal(bands(FOREST), after, inside) is None
    assert footprint_signal(bands(FOREST), bands(ROCK), np.zeros((10, 10), bool)) is None
