"""OSCD benchmark of the change decision: seven real Sentinel-2 pairs with urban-change labels.

Each city's date-1 and date-2 bands (10 m and 20 m) are reprojected bilinearly onto the date-1
10 m B02 grid by georeference, wrapped as two-image `Composite`s (spread all NaN), passed through
`detect_change`, cleaned like the pipeline's patch stage (closing with a disk of radius 1,
components without a core pixel or under the minimum mapping unit dropped, holes filled) and scored on all pixels against
the label raster (1 = no change, 2 = change).

    /work/venv/bin/python bench/oscd_experiment.py [--data ../shared/data/oscd] [--kw '{"...": 1}']
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
import xarray as xr
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import Resampling, reproject

from changedetect.algorithms.detect import detect_change
from changedetect.algorithms.labelling import clean_mask, label_patches
from changedetect.models import Composite, TimeWindow
from changedetect.types import ANALYSIS_BANDS

CITIES = ("abudhabi", "aguasclaras", "bercy", "bordeaux", "cupertino", "hongkong", "mumbai")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oscd"
#: Minimum mapping unit of the pipeline (1000 m2) at the nominal 10 m OSCD pixel.
MIN_PIXELS = 10


def _band_file(folder: Path, band: str) -> Path:
    found = sorted(folder.glob(f"*_{band}.tif"))
    if not found:
        raise FileNotFoundError(f"no *_{band}.tif in {folder}")
    return found[0]


def load_city(root: Path, city: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(before, after) as (band, y, x) float32 reflectance on the date-1 B02 grid, and the labels."""
    with rasterio.open(_band_file(root / city / "imgs_1", "B02")) as ref:
        crs, transform, shape = ref.crs, ref.transform, ref.shape
    stacks = []
    for folder in ("imgs_1", "imgs_2"):
        layers = []
        for band in ANALYSIS_BANDS:
            with rasterio.open(_band_file(root / city / folder, band)) as src:
                dst = np.full(shape, np.nan, dtype="float32")
                reproject(
                    src.read(1).astype("float32"),
                    dst,
                    src_transform=src.transform,
                    src_crs=src.crs,
                    dst_transform=transform,
                    dst_crs=crs,
                    resampling=Resampling.bilinear,
                    dst_nodata=np.nan,
                )
            layers.append(dst * 1e-4)
        stacks.append(np.stack(layers))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(root / city / "labels" / f"{city}-cm.tif") as src:
            labels = src.read(1)
    return stacks[0], stacks[1], labels == 2


def as_composite(cube: np.ndarray, day: dt.date, chunk: int = 256) -> Composite:
    """A two-image style Composite (no temporal spread) from a (band, y, x) array."""
    ny, nx = cube.shape[1:]
    bands = xr.Dataset(
        {
            b: (("y", "x"), da.from_array(cube[i].astype("float32"), chunks=chunk))
            for i, b in enumerate(ANALYSIS_BANDS)
        }
    )
    nan = da.full((ny, nx), np.nan, dtype="float32", chunks=chunk)
    spread = xr.Dataset({b: (("y", "x"), nan) for b in ANALYSIS_BANDS})
    count = xr.DataArray(da.ones((ny, nx), dtype="int16", chunks=chunk), dims=("y", "x"))
    return Composite(TimeWindow(day, day), bands, count, [str(day)], spread)


def predicted_mask(disturbed: np.ndarray, min_pixels: int = MIN_PIXELS) -> np.ndarray:
    """The patch stage's view of a decision, as the pipeline runs it: closed with a 3x3 disk,
    components without a core pixel or under the mapping unit dropped, holes filled."""
    closed = clean_mask(disturbed, radius=1)
    labels, _ = label_patches(closed, min_pixels=min_pixels, seed_radius=1)
    return labels > 0


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of a boolean prediction."""
    tp = float(np.sum(pred & truth))
    fp = float(np.sum(pred & ~truth))
    fn = float(np.sum(~pred & truth))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def run(root: Path, kwargs: dict[str, Any], cities: tuple[str, ...] = CITIES) -> dict[str, tuple]:
    """Per-city (precision, recall, F1, predicted share, threshold)."""
    out = {}
    for city in cities:
        before, after, truth = load_city(root, city)
        layers = detect_change(
            as_composite(before, dt.date(2016, 1, 1)),
            as_composite(after, dt.date(2018, 1, 1)),
            **kwargs,
        )
        disturbed = np.asarray(layers.disturbed.fillna(False).astype(bool).values)
        pred = predicted_mask(disturbed)
        p, r, f = scores(pred, truth)
        out[city] = (p, r, f, float(pred.mean()), layers.threshold)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--kw", default="{}", help="JSON keyword arguments for detect_change")
    parser.add_argument("--cities", default=",".join(CITIES))
    args = parser.parse_args()
    kwargs = json.loads(args.kw)
    start = time.perf_counter()
    res = run(args.data, kwargs, tuple(args.cities.split(",")))
    print(f"{'city':<12} {'prec':>6} {'rec':>6} {'F1':>6} {'pred%':>6} {'thr':>6}")
    for city, (p, r, f, share, thr) in res.items():
        print(f"{city:<12} {p:6.3f} {r:6.3f} {f:6.3f} {100 * share:6.2f} {thr:6.2f}")
    mean = np.mean([v[:3] for v in res.values()], axis=0)
    print(f"{'mean':<12} {mean[0]:6.3f} {mean[1]:6.3f} {mean[2]:6.3f}")
    print(f"({time.perf_counter() - start:.1f} s, kwargs {kwargs})")


if __name__ == "__main__":
    main()
