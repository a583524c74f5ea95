"""Imagery from disk: multi-band rasters or folders of single-band ``*_<BAND>.tif`` files.

An *acquisition* on disk is one of

* a multi-band raster whose band descriptions name the bands (``B02``, ``B04``, ...);
* a folder of single-band rasters named ``..._<BAND>.tif`` (``T40QBM_20180328T065919_B08.tif``,
  ``..._B8A.tif``, ``..._SCL.tif``), bands at any resolution;
* any raster GDAL reads (e.g. ENVI) with an explicit band mapping, ``SensorConfig.bands`` or a
  preset, naming the file's bands in order (``SKIP`` ignores one). A mapping wins over descriptions.

:func:`acquisition_from_path` turns one path into an :class:`Acquisition` (metadata only; the file
is opened and its last stored block decoded so that truncated files fail early). :class:`LocalSource`
serves a folder of them, or a given list (``changedetect compare BEFORE AFTER``), behind the
:class:`ImagerySource` protocol. Loading is lazy: one dask block per (acquisition, file, chunk)
warps exactly that chunk of the target grid out of the file, so memory follows the chunk size.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox
from odc.geo.overlap import compute_reproject_roi
from odc.geo.roi import roi_is_empty
from odc.geo.xr import xr_coords
from pyproj import CRS as ProjCRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from ...algorithms.jit import ngjit
from ...config import LocalSourceConfig, SensorConfig
from ...errors import (
    ConfigError,
    CorruptInputError,
    GridMismatchError,
    MissingBandError,
    SourceError,
)
from ...models import Acquisition, TimeWindow
from ...types import ANALYSIS_BANDS, QUALITY_BANDS
from ..raster import (
    RASTER_ERRORS,
    grid_of,
    open_raster,
    overlap_fraction,
    reading_env,
    verify_readable,
)

log = logging.getLogger(__name__)

__all__ = ["LocalSource", "acquisition_from_path", "check_overlap", "scan_folder"]

#: File name suffixes read as rasters when scanning a folder (plus any file with an ENVI header).
RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".jp2", ".img", ".vrt"})

#: Files that accompany rasters and are never acquisitions themselves.
SIDECAR_SUFFIXES = frozenset(
    {".hdr", ".aux", ".xml", ".ovr", ".msk", ".prj", ".tfw", ".wld", ".j2w", ".txt", ".md", ".json"}
)

#: ``<prefix>_<BAND>.tif``, optionally with a resolution suffix (``_B02_10m.jp2``).
_BAND_FILE = re.compile(
    r"^(?:(?P<prefix>.*)[_-])?(?P<band>B0?\d{1,2}|B8A|SCL|QA_PIXEL)(?:_\d+m)?\.(?:tiff?|jp2)$",
    re.IGNORECASE,
)

#: SCL value given to acquisitions without a scene classification in a stack where others have
#: one: "unclassified", which no default cloud class rejects (0 where the reflectance is missing).
SCL_FILL_UNCLASSIFIED = 7

#: Warp transformer tolerance in pixels. GDAL's default (0.125) approximates the reprojection
#: piecewise-linearly per request, so results would depend on the chunk layout; this is exact.
_WARP_TOLERANCE = 1e-6
_WARP_MEM_LIMIT_MB = 64


# --------------------------------------------------------------------------------------------
# Band names


def normalize_band(text: str | None) -> str | None:
    """The band name `text` denotes in Sentinel-2 naming (``"b2"`` -> ``"B02"``, ``"B8A"``), or
    the quality layer it is (``"SCL"``, ``"QA_PIXEL"``), or None."""
    if not text:
        return None
    name = text.strip().upper()
    if name == "B8A" or name in QUALITY_BANDS:
        return name
    match = re.fullmatch(r"B0?(\d{1,2})", name)
    if match and 1 <= int(match.group(1)) <= 12:
        return f"B{int(match.group(1)):02d}"
    return None


def _band_of_file(name: str) -> tuple[str, str] | None:
    """(prefix, band) of a ``<prefix>_<BAND>.tif`` file name, or None."""
    match = _BAND_FILE.match(name)
    if match is None:
        return None
    band = normalize_band(match.group("band"))
    return (match.group("prefix") or "", band) if band else None


# --------------------------------------------------------------------------------------------
# Dates


def _compile_date_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"date_pattern {pattern!r} is not a valid regular expression ({exc}); use e.g. "
            r"'(\d{8})' whose first group is YYYYMMDD"
        ) from None


def parse_date(text: str, pattern: str = r"(\d{8})") -> dt.datetime | None:
    r"""The first valid date matched by `pattern` in `text` (its first group, or the whole match).

    The match's digits are read as YYYYMMDD (``2021-07-04`` works too), with the time of day if
    ``THHMMSS`` follows; a pattern that captures only YYYYMM or YYYY gives the first of the month
    or year (e.g. ``^(\d{4})`` for ``2000TM``). None if nothing matches.
    """
    rx = _compile_date_pattern(pattern)
    for match in rx.finditer(text):
        group = 1 if rx.groups else 0
        digits = re.sub(r"\D", "", match.group(group) or "")
        formats = {8: "%Y%m%d", 6: "%Y%m", 4: "%Y"}
        size = 8 if len(digits) >= 8 else len(digits)
        if size not in formats:
            continue
        try:
            when = dt.datetime.strptime(digits[:size], formats[size])
        except ValueError:
            continue
        if not 1950 <= when.year <= 2100:
            continue
        clock = re.match(r"T(\d{2})(\d{2})(\d{2})", text[match.end(group) :])
        if clock and size == 8:
            hh, mm, ss = (int(v) for v in clock.groups())
            if hh < 24 and mm < 60 and ss < 60:
                when = when.replace(hour=hh, minute=mm, second=ss)
        return when
    return None


def _parse_tiff_datetime(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return dt.datetime.strptime(value.strip()[:19], fmt)
        except ValueError:
            continue
    return None


#: Landsat product ids whose acquisition date they carry: Collection ids
#: (``LE07_L1TP_119038_20000317_20200917_02_T1``: the first date) and pre-collection ones
#: (``L71119038_03820000317``: path-row, then the row again and the date).
_LANDSAT_ID_DATE = re.compile(
    r"(?<![A-Za-z0-9])L[COTEM]\d{2}_\w{4}_\d{6}_(\d{8})_\d{8}_\d{2}_\w{2}(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9])L\d{2}\d{6}_\d{3}(\d{8})(?!\d)"
)
#: ENVI header fields that hold the acquisition time (ENVI's own, and what processors write).
_ENVI_TIME = re.compile(r"^\s*acquisition (?:time|date)\s*=\s*\{?\s*([^}\n]+)", re.I | re.M)
#: An MTL file's acquisition date.
_MTL_DATE = re.compile(r"^\s*(?:DATE_ACQUIRED|ACQUISITION_DATE)\s*=\s*\"?(\d{4}-\d{2}-\d{2})", re.M)


def _sidecar_datetime(raster: Path) -> tuple[dt.datetime, str] | None:
    """The acquisition date that the metadata beside `raster` carries, and where it was read:
    an ENVI header's acquisition time, else the Landsat product id of the MTL file it names (the
    MTL file's DATE_ACQUIRED when it lies beside), else a Landsat MTL file of the raster's name."""
    headers = [raster.with_suffix(s) for s in (".hdr", ".HDR")]
    headers += [raster.with_name(raster.name + s) for s in (".hdr", ".HDR")]
    for header in dict.fromkeys(headers):
        if not header.is_file():
            continue
        text = header.read_text(errors="replace")
        match = _ENVI_TIME.search(text)
        when = parse_date(match.group(1), r"(\d{4}-?\d{2}-?\d{2})") if match else None
        if when is not None:
            return when, f"the ENVI header {header.name}"
        for mtl in dict.fromkeys(re.findall(r"[\w.-]+_MTL\.txt", text)):
            read = _mtl_datetime(header.with_name(mtl))
            if read is not None:
                return read, mtl
            when = _landsat_id_date(mtl)
            if when is not None:
                return when, f"the Landsat product id {mtl} named in {header.name}"
    for mtl in (
        raster.with_name(raster.stem + "_MTL.txt"),
        raster.with_name(raster.name + "_MTL.txt"),
    ):
        when = _mtl_datetime(mtl)
        if when is not None:
            return when, mtl.name
    return None


def _mtl_datetime(path: Path) -> dt.datetime | None:
    if not path.is_file():
        return None
    match = _MTL_DATE.search(path.read_text(errors="replace"))
    return dt.datetime.fromisoformat(match.group(1)) if match else None


def _landsat_id_date(text: str) -> dt.datetime | None:
    match = _LANDSAT_ID_DATE.search(text)
    if match is None:
        return None
    return parse_date(match.group(1) or match.group(2))


def _acquisition_datetime(
    acq_id: str,
    names: Sequence[str],
    pattern: str,
    tiff_datetime: str | None,
    raster: Path,
) -> dt.datetime:
    """The acquisition's date from what it carries: its name (`pattern`), the metadata beside it
    (ENVI header, Landsat MTL), its TIFFTAG_DATETIME. Never guessed: a file's modification time
    says when it was copied, not when the scene was seen, and a wrong date silently mislabels
    every clue and breaks the time windows."""
    for name in names:
        when = parse_date(name, pattern)
        if when is not None:
            return when
    sidecar = _sidecar_datetime(raster)
    if sidecar is not None:
        when, where = sidecar
        log.info("acquisition %s: dated %s from %s", acq_id, when.date().isoformat(), where)
        return when
    when = _parse_tiff_datetime(tiff_datetime)
    if when is not None:
        log.info(
            "acquisition %s: no date in its name matching %r; using TIFFTAG_DATETIME %s",
            acq_id,
            pattern,
            when.isoformat(),
        )
        return when
    raise SourceError(
        f"acquisition {acq_id} ({raster}): no date in its name matching {pattern!r}, in an ENVI "
        "header or Landsat MTL file beside it, or in a TIFFTAG_DATETIME; put the date (YYYYMMDD) "
        "in the name, set the source's date_pattern, or give it (compare: --before-date / "
        "--after-date)"
    )


# --------------------------------------------------------------------------------------------
# Acquisitions from paths


def acquisition_from_path(
    path: Path,
    sensor: SensorConfig,
    *,
    date_pattern: str = r"(\d{8})",
    when: dt.datetime | None = None,
) -> Acquisition:
    """Describe the acquisition at `path` (a raster file or a folder of ``*_<BAND>.tif`` files).

    Fills ``assets`` (band -> (file, band index)), ``datetime`` (`when` if given, else from the
    name via `date_pattern`, the ENVI header or Landsat MTL file beside it, or TIFFTAG_DATETIME;
    SourceError when none says) and ``grid`` (the native grid of the finest band). Every file used is opened and its last stored block decoded:
    raises SourceError / CorruptInputError / MissingBandError with a one-line message otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"acquisition {path} does not exist; check the path")
    if path.is_dir():
        files = _band_files_in(path)
        if not files:
            raise SourceError(
                f"folder {path} holds no band files named <name>_<BAND>.tif (e.g. "
                "T40QBM_20180328T065919_B02.tif); name the files by band or give a multi-band raster"
            )
        by_band: dict[str, list[Path]] = {}
        for (_prefix, band), file in sorted(files.items()):
            by_band.setdefault(band, []).append(file)
        repeated = {b: fs for b, fs in by_band.items() if len(fs) > 1}
        if repeated:
            band, fs = next(iter(sorted(repeated.items())))
            raise SourceError(
                f"folder {path} holds {len(fs)} files for band {band} ({', '.join(f.name for f in fs)}): "
                "it mixes acquisitions; give each acquisition its own folder, or use the folder as a "
                "local source (one acquisition per file-name prefix)"
            )
        return _from_band_files(
            path.name, {b: fs[0] for b, fs in by_band.items()}, date_pattern, path, when
        )
    return _from_file(path, sensor, date_pattern, when)


