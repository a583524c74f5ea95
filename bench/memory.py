"""Speed and memory of the pipeline on large scenes from tiled GeoTIFFs on disk.

Writes a synthetic two-date scene (6 reflectance bands + SCL per date, single-band tiled DEFLATE
GeoTIFFs named like Sentinel-2 products) once per size, then measures in separate processes, in
the same run:

- `read`:     merely reading the same 14 band files with rasterio on all cores (the floor:
              measured before and again after the other steps, the mean of the two);
- `fused`:    the reference: NDVI and bare-soil-index differences and a threshold, fused per
              chunk on dask threads, reading each chunk once;
- `pipeline`: `changedetect compare BEFORE AFTER` (lazy, chunked);
- `naive`:    the same steps on whole numpy arrays (with --naive).

For each it prints wall time, CPU seconds (user + system: less sensitive than wall time to other
load on a shared machine), both as ratios to the read floor, and peak resident memory. For the
pipeline also: band-file chunk reads done against those needed (each file's chunks once), and
the time in each stage: `stats` (the sample pass for the scene statistics), `pass` (read, mask,
composite and test every chunk, write scratch rasters), `patches` (clean, label, polygons,
clues, site views), `outputs` (the score COG, GeoJSON, chips, report), and the peak resident
memory reached by the end of each; then the CPU seconds of its parts (`PARTS`), each timed on
the CPU clock of the thread that ran it, and of its main thread in all.

`--heavy` plants about 5 % of the pixels as change (a few quarries otherwise): memory and time
must not grow with the amount of change.

    python bench/memory.py --size 10000                  # the benchmark (about 4 GB of scratch)
    python bench/memory.py --size 2500 5000 10000        # cost against size
    python bench/memory.py --size 10000 --heavy          # against the amount of change
    python bench/memory.py --size 2000                   # a quick look
"""

from __future__ import annotations

import argparse
import importlib
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


#: Quarry radius (px) and, with --heavy, how many quarries per pixel: about 5 % of the scene.
QUARRY_RADIUS = 15
HEAVY_DENSITY = 0.05 / (np.pi * QUARRY_RADIUS**2)


