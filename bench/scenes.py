"""The labelled real scenes under ../shared/data, run through the pipeline as `compare` runs them.

Each scene gives its before/after bands on the analysis grid, its reference (changed, scored),
the pipeline's patches rasterised onto the grid, and one row of object features per patch with
the outcome the reference gives it. Used by bench/quality_cv.py and bench/train_clue_model.py.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
from odc.geo.geobox import GeoBox
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from changedetect.algorithms.clues import object_features
from changedetect.config import DetectionConfig, SensorConfig
from changedetect.evaluation import MIN_OVERLAP_SHARE
from changedetect.io.sources.local import LocalSource, acquisition_from_path
from changedetect.models import Patch, TimeWindow
from changedetect.pipeline import AnalysisOptions, analyse, bands_to_load
from changedetect.types import ANALYSIS_BANDS

CITIES = ("abudhabi", "aguasclaras", "bercy", "bordeaux", "cupertino", "hongkong", "mumbai")
SCENES = (*CITIES, "taizhou")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: A clue is a real change when at least this share of its labelled pixels changed (the share
#: changedetect.evaluation matches a clue to a change with).
REAL_SHARE = MIN_OVERLAP_SHARE


@dataclass
class SceneRun:
    """One labelled scene and what the pipeline made of it."""

    name: str
    grid: GeoBox
    before: np.ndarray
    """(band, y, x) reflectance of ANALYSIS_BANDS as the pipeline reads it."""
    after: np.ndarray
    changed: np.ndarray
    scored: np.ndarray
    labels: np.ndarray
    """The pipeline's patches rasterised (0 = no clue, i = patches[i - 1])."""
    patches: list[Patch]
    features: np.ndarray
    """(patch, feature) object features (changedetect.algorithms.clues.OBJECT_FEATURES)."""
    real: np.ndarray
    """Per patch: True when the reference calls it a real change (REAL_SHARE); NaN-free."""
    labelled: np.ndarray
    """Per patch: True when any of its pixels is labelled (sparse references leave some out)."""
    pixel_km2: float


def read_reference(data: Path, name: str, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    if name == "taizhou":
        folder = data / "landsat-taizhou"
        change = np.asarray(Image.open(folder / "change.bmp").convert("L")) > 127
        unchanged = np.asarray(Image.open(folder / "unchanged.bmp").convert("L")) > 127
        return change, change | unchanged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(data / "oscd" / name / "labels" / f"{name}-cm.tif") as src:
            label = src.read(1)
    if label.shape != shape:
        raise SystemExit(f"{name}: label {label.shape} vs grid {shape}")
    return label == 2, label > 0


def scene_paths(data: Path, name: str) -> tuple[Path, Path, SensorConfig]:
    if name == "taizhou":
        folder = data / "landsat-taizhou"
        sensor = SensorConfig(preset="landsat_tm_dn")
        return folder / "2000TM", folder / "2003TM", sensor
    folder = data / "oscd" / name
    return folder / "imgs_1", folder / "imgs_2", SensorConfig(preset="sentinel2_l1c")


def run_scene(
    data: Path, name: str, detection: DetectionConfig | None = None, out: Path | None = None
) -> SceneRun:
    """`changedetect compare` on one scene, in process, with its reference and patch table."""
    detection = detection or DetectionConfig()
    before_path, after_path, sensor = scene_paths(data, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = acquisition_from_path(before_path, sensor)
        after = acquisition_from_path(after_path, sensor)
    assert before.grid is not None
    grid = before.grid
    source = LocalSource(None, sensor, acquisitions=[before, after])
    stacks = [
        source.load([a], bands_to_load(detection, sensor.preset, [a]), grid, detection.chunk_size)
        for a in (before, after)
    ]
    days = [TimeWindow(a.datetime.date(), a.datetime.date()) for a in (before, after)]
    options = AnalysisOptions(aoi=name, detection=detection, chips=False, preset=sensor.preset)
    with tempfile.TemporaryDirectory() as tmp:
        result = analyse(
            *stacks, grid, *days, options, out or Path(tmp) / name, progress=lambda _: None
        )
    cubes = [np.stack([s[b].values[0] for b in ANALYSIS_BANDS]).astype(np.float32) for s in stacks]
    changed, scored = read_reference(data, name, grid.shape.yx)
    labels = np.zeros(grid.shape.yx, np.int32)
    if result.patches:
        labels = rasterio.features.rasterize(
            ((p.geometry, i) for i, p in enumerate(result.patches, start=1)),
            out_shape=grid.shape.yx,
            transform=grid.transform,
            dtype="int32",
        )
    n = len(result.patches)
    n_scored = np.bincount(labels[scored], minlength=n + 1)[1:]
    n_changed = np.bincount(labels[scored & changed], minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = n_changed / n_scored
    features = np.array([object_features(p) for p in result.patches]).reshape(n, -1)
    return SceneRun(
        name,
        grid,
        cubes[0],
        cubes[1],
        changed,
        scored,
        labels,
        result.patches,
        features,
        np.nan_to_num(share) >= REAL_SHARE,
        n_scored > 0,
        abs(grid.transform.a * grid.transform.e) / 1e6,
    )
