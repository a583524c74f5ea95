"""Detection quality on real imagery with labels, through `changedetect compare`.

- OSCD (../shared/data/oscd): seven real Sentinel-2 pairs with per-pixel urban-change labels
  (1 = no change, 2 = change), pixel-aligned with the date-1 images. A pixel counts as detected
  when it lies in a reported clue (change.tif > 0). Prints precision, recall and F1 per city and
  their mean, with the same settings for every city.
- Landsat Taizhou (../shared/data/landsat-taizhou): a real Landsat TM pair (raw 8-bit numbers),
  scored on the labelled pixels of change.bmp / unchanged.bmp only.

    python bench/quality_real.py [--data ../shared/data] [--out /tmp/quality]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from changedetect.cli import main as cli
from changedetect.evaluation import PixelQuality, evaluate_pixels

CITIES = ("abudhabi", "aguasclaras", "bercy", "bordeaux", "cupertino", "hongkong", "mumbai")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def detected(out: Path) -> np.ndarray:
    with rasterio.open(out / "change.tif") as src:
        score = src.read(1)
    return np.nan_to_num(score, nan=0.0) > 0


def run_compare(before: Path, after: Path, out: Path, *extra: str) -> None:
    code = cli(
        ["compare", str(before), str(after), "--out", str(out), "--quiet", "--no-chips", *extra]
    )
    if code != 0:
        raise SystemExit(f"compare failed for {before} -> {after}")


def oscd_city(data: Path, city: str, out: Path) -> PixelQuality:
    folder = data / "oscd" / city
    run_compare(
        folder / "imgs_1",
        folder / "imgs_2",
        out / city,
        "--preset",
        "sentinel2_l1c",
        "--name",
        city,
    )
    with rasterio.open(folder / "labels" / f"{city}-cm.tif") as src:
        label = src.read(1)
    predicted = detected(out / city)
    if predicted.shape != label.shape:
        raise SystemExit(f"{city}: change.tif {predicted.shape} vs label {label.shape}")
    return evaluate_pixels(predicted, label == 2, label > 0)


def landsat(data: Path, out: Path) -> PixelQuality:
    folder = data / "landsat-taizhou"
    run_compare(
        folder / "2000TM",
        folder / "2003TM",
        out / "taizhou",
        "--preset",
        "landsat_tm_dn",
        "--name",
        "taizhou",
    )
    change = np.asarray(Image.open(folder / "change.bmp").convert("L")) > 127
    unchanged = np.asarray(Image.open(folder / "unchanged.bmp").convert("L")) > 127
    return evaluate_pixels(detected(out / "taizhou"), change, change | unchanged)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "changedetect-quality"
    )
    args = parser.parse_args()
    print(f"{'scene':12s} {'precision':>9s} {'recall':>7s} {'F1':>6s}")
    f1s = []
    for city in CITIES:
        q = oscd_city(args.data, city, args.out)
        f1s.append(q.f1)
        print(f"{city:12s} {q.precision:9.3f} {q.recall:7.3f} {q.f1:6.3f}")
    print(f"{'OSCD mean':12s} {'':9s} {'':7s} {np.mean(f1s):6.3f}")
    q = landsat(args.data, args.out)
    print(f"{'taizhou':12s} {q.precision:9.3f} {q.recall:7.3f} {q.f1:6.3f}")


if __name__ == "__main__":
    main()