def _band_files_in(folder: Path) -> dict[tuple[str, str], Path]:
    """(prefix, band) -> file for the band-named rasters directly inside `folder`."""
    found: dict[tuple[str, str], Path] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.is_file():
            continue
        key = _band_of_file(entry.name)
        if key is not None:
            found[key] = entry
    return found


def _from_band_files(
    acq_id: str,
    files: dict[str, Path],
    date_pattern: str,
    where: Path,
    when: dt.datetime | None = None,
) -> Acquisition:
    assets: dict[str, tuple[str, int]] = {}
    grids: dict[str, GeoBox] = {}
    tiff_datetime: str | None = None
    for band, file in sorted(files.items()):
        with open_raster(file) as ds:
            grids[band] = grid_of(ds, file)
            if ds.count > 1:
                log.warning("%s has %d bands; reading band 1 as %s", file, ds.count, band)
            verify_readable(ds, [1], file)
            tiff_datetime = tiff_datetime or ds.tags().get("TIFFTAG_DATETIME")
        assets[band] = (str(file), 1)
    grid = _finest(grids)
    names = [where.name, *sorted(f.name for f in files.values())]
    first_file = files[sorted(files)[0]]
    if when is None:
        when = _acquisition_datetime(acq_id, names, date_pattern, tiff_datetime, first_file)
    return Acquisition(id=acq_id, datetime=when, source="local", assets=assets, grid=grid)


