"""Download cache: every fetched acquisition tile is kept as a COG under a key that says what it is.

A key is (source, collection, tile, date, bands); its file is
``<root>/<source>/<collection>/<tile>/<date>_<bands>.tif``. A file is only ever seen whole: it is
written under a temporary name and renamed into place, so a run killed half-way leaves the tiles it
finished and nothing else, and the next run fetches only the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from ..errors import SourceError
from .atomic import atomic_path

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _part(text: str) -> str:
    cleaned = _SAFE.sub("-", text).strip("-.")
    if not cleaned:
        raise ValueError(f"cache key part {text!r} has no usable characters")
    return cleaned


@dataclass(frozen=True)
class CacheKey:
    """What a cached tile holds."""

    source: str
    collection: str
    tile: str
    date: str
    bands: tuple[str, ...]

    def relative_path(self) -> Path:
        bands = "-".join(_part(b) for b in self.bands)
        return (
            Path(_part(self.source))
            / _part(self.collection)
            / _part(self.tile)
            / f"{_part(self.date)}_{bands}.tif"
        )


class DownloadCache:
    """COG files of fetched imagery under `root`, one per :class:`CacheKey`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: CacheKey) -> Path:
        return self.root / key.relative_path()

    def get(self, key: CacheKey) -> Path | None:
        """The cached file of `key`, or None when it was never completed."""
        path = self.path(key)
        return path if path.is_file() else None

    def put(
        self,
        key: CacheKey,
        data: np.ndarray,
        *,
        crs: CRS | str,
        transform: Affine,
        nodata: float | None = 0,
    ) -> Path:
        """Store a (band, y, x) array as a DEFLATE COG whose band descriptions name the bands."""
        if data.ndim != 3 or data.shape[0] != len(key.bands):
            raise ValueError(
                f"cache put {key.relative_path()}: data of shape {data.shape} does not hold "
                f"the {len(key.bands)} bands {list(key.bands)}"
            )
        target = self.path(key)
        profile = {
            "driver": "COG",
            "width": data.shape[2],
            "height": data.shape[1],
            "count": data.shape[0],
            "dtype": data.dtype.name,
            "crs": crs,
            "transform": transform,
            "nodata": nodata,
            "compress": "deflate",
            "blocksize": 512,
        }
        try:
            with atomic_path(target) as tmp:
                with rasterio.open(tmp, "w", **profile) as dst:
                    dst.write(data)
                    for i, band in enumerate(key.bands, start=1):
                        dst.set_band_description(i, band)
        except OSError as exc:
            raise SourceError(f"cannot write cache file {target}: {exc}") from exc
        return target

    def entries(self, source: str, collection: str | None = None) -> Sequence[Path]:
        """Every completed file of a source (and collection), sorted."""
        base = self.root / _part(source)
        if collection is not None:
            base = base / _part(collection)
        return sorted(base.rglob("*.tif")) if base.exists() else []
