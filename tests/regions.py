"""Small local-folder regions for run tests: imagery and the run config that reads it."""

from __future__ import annotations

from pathlib import Path

import rasterio
import yaml
from pyproj import Transformer

from changedetect.testing.rasters import make_grid, write_multiband

from .test_cli import scene_dn

GRID = make_grid("EPSG:32649", shape=(96, 112))
SHAPE = (96, 112)


def write_nightly_region(root: Path, *, chips: bool = True) -> tuple[Path, Path]:
    """`root/imagery` with two 2024 before images of forest, and `root/nightly.yaml` running the
    AOI `valley` over it into `root/out`; the after images are the test's to add."""
    folder = root / "imagery"
    folder.mkdir()
    for day, seed in (("20240503", 1), ("20240513", 4)):
        write_multiband(folder / f"S2_{day}.tif", scene_dn(GRID.shape.yx, seed), GRID, nodata=0)
    output = f"{{dir: {root / 'out'}}}" if chips else f"{{dir: {root / 'out'}, chips: false}}"
    config = root / "nightly.yaml"
    config.write_text(
        f"source: {{kind: local, path: {folder}}}\n"
        "aois: [{name: valley}]\n"
        "before: {start: 2024-04-01, end: 2024-06-30}\n"
        "after: {start: 2025-04-01, end: 2025-12-31}\n"
        f"output: {output}\n"
    )
    return folder, config


def _inner_wgs84_bbox(grid, margin_deg=0.0005):
    to_geo = Transformer.from_crs(grid.crs.proj, "EPSG:4326", always_xy=True)
    left, bottom, right, top = grid.boundingbox
    lons, lats = to_geo.transform([left, right, right, left], [bottom, bottom, top, top])
    west, east = max(lons[0], lons[3]), min(lons[1], lons[2])
    south, north = max(lats[0], lats[1]), min(lats[2], lats[3])
    return [west + margin_deg, south + margin_deg, east - margin_deg, north - margin_deg]


def corrupt_inner_block(path: Path) -> None:
    """Overwrite one inner tile's compressed bytes: the file opens and passes the source's scan
    (which decodes the first and the last tile), and fails when the analysis reads that tile."""
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_2_2", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    raw[offset : offset + size] = b"\xff" * size
    path.write_bytes(bytes(raw))


def write_region(root: Path, aois=("valley",), *, corrupt=(), chunk_size=512, dask=None) -> Path:
    """A local-folder config: per AOI, two before images and one after image with a quarry, 20 km
    apart; the after image of each AOI in `corrupt` is cut short like a broken download."""
    folder = root / "imagery"
    folder.mkdir(parents=True, exist_ok=True)
    aoi_list = []
    for k, name in enumerate(aois):
        grid = make_grid("EPSG:32649", left=500_000.0 + 20_000.0 * k, shape=SHAPE)
        for day, seed in (("20240503", 1), ("20240513", 4)):
            write_multiband(
                folder / f"{name}_{day}.tif", scene_dn(SHAPE, seed + 10 * k), grid, nodata=0
            )
        after = folder / f"{name}_20250508.tif"
        arrays = scene_dn(SHAPE, 2 + 10 * k, quarry=True)
        write_multiband(after, arrays, grid, nodata=0, blocksize=16 if name in corrupt else None)
        if name in corrupt:
            corrupt_inner_block(after)
        aoi_list.append({"name": name, "bbox": _inner_wgs84_bbox(grid)})
    doc = {
        "name": "test-region",
        "source": {"kind": "local", "path": str(folder)},
        "aois": aoi_list,
        "before": {"start": "2024-04-01", "end": "2024-06-30"},
        "after": {"start": "2025-04-01", "end": "2025-12-31"},
        "detection": {"chunk_size": chunk_size},
        "output": {"dir": str(root / "out")},
    }
    if dask is not None:
        doc["dask"] = dask
    path = root / "region.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