def write_scene(
    folder: Path, size: int, date: str, seed: int, quarries: bool, heavy: bool = False
) -> None:
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
    n_quarries = round(size * size * HEAVY_DENSITY) if heavy else max(4, size * size // 4_000_000)
    centres = rng.integers(0, size, (n_quarries, 2))
    r = QUARRY_RADIUS
    disk = np.add.outer(np.arange(-r, r + 1) ** 2, np.arange(-r, r + 1) ** 2) < r**2
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
            pad = 2 * r + 1  # room for a whole disk beside the strip, on every side
            blob = np.zeros((h + 2 * pad, size + 2 * pad), bool)
            if quarries:
                near = centres[(centres[:, 0] > row - r - 1) & (centres[:, 0] < row + h + r)]
                for cy, cx in near:
                    y0, x0 = cy - row - r + pad, cx - r + pad  # the disk's corner, padded
                    blob[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1] |= disk
            blob = blob[pad : pad + h, pad : pad + size]
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


def ensure_data(root: Path, size: int, heavy: bool) -> tuple[Path, Path]:
    scene = root / f"s{size}{'-heavy' if heavy else ''}"
    before, after = scene / "before", scene / "after"
    if not (after / "done").exists():
        write_scene(before, size, "20240501", 1, quarries=False)
        write_scene(after, size, "20250501", 2, quarries=True, heavy=heavy)
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


def step_fused(before: Path, after: Path) -> None:
    """NDVI and bare-soil-index differences thresholded, one fused task per chunk."""
    import dask
    import dask.array as da

    def band_files(folder: Path) -> dict[str, Path]:
        return {b: next(folder.glob(f"*_{b}.tif")) for b in BANDS if b != "SCL"}

    files = [band_files(before), band_files(after)]
    with rasterio.open(files[0]["B04"]) as src:
        shape = src.shape

    def chunk(block_info: dict | None = None) -> np.ndarray:
        assert block_info is not None
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        window = Window(c0, r0, c1 - c0, r1 - r0)
        indices = []
        for date in files:
            v = {}
            for band in ("B02", "B04", "B08", "B11"):
                with rasterio.open(date[band]) as src:
                    v[band] = src.read(1, window=window).astype(np.float32)
            ndvi = (v["B08"] - v["B04"]) / (v["B08"] + v["B04"] + 1e-6)
            swir_red, nir_blue = v["B11"] + v["B04"], v["B08"] + v["B02"]
            indices.append((ndvi, (swir_red - nir_blue) / (swir_red + nir_blue + 1e-6)))
        (ndvi0, bsi0), (ndvi1, bsi1) = indices
        return ((ndvi0 - ndvi1 > 0.2) & (bsi1 - bsi0 > 0.1)).astype(np.uint8)

    changed = da.map_blocks(chunk, chunks=da.core.normalize_chunks(1024, shape), dtype=np.uint8)
    with dask.config.set(scheduler="threads"):
        changed.sum().compute()


#: Stages of the pipeline the bench times: stage -> the pipeline functions that make it up.
STAGES = {
    "stats": ("prepare_change_test",),
    "pass": ("run_pass",),
    "patches": (
        "label_changed_pixels",
        "patch_statistics",
        "build_patches",
        "make_clues",
        "site_findings",
    ),
    "outputs": ("mask_score_to_patches", "publish"),
}
#: CPU seconds of the pipeline's parts, each timed by its threads' CPU clock (the load of other
#: processes moves wall time, and the total, less): (module, attribute, what it is). The read
#: includes its conversion to float32, timed again on its own.
PARTS = (
    ("changedetect.io.sources.local", "_reflectance", "converting to float32"),
    ("changedetect.algorithms.composite", "masked_composite", "masking and compositing"),
    ("changedetect.algorithms.detect", "ChangeTest.evaluate_tiles", "the test"),
    ("changedetect.pipeline", "preview_bytes", "preview bytes"),
    ("changedetect.io.sinks.rasters", "ScratchRasters.write", "scratch writes"),
    ("changedetect.algorithms.detect", "estimate_globals", "sample statistics"),
    ("changedetect.pipeline", "write_cog", "COG copy"),
)


def step_pipeline(before: Path, after: Path, out: Path) -> dict[str, object]:
    main_thread_start = time.thread_time()  # before importing changedetect and what it uses
    import functools

    import changedetect.io.sources.local as local
    import changedetect.pipeline as pipeline
    from changedetect.cli import main

    seconds = dict.fromkeys(STAGES, 0.0)
    peaks = dict.fromkeys(STAGES, 0.0)
    reads: list[float] = []
    cpu = dict.fromkeys([what for _, _, what in PARTS], 0.0)

    def measured(function, clock, record):  # type: ignore[no-untyped-def]
        """`function` with each call's duration on `clock` handed to `record`."""

        @functools.wraps(function)  # dask looks for a read's block_id parameter
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                record(clock() - start)

        return wrapper

    def in_stage(stage: str):  # type: ignore[no-untyped-def]
        def record(elapsed: float) -> None:
            seconds[stage] += elapsed
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            peaks[stage] = max(peaks[stage], peak)

        return record

    def in_part(what: str):  # type: ignore[no-untyped-def]
        def record(elapsed: float) -> None:
            cpu[what] += elapsed

        return record

    for stage, names in STAGES.items():
        for name in names:
            timed = measured(getattr(pipeline, name), time.perf_counter, in_stage(stage))
            setattr(pipeline, name, timed)
    for module, name, what in PARTS:
        owner = importlib.import_module(module)
        *classes, attribute = name.split(".")
        for cls in classes:
            owner = getattr(owner, cls)
        timed = measured(getattr(owner, attribute), time.thread_time, in_part(what))
        setattr(owner, attribute, timed)
    counted = measured(local._read_chunk, time.thread_time, reads.append)
    local._read_chunk = counted
    chunk = int(os.environ.get("BENCH_CHUNK", "512"))
    code = main(
        [
            "compare",
            str(before),
            str(after),
            "--out",
            str(out),
            "--quiet",
            "--chunk-size",
            str(chunk),
        ]
    )
    if code != 0:
        raise SystemExit(code)
    with rasterio.open(next(before.glob("*_B02.tif"))) as src:
        height, width = src.shape
    n_chunks = -(-height // chunk) * -(-width // chunk)
    return {
        "reads": len(reads),
        "reads_needed": n_chunks * 2 * len(BANDS),
        "stages": seconds,
        "peaks": peaks,
        "cpu_parts": {"reading band chunks": sum(reads), **cpu},
        "main_thread_cpu_s": time.thread_time() - main_thread_start,
    }


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
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    extra = {
        "read": lambda: step_read(before, after),
        "fused": lambda: step_fused(before, after),
        "pipeline": lambda: step_pipeline(before, after, out),
        "naive": lambda: step_naive(before, after),
    }[step]()
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "step": step,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu0,
        "peak_mb": usage.ru_maxrss / 1024,
        **(extra or {}),
    }
    print(json.dumps(report))


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
        "--size", type=int, nargs="+", default=[10000], help="scene edge(s) in pixels"
    )
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "changedetect-bench"
    )
    parser.add_argument("--heavy", action="store_true", help="about 5 %% of the pixels change")
    parser.add_argument("--naive", action="store_true", help="also the whole-array numpy steps")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        data, size = args.write
        ensure_data(Path(data), int(size), args.heavy)
        return
    if args.child:
        step, before, after, out = args.child
        child(step, Path(before), Path(after), Path(out))
        return
    steps = ["read", "fused", "pipeline"] + (["naive"] if args.naive else [])
    ratios = {}
    for size in args.size:
        print(f"\nscene {size} x {size} px{' (heavy change)' if args.heavy else ''}, "
              f"2 dates x 7 bands, data in {args.data}")  # fmt: skip
        # written by a child too: Linux carries a process's peak RSS across fork and exec, so
        # every step forked from a parent that held the scene would report at least that peak
        subprocess.run(
            [sys.executable, __file__, "--write", str(args.data), str(size)]
            + (["--heavy"] if args.heavy else []),
            check=True,
        )
        before, after = ensure_data(args.data, size, args.heavy)
        out = args.data / "out"
        # one untimed read first: every step then finds the files in the page cache, so the
        # floor and the pipeline are both measured decoding, not waiting for the disk
        measure("read", before, after, out)
        results = {s: measure(s, before, after, out) for s in steps}
        # the floor once more after the others, and their mean the yardstick: on a shared host
        # one reading of it moved by a fifth from run to run, more than the pipeline's ratio
        results["read again"] = measure("read", before, after, out)
        floor = {
            key: (results["read"][key] + results["read again"][key]) / 2
            for key in ("wall_s", "cpu_s")
        }
        print(f"{'step':10s} {'wall s':>8s} {'x read':>7s} {'cpu s':>8s} {'x read':>7s} "
              f"{'peak MB':>8s}   (x read: against the mean of the two reads)")  # fmt: skip
        for step, r in results.items():
            print(
                f"{step:10s} {r['wall_s']:8.1f} {r['wall_s'] / floor['wall_s']:7.2f} "
                f"{r['cpu_s']:8.1f} {r['cpu_s'] / floor['cpu_s']:7.2f} {r['peak_mb']:8.0f}"
            )
        run = results["pipeline"]
        ratios[size] = run["cpu_s"] / floor["cpu_s"]
        print(f"pipeline chunk reads: {run['reads']} done, {run['reads_needed']} needed "
              f"({run['reads'] / run['reads_needed']:.2f}x)")  # fmt: skip
        other = run["wall_s"] - sum(run["stages"].values())
        print("pipeline stages (wall s): " + ", ".join(
            f"{stage} {sec:.1f}" for stage, sec in run["stages"].items())
            + f", other {other:.1f} (start-up, imports, loading the plan)")  # fmt: skip
        print("peak RSS by the end of each stage (MB): " + ", ".join(
            f"{stage} {mb:.0f}" for stage, mb in run["peaks"].items()))  # fmt: skip
        print("pipeline CPU s by part: " + ", ".join(
            f"{what} {sec:.2f}" for what, sec in run["cpu_parts"].items())
            + f"; the main thread in all {run['main_thread_cpu_s']:.1f} (imports, graphs, "
            "scheduling, statistics, writes, patches, outputs)")  # fmt: skip
    if len(ratios) > 1:
        small, large = min(ratios), max(ratios)
        print(f"\ncpu x read at {large}: {ratios[large]:.2f}, at {small}: {ratios[small]:.2f} "
              f"({ratios[large] / ratios[small] - 1:+.0%})")  # fmt: skip


if __name__ == "__main__":
    main()