def _finest(grids: dict[str, GeoBox]) -> GeoBox:
    """The grid of the finest band; among equals the first analysis band (B02, B03, ...)."""
    order = {b: i for i, b in enumerate(ANALYSIS_BANDS)}

    def key(band: str) -> tuple[float, int, str]:
        t = grids[band].transform
        return (abs(t.a * t.e), order.get(band, len(order)), band)

    return grids[min(grids, key=key)]


def _from_file(
    path: Path, sensor: SensorConfig, date_pattern: str, when: dt.datetime | None = None
) -> Acquisition:
    acq_id = _entry_id(path)
    mapping = sensor.resolved_bands()
    with open_raster(path) as ds:
        grid = grid_of(ds, path)
        if mapping is not None:
            if len(mapping) != ds.count:
                raise SourceError(
                    f"raster {path} has {ds.count} band(s) but the band mapping names "
                    f"{len(mapping)} ({', '.join(mapping)}); list one name per file band, in file "
                    "order (SKIP to ignore one), with --bands or sensor.bands"
                )
            assets = {b: (str(path), i + 1) for i, b in enumerate(mapping) if b != "SKIP"}
        else:
            assets = _assets_from_descriptions(path, ds)
        verify_readable(ds, [bidx for _, bidx in assets.values()], path)
        tiff_datetime = ds.tags().get("TIFFTAG_DATETIME")
    if when is None:
        when = _acquisition_datetime(acq_id, [path.name], date_pattern, tiff_datetime, path)
    return Acquisition(id=acq_id, datetime=when, source="local", assets=assets, grid=grid)


