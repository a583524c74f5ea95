"""Landsat Taizhou benchmark of the change decision: a real TM/ETM+ pair (2000, 2003) at 30 m.

The two ENVI files hold 6 bands of raw 8-bit counts (TM 1, 2, 3, 4, 5, 7 = B02, B03, B04, B08,
B11, B12), scaled by 1/255 as the `landsat_tm_dn` sensor preset does: not reflectance, which is
part of the test. `change.bmp` and `unchanged.bmp` are sparse masks (white = labelled); only the
labelled pixels are scored. The decision is cleaned like the pipeline's patch stage with the
1000 m2 mapping unit (2 px at 30 m).

    /work/venv/bin/python bench/landsat_experiment.py [--data ../shared/data/landsat-taizhou]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from changedetect.algorithms.detect import detect_change
from changedetect.config import DetectionConfig

try:  # run as `python bench/landsat_experiment.py` or imported as bench.landsat_experiment
    from oscd_experiment import as_composite, predicted_mask, scores
except ImportError:  # pragma: no cover
    from bench.oscd_experiment import as_composite, predicted_mask, scores

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "landsat-taizhou"
PIXEL_M = 30.0
MIN_PIXELS = max(1, math.ceil(1000.0 / PIXEL_M**2 - 1e-9))


def load(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(before, after) as (band, y, x) counts / 255, and the change / unchanged label masks."""
    cubes = []
    for name in ("2000TM", "2003TM"):
        with rasterio.open(root / name) as src:
            cubes.append(src.read().astype("float32") / 255.0)
    masks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for name in ("change.bmp", "unchanged.bmp"):
            with rasterio.open(root / name) as src:
                masks.append(src.read(1) > 0)
    return cubes[0], cubes[1], masks[0], masks[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--kw", default="{}", help="JSON keyword arguments for detect_change")
    args = parser.parse_args()
    kwargs = json.loads(args.kw)
    start = time.perf_counter()
    before, after, changed, unchanged = load(args.data)
    # the pipeline's neighbourhood: detection.support_m of ground at this pixel size
    kwargs.setdefault("support_size", DetectionConfig().support_pixels(PIXEL_M))
    layers = detect_change(
        as_composite(before, dt.date(2000, 3, 17), chunk=128),
        as_composite(after, dt.date(2003, 3, 17), chunk=128),
        **kwargs,
    )
    disturbed = np.asarray(layers.disturbed.values, dtype=bool)
    pred = predicted_mask(disturbed, MIN_PIXELS)
    labelled = changed | unchanged
    p, r, f = scores(pred[labelled], changed[labelled])
    print(f"landsat-taizhou  precision {p:.3f}  recall {r:.3f}  F1 {f:.3f}")
    print(f"predicted share of the scene {pred.mean():.3f}; threshold z {layers.threshold:.2f}")
    print(f"({time.perf_counter() - start:.1f} s, kwargs {kwargs})")


if __name__ == "__main__":
    main()
