"""Speed and memory of the pipeline on a large scene from tiled GeoTIFFs on disk.

Writes a synthetic two-date scene (6 reflectance bands + SCL per date, single-band tiled DEFLATE
GeoTIFFs named like Sentinel-2 products) once, then measures in separate processes, in the same run:

- `read`:     merely reading the same 14 band files with rasterio on all cores (the floor);
- `pipeline`: `changedetect compare BEFORE AFTER` (lazy, chunked, one pass);
- `naive`:    the same steps on whole numpy arrays.

Prints wall time, peak resident memory, and wall time as a ratio of the read floor.

    python bench/memory.py --size 10000          # the benchmark (about 4 GB of scratch files)
    python bench/memory.py --size 2000 --skip-naive   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")
FOREST = {"B02": 300, "B03": 500, "B04": 300, "B08": 3000, "B11": 1500, "B12": 700}
ROCK = {"B02": 2000, "B03": 2400, "B04": 2900, "B08": 3300, "B11": 4000, "B12": 3500}
STRIP = 1024


def write_scene(folder: Path, size: int, date: str, seed: int, quarries: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "crs": "EPSG:32649",
        "transform": Affine(10, 0, 300000, 0, -10, 3800000),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, size, (max(4, size * size // 4_000_000), 2))
    dsts = {
        b: rasterio.open(
            folder / f"T49SBA_{date}T000000_{b}.tif",
            "w",
            dtype="uint8" if b == "SCL" else "uint16",
            nodata=None if b == "SCL" else 0,
            **profile,
        )
        for b in BANDS
    }
    try:
        for row in range(0, size, STRIP):
            h = min(STRIP, size - row)
            yy, xx = np.mgrid[row : row + h, 0:size]
            blob = np.zeros((h, size), bool)
            if quarries:
                for cy, cx in centres:
                    blob |= (yy - cy) ** 2 + (xx - cx) ** 2 < 15**2
            texture = (np.sin(xx / 97.0) * np.cos(yy / 131.0) * 0.15).astype(np.float32)
            for band, value in FOREST.items():
                noise = rng.normal(0, 0.03, (h, size)).astype(np.float32)
                data = value * (1 + texture + noise)
                data[blob] = ROCK[band]
                dsts[band].write(
                    np.clip(data, 1, 10000).astype(np.uint16), 1, window=Window(0, row, size, h)
                )
            scl = np.full((h, size), 4, np.uint8)
            scl[blob] = 5
            dsts["SCL"].write(scl, 1, window=Window(0, row, size, h))
    finally:
        for dst in dsts.values():
            dst.close()


def ensure_data(root: Path, size: int) -> tuple[Path, Path]:
    before, after = root / f"s{size}" / "before", root / f"s{size}" / "after"
    if not (after / "done").exists():
        write_scene(before, size, "20240501", 1, quarries=False)
        write_scene(after, size, "20250501", 2, quarries=True)
        (after / "done").write_text("ok")
    return before, after


# --- measured steps, each run in a fresh process -------------------------------------------------


def step_read(before: Path, after: Path) -> None:
    files = sorted(before.glob("*.tif")) + sorted(after.glob("*.tif"))
    jobs = []
    for path in files:
        with rasterio.open(path) as src:
            for row in range(0, src.height, 2048):
                for col in range(0, src.width, 2048):
                    jobs.append(
                        (
                            path,
                            Window(
                                col, row, min(2048, src.width - col), min(2048, src.height - row)
                            ),
                        )
                    )

    def read(job: tuple[Path, Window]) -> int:
        with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(job[0]) as src:
            return int(src.read(1, window=job[1]).size)

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        sum(pool.map(read, jobs))


def step_pipeline(before: Path, after: Path, out: Path) -> None:
    from changedetect.cli import main

    code = main(
        [
            "compare",
            str(before),
            str(after),
            "--out",
            str(out),
            "--quiet",
            "--chunk-size",
            os.environ.get("BENCH_CHUNK", "1024"),
        ]
    )
    if code != 0:
        raise SystemExit(code)


def step_naive(before: Path, after: Path) -> None:
    from scipy import ndimage

    def load(folder: Path) -> dict[str, np.ndarray]:
        out = {}
        for band in BANDS:
            (path,) = folder.glob(f"*_{band}.tif")
            with rasterio.open(path) as src:
                data = src.read(1)
            out[band] = data if band == "SCL" else data.astype(np.float32) / 10000
        return out

    b, a = load(before), load(after)
    valid = ~np.isin(b["SCL"], [3, 8, 9, 10]) & ~np.isin(a["SCL"], [3, 8, 9, 10])
    ndvi_b = (b["B08"] - b["B04"]) / (b["B08"] + b["B04"])
    ndvi_a = (a["B08"] - a["B04"]) / (a["B08"] + a["B04"])
    z2 = np.zeros_like(ndvi_b)
    for band in FOREST:
        d = ndimage.median_filter(a[band] - b[band], size=3)
        med = np.median(d)
        sigma = 1.4826 * np.median(np.abs(d - med))
        z2 += ((d - med) / sigma) ** 2
    mag = np.sqrt(z2)
    med = np.median(mag)
    z = (mag - med) / (1.4826 * np.median(np.abs(mag - med)))
    changed = (z > 2.6) & valid & ~((ndvi_b > 0.5) & (ndvi_a > 0.5))
    changed = ndimage.binary_closing(ndimage.binary_opening(changed))
    labels, n = ndimage.label(changed)
    ndimage.sum_labels(ndvi_a - ndvi_b, labels, np.arange(1, n + 1))


def child(step: str, before: Path, after: Path, out: Path) -> None:
    start = time.perf_counter()
    {
        "read": lambda: step_read(before, after),
        "pipeline": lambda: step_pipeline(before, after, out),
        "naive": lambda: step_naive(before, after),
    }[step]()
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step": step, "wall_s": wall, "peak_mb": peak_mb}))


def measure(step: str, before: Path, after: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", step, str(before), str(after), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=10000, help="scene edge in pixels (default 10000)"
    )
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "changedetect-bench"
    )
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, before, after, out = args.child
        child(step, Path(before), Path(after), Path(out))
        return
    print(f"scene {args.size} x {args.size} px, 2 dates x 7 bands, data in {args.data}")
    before, after = ensure_data(args.data, args.size)
    out = args.data / "out"
    steps = ["read", "pipeline"] + ([] if args.skip_naive else ["naive"])
    # one untimed read first: every step then finds the files in the page cache, so the floor
    # and the pipeline are both measured decoding, not waiting for the disk
    measure("read", before, after, out)
    results = {s: measure(s, before, after, out) for s in steps}
    floor = results["read"]["wall_s"]
    print(f"{'step':10s} {'wall s':>8s} {'peak MB':>9s} {'x read':>7s}")
    for step, r in results.items():
        print(f"{step:10s} {r['wall_s']:8.1f} {r['peak_mb']:9.0f} {r['wall_s'] / floor:7.2f}")


if __name__ == "__main__":
    main()