def _assets_from_descriptions(path: Path, ds: Any) -> dict[str, tuple[str, int]]:
    assets: dict[str, tuple[str, int]] = {}
    for i, description in enumerate(ds.descriptions):
        band = normalize_band(description)
        if band is None:
            continue
        if band in assets:
            raise SourceError(
                f"raster {path} names band {band} twice (bands {assets[band][1]} and {i + 1}); "
                "fix the band descriptions or give the band order with --bands or sensor.bands"
            )
        assets[band] = (str(path), i + 1)
    if not assets and ds.count == 1:
        named = _band_of_file(path.name)
        if named is not None:
            assets[named[1]] = (str(path), 1)
    if not assets:
        shown = ", ".join(repr(d) for d in ds.descriptions[:6]) + (", ..." if ds.count > 6 else "")
        raise MissingBandError(
            f"cannot tell which band of {path} is which: its {ds.count} band description(s) "
            f"({shown}) name no band; give the band order with --bands or sensor.bands, e.g. "
            "B02,B03,B04,B08,B11,B12"
        )
    return assets


def _entry_id(path: Path) -> str:
    name = path.name
    for suffix in (".tif", ".tiff", ".TIF", ".TIFF", ".jp2", ".img", ".vrt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _has_envi_header(path: Path) -> bool:
    return any(
        path.with_name(name).is_file()
        for name in (f"{path.name}.hdr", f"{path.name}.HDR", f"{path.stem}.hdr", f"{path.stem}.HDR")
        if name != path.name
    )


def scan_folder(
    folder: Path, sensor: SensorConfig, *, date_pattern: str = r"(\d{8})"
) -> list[Acquisition]:
    """Every acquisition in `folder`, oldest first: each sub-folder of band files, each group of
    band files sharing a name prefix, and each other raster file (``.tif``, ``.jp2``, ``.img``,
    ``.vrt`` or a file with an ENVI ``.hdr``). Other files and folders are ignored."""
    folder = Path(folder)
    if not folder.exists():
        raise SourceError(f"local source folder {folder} does not exist; check source.path")
    if folder.is_file():
        return [acquisition_from_path(folder, sensor, date_pattern=date_pattern)]
    _compile_date_pattern(date_pattern)
    acquisitions: list[Acquisition] = []
    groups: dict[str, dict[str, Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if _band_files_in(entry):
                acquisitions.append(acquisition_from_path(entry, sensor, date_pattern=date_pattern))
            else:
                log.debug("skipping folder %s: no *_<BAND>.tif files", entry)
            continue
        named = _band_of_file(entry.name)
        if entry.suffix.lower() in SIDECAR_SUFFIXES:
            log.debug("skipping %s: a sidecar file", entry)
        elif named is not None:
            prefix, band = named
            group = groups.setdefault(prefix or folder.name, {})
            if band in group:
                raise SourceError(
                    f"folder {folder} holds two files for band {band} with the prefix {prefix!r} "
                    f"({group[band].name}, {entry.name}); remove one"
                )
            group[band] = entry
        elif entry.suffix.lower() in RASTER_SUFFIXES or _has_envi_header(entry):
            acquisitions.append(acquisition_from_path(entry, sensor, date_pattern=date_pattern))
        else:
            log.debug("skipping %s: not a raster acquisition", entry)
    for prefix, files in sorted(groups.items()):
        acquisitions.append(_from_band_files(prefix, files, date_pattern, files[sorted(files)[0]]))
    if not acquisitions:
        raise SourceError(
            f"no acquisitions found in {folder}: expected multi-band rasters (.tif with band "
            "descriptions, or any raster plus sensor.bands) or folders of <name>_<BAND>.tif files"
        )
    _make_ids_unique(acquisitions)
    acquisitions.sort(key=lambda a: (a.datetime, a.id))
    return acquisitions


def _make_ids_unique(acquisitions: list[Acquisition]) -> None:
    seen: dict[str, int] = {}
    for i, acq in enumerate(acquisitions):
        n = seen.get(acq.id, 0)
        seen[acq.id] = n + 1
        if n:
            acquisitions[i] = Acquisition(
                id=f"{acq.id}#{n + 1}",
                datetime=acq.datetime,
                source=acq.source,
                assets=acq.assets,
                cloud_cover=acq.cloud_cover,
                grid=acq.grid,
            )


# --------------------------------------------------------------------------------------------
# Overlap


def check_overlap(grid_a: GeoBox, grid_b: GeoBox | Acquisition, *, what: str = "") -> float:
    """Raise GridMismatchError unless `grid_b` (a grid or an acquisition's grid) overlaps `grid_a`;
    return the share of `grid_a`'s extent that `grid_b` covers (0-1]."""
    label = f"acquisition {grid_b.id}" if isinstance(grid_b, Acquisition) else (what or "the grid")
    other = grid_b.grid if isinstance(grid_b, Acquisition) else grid_b
    if other is None:
        raise GridMismatchError(f"{label} has no grid; cannot check that it overlaps the target")
    fraction = overlap_fraction(grid_a, other)
    if fraction <= 0.0:
        raise GridMismatchError(
            f"{label} (bounds {_fmt_bounds(other)} in {_crs_name(other.crs)}) does not overlap the "
            f"target grid (bounds {_fmt_bounds(grid_a)} in {_crs_name(grid_a.crs)}); check that both "
            "images show the same place"
        )
    return fraction


def _fmt_bounds(grid: GeoBox) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in grid.boundingbox) + "]"


def _crs_name(crs: CRS) -> str:
    epsg = crs.epsg
    return f"EPSG:{epsg}" if epsg else crs.proj.name


# --------------------------------------------------------------------------------------------
# Lazy loading


#: Open datasets each worker thread keeps (GDAL datasets are not shared between threads), the
#: least recently read closed first: opening a band file costs about half as much as decoding
#: one 512 px chunk of it. A two-date comparison reads 14 files a chunk; each kept file holds
#: about 1 MB (its decoder's buffers).
OPEN_FILES_PER_THREAD = 32
_thread = threading.local()


@dataclass
class _OpenDataset:
    """A band file a worker thread keeps open, with what its reads keep asking of it."""

    stamp: tuple[int, int, int]
    src: Any
    origins: dict[tuple[str, tuple[float, ...], tuple[int, int]], tuple[int, int] | None] = field(
        default_factory=dict
    )

    def aligned_origin(
        self, crs_wkt: str, transform: tuple[float, ...], shape: tuple[int, int]
    ) -> tuple[int, int] | None:
        # once per file and target grid: writing out the file's CRS costs a tenth of a chunk read
        key = (crs_wkt, transform, shape)
        if key not in self.origins:
            self.origins[key] = _aligned_origin(self.src, crs_wkt, transform, shape)
        return self.origins[key]


def _open_dataset(path: str, session: str) -> _OpenDataset:
    """This thread's open dataset of `path` for a load `session`; opened again when the file
    changed on disk (a stat per read, which also tells a file that disappeared)."""
    st = os.stat(path)
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    handles: OrderedDict[tuple[str, str], _OpenDataset] | None
    handles = getattr(_thread, "handles", None)
    if handles is None:
        handles = _thread.handles = OrderedDict()
    key = (session, path)
    held = handles.pop(key, None)
    if held is not None and held.stamp == stamp:
        handles[key] = held
        return held
    if held is not None:
        held.src.close()
    with reading_env():
        opened = _OpenDataset(stamp, rasterio.open(path))
    handles[key] = opened
    while len(handles) > OPEN_FILES_PER_THREAD:
        handles.popitem(last=False)[1].src.close()
    return opened


def _forget_dataset(path: str, session: str) -> None:
    held = getattr(_thread, "handles", {}).pop((session, path), None)
    if held is not None:
        held.src.close()


def _read_chunk(
    template: np.ndarray,
    *,
    path: str,
    indexes: tuple[int, ...],
    quality: str | None,
    crs_wkt: str,
    transform: tuple[float, ...],
    shape: tuple[int, int],
    scale: float,
    offset: float,
    nodata: float | None,
    session: str = "",
    chunk: tuple[int, int] = (0, 0),
    squeeze: bool = False,
    block_id: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Warp chunk `block_id` (of `chunk`-sized chunks of the target grid) out of `path`: shape
    (len(indexes), rows, cols), or (rows, cols) with one index. A `quality` layer (a
    QUALITY_BANDS name) keeps its numbers, resampled by nearest neighbour. The file stays open in
    this thread for the rest of the load `session`."""
    # block_id, not dask's block_info: block_info is a dict built for every chunk of the grid
    # when the graph is made (some 20 MB per file at 20,000² px), block_id costs nothing
    assert block_id is not None
    row0, col0 = block_id[-2] * chunk[0], block_id[-1] * chunk[1]
    row1, col1 = min(row0 + chunk[0], shape[0]), min(col0 + chunk[1], shape[1])
    height, width = row1 - row0, col1 - col0
    try:
        held = _open_dataset(path, session)
        src = held.src
        with reading_env():
            file_nodata = src.nodatavals[indexes[0] - 1]
            if quality is not None:
                dtype, fill = QUALITY_BANDS[quality]
                src_nodata = file_nodata if file_nodata is not None else fill
                options: dict[str, Any] = {
                    "resampling": Resampling.nearest,
                    "nodata": fill,
                    "dtype": dtype,
                }
            else:
                src_nodata = file_nodata if file_nodata is not None else nodata
                options = {"resampling": Resampling.bilinear, "nodata": np.nan, "dtype": "float32"}
            origin = held.aligned_origin(crs_wkt, transform, tuple(shape))
            if origin is not None:
                aligned = (origin[0] + row0, origin[1] + col0)
                data = _read_aligned(
                    src, indexes, aligned, height, width, src_nodata, quality, scale, offset
                )
            else:
                options.update(_resampling_scale(src, crs_wkt, transform, shape))
                grid = GeoBox(shape, Affine(*transform[:6]), crs_wkt)
                dst_transform = grid[row0:row1, col0:col1].transform
                # Each band's no-data on its own (GDAL may otherwise need every band to be
                # no-data).
                options["UNIFIED_SRC_NODATA"] = "NO"
                with WarpedVRT(
                    src,
                    crs=crs_wkt,
                    transform=dst_transform,
                    width=width,
                    height=height,
                    src_nodata=src_nodata,
                    tolerance=_WARP_TOLERANCE,
                    warp_mem_limit=_WARP_MEM_LIMIT_MB,
                    **options,
                ) as vrt:
                    data = _finish(vrt.read(list(indexes)), quality, scale, offset)
    except FileNotFoundError:
        _forget_dataset(path, session)
        raise SourceError(f"raster {path} disappeared while loading; check the path") from None
    except RASTER_ERRORS as exc:
        _forget_dataset(path, session)
        if not os.path.exists(path):
            raise SourceError(f"raster {path} disappeared while loading; check the path") from None
        message = " ".join(str(exc).split())
        raise CorruptInputError(
            f"raster {path} band(s) {', '.join(map(str, indexes))} cannot be read ({message}); "
            "the file is truncated or corrupt: re-download or re-export it"
        ) from None
    return data[0] if squeeze else data


def _finish(data: np.ndarray, quality: str | None, scale: float, offset: float) -> np.ndarray:
    if quality is not None:
        return data.astype(QUALITY_BANDS[quality][0], copy=False)
    if scale != 1.0 or offset != 0.0:
        data = data * np.float32(scale) + np.float32(offset)
    return data.astype(np.float32, copy=False)


def _aligned_origin(
    src: Any, crs_wkt: str, transform: tuple[float, ...], shape: tuple[int, int]
) -> tuple[int, int] | None:
    """(row, col) of the target grid's corner in the source when both share CRS, pixel size and
    pixel edges: then a plain windowed read of each chunk gives exactly what the warper would,
    several times faster."""
    src_crs = src.crs.to_wkt() if src.crs is not None else None
    return _aligned_origin_of(
        tuple(src.transform)[:6], (src.height, src.width), src_crs, crs_wkt, transform, shape
    )


#: Sub-pixel shift (in pixels) below which two grids count as aligned: float noise only, so that
#: a paste gives exactly what the warper would.
_PASTE_TOLERANCE = 1e-6


@functools.lru_cache(maxsize=1024)
def _aligned_origin_of(
    src_transform: tuple[float, ...],
    src_shape: tuple[int, int],
    src_crs_wkt: str | None,
    crs_wkt: str,
    transform: tuple[float, ...],
    shape: tuple[int, int],
) -> tuple[int, int] | None:
    # once per file grid and target grid: comparing two CRSs costs as much as reading a band
    if src_crs_wkt is None:
        return None
    src = GeoBox(src_shape, Affine(*src_transform[:6]), src_crs_wkt)
    dst = GeoBox(shape, Affine(*transform[:6]), crs_wkt)
    info = compute_reproject_roi(src, dst, ttol=_PASTE_TOLERANCE, stol=_PASTE_TOLERANCE)
    if not info.paste_ok or info.read_shrink != 1 or roi_is_empty(info.roi_dst):
        return None
    # a paste is a whole-pixel shift: source pixel (r, c) lands on target pixel (r - row, c - col)
    rows, cols = info.roi_src
    dst_rows, dst_cols = info.roi_dst
    return rows.start - dst_rows.start, cols.start - dst_cols.start


def _read_aligned(
    src: Any,
    indexes: tuple[int, ...],
    offset_rc: tuple[int, int],
    height: int,
    width: int,
    src_nodata: float | None,
    quality: str | None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> np.ndarray:
    """Windowed read of the overlap, the rest filled with no data (a quality layer's own no-data
    value, NaN for reflectance); reflectance scaled as :func:`_finish` does."""
    row, col = offset_rc
    dtype, fill = QUALITY_BANDS[quality] if quality is not None else ("float32", np.nan)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, src.height), min(col + width, src.width)
    whole = (r0, c0, r1, c1) == (row, col, row + height, col + width)
    size = (len(indexes), height, width)
    out = np.empty(size, dtype) if whole else np.full(size, fill, dtype)
    if r1 <= r0 or c1 <= c0:
        return out
    data = src.read(list(indexes), window=Window(c0, r0, c1 - c0, r1 - r0))
    target = out[:, r0 - row : r1 - row, c0 - col : c1 - col]
    if quality is not None:
        target[...] = data
        if src_nodata is not None:
            target[data == src_nodata] = fill
        return _finish(out, quality, scale, offset)
    # in one pass what numpy did in five: float32, no data to NaN, then _finish's scaling
    _reflectance(
        data,
        np.float64(src_nodata if src_nodata is not None else np.nan),
        src_nodata is not None,
        np.float32(scale),
        np.float32(offset),
        scale != 1.0 or offset != 0.0,
        target,
    )
    return out


@ngjit
def _reflectance(
    data: np.ndarray,
    nodata: np.float64,
    has_nodata: bool,
    scale: np.float32,
    offset: np.float32,
    scaled: bool,
    out: np.ndarray,
) -> None:
    # the same float32 operations as data.astype(float32), NaN where data == nodata, then
    # values * scale + offset (tests/test_local_source.py holds them equal to the bit)
    nan = np.float32(np.nan)
    for b in range(data.shape[0]):
        for y in range(data.shape[1]):
            for x in range(data.shape[2]):
                raw = data[b, y, x]
                v = nan if has_nodata and raw == nodata else np.float32(raw)
                out[b, y, x] = v * scale + offset if scaled else v


def _resampling_scale(
    src: Any, crs_wkt: str, transform: tuple[float, ...], shape: tuple[int, int]
) -> dict[str, str]:
    """GDAL warp options XSCALE / YSCALE (target pixels per source pixel), computed once for the
    whole target grid. GDAL otherwise derives them per request from the window shapes, so the
    resampling kernel (when downsampling) and hence the values would depend on the chunk layout."""
    t = Affine(*transform[:6])
    rows, cols = shape
    probes = [t @ (cols / 2, rows / 2), t @ (cols / 2 + 1, rows / 2), t @ (cols / 2, rows / 2 + 1)]
    try:
        if ProjCRS.from_wkt(crs_wkt) != ProjCRS.from_user_input(src.crs.to_wkt()):
            xs, ys = warp_transform(
                crs_wkt, src.crs, [p[0] for p in probes], [p[1] for p in probes]
            )
            probes = list(zip(xs, ys, strict=True))
    except RASTER_ERRORS:
        return {}
    inverse = ~src.transform
    (c0, r0), (c1, r1), (c2, r2) = (inverse @ p for p in probes)
    per_col = math.hypot(c1 - c0, r1 - r0)  # source pixels per target column
    per_row = math.hypot(c2 - c0, r2 - r0)
    if not (math.isfinite(per_col) and math.isfinite(per_row)) or per_col <= 0 or per_row <= 0:
        return {}
    return {"XSCALE": repr(1.0 / per_col), "YSCALE": repr(1.0 / per_row)}


def _to_datetime64(when: dt.datetime) -> np.datetime64:
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return np.datetime64(when, "ns")


class LocalSource:
    """Acquisitions on disk behind the :class:`ImagerySource` protocol.

    Either scans ``config.path`` (one entry per acquisition: files, band-file prefixes and
    sub-folders) or serves the given `acquisitions` (``changedetect compare``), in their order.
    """

    name = "local"

    def __init__(
        self,
        config: LocalSourceConfig | None,
        sensor: SensorConfig,
        acquisitions: list[Acquisition] | None = None,
    ) -> None:
        self.config = config
        self.sensor = sensor
        if acquisitions is not None:
            self._acquisitions = list(acquisitions)
        elif config is not None:
            self._acquisitions = scan_folder(config.path, sensor, date_pattern=config.date_pattern)
        else:
            raise ValueError("LocalSource needs a LocalSourceConfig or a list of acquisitions")
        self._told_no_scl: set[str] = set()

    @property
    def acquisitions(self) -> list[Acquisition]:
        """Every acquisition this source knows, in its order."""
        return list(self._acquisitions)

    def search(self, grid: GeoBox, window: TimeWindow) -> list[Acquisition]:
        """Acquisitions dated inside `window` whose footprint intersects `grid`, oldest first."""
        found = [
            acq
            for acq in self._acquisitions
            if window.contains(acq.datetime)
            and (acq.grid is None or overlap_fraction(grid, acq.grid) > 0.0)
        ]
        return sorted(found, key=lambda a: (a.datetime, a.id))

    def load(
        self,
        acquisitions: Sequence[Acquisition],
        bands: Sequence[str],
        grid: GeoBox,
        chunk_size: int,
    ) -> xr.Dataset:
        """Lazily load `bands` of `acquisitions` (kept in the given order) onto `grid`.

        Reflectance bands come out float32 (stored * scale + offset, no data -> NaN), bilinear
        resampled; quality layers (``SCL`` uint8, ``QA_PIXEL`` uint16) keep their numbers, by
        nearest neighbour. A quality layer no acquisition has is left out; where only some lack it
        they get a layer that flags nothing over their data (SCL 7, unclassified; QA_PIXEL 0).
        """
        acquisitions = list(acquisitions)
        bands = list(dict.fromkeys(bands))
        if not acquisitions:
            raise SourceError(
                "no acquisitions to load; widen the time window or check the local source folder"
            )
        if not bands:
            raise ValueError("load needs at least one band")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self._check_bands(acquisitions, bands)
        for acq in acquisitions:
            if acq.grid is not None:
                check_overlap(grid, acq)

        template = da.zeros(grid.shape.yx, chunks=(chunk_size, chunk_size), dtype=np.uint8)
        # the files this load opens are kept open for it alone: a later load (another night)
        # opens them again, whatever their timestamps say
        session = uuid.uuid4().hex
        reflectance = [b for b in bands if b not in QUALITY_BANDS]
        quality = [
            b for b in bands if b in QUALITY_BANDS and any(b in a.assets for a in acquisitions)
        ]
        per_band: dict[str, list[da.Array]] = {b: [] for b in bands}
        for acq in acquisitions:
            arrays = self._acquisition_arrays(acq, bands, grid, template, session)
            for band in reflectance:
                per_band[band].append(arrays[band])
            for band in quality:
                per_band[band].append(
                    arrays[band]
                    if band in arrays
                    else _unflagged(band, arrays, reflectance, template)
                )
            if "SCL" in bands and not any(b in arrays for b in QUALITY_BANDS):
                self._tell_no_scl(acq)

        data_vars = {
            band: (("time", "y", "x"), da.stack(arrays, axis=0))
            for band, arrays in per_band.items()
            if arrays
        }
        return xr.Dataset(
            data_vars,
            coords={
                "time": np.array([_to_datetime64(a.datetime) for a in acquisitions]),
                **xr_coords(grid, dims=("y", "x")),
                "acquisition": ("time", [a.id for a in acquisitions]),
            },
        )

    def _check_bands(self, acquisitions: list[Acquisition], bands: list[str]) -> None:
        for acq in acquisitions:
            missing = [b for b in bands if b not in QUALITY_BANDS and b not in acq.assets]
            if missing:
                found = ", ".join(sorted(acq.assets)) or "none"
                raise MissingBandError(
                    f"acquisition {acq.id} has no band {missing[0]} (found: {found}); name the "
                    "bands with --bands or sensor.bands"
                )

    def _acquisition_arrays(
        self,
        acq: Acquisition,
        bands: list[str],
        grid: GeoBox,
        template: da.Array,
        session: str,
    ) -> dict[str, da.Array]:
        """band -> lazy 2-D array; bands stored in one file share one read per chunk."""
        groups: dict[tuple[str, str | None], list[tuple[str, int]]] = {}
        for band in bands:
            if band not in acq.assets:
                continue
            path, bidx = acq.assets[band]
            groups.setdefault((path, band if band in QUALITY_BANDS else None), []).append(
                (band, bidx)
            )
        out: dict[str, da.Array] = {}
        for (path, quality), members in groups.items():
            dtype = np.dtype(QUALITY_BANDS[quality][0] if quality is not None else np.float32)
            # a file of one band is read straight into its 2-D array: taking band 0 of a stack
            # would add a task (and a graph entry) per chunk
            one = len(members) == 1
            stack = da.map_blocks(
                _read_chunk,
                template,
                new_axis=None if one else 0,
                chunks=template.chunks if one else ((len(members),), *template.chunks),
                dtype=dtype,
                meta=np.empty((0,) * (2 if one else 3), dtype=dtype),
                token="local-read",
                chunk=template.chunksize,
                squeeze=one,
                session=session,
                path=path,
                indexes=tuple(bidx for _, bidx in members),
                quality=quality,
                crs_wkt=grid.crs.to_wkt(),
                transform=tuple(grid.transform)[:6],
                shape=grid.shape.yx,
                scale=float(self.sensor.resolved_scale()),
                offset=float(self.sensor.resolved_offset()),
                nodata=self.sensor.nodata,
            )
            if one:
                out[members[0][0]] = stack
                continue
            for i, (band, _) in enumerate(members):
                out[band] = stack[i]
        return out

    def _tell_no_scl(self, acq: Acquisition) -> None:
        if acq.id in self._told_no_scl:
            return
        self._told_no_scl.add(acq.id)
        log.info(
            "acquisition %s has no SCL or QA_PIXEL band: no cloud mask from the product is "
            "available for it",
            acq.id,
        )


def _unflagged(
    band: str, arrays: dict[str, da.Array], reflectance: list[str], template: da.Array
) -> da.Array:
    """A quality layer for an acquisition without one: flags nothing where it has data (SCL 7,
    unclassified; QA_PIXEL 0), no data elsewhere."""
    dtype, fill = QUALITY_BANDS[band]
    if not reflectance:
        return da.full_like(template, fill, dtype=dtype)
    clear = SCL_FILL_UNCLASSIFIED if band == "SCL" else 0
    has_data = da.isfinite(arrays[reflectance[0]])
    return da.where(has_data, np.asarray(clear, dtype), np.asarray(fill, dtype)).astype(dtype)
