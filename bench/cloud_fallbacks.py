"""Why a one- or two-acquisition window without a product cloud mask gets none: the cloud tests
that need no thermal band, run on the cloud-free labelled pairs under ../shared/data.

    python bench/cloud_fallbacks.py [--data ../shared/data]

For each OSCD city (Sentinel-2 L1C, cloud-free on both dates) it prints the share of the scene
and of its labelled changed pixels that each candidate would mask:
- `one date`: Fmask's spectral cloud tests without the thermal band (NDVI, NIR/SWIR1, whiteness,
  HOT: changedetect.algorithms.clouds.spectral_cloud) on each date alone;
- `pair`: the multitemporal test's departures (changedetect.algorithms.clouds.departures) with
  the other date standing in for the window median: brighter and cloud-like is cloud, darker in
  NIR and SWIR1 is shadow.
Every masked pixel here is a false mask: the scenes have no cloud.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from changedetect.algorithms.clouds import departures, spectral_cloud
from changedetect.io.sources.local import LocalSource, acquisition_from_path
from changedetect.types import ANALYSIS_BANDS

try:  # run as `python bench/cloud_fallbacks.py` or imported as bench.cloud_fallbacks
    from scenes import CITIES, DEFAULT_DATA, read_reference, scene_paths
except ImportError:  # pragma: no cover
    from bench.scenes import CITIES, DEFAULT_DATA, read_reference, scene_paths

Bands = dict[str, np.ndarray]


def load_pair(data: Path, name: str) -> tuple[Bands, Bands, np.ndarray]:
    """Both dates' analysis bands on the date-1 grid, and the labelled changed pixels."""
    paths = scene_paths(data, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acquisitions = [acquisition_from_path(p, paths[2]) for p in paths[:2]]
    grid = acquisitions[0].grid
    assert grid is not None
    source = LocalSource(None, paths[2], acquisitions=acquisitions)
    dates = []
    for acq in acquisitions:
        stack = source.load([acq], list(ANALYSIS_BANDS), grid, 1024)
        dates.append({b: stack[b].values[0].astype("f4") for b in ANALYSIS_BANDS})
    changed, scored = read_reference(data, name, grid.shape.yx)
    return dates[0], dates[1], changed & scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    print(
        f"{'city':12s} {'date':7s} {'one date':>9s} {'on change':>10s} {'pair':>7s} {'on change':>10s}"
    )
    worst = {"one date": 0.0, "pair": 0.0}
    for name in CITIES:
        first, second, changed = load_pair(args.data, name)
        for tag, d, other in (("before", first, second), ("after", second, first)):
            one, pair = spectral_cloud(d), departures(d, other)
            worst["one date"] = max(worst["one date"], float(one.mean()))
            worst["pair"] = max(worst["pair"], float(pair.mean()))
            print(
                f"{name:12s} {tag:7s} {one.mean():9.1%} {one[changed].mean():10.1%} "
                f"{pair.mean():7.1%} {pair[changed].mean():10.1%}"
            )
    print(f"worst share of a cloud-free scene masked: one date {worst['one date']:.1%}, "
          f"pair {worst['pair']:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
