"""Small GeoTIFF fixtures for tests: chosen CRS, transform, dtype, nodata and band descriptions.

Typical use::

    grid = make_grid("EPSG:32650", shape=(64, 64), resolution=10.0)
    bands = seeded_reflectance(["B02", "B04", "B08"], grid.shape.yx, seed=1)
    write_multiband(tmp_path / "S2_20200501.tif", bands, grid, nodata=0)
    write_band_folder(tmp_path / "acq", "T50_20200501", {"B02": b02, "B11": b11},
                      {"B02": grid, "B11": coarsen_grid(grid, 2)})

Files are written with their header (IFD) first, so :func:`truncate_file` produces a file that
still opens and only fails when its later blocks are read, like a broken download.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from odc.geo import SomeCRS
from odc.geo.geobox import GeoBox

__all__ = [
    "coarsen_grid",
    "make_grid",
    "seeded_reflectance",
    "truncate_file",
    "write_band_folder",
    "write_multiband",
]


def make_grid(
    crs: SomeCRS = "EPSG:32650",
    *,
    left: float = 500_000.0,
    top: float = 3_500_000.0,
    resolution: float = 10.0,
    shape: tuple[int, int] = (64, 64),
    resolution_y: float | None = None,
) -> GeoBox:
    """A north-up grid with its top-left corner at (left, top) and square (or given) pixels."""
    res_y = resolution if resolution_y is None else resolution_y
    transform = Affine(resolution, 0.0, left, 0.0, -abs(res_y), top)
    return GeoBox((int(shape[0]), int(shape[1])), transform, crs)


def coarsen_grid(grid: GeoBox, factor: float) -> GeoBox:
    """The grid covering the same extent with pixels `factor` times larger (e.g. a 20 m band)."""
    return grid.zoom_out(factor)


def seeded_reflectance(
    bands: Sequence[str],
    shape: tuple[int, int],
    seed: int = 0,
    *,
    low: float = 0.02,
    high: float = 0.5,
    scale: float = 1e4,
) -> dict[str, np.ndarray]:
    """Seeded uint16 digital numbers (reflectance * `scale`), uniform in [low, high), per band."""
    rng = np.random.default_rng(seed)
    return {
        band: np.round(rng.uniform(low, high, size=shape) * scale).astype(np.uint16)
        for band in bands
    }


def write_multiband(
    path: str | Path,
    arrays: Mapping[str, np.ndarray],
    grid: GeoBox | None,
    dtype: Any = None,
    nodata: float | None = None,
    descriptions: bool | Sequence[str] = True,
    *,
    blocksize: int | None = None,
    compress: str | None = "deflate",
    datetime: dt.datetime | None = None,
) -> Path:
    """Write `arrays` (band name -> 2-D array, in file order) as one GeoTIFF on `grid`.

    `descriptions`: True names each band by its key, False leaves them empty, a list sets them as
    given. `grid=None` writes a file without georeference. `blocksize` (multiple of 16) tiles the
    file; None writes strips. `datetime` sets TIFFTAG_DATETIME.
    """
    path = Path(path)
    names = list(arrays)
    if not names:
        raise ValueError("write_multiband needs at least one band")
    data = np.stack([np.asarray(arrays[name]) for name in names])
    if data.ndim != 3:
        raise ValueError(f"bands must be 2-D arrays, got shape {data.shape[1:]}")
    if grid is not None and data.shape[1:] != grid.shape.yx:
        raise ValueError(f"band arrays have shape {data.shape[1:]}, the grid {grid.shape.yx}")
    if descriptions is True:
        labels: list[str] | None = names
    elif descriptions is False:
        labels = None
    else:
        labels = list(descriptions)
        if len(labels) != len(names):
            raise ValueError(f"{len(labels)} descriptions for {len(names)} bands")
    out_dtype = np.dtype(dtype) if dtype is not None else data.dtype
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": out_dtype.name,
        "nodata": nodata,
    }
    if grid is not None:
        profile["crs"] = grid.crs.to_wkt()
        profile["transform"] = grid.transform
    if compress:
        profile["compress"] = compress
    if blocksize is not None:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # grid=None
        ds = rasterio.open(path, "w", **profile)
    with ds:
        # Metadata before pixels: GDAL then writes the header first and never rewrites it.
        if labels is not None:
            for i, label in enumerate(labels, start=1):
                ds.set_band_description(i, label)
        if datetime is not None:
            ds.update_tags(TIFFTAG_DATETIME=datetime.strftime("%Y:%m:%d %H:%M:%S"))
        ds.write(data.astype(out_dtype, copy=False))
    return path


def write_band_folder(
    folder: str | Path,
    prefix: str,
    arrays: Mapping[str, np.ndarray],
    grids_per_band: Mapping[str, GeoBox] | GeoBox,
    dtype: Any = None,
    nodata: float | None = None,
    *,
    blocksize: int | None = None,
    compress: str | None = "deflate",
    datetime: dt.datetime | None = None,
) -> dict[str, Path]:
    """Write one single-band GeoTIFF ``<prefix>_<BAND>.tif`` per band into `folder`.

    `grids_per_band` gives each band its grid (e.g. 10 m for B02, :func:`coarsen_grid` for B11),
    or one grid for all. Returns band -> written path.
    """
    folder = Path(folder)
    written: dict[str, Path] = {}
    for band, array in arrays.items():
        grid = grids_per_band if isinstance(grids_per_band, GeoBox) else grids_per_band[band]
        written[band] = write_multiband(
            folder / f"{prefix}_{band}.tif",
            {band: array},
            grid,
            dtype=dtype,
            nodata=nodata,
            descriptions=False,
            blocksize=blocksize,
            compress=compress,
            datetime=datetime,
        )
    return written


def truncate_file(path: str | Path, keep: float = 0.6) -> Path:
    """Cut `path` to `keep` of its size in place, like an interrupted download; returns it."""
    path = Path(path)
    if not 0.0 < keep < 1.0:
        raise ValueError(f"keep must be between 0 and 1, got {keep}")
    raw = path.read_bytes()
    path.write_bytes(raw[: max(1, int(len(raw) * keep))])
    return path
