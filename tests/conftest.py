"""Shared fixtures: small grids and in-memory scenes with planted changes."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS

from changedetect.models import GridSpec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Where tests leave what a person should look at after a run (browser screenshots); kept, unlike
#: ``tmp_path``, and ignored by git. CI may point it elsewhere to upload it.
ARTEFACTS = Path(
    os.environ.get("CHANGEDETECT_TEST_ARTEFACTS", Path(__file__).resolve().parent / "artefacts")
)

FOREST = {"B02": 0.03, "B03": 0.05, "B04": 0.03, "B08": 0.30, "B11": 0.15, "B12": 0.07}
ROCK = {"B02": 0.20, "B03": 0.24, "B04": 0.29, "B08": 0.33, "B11": 0.40, "B12": 0.35}

BEFORE_DAY = dt.date(2024, 5, 1)
AFTER_DAY = dt.date(2025, 5, 1)


def make_grid(height: int = 200, width: int = 200) -> GridSpec:
    return GridSpec(CRS.from_epsg(32649), Affine(10, 0, 300000, 0, -10, 3750000), height, width)


def forest_scene(shape: tuple[int, int], seed: int, noise: float = 0.008) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        b: (np.full(shape, v) + rng.normal(0, noise, shape)).astype(np.float32)
        for b, v in FOREST.items()
    }


def paint(scene: dict[str, np.ndarray], mask: np.ndarray, spectrum: dict[str, float]) -> None:
    for band, value in spectrum.items():
        scene[band][mask] = value


@pytest.fixture
def grid() -> GridSpec:
    return make_grid()


@pytest.fixture
def artefact_dir(request: pytest.FixtureRequest) -> Path:
    """A fresh folder for this test's artefacts, named after the test."""
    folder = ARTEFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    return folder


@pytest.fixture
def shared_data() -> Path:
    if not DATA.exists():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA
