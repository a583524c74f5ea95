"""Seeded synthetic Sentinel-2 L2A scenes with planted disturbances of known geometry and date.

The detector is judged against this scene, so it carries what fools naive detectors on real
imagery, not just the disturbances it should find. A scene is laid out on the pixel grid it is
asked for (pixels are taken to be 10 m) and depends only on the seed and the grid shape, so the same
AOI always yields the same scene and the same truth.

Layout, in pixel space (x = column, y = row; pixel ``(r, c)`` covers ``[c, c+1] x [r, r+1]``):

- terrain: multi-scale smooth noise plus a valley along a meandering river that crosses the scene
  top to bottom; hill shading from the terrain modulates every land pixel (no terrain correction,
  like default L2A);
- mixed forest everywhere by default (broadleaf/conifer share varies smoothly; broadleaf leaf-out
  date and vigour shift from year to year), grass/shrub meadows, bare rock outcrops on the highest
  ground and in a few scattered spots;
- cropland as axis-aligned rectangular parcels with one-pixel hedges in the valley floor; each field
  grows winter wheat, spring maize or cut meadow, with green-up, harvest and sowing dates jittered per
  field and year, and a share of fields (`crop_rotation`, 15 % by default) changing crop from one
  year to the next;
- villages (irregular blobs of roofs, concrete, gardens, trees) near the river, a main road along the
  valley and feeder roads to every village;
- a river (3-7 px wide) and, on larger scenes, a reservoir whose level alternates between a high and
  a low year, exposing a muddy shore in the low year;
- planted disturbances (see :class:`PlantedChange`): ``quarry`` (vegetation -> fresh bright rock or
  reddish spoil), ``construction`` (vegetation, meadow or cropland -> bare site -> roofs and concrete),
  ``vegetation_loss`` (forest -> slash and exposed soil, then slow green regrowth). About 36 new ones
  in a 1200 x 1200 scene, 12-900 px, plus a few below the 0.1 ha mapping unit, and a history of older
  ones (stable old quarries and buildings, regrowing clearings, quarries that later grow);
- per acquisition: clouds with an unflagged thin rim, their shadows (flagged only where dark enough),
  occasional cirrus, a few bright pixels wrongly flagged as cloud, occasional swath edges without
  data, small radiometric gain/offset differences, and per-pixel sensor noise.

Growing quarries: the truth polygon of a quarry that extends an older pit holds only the newly opened
ground (the old pit is bare in both windows); the old footprint is in ``grew_from``.

Construction starts in the first half of the [changes_from, changes_until] period and takes about
four months from bare site to finished roofs, so it is built-up by the after window; quarries are
bare within weeks; cleared forest regrows slowly (NDVI about 0.35 after one season).

Every per-pixel random number comes from a counter-based hash of (seed, what, date, band, global row,
global column) and every smooth field from a small seeded low-resolution grid interpolated at global
pixel coordinates, so a pixel's value does not depend on how the grid is chunked.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from odc.geo.geobox import GeoBox
from pyproj import CRS, Transformer
from scipy import ndimage
from shapely import affinity
from shapely.geometry import Polygon, mapping
from shapely.geometry.polygon import orient

from ..evaluation import PatchQuality, evaluate_patches
from ..grids import projected_pixel_area_m2
from ..models import AoiResult, TimeWindow

#: Reflectance bands the scene renders, in Sentinel-2 naming.
BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12")
_B02, _B03, _B04, _B08, _B11, _B12 = range(6)

#: Acquisition dates are counted from this day, so they do not depend on the window asked for.
EPOCH = dt.date(2020, 1, 1)

#: Minimum mapping unit the truth marks `below_mmu` against (0.1 ha).
MMU_M2 = 1000.0

#: Types of planted disturbance.
CHANGE_TYPES: tuple[str, ...] = ("quarry", "construction", "vegetation_loss")

# Land-cover classes of :meth:`SyntheticScene.landcover`.
LC_FOREST = 1
LC_GRASS = 2
LC_CROP = 3
LC_ROCK = 4
LC_URBAN = 5
LC_WATER = 6
LC_SHORE = 7
LC_ROAD = 8
LC_DISTURBED = 9
_LC_BASIN = 10  # reservoir bed: water or shore depending on the date

# Sentinel-2 L2A scene classification classes written to SCL.
_SCL_NO_DATA, _SCL_SHADOW, _SCL_VEG, _SCL_NOT_VEG, _SCL_WATER = 0, 3, 4, 5, 6
_SCL_CLOUD_MED, _SCL_CLOUD_HIGH, _SCL_CIRRUS = 8, 9, 10


def _spec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# Surface reflectance, B02 B03 B04 B08 B11 B12 (typical Sentinel-2 L2A values).
BROADLEAF_ON = _spec(0.025, 0.050, 0.028, 0.330, 0.160, 0.070)
BROADLEAF_OFF = _spec(0.045, 0.060, 0.070, 0.190, 0.200, 0.120)
CONIFER = _spec(0.020, 0.035, 0.020, 0.220, 0.100, 0.045)
GRASS_GREEN = _spec(0.035, 0.075, 0.045, 0.360, 0.210, 0.100)
GRASS_DRY = _spec(0.070, 0.095, 0.120, 0.230, 0.300, 0.210)
SHRUB = _spec(0.030, 0.050, 0.040, 0.260, 0.170, 0.085)
ROCK_NATURAL = _spec(0.100, 0.125, 0.150, 0.210, 0.280, 0.230)
CROP_GREEN = _spec(0.030, 0.070, 0.035, 0.460, 0.210, 0.090)
CROP_RIPE = _spec(0.080, 0.115, 0.150, 0.290, 0.340, 0.250)
STUBBLE = _spec(0.090, 0.120, 0.150, 0.230, 0.320, 0.250)
SOIL_PLOUGHED = _spec(0.060, 0.080, 0.110, 0.170, 0.260, 0.210)
WATER_RIVER = _spec(0.045, 0.055, 0.040, 0.025, 0.008, 0.005)
WATER_RESERVOIR = _spec(0.030, 0.050, 0.035, 0.015, 0.004, 0.003)
MUD = _spec(0.060, 0.075, 0.090, 0.120, 0.150, 0.110)
ROOF_RED = _spec(0.070, 0.085, 0.170, 0.240, 0.300, 0.250)
ROOF_GREY = _spec(0.150, 0.165, 0.175, 0.205, 0.240, 0.220)
CONCRETE = _spec(0.200, 0.220, 0.230, 0.260, 0.300, 0.270)
ROOF_BLUE = _spec(0.180, 0.160, 0.110, 0.150, 0.170, 0.150)
ROOF_WHITE = _spec(0.330, 0.345, 0.355, 0.380, 0.400, 0.360)
ASPHALT = _spec(0.060, 0.070, 0.080, 0.100, 0.130, 0.120)
DIRT_ROAD = _spec(0.100, 0.130, 0.170, 0.230, 0.300, 0.250)
QUARRY_LIMESTONE = _spec(0.220, 0.260, 0.300, 0.350, 0.420, 0.350)
QUARRY_RED = _spec(0.120, 0.160, 0.240, 0.300, 0.400, 0.330)
QUARRY_GRANITE = _spec(0.160, 0.190, 0.220, 0.280, 0.360, 0.300)
CONSTRUCTION_SOIL = _spec(0.120, 0.150, 0.190, 0.250, 0.330, 0.280)
SLASH = _spec(0.060, 0.080, 0.100, 0.170, 0.260, 0.190)
CLOUD = _spec(0.520, 0.500, 0.490, 0.480, 0.380, 0.280)
CIRRUS = _spec(0.250, 0.240, 0.230, 0.220, 0.150, 0.100)

_QUARRY_VARIANTS = (QUARRY_LIMESTONE, QUARRY_RED, QUARRY_GRANITE)
#: Built-up materials of a finished construction site and their shares.
_BUILT = np.stack([CONCRETE, ROOF_GREY, ROOF_BLUE, ROOF_RED, ROOF_WHITE, CONSTRUCTION_SOIL])
_BUILT_CUM = np.cumsum([0.34, 0.2, 0.18, 0.14, 0.08, 0.06]).astype(np.float32)
#: Darkening of soil on a wet day (after rain): water absorbs most in the SWIR (Lobell & Asner
#: 2002, "Moisture effects on soil reflectance").
_WET_SOIL = _spec(0.80, 0.80, 0.78, 0.82, 0.62, 0.58)
#: Darkening of each band inside a full cloud shadow (diffuse blue sky light remains).
_SHADOW_DEPTH = _spec(0.60, 0.66, 0.70, 0.78, 0.80, 0.80)

# Materials: rows of the per-date spectral look-up table.
_N_CONIFER = 6
_N_SHRUB = 4
_M_FOREST = 0
_M_GRASS = _M_FOREST + _N_CONIFER
_M_ROCK = _M_GRASS + _N_SHRUB
(
    _M_ROOF_RED,
    _M_ROOF_GREY,
    _M_CONCRETE,
    _M_ROOF_BLUE,
    _M_ROOF_WHITE,
    _M_GARDEN,
    _M_URBAN_TREE,
    _M_RIVER,
    _M_RES_WATER,
    _M_MUD,
    _M_SHORE_GRASS,
    _M_HEDGE,
    _M_ASPHALT,
    _M_DIRT,
) = range(_M_ROCK + 1, _M_ROCK + 15)
_M_FIELD0 = _M_DIRT + 1
#: Village materials and their shares (per 2 x 2 px house cell).
_VILLAGE_MATS = np.array(
    [_M_ROOF_RED, _M_ROOF_GREY, _M_CONCRETE, _M_ROOF_BLUE, _M_ROOF_WHITE, _M_GARDEN, _M_URBAN_TREE],
    dtype=np.int32,
)
_VILLAGE_CUM = np.cumsum([0.22, 0.2, 0.14, 0.05, 0.02, 0.25, 0.12]).astype(np.float32)

_CELL = 8  # pixels per node of the scene's low-resolution fields
_CLOUD_CELL = 8
_CLOUD_MARGIN = 128  # cloud fields extend past the scene so shadows can fall from outside clouds
_WHEAT, _MAIZE, _MEADOW = 0, 1, 2


# ----------------------------------------------------------------------------------------------
# Counter-based hashing: the same (key, row, col) gives the same number in any chunk.
# ----------------------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF


def _fmix32(x: int) -> int:
    x &= _M32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _M32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def _key(*parts: int) -> int:
    """A 32-bit key from integers of any size (seed, tags, date ordinals, indices)."""
    h = 0x9747B28C
    for part in parts:
        part &= 0xFFFFFFFFFFFFFFFF
        for word in (part & _M32, part >> 32):
            h = _fmix32(h ^ _fmix32(word + 0x632BE5AB))
    return h


def _fmix32_array(x: np.ndarray) -> np.ndarray:
    """Murmur3 finaliser in place on a uint32 array (wrapping arithmetic)."""
    tmp = np.empty_like(x)
    np.right_shift(x, np.uint32(16), out=tmp)
    x ^= tmp
    x *= np.uint32(0x85EBCA6B)
    np.right_shift(x, np.uint32(13), out=tmp)
    x ^= tmp
    x *= np.uint32(0xC2B2AE35)
    np.right_shift(x, np.uint32(16), out=tmp)
    x ^= tmp
    return x


def _hash2d(key: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """uint32 hash of (key, row, col) for every row x col pair."""
    hr = rows.astype(np.uint32) * np.uint32(0x9E3779B1) + np.uint32(key)
    hr = _fmix32_array(hr)
    x = hr[:, None] ^ (cols.astype(np.uint32) * np.uint32(0x85EBCA77))[None, :]
    return _fmix32_array(x)


def _hash_points(key: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """uint32 hash of (key, row, col) pairwise; equal to :func:`_hash2d` at the same pixels."""
    hr = rows.astype(np.uint32) * np.uint32(0x9E3779B1) + np.uint32(key)
    hr = _fmix32_array(hr)
    return _fmix32_array(hr ^ (cols.astype(np.uint32) * np.uint32(0x85EBCA77)))


def _hash_ids(key: int, ids: np.ndarray) -> np.ndarray:
    x = ids.astype(np.uint32) * np.uint32(0x9E3779B1) + np.uint32(key)
    return _fmix32_array(x)


def _unit(h: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) from a uint32 hash."""
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _gauss(h: np.ndarray) -> np.ndarray:
    """Approximately standard normal from a uint32 hash (sum of its four bytes, Irwin-Hall)."""
    b = np.uint32(0xFF)
    s = h & b
    t = np.right_shift(h, np.uint32(8))
    t &= b
    s += t
    np.right_shift(h, np.uint32(16), out=t)
    t &= b
    s += t
    np.right_shift(h, np.uint32(24), out=t)
    s += t
    out = s.astype(np.float32)
    out -= np.float32(510.0)
    out *= np.float32(1.0 / 147.8)
    return out


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, *tags])


# ----------------------------------------------------------------------------------------------
# Small numeric helpers
# ----------------------------------------------------------------------------------------------


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _ramp(x: Any, lo: Any, hi: Any) -> Any:
    """0 below `lo`, 1 above `hi`, smooth in between (scalars or arrays)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - lo) / np.maximum(hi - lo, 1e-9), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field_ / max(float(field_.std()), 1e-12)).astype(np.float32)


class _Lowres:
    """Fields on a coarse node grid, read at any pixel by bilinear interpolation.

    Nodes sit at pixel coordinates ``origin + i * cell``; a pixel is read at its centre. The same
    pixel gives the same value whatever block it is read in, because interpolation is separable and
    elementwise in global coordinates.
    """

    def __init__(self, values: np.ndarray, cell: float, origin: float) -> None:
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.cell = float(cell)
        self.origin = float(origin)

    def _axis(self, idx: np.ndarray, shift: float, n: int) -> tuple[np.ndarray, np.ndarray]:
        u = (idx.astype(np.float64) + (0.5 + shift) - self.origin) / self.cell
        i0 = np.floor(u)
        frac = (u - i0).astype(np.float32)
        i0 = i0.astype(np.int64)
        low = i0 < 0
        high = i0 > n - 2
        frac[low] = 0.0
        frac[high] = 1.0
        return np.clip(i0, 0, n - 2), frac

    def block(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        shift_r: float = 0.0,
        shift_c: float = 0.0,
        fields: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Values at pixel centres of rows x cols (optionally shifted), shape (k, h, w)."""
        _, nr, nc = self.values.shape
        ir, fr = self._axis(rows, shift_r, nr)
        ic, fc = self._axis(cols, shift_c, nc)
        lo, hi = int(ic.min()), int(ic.max()) + 2
        v = self.values[:, :, lo:hi] if fields is None else self.values[list(fields), :, lo:hi]
        tmp = v[:, ir] * (1.0 - fr)[None, :, None] + v[:, ir + 1] * fr[None, :, None]
        icl = ic - lo
        return tmp[:, :, icl] * (1.0 - fc) + tmp[:, :, icl + 1] * fc

    def points(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Values at fractional pixel coordinates (y=r, x=c), shape (k, n)."""
        _, nr, nc = self.values.shape
        u = np.clip((np.asarray(r, dtype=np.float64) - self.origin) / self.cell, 0, nr - 1.000001)
        v = np.clip((np.asarray(c, dtype=np.float64) - self.origin) / self.cell, 0, nc - 1.000001)
        i0, j0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        fu, fv = (u - i0).astype(np.float32), (v - j0).astype(np.float32)
        vals = self.values
        top = vals[:, i0, j0] * (1 - fv) + vals[:, i0, j0 + 1] * fv
        bottom = vals[:, i0 + 1, j0] * (1 - fv) + vals[:, i0 + 1, j0 + 1] * fv
        return top * (1 - fu) + bottom * fu


# ----------------------------------------------------------------------------------------------
# Truth types
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlantedChange:
    """One planted disturbance, as the truth for scoring a detector.

    `geometry` and `grew_from` are shapely polygons in the grid CRS. For a quarry that extends an
    older pit, `geometry` holds only the newly opened ground and `grew_from` the old pit.
    """

    id: str
    change_type: str
    start: dt.date
    geometry: Polygon
    area_m2: float
    below_mmu: bool
    grew_from: Polygon | None = None
    note: str = ""

    def properties(self) -> dict[str, Any]:
        """JSON-ready attributes (geometries excluded) for a GeoJSON feature."""
        return {
            "id": self.id,
            "change_type": self.change_type,
            "start": self.start.isoformat(),
            "area_m2": round(self.area_m2, 1),
            "below_mmu": self.below_mmu,
            "note": self.note,
        }


@dataclass
class _Planted:
    """A planted disturbance in pixel space, with what rendering needs."""

    index: int
    id: str
    kind: str
    start: dt.date
    poly: Polygon  # pixel space (x = col, y = row)
    variant: int
    history: bool
    grew_from: Polygon | None = None
    note: str = ""
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)  # row0, row1, col0, col1 (exclusive)

    def __post_init__(self) -> None:
        minx, miny, maxx, maxy = self.poly.bounds
        self.bbox = (
            int(math.floor(miny)),
            int(math.ceil(maxy)),
            int(math.floor(minx)),
            int(math.ceil(maxx)),
        )
        shapely.prepare(self.poly)


@dataclass
class _Static:
    """Date-independent layers of one block."""

    cls: np.ndarray  # uint8 land-cover class (reservoir bed as _LC_BASIN)
    mat: np.ndarray  # int32 material row of the spectral look-up table
    illum: np.ndarray  # float32 terrain illumination factor
    mod: np.ndarray  # float32 illumination x class texture
    vigor: np.ndarray  # float32 NIR vigour factor
    tex: np.ndarray  # float32 uniform [-1, 1) static texture
    depth: np.ndarray | None  # float32 reservoir bed depth (where cls == _LC_BASIN)
    road_cov: np.ndarray | None  # float32 road cover fraction
    road_mat: np.ndarray | None  # int32 road material


@dataclass
class _Sky:
    """Everything that varies per acquisition: clouds, shadows, radiometry, swath."""

    cover_target: float
    cloud: _Lowres | None
    threshold: float
    shadow_shift: tuple[float, float]
    cloud_spec: np.ndarray
    cirrus: _Lowres | None
    cirrus_threshold: float
    gain: np.ndarray
    offset: np.ndarray
    swath: tuple[int, float, float] | None  # side (+1 right, -1 left), column at top, slope
    flagged_fraction: float = 0.0


@dataclass
class _Year:
    shift: float  # leaf-out / green-up shift in days
    vigor: float  # natural vegetation vigour (NIR factor)
    dry: float  # summer dry-down shift in days
    level: float  # reservoir level as bed depth that is still dry


# ----------------------------------------------------------------------------------------------
# The scene
# ----------------------------------------------------------------------------------------------


def _cirrus_beta(g: np.ndarray, threshold: float) -> np.ndarray:
    """Cirrus optical thickness (0-0.35) from the cirrus field; thin parts stay unflagged."""
    return (0.35 * _smoothstep((g - np.float32(threshold)) * np.float32(1 / 1.2))).astype(
        np.float32
    )


def _cloud_alpha(f: np.ndarray, threshold: float) -> np.ndarray:
    """Cloud opacity from the cloud field; the outer rim stays thin (below the SCL flag level)."""
    x = (f - np.float32(threshold - 0.3)) * np.float32(1.0 / 0.75)
    return _smoothstep(x).astype(np.float32)


class SyntheticScene:
    """A synthetic landscape on a `height` x `width` pixel grid, rendered on demand per block.

    The layout depends only on `seed` and the grid shape; `cloud_cover` (mean flagged cloud share of
    an acquisition; many are clear, some overcast), `noise` (sensor noise, reflectance standard
    deviation) and `crop_rotation` (share of fields changing crop from one year to the next) tune
    the nuisances. `changes_from` / `changes_until` bound the start dates of the new planted
    disturbances: put them between the before and after windows, since the scene never sees the
    windows. Older history (existing quarries and buildings, regrowing clearings, the pits that
    later grow) starts 1.3-8 years before `changes_from`.
    """

    def __init__(
        self,
        height: int,
        width: int,
        *,
        seed: int = 42,
        cloud_cover: float = 0.25,
        noise: float = 0.01,
        crop_rotation: float = 0.15,
        changes_from: dt.date = dt.date(2024, 7, 1),
        changes_until: dt.date = dt.date(2025, 3, 31),
        wet_days: Sequence[dt.date] = (),
    ) -> None:
        if height < 8 or width < 8:
            raise ValueError(f"synthetic scene needs at least 8 x 8 pixels, got {height} x {width}")
        if changes_until < changes_from:
            raise ValueError(f"changes_until {changes_until} is before changes_from {changes_from}")
        self.height, self.width, self.seed = int(height), int(width), int(seed)
        self.cloud_cover, self.noise = float(cloud_cover), float(noise)
        self.crop_rotation = float(crop_rotation)
        self.changes_from, self.changes_until = changes_from, changes_until
        self.wet_days = frozenset(wet_days)
        self._scale = height * width / 1.44e6
        self._years: dict[int, _Year] = {}
        self._crop_years: dict[int, np.ndarray] = {}
        self._luts: dict[dt.date, np.ndarray] = {}
        self._skies: dict[dt.date, _Sky] = {}
        rng = _rng(self.seed, self.height, self.width, 0x5CE4E)
        self._build_river(rng)
        self._build_fields_lowres(rng)
        self._build_parcels(rng)
        self._build_villages(rng)
        self._build_roads(rng)
        self._build_reservoir(rng)
        self._planted: list[_Planted] = []
        self._build_planted(rng)

    def __getstate__(self) -> dict[str, Any]:
        # Per-date caches are cheap to rebuild; leaving them out keeps the scene small in task
        # graphs that ship it to worker processes.
        state = self.__dict__.copy()
        for name in ("_years", "_crop_years", "_luts", "_skies"):
            state[name] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for v in self._villages:
            shapely.prepare(v)
        for p in self._planted:
            shapely.prepare(p.poly)

    # -- layout ---------------------------------------------------------------------------------

    def _river_x_at(self, rows: np.ndarray) -> np.ndarray:
        p = self._river_params
        r = np.asarray(rows, dtype=np.float64)
        return (
            p[0]
            + p[1] * np.sin(2 * np.pi * r / p[2] + p[3])
            + p[4] * np.sin(2 * np.pi * r / p[5] + p[6])
        )

    def _build_river(self, rng: np.random.Generator) -> None:
        h, w = self.height, self.width
        self._river_params = (
            w * rng.uniform(0.3, 0.7),
            w * rng.uniform(0.04, 0.1),
            h * rng.uniform(1.2, 2.2),
            rng.uniform(0, 2 * np.pi),
            min(30.0, 0.04 * w) * rng.uniform(0.5, 1.0),
            rng.uniform(180, 320),
            rng.uniform(0, 2 * np.pi),
        )
        rows = np.arange(h)
        # Precomputed per row so every block reads identical values.
        self._river_x = self._river_x_at(rows + 0.5)
        phase = rng.uniform(0, 2 * np.pi)
        self._river_hw = 2.5 + 1.0 * np.sin(2 * np.pi * (rows + 0.5) / 410.0 + phase)
        self._road_side = 1.0 if rng.random() < 0.5 else -1.0

    def _build_fields_lowres(self, rng: np.random.Generator) -> None:
        h, w = self.height, self.width
        origin = -2.0 * _CELL
        shape = (int(math.ceil(h / _CELL)) + 5, int(math.ceil(w / _CELL)) + 5)
        nodes_r = origin + np.arange(shape[0]) * _CELL
        nodes_c = origin + np.arange(shape[1]) * _CELL
        terrain = sum(
            wt * _smooth_noise(rng, shape, s)
            for wt, s in ((1.0, 24.0), (0.6, 10.0), (0.3, 4.0), (0.12, 1.5))
        )
        terrain = np.clip((terrain / (2.6 * terrain.std()) + 1.0) / 2.0, 0.0, 1.0)
        dist = np.abs(nodes_c[None, :] - self._river_x_at(nodes_r)[:, None])
        valley = np.clip(dist / (0.3 * w + 60.0), 0.0, 1.0) ** 0.8
        elev = (0.5 * terrain + 0.5 * valley).astype(np.float32)
        illum = self._hillshade(elev)
        grass = _smooth_noise(rng, shape, 5.0)
        rock = _smooth_noise(rng, shape, 2.5)
        conifer = _smooth_noise(rng, shape, 6.0)
        shrub = _smooth_noise(rng, shape, 3.0)
        vigor = 1.0 + 0.05 * _smooth_noise(rng, shape, 4.0)
        zone = _smooth_noise(rng, shape, 12.0)
        bed = _smooth_noise(rng, shape, 2.0)
        self._lr = _Lowres(
            np.stack([elev, illum, grass, rock, conifer, shrub, vigor, zone, bed]), _CELL, origin
        )
        inside = elev[2 : 2 + h // _CELL + 1, 2 : 2 + w // _CELL + 1]
        self._e_crop = float(np.quantile(inside, 0.3))
        self._e_high = float(np.quantile(inside, 0.78))
        self._e_rock = float(np.quantile(inside, 0.93))

    @staticmethod
    def _hillshade(elev: np.ndarray) -> np.ndarray:
        """Lambertian illumination of the terrain, sun from the south-south-east, 35 deg zenith."""
        z = elev.astype(np.float64) * 1800.0
        dz_drow, dz_dcol = np.gradient(z, _CELL * 10.0)
        # east, north, up normal; rows grow southwards
        nx, ny = -dz_dcol, dz_drow
        norm = np.sqrt(nx * nx + ny * ny + 1.0)
        zen, az = np.radians(35.0), np.radians(150.0)
        sun = (np.sin(zen) * np.sin(az), np.sin(zen) * np.cos(az), np.cos(zen))
        cos_i = (nx * sun[0] + ny * sun[1] + sun[2]) / norm
        factor = np.clip(cos_i / np.cos(zen), 0.3, 1.5)
        return (1.0 + 0.85 * (factor - 1.0)).astype(np.float32)

    def _build_parcels(self, rng: np.random.Generator) -> None:
        h, w = self.height, self.width
        starts = [-int(rng.integers(0, 30))]
        while starts[-1] < h:
            starts.append(starts[-1] + int(rng.integers(14, 46)))
        self._strip_starts = np.array(starts[:-1], dtype=np.int64)
        self._strip_cols: list[np.ndarray] = []
        offsets, total = [], 0
        for _ in self._strip_starts:
            cs = [-int(rng.integers(0, 40))]
            while cs[-1] < w:
                cs.append(cs[-1] + int(rng.integers(18, 72)))
            arr = np.array(cs[:-1], dtype=np.int64)
            self._strip_cols.append(arr)
            offsets.append(total)
            total += len(arr)
        self._strip_offset = np.array(offsets, dtype=np.int64)
        self._n_fields = total
        # centres of every field, to decide which parcels are cropland
        cr, cc = [], []
        ends = np.append(self._strip_starts[1:], h + 30)
        for s, cols in enumerate(self._strip_cols):
            col_ends = np.append(cols[1:], w + 40)
            cr.append(np.full(len(cols), (self._strip_starts[s] + ends[s]) / 2.0))
            cc.append((cols + col_ends) / 2.0)
        centre_r, centre_c = np.concatenate(cr), np.concatenate(cc)
        vals = self._lr.points(centre_r, centre_c)
        elev, zone = vals[0], vals[7]
        self._is_crop = (elev < self._e_crop) & (zone > -0.6)
        self._field_base = _unit(_hash_ids(_key(self.seed, 71), np.arange(total)))

    def _build_villages(self, rng: np.random.Generator) -> None:
        h, w = self.height, self.width
        self._villages: list[Polygon] = []
        if min(h, w) < 150:
            return
        n = max(1, int(round(6 * self._scale)))
        centres: list[tuple[float, float]] = []
        for _ in range(400):
            if len(centres) >= n:
                break
            r, c = rng.uniform(40, h - 40), rng.uniform(40, w - 40)
            e = float(self._lr.points(np.array([r]), np.array([c]))[0, 0])
            river = abs(c - float(self._river_x_at(np.array([r]))[0]))
            if e > self._e_crop + 0.08 or river < 30:
                continue
            if any(math.hypot(r - a, c - b) < 110 for a, b in centres):
                continue
            centres.append((r, c))
            radius = rng.uniform(12, 32)
            self._villages.append(_blob(rng, c, r, math.pi * radius**2, 28, 0.3))
        for v in self._villages:
            shapely.prepare(v)

    def _build_roads(self, rng: np.random.Generator) -> None:
        """Main road along the valley, feeder roads to every village."""
        h = self.height
        self._roads: list[tuple[float, float, float, float, float, int]] = []
        side = self._road_side
        rows = np.arange(-40.0, h + 80.0, 40.0)
        xs = self._river_x_at(rows) + side * 34.0
        for i in range(len(rows) - 1):
            self._roads.append((xs[i], rows[i], xs[i + 1], rows[i + 1], 0.75, _M_ASPHALT))
        for v in self._villages:
            cen = v.centroid
            ry = cen.y + rng.uniform(-20, 20)
            rx = float(self._river_x_at(np.array([ry]))[0]) + side * 34.0
            mx = (cen.x + rx) / 2 + rng.uniform(-12, 12)
            my = (cen.y + ry) / 2 + rng.uniform(-12, 12)
            mat = _M_ASPHALT if rng.random() < 0.5 else _M_DIRT
            self._roads.append((cen.x, cen.y, mx, my, 0.55, mat))
            self._roads.append((mx, my, rx, ry, 0.55, mat))

    def _build_reservoir(self, rng: np.random.Generator) -> None:
        h, w = self.height, self.width
        self._reservoir: tuple[float, float, float, float] | None = None
        self._reservoir_bbox = (0, 0, 0, 0)
        if min(h, w) < 300:
            return
        lines = shapely.MultiLineString([[(a, b), (c, d)] for a, b, c, d, _, _ in self._roads])
        for _ in range(300):
            a = rng.uniform(0.06, 0.1) * h
            b = rng.uniform(0.08, 0.13) * w
            a, b = min(a, 110.0), min(b, 150.0)
            r, c = rng.uniform(1.4 * a, h - 1.4 * a), rng.uniform(1.4 * b, w - 1.4 * b)
            e = float(self._lr.points(np.array([r]), np.array([c]))[0, 0])
            if not self._e_crop < e < self._e_high:
                continue
            if abs(c - float(self._river_x_at(np.array([r]))[0])) < b * 1.4 + 30:
                continue
            ell = affinity.scale(shapely.Point(c, r).buffer(1.0, 32), b * 1.4, a * 1.4)
            if ell.distance(lines) < 10 or any(ell.distance(v) < 15 for v in self._villages):
                continue
            self._reservoir = (r, c, a, b)
            self._reservoir_bbox = (
                int(r - 1.4 * a) - 1,
                int(r + 1.4 * a) + 2,
                int(c - 1.4 * b) - 1,
                int(c + 1.4 * b) + 2,
            )
            return

    # -- per-pixel layers -----------------------------------------------------------------------

    def _field_ids(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Field index of every pixel and whether it is a hedge (first row/column of a parcel)."""
        strip = np.searchsorted(self._strip_starts, rows, side="right") - 1
        strip = np.clip(strip, 0, len(self._strip_starts) - 1)
        fid = np.empty((len(rows), len(cols)), dtype=np.int32)
        hedge = np.zeros((len(rows), len(cols)), dtype=bool)
        first_row = rows == self._strip_starts[strip]
        bounds = np.flatnonzero(np.diff(strip)) + 1
        for k0, k1 in zip(np.r_[0, bounds], np.r_[bounds, len(rows)], strict=True):
            s = int(strip[k0])
            starts = self._strip_cols[s]
            j = np.clip(np.searchsorted(starts, cols, side="right") - 1, 0, len(starts) - 1)
            fid[k0:k1] = (self._strip_offset[s] + j)[None, :]
            hedge[k0:k1] = (cols == starts[j])[None, :]
        hedge |= first_row[:, None]
        return fid, hedge

    def _field_ids_points(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        ri = np.floor(r).astype(np.int64)
        ci = np.floor(c).astype(np.int64)
        strip = np.clip(np.searchsorted(self._strip_starts, ri, side="right") - 1, 0, None)
        out = np.empty(len(r), dtype=np.int64)
        for s in np.unique(strip):
            sel = strip == s
            starts = self._strip_cols[s]
            j = np.clip(np.searchsorted(starts, ci[sel], side="right") - 1, 0, len(starts) - 1)
            out[sel] = self._strip_offset[s] + j
        return out

    def _classify(
        self,
        elev: np.ndarray,
        grass: np.ndarray,
        rock: np.ndarray,
        tex: np.ndarray,
        crop: np.ndarray,
    ) -> np.ndarray:
        """Natural cover from terrain and noise fields; cropland parcels override it."""
        cls = np.full(elev.shape, LC_FOREST, dtype=np.uint8)
        is_grass = (grass + 0.25 * tex > 0.75) | ((elev > self._e_high) & (grass > -0.3))
        cls[is_grass] = LC_GRASS
        is_rock = ((elev > self._e_rock) & (rock + 0.3 * tex > 0.7)) | (rock + 0.3 * tex > 2.4)
        cls[is_rock] = LC_ROCK
        cls[crop] = LC_CROP
        return cls

    def _river_mask(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        rr = np.clip(rows, 0, self.height - 1)
        x = self._river_x[rr][:, None]
        hw = self._river_hw[rr][:, None]
        return np.abs((cols + 0.5)[None, :] - x) < hw

    def _bed_depth(self, rows: np.ndarray, cols: np.ndarray, bed: np.ndarray) -> np.ndarray:
        assert self._reservoir is not None
        r, c, a, b = self._reservoir
        dr = ((rows + 0.5 - r) / a).astype(np.float32)
        dc = ((cols + 0.5 - c) / b).astype(np.float32)
        rho2 = dr[:, None] ** 2 + dc[None, :] ** 2
        depth = 1.0 - rho2 + 0.28 * bed
        depth[rho2 > 1.9] = -1.0
        return depth.astype(np.float32)

    def _static(self, r0: int, r1: int, c0: int, c1: int) -> _Static:
        rows, cols = np.arange(r0, r1), np.arange(c0, c1)
        elev, illum, grass, rock, conifer, shrub, vigor = self._lr.block(
            rows, cols, fields=range(7)
        )
        tex = _unit(_hash2d(_key(self.seed, 11), rows, cols)) * np.float32(2.0) - np.float32(1.0)
        fid, hedge = self._field_ids(rows, cols)
        crop = self._is_crop[fid]
        cls = self._classify(elev, grass, rock, tex, crop)

        mat = np.empty(cls.shape, dtype=np.int32)
        forest = cls == LC_FOREST
        cf = np.clip(0.5 + 0.3 * conifer + 0.8 * (elev - 0.5), 0.0, 1.0)
        mat[forest] = _M_FOREST + np.rint(cf[forest] * (_N_CONIFER - 1)).astype(np.int32)
        meadow = cls == LC_GRASS
        sl = np.clip(0.35 + 0.3 * shrub, 0.0, 1.0)
        mat[meadow] = _M_GRASS + np.rint(sl[meadow] * (_N_SHRUB - 1)).astype(np.int32)
        mat[cls == LC_ROCK] = _M_ROCK
        mat[crop] = _M_FIELD0 + fid[crop]
        mat[crop & hedge] = _M_HEDGE

        self._paint_villages(rows, cols, cls, mat)
        depth = None
        if self._reservoir is not None and _overlaps(self._reservoir_bbox, (r0, r1, c0, c1)):
            bed = self._lr.block(rows, cols, fields=(8,))[0]
            depth = self._bed_depth(rows, cols, bed)
            cls[depth > 0] = _LC_BASIN
        river = self._river_mask(rows, cols)
        cls[river] = LC_WATER
        mat[river] = _M_RIVER

        amp = np.array([0, 0.12, 0.05, 0.03, 0.15, 0.06, 0.02, 0.05, 0.05, 0.05, 0.02], np.float32)
        mod = illum * (1.0 + amp[cls] * tex)
        water = (cls == LC_WATER) | (cls == _LC_BASIN)
        mod[water] = 1.0 + 0.02 * tex[water]
        road_cov, road_mat = self._road_cover(rows, cols)
        return _Static(cls, mat, illum, mod, vigor, tex, depth, road_cov, road_mat)

    def _paint_villages(
        self, rows: np.ndarray, cols: np.ndarray, cls: np.ndarray, mat: np.ndarray
    ) -> None:
        r0, c0 = int(rows[0]), int(cols[0])
        for i, v in enumerate(self._villages):
            minx, miny, maxx, maxy = v.bounds
            rr0, rr1 = max(int(miny), r0), min(int(maxy) + 1, int(rows[-1]) + 1)
            cc0, cc1 = max(int(minx), c0), min(int(maxx) + 1, int(cols[-1]) + 1)
            if rr0 >= rr1 or cc0 >= cc1:
                continue
            sr, sc = np.arange(rr0, rr1), np.arange(cc0, cc1)
            inside = shapely.contains_xy(v, (sc + 0.5)[None, :], (sr + 0.5)[:, None])
            u = _unit(_hash2d(_key(self.seed, 13, i), sr // 2, sc // 2))
            m = _VILLAGE_MATS[np.minimum(np.searchsorted(_VILLAGE_CUM, u), len(_VILLAGE_MATS) - 1)]
            sub = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            cls[sub][inside] = LC_URBAN
            mat[sub][inside] = m[inside]

    def _road_cover(
        self, rows: np.ndarray, cols: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        cov: np.ndarray | None = None
        rmat: np.ndarray | None = None
        for x0, y0, x1, y1, hw, m in self._roads:
            pad = hw + 1.5
            rr0 = max(int(math.floor(min(y0, y1) - pad)), r0)
            rr1 = min(int(math.ceil(max(y0, y1) + pad)) + 1, r1)
            cc0 = max(int(math.floor(min(x0, x1) - pad)), c0)
            cc1 = min(int(math.ceil(max(x0, x1) + pad)) + 1, c1)
            if rr0 >= rr1 or cc0 >= cc1:
                continue
            py = (np.arange(rr0, rr1) + 0.5)[:, None]
            px = (np.arange(cc0, cc1) + 0.5)[None, :]
            d = _segment_distance(px, py, x0, y0, x1, y1)
            c = np.clip(hw + 0.5 - d, 0.0, 1.0).astype(np.float32)
            if cov is None:
                cov = np.zeros((r1 - r0, c1 - c0), np.float32)
                rmat = np.full((r1 - r0, c1 - c0), _M_ASPHALT, np.int32)
            assert rmat is not None
            sub = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            better = c > cov[sub]
            cov[sub][better] = c[better]
            rmat[sub][better] = m
        return cov, rmat

    # -- point queries used for placement ------------------------------------------------------

    def _classes_at(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Static land cover at fractional pixel coordinates (roads and the reservoir bed included)."""
        lr = self._lr.points(r, c)
        elev, grass, rock, bed = lr[0], lr[2], lr[3], lr[8]
        ri, ci = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
        tex = _unit(_hash_points(_key(self.seed, 11), ri, ci)) * 2 - 1
        crop = self._is_crop[self._field_ids_points(r, c)]
        cls = self._classify(elev, grass, rock, tex, crop)
        for v in self._villages:
            cls[shapely.contains_xy(v, c, r)] = LC_URBAN
        if self._reservoir is not None:
            rr, cc, a, b = self._reservoir
            rho2 = ((r - rr) / a) ** 2 + ((c - cc) / b) ** 2
            cls[(1.0 - rho2 + 0.28 * bed > -0.1) & (rho2 < 1.9)] = _LC_BASIN
        rx = self._river_x[np.clip(ri, 0, self.height - 1)]
        hw = self._river_hw[np.clip(ri, 0, self.height - 1)]
        cls[np.abs(c - rx) < hw + 1] = LC_WATER
        for x0, y0, x1, y1, hwr, _ in self._roads:
            cls[_segment_distance(c, r, x0, y0, x1, y1) < hwr + 1.0] = LC_ROAD
        return cls

    # -- planted disturbances -----------------------------------------------------------------

    def _count(self, rng: np.random.Generator, per_scene: float) -> int:
        x = per_scene * self._scale
        return int(math.floor(x) + (rng.random() < x - math.floor(x)))

    def _build_planted(self, rng: np.random.Generator) -> None:
        cf, cu = self.changes_from, self.changes_until
        span = max((cu - cf).days, 0)

        def past(lo_years: float, hi_years: float) -> dt.date:
            return cf - dt.timedelta(days=int(rng.uniform(lo_years, hi_years) * 365.25))

        def new(lo: float = 0.0, hi: float = 1.0) -> dt.date:
            return cf + dt.timedelta(days=int(round(rng.uniform(lo, hi) * span)))

        # history first: it is part of the landscape the new changes must avoid
        for _ in range(self._count(rng, 2)):
            self._place(rng, "quarry", rng.uniform(150, 900), past(3, 8), history=True)
        for _ in range(self._count(rng, 4)):
            self._place(rng, "vegetation_loss", rng.uniform(40, 500), past(1.3, 4), history=True)
        for _ in range(self._count(rng, 2)):
            self._place(rng, "construction", rng.uniform(60, 400), past(1.5, 6), history=True)

        n_q, n_g = self._count(rng, 5), self._count(rng, 3)
        n_c, n_v, n_s = self._count(rng, 10), self._count(rng, 14), self._count(rng, 4)
        if min(self.height, self.width) >= 128:  # small test scenes still get one of each type
            n_q, n_c, n_v = max(n_q, 1), max(n_c, 1), max(n_v, 1)
        for area in _stratified_areas(rng, n_q, 15, 900):
            self._place(rng, "quarry", area, new())
        for area in _stratified_areas(rng, n_g, 40, 500):
            self._place_growth(rng, area, past(2, 8), new())
        # construction starts early enough to be mostly built by the after window
        for area in _stratified_areas(rng, n_c, 12, 600):
            self._place(rng, "construction", area, new(0.0, 0.5))
        for area in _stratified_areas(rng, n_v, 12, 700):
            self._place(rng, "vegetation_loss", area, new())
        for _ in range(n_s):
            kind = CHANGE_TYPES[int(rng.integers(0, 3))]
            self._place(rng, kind, rng.uniform(3, 9), new(0.0, 0.5))

    def _shape(
        self, rng: np.random.Generator, kind: str, cx: float, cy: float, area: float
    ) -> Polygon:
        if kind == "construction" and area > 20:
            return _building_site(rng, cx, cy, area)
        if kind == "vegetation_loss":
            return _blob(rng, cx, cy, area, int(rng.integers(9, 16)), 0.45)
        return _blob(rng, cx, cy, area, 36, 0.4)

    def _ground_ok(self, kind: str, poly: Polygon, history: bool) -> bool:
        """Is the footprint on suitable ground and clear of water, roads, villages, other changes?"""
        halo = poly.buffer(3.0)
        minx, miny, maxx, maxy = halo.bounds
        if minx < 3 or miny < 3 or maxx > self.width - 3 or maxy > self.height - 3:
            return False
        for other in self._planted:
            if other.poly.distance(poly) < 5 or (
                other.grew_from is not None and other.grew_from.distance(poly) < 5
            ):
                return False
        hr, hc = _sample_points(halo, 1.5)
        cls_halo = self._classes_at(hr, hc)
        if np.isin(cls_halo, (LC_WATER, LC_URBAN, LC_ROAD, _LC_BASIN)).any():
            return False
        r, c = _sample_points(poly, 1.0)
        cls = self._classes_at(r, c)
        veg = np.isin(cls, (LC_FOREST, LC_GRASS)).mean()
        if kind == "vegetation_loss":
            return bool((cls == LC_FOREST).mean() >= 0.9)
        if kind == "quarry":
            return bool(veg >= 0.7 and np.isin(cls, (LC_FOREST, LC_GRASS, LC_ROCK)).all())
        ok = bool(np.isin(cls, (LC_FOREST, LC_GRASS, LC_CROP)).all())
        if ok and self._villages and not history:
            near = min(v.centroid.distance(poly.centroid) for v in self._villages)
            ok = near < 250
        return ok

    def _place(
        self,
        rng: np.random.Generator,
        kind: str,
        area: float,
        start: dt.date,
        *,
        history: bool = False,
    ) -> None:
        radius = math.sqrt(area / math.pi)
        for _ in range(150):
            m = radius * 1.6 + 8
            if self.height <= 2 * m or self.width <= 2 * m:
                return
            if kind == "construction" and self._villages and not history and rng.random() < 0.8:
                v = self._villages[int(rng.integers(0, len(self._villages)))].centroid
                ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(40, 200)
                cx, cy = v.x + dist * math.cos(ang), v.y + dist * math.sin(ang)
            else:
                cx, cy = rng.uniform(m, self.width - m), rng.uniform(m, self.height - m)
            poly = self._shape(rng, kind, cx, cy, area)
            if self._ground_ok(kind, poly, history):
                self._add(kind, poly, start, rng, history=history)
                return

    def _place_growth(
        self, rng: np.random.Generator, area: float, old_start: dt.date, start: dt.date
    ) -> None:
        """An old pit (history) and its extension onto new ground (the truth is the extension)."""
        for _ in range(150):
            old_area = rng.uniform(120, 600)
            r_old = math.sqrt(old_area / math.pi)
            m = 3 * r_old + 3 * math.sqrt(area / math.pi) + 10
            if self.height <= 2 * m or self.width <= 2 * m:
                return
            cx, cy = rng.uniform(m, self.width - m), rng.uniform(m, self.height - m)
            old = _blob(rng, cx, cy, old_area, 36, 0.35)
            ang = rng.uniform(0, 2 * np.pi)
            ext_area = area
            for _ in range(4):  # grow the extension until the new ground has the wanted area
                r_ext = math.sqrt(ext_area / math.pi)
                d = r_old + 0.35 * r_ext
                ext = _blob(rng, cx + d * math.cos(ang), cy + d * math.sin(ang), ext_area, 30, 0.3)
                whole = old.union(ext)
                grown = _clean(whole.difference(old))
                if grown.area >= 0.9 * area:
                    break
                ext_area *= area / max(grown.area, 1.0)
            if whole.geom_type != "Polygon" or grown.geom_type != "Polygon":
                continue
            if grown.area < 0.5 * area:
                continue
            if not self._ground_ok("quarry", whole, False):
                continue
            self._add("quarry", old, old_start, rng, history=True)
            self._add(
                "quarry",
                grown,
                start,
                rng,
                history=False,
                grew_from=old,
                variant=self._planted[-1].variant,
                note="extension of an existing quarry: geometry is the newly opened ground only",
            )
            return

    def _add(
        self,
        kind: str,
        poly: Polygon,
        start: dt.date,
        rng: np.random.Generator,
        *,
        history: bool,
        grew_from: Polygon | None = None,
        variant: int | None = None,
        note: str = "",
    ) -> None:
        idx = len(self._planted)
        prefix = {"quarry": "QRY", "construction": "CON", "vegetation_loss": "VLS"}[kind]
        tag = "H" if history else "N"
        if variant is None:
            variant = int(rng.integers(0, 3))
        if history and not note:
            note = "existing before the analysis period"
        self._planted.append(
            _Planted(
                idx,
                f"SYN-{tag}-{prefix}-{idx:03d}",
                kind,
                start,
                poly,
                variant,
                history,
                grew_from,
                note,
            )
        )

    # -- per-date state -------------------------------------------------------------------------

    def _year(self, year: int) -> _Year:
        if year not in self._years:
            rng = _rng(self.seed, 0x7EA2, year)
            high = (year + self.seed) % 2 == 0
            level = rng.uniform(0.04, 0.1) if high else rng.uniform(0.32, 0.5)
            self._years[year] = _Year(
                shift=rng.uniform(-10, 10),
                vigor=rng.uniform(0.93, 1.05),
                dry=rng.uniform(-15, 15),
                level=level,
            )
        return self._years[year]

    def _natural(self, day: dt.date) -> tuple[np.ndarray, np.ndarray, float]:
        """Deciduous canopy and meadow spectra on `day`, and the meadow green fraction."""
        yp = self._year(day.year)
        doy = day.timetuple().tm_yday
        leaf = float(_ramp(doy, 100 + yp.shift, 140 + yp.shift) * (1 - _ramp(doy, 280, 315)))
        decid = leaf * BROADLEAF_ON + (1 - leaf) * BROADLEAF_OFF
        green = float(
            0.15
            + 0.8
            * _ramp(doy, 85 + yp.shift, 130 + yp.shift)
            * (1 - 0.45 * _ramp(doy, 190 + yp.dry, 235 + yp.dry))
            * (1 - 0.7 * _ramp(doy, 290, 330))
        )
        grass = green * GRASS_GREEN + (1 - green) * GRASS_DRY
        out = []
        for s in (decid, grass):
            s = s.copy()
            s[_B08] *= yp.vigor
            s[[_B04, _B11, _B12]] *= 1 + 0.8 * (1 - yp.vigor)
            out.append(s.astype(np.float32))
        return out[0], out[1], green

    def _crop_type(self, year: int) -> np.ndarray:
        if year not in self._crop_years:
            ids = np.arange(self._n_fields)
            base = np.searchsorted(np.array([0.5, 0.8]), self._field_base, side="right")
            switch = _unit(_hash_ids(_key(self.seed, 72, year), ids)) < self.crop_rotation
            step = 1 + (_unit(_hash_ids(_key(self.seed, 73, year), ids)) < 0.5)
            self._crop_years[year] = np.where(switch, (base + step) % 3, base).astype(np.int8)
        return self._crop_years[year]

    def _crop_spectra(self, day: dt.date) -> np.ndarray:
        """Spectrum of every field on `day` from its crop, sowing, green-up and harvest dates."""
        year, doy = day.year, float(day.timetuple().tm_yday)
        ids = np.arange(self._n_fields)

        def u(tag: int) -> np.ndarray:
            return _unit(_hash_ids(_key(self.seed, 80 + tag, year), ids)).astype(np.float64)

        crop = self._crop_type(year)
        jg, jh, js = -10 + 20 * u(1), -10 + 22 * u(2), -5 + 20 * u(3)
        double, soil_b = u(4) < 0.6, 0.85 + 0.3 * u(5)
        c1 = 145 + 25 * u(6)
        c2 = c1 + 40 + 15 * u(7)
        next_wheat = self._crop_type(year + 1) == _WHEAT

        # winter wheat
        harvest = 175 + jh
        ripe = _ramp(doy, 150 + jh, 172 + jh)
        g_w = (0.22 + 0.7 * _ramp(doy, 60 + jg, 110 + jg)) * (1 - ripe)
        after = doy >= harvest
        second = 0.85 * _ramp(doy, harvest + 15, harvest + 65) * (1 - _ramp(doy, 255, 275))
        g_w = np.where(after, np.where(double, second, 0.03), g_w)
        g_w = np.where(doy > 285, np.where(next_wheat, 0.1 * _ramp(doy, 290, 320), 0.0), g_w)
        ripe_w = np.where(after, 0.0, ripe)
        stub_w = np.where(after, 1 - _ramp(doy, harvest + 15, harvest + 35), 0.0)
        # spring maize
        sow = 118 + js
        sen = _ramp(doy, 245, 268)
        g_m = 0.88 * _ramp(doy, sow + 12, sow + 70) * (1 - sen)
        g_m = np.where(doy >= 272, 0.02, g_m)
        ripe_m = np.where(doy >= 272, 0.0, sen)
        stub_m = np.where(doy >= 272, 1 - _ramp(doy, 290, 300), 1 - _ramp(doy, sow - 25, sow - 15))
        # cut meadow (alfalfa-like)
        g_g = 0.3 + 0.55 * _ramp(doy, 75 + jg, 120 + jg)
        for cut in (c1, c2):
            g_g = g_g * np.where(doy >= cut, 1 - 0.65 * (1 - _ramp(doy, cut, cut + 25)), 1.0)
        g_g = g_g * (1 - 0.6 * _ramp(doy, 290, 330))

        g = np.select([crop == _WHEAT, crop == _MAIZE], [g_w, g_m], g_g)
        w_ripe = np.select([crop == _WHEAT, crop == _MAIZE], [ripe_w, ripe_m], 0.0)
        w_stub = np.select([crop == _WHEAT, crop == _MAIZE], [stub_w, stub_m], 0.0)
        w_dry = (crop == _MEADOW).astype(np.float64)
        w_soil = np.clip(1 - w_ripe - w_stub - w_dry, 0.0, 1.0)
        back = (
            w_ripe[:, None] * CROP_RIPE
            + w_stub[:, None] * STUBBLE
            + w_dry[:, None] * GRASS_DRY
            + (w_soil * soil_b)[:, None] * SOIL_PLOUGHED
        )
        return (g[:, None] * CROP_GREEN + (1 - g)[:, None] * back).astype(np.float32)

    def _lut(self, day: dt.date) -> np.ndarray:
        lut = self._luts.get(day)
        if lut is not None:
            return lut
        decid, grass, _ = self._natural(day)
        lut = np.empty((_M_FIELD0 + self._n_fields, 6), np.float32)
        for k in range(_N_CONIFER):
            f = k / (_N_CONIFER - 1)
            lut[_M_FOREST + k] = f * CONIFER + (1 - f) * decid
        for k in range(_N_SHRUB):
            f = 0.6 * k / (_N_SHRUB - 1)
            lut[_M_GRASS + k] = f * SHRUB + (1 - f) * grass
        lut[_M_ROCK] = 0.75 * ROCK_NATURAL + 0.25 * (0.5 * SHRUB + 0.5 * grass)
        lut[_M_ROOF_RED], lut[_M_ROOF_GREY], lut[_M_CONCRETE] = ROOF_RED, ROOF_GREY, CONCRETE
        lut[_M_ROOF_BLUE], lut[_M_ROOF_WHITE] = ROOF_BLUE, ROOF_WHITE
        lut[_M_GARDEN] = 0.7 * grass + 0.3 * SOIL_PLOUGHED
        lut[_M_URBAN_TREE] = decid
        lut[_M_RIVER], lut[_M_RES_WATER], lut[_M_MUD] = WATER_RIVER, WATER_RESERVOIR, MUD
        lut[_M_SHORE_GRASS] = 0.6 * grass + 0.4 * MUD
        lut[_M_HEDGE] = 0.5 * grass + 0.5 * decid
        lut[_M_ASPHALT], lut[_M_DIRT] = ASPHALT, DIRT_ROAD
        lut[_M_FIELD0:] = self._crop_spectra(day)
        if day in self.wet_days:
            # soil after rain: fields, gardens, dirt roads and mud darken, most in the SWIR
            for row in (_M_GARDEN, _M_MUD, _M_SHORE_GRASS, _M_DIRT):
                lut[row] *= _WET_SOIL
            lut[_M_FIELD0:] *= _WET_SOIL
        if len(self._luts) > 512:
            self._luts.clear()
        self._luts[day] = lut
        return lut

    def reservoir_level(self, day: dt.date) -> float:
        """Bed depth below which the reservoir is dry on `day` (higher = lower water)."""
        doy = day.timetuple().tm_yday
        return self._year(day.year).level - 0.03 * math.sin(2 * math.pi * (doy - 60) / 365.25)

    def _sky(self, day: dt.date) -> _Sky:
        sky = self._skies.get(day)
        if sky is not None:
            return sky
        rng = _rng(self.seed, 0x5C7, day.toordinal())
        m = self.cloud_cover
        if m <= 0:
            cover = 0.0
        elif m >= 1:
            cover = 1.0
        else:
            k = 1.2
            cover = float(rng.beta(m * k, (1 - m) * k))
        cover = 0.0 if cover < 0.03 else cover
        h, w = self.height, self.width
        origin = -float(_CLOUD_MARGIN + _CLOUD_CELL)
        shape = (
            (h + 2 * _CLOUD_MARGIN) // _CLOUD_CELL + 3,
            (w + 2 * _CLOUD_MARGIN) // _CLOUD_CELL + 3,
        )
        core = (
            slice(_CLOUD_MARGIN // _CLOUD_CELL + 1, -2),
            slice(_CLOUD_MARGIN // _CLOUD_CELL + 1, -2),
        )
        cloud, threshold = None, 0.0
        flagged = np.zeros(shape, dtype=bool)[core]
        if cover > 0:
            f = 0.7 * _smooth_noise(rng, shape, 14.0) + 0.35 * _smooth_noise(rng, shape, 5.0)
            f = f + 0.15 * _smooth_noise(rng, shape, 1.5)
            f = (f / f.std()).astype(np.float32)
            threshold = float(np.quantile(f[core], 1.0 - cover)) if cover < 1 else -1e9
            cloud = _Lowres(f[None], _CLOUD_CELL, origin)
            flagged |= _cloud_alpha(f[core], threshold) >= 0.3
        height_px = rng.uniform(40, 120)  # cloud base 0.6-1.7 km, sun 35 deg from zenith
        az = np.radians(rng.uniform(140, 160))
        shift = (
            height_px * -math.cos(az),
            height_px * math.sin(az),
        )  # towards the sun (south-east)
        spec = CLOUD * np.float32(rng.uniform(0.8, 1.1))
        cirrus, cirrus_thr = None, 0.0
        if rng.random() < 0.2:
            g = _smooth_noise(rng, shape, 20.0)
            cirrus_thr = float(np.quantile(g[core], 0.55))
            cirrus = _Lowres(g[None], _CLOUD_CELL, origin)
            flagged |= _cirrus_beta(g[core], cirrus_thr) > 0.12
        gain = (rng.normal(1.0, 0.015) * rng.normal(1.0, 0.008, 6)).astype(np.float32)
        haze = rng.uniform(0, 1) ** 2
        offset = haze * np.array([0.015, 0.01, 0.006, 0.002, 0.001, 0.0005]) + rng.normal(
            0, 0.0015, 6
        )
        swath = None
        if rng.random() < 0.12:
            side = 1 if rng.random() < 0.5 else -1
            x_top = w * rng.uniform(0.6, 0.92) if side > 0 else w * rng.uniform(0.08, 0.4)
            swath = (side, x_top, math.tan(math.radians(rng.uniform(-12, 12))))
        sky = _Sky(
            cover, cloud, threshold, shift, spec.astype(np.float32), cirrus, cirrus_thr, gain,
            offset.astype(np.float32), swath, float(flagged.mean()),
        )  # fmt: skip
        if len(self._skies) > 512:
            self._skies.clear()
        self._skies[day] = sky
        return sky

    # -- rendering ------------------------------------------------------------------------------

    def cloud_fraction(self, day: dt.date) -> float:
        """Share of the scene flagged as cloud or cirrus in the acquisition of `day` (0-1)."""
        return self._sky(day).flagged_fraction

    def nodata_fraction(self, day: dt.date) -> float:
        """Share of the scene outside the swath in the acquisition of `day` (0-1)."""
        sky = self._sky(day)
        rows = np.arange(0, self.height, max(1, self.height // 64))
        cols = np.arange(0, self.width, max(1, self.width // 64))
        nodata = self._swath_nodata(sky, rows, cols)
        return 0.0 if nodata is None else float(nodata.mean())

    def _surface(
        self, day: dt.date, r0: int, r1: int, c0: int, c1: int
    ) -> tuple[np.ndarray, np.ndarray, _Static]:
        """Cloud-free, noise-free surface reflectance (6, h, w) and the date's land cover."""
        st = self._static(r0, r1, c0, c1)
        cls, mat = st.cls.copy(), st.mat
        if st.depth is not None:
            mat = mat.copy()
            basin = cls == _LC_BASIN
            level = self.reservoir_level(day)
            wet = basin & (st.depth > level)
            rim = basin & (st.depth <= 0.04)
            mud = basin & ~wet & ~rim
            mat[wet], mat[mud], mat[rim] = _M_RES_WATER, _M_MUD, _M_SHORE_GRASS
            cls[wet], cls[mud] = LC_WATER, LC_SHORE
            cls[rim] = LC_GRASS
        lut = self._lut(day)
        surf = np.empty((6, r1 - r0, c1 - c0), np.float32)
        for b in range(6):
            np.take(lut[:, b], mat, out=surf[b])
            surf[b] *= st.mod
        surf[_B08] *= st.vigor
        self._overlay_planted(surf, cls, st, day, r0, r1, c0, c1)
        if st.road_cov is not None and st.road_mat is not None:
            on = st.road_cov > 0
            cov = st.road_cov[on]
            for b in range(6):
                spec = lut[:, b][st.road_mat[on]] * st.illum[on]
                surf[b][on] += cov * (spec - surf[b][on])
            cls[st.road_cov >= 0.5] = LC_ROAD
        return surf, cls, st

    def _overlay_planted(
        self,
        surf: np.ndarray,
        cls: np.ndarray,
        st: _Static,
        day: dt.date,
        r0: int,
        r1: int,
        c0: int,
        c1: int,
    ) -> None:
        for p in self._planted:
            if p.start > day:
                continue
            pr0, pr1, pc0, pc1 = p.bbox
            rr0, rr1, cc0, cc1 = max(pr0, r0), min(pr1, r1), max(pc0, c0), min(pc1, c1)
            if rr0 >= rr1 or cc0 >= cc1:
                continue
            rows, cols = np.arange(rr0, rr1), np.arange(cc0, cc1)
            cov = _coverage(p.poly, rows, cols)
            if not cov.any():
                continue
            sub = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            spec = self._planted_spectrum(p, day, rows, cols, st.tex[sub])
            spec *= st.illum[sub]
            target = surf[(slice(None), *sub)]
            target += cov * (spec - target)
            cls[sub][cov >= 0.5] = LC_DISTURBED

    def _planted_spectrum(
        self, p: _Planted, day: dt.date, rows: np.ndarray, cols: np.ndarray, tex: np.ndarray
    ) -> np.ndarray:
        age = (day - p.start).days
        shape = (6, len(rows), len(cols))
        if p.kind == "quarry":
            patch = _unit(_hash2d(_key(self.seed, 41, p.index), rows // 2, cols // 3)) - 0.5
            rock = _QUARRY_VARIANTS[p.variant][:, None, None] * (1.0 + 0.2 * patch + 0.06 * tex)
            prog = float(_ramp(age, 0, 40))
            return (prog * rock + (1 - prog) * SLASH[:, None, None]).astype(np.float32)
        if p.kind == "construction":
            u = _unit(_hash2d(_key(self.seed, 43, p.index), rows // 3, cols // 3))
            built = _BUILT[np.minimum(np.searchsorted(_BUILT_CUM, u), len(_BUILT) - 1)]
            built = np.moveaxis(built, -1, 0) * (1.0 + 0.05 * tex)
            q = float(_ramp(age, 20, 120))
            return (q * built + (1 - q) * CONSTRUCTION_SOIL[:, None, None]).astype(np.float32)
        decid, grass, green = self._natural(day)
        years = age / 365.25
        v = min(0.85, 0.04 + 0.22 * years) * (0.3 + 0.7 * green)
        out = np.broadcast_to((v * grass + (1 - v) * SLASH)[:, None, None], shape).copy()
        out *= 1.0 + 0.08 * tex
        remnant = _unit(_hash2d(_key(self.seed, 45, p.index), rows, cols)) < 0.06
        out[:, remnant] = decid[:, None]
        return out

    def render(
        self, day: dt.date, rows: tuple[int, int], cols: tuple[int, int], bands: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The L2A acquisition of `day` over rows [r0, r1) x cols [c0, c1) of the grid.

        Returns float32 reflectance per requested band (NaN outside the swath) and, if asked, uint8
        ``SCL``. Values depend only on the scene, the date and the global pixel position.
        """
        r0, r1 = rows
        c0, c1 = cols
        unknown = [b for b in bands if b not in BANDS and b != "SCL"]
        if unknown:
            raise ValueError(f"synthetic scene has no band(s) {unknown}; it has {[*BANDS, 'SCL']}")
        surf, cls, st = self._surface(day, r0, r1, c0, c1)
        sky = self._sky(day)
        rr, cc = np.arange(r0, r1), np.arange(c0, c1)
        alpha, shadow = self._clouds(sky, rr, cc)
        cirrus = None
        if sky.cirrus is not None:
            cirrus = _cirrus_beta(sky.cirrus.block(rr, cc)[0], sky.cirrus_threshold)
        nodata = self._swath_nodata(sky, rr, cc)

        out: dict[str, np.ndarray] = {}
        tmp = np.empty(surf.shape[1:], np.float32)  # scratch: in-place work keeps this fast
        if alpha is not None:
            keep = 1.0 - alpha  # surface light passing the cloud
            light = alpha * (0.6 + 0.4 * alpha)  # light scattered by the cloud (thin = greyer)
        for band in bands:
            if band == "SCL":
                continue
            b = BANDS.index(band)
            x = surf[b].copy()
            if shadow is not None:
                np.multiply(shadow, -_SHADOW_DEPTH[b], out=tmp)
                tmp += 1.0
                x *= tmp
            if alpha is not None:
                x *= keep
                np.multiply(light, sky.cloud_spec[b], out=tmp)
                x += tmp
            if cirrus is not None:
                np.multiply(cirrus, CIRRUS[b], out=tmp)
                x += tmp
            x *= sky.gain[b]
            x += sky.offset[b]
            if self.noise > 0:
                noise = _gauss(_hash2d(_key(self.seed, 31, day.toordinal(), b), rr, cc))
                noise *= np.float32(self.noise)
                x += noise
            np.clip(x, 0.0, 1.0, out=x)
            if nodata is not None:
                x[nodata] = np.nan
            out[band] = x
        if "SCL" in bands:
            out["SCL"] = self._scl(day, surf, cls, alpha, shadow, cirrus, nodata, rr, cc)
        return out

    def _clouds(
        self, sky: _Sky, rows: np.ndarray, cols: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        if sky.cloud is None:
            return None, None
        alpha = _cloud_alpha(sky.cloud.block(rows, cols)[0], sky.threshold)
        dr, dc = sky.shadow_shift
        shadow = _cloud_alpha(sky.cloud.block(rows, cols, dr, dc)[0], sky.threshold)
        shadow *= 1.0 - alpha  # no shadow visible under the cloud itself
        return (alpha if alpha.any() else None), (shadow if shadow.any() else None)

    def _swath_nodata(self, sky: _Sky, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        if sky.swath is None:
            return None
        side, x_top, slope = sky.swath
        edge = x_top + slope * (rows + 0.5)
        nodata = (
            (cols + 0.5)[None, :] > edge[:, None]
            if side > 0
            else (cols + 0.5)[None, :] < edge[:, None]
        )
        return nodata if nodata.any() else None

    def _scl(
        self,
        day: dt.date,
        surf: np.ndarray,
        cls: np.ndarray,
        alpha: np.ndarray | None,
        shadow: np.ndarray | None,
        cirrus: np.ndarray | None,
        nodata: np.ndarray | None,
        rows: np.ndarray,
        cols: np.ndarray,
    ) -> np.ndarray:
        """Scene classification as Sen2Cor would give it, with its typical mistakes."""
        red, nir = surf[_B04], surf[_B08]
        ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
        scl = np.where(ndvi > 0.4, _SCL_VEG, _SCL_NOT_VEG).astype(np.uint8)
        scl[cls == LC_WATER] = _SCL_WATER
        visible = (surf[_B02] + surf[_B03] + surf[_B04]) * (1 / 3)
        bright = visible > 0.2
        if bright.any():  # bright roofs and rock are sometimes taken for cloud
            u = _unit(_hash2d(_key(self.seed, 37, day.toordinal()), rows, cols))
            scl[bright & (u < 0.03)] = _SCL_CLOUD_MED
        if shadow is not None:
            scl[shadow > 0.55] = _SCL_SHADOW
        if cirrus is not None:
            scl[cirrus > 0.12] = _SCL_CIRRUS
        if alpha is not None:
            scl[alpha >= 0.3] = _SCL_CLOUD_MED
            scl[alpha >= 0.7] = _SCL_CLOUD_HIGH
        if nodata is not None:
            scl[nodata] = _SCL_NO_DATA
        return scl

    # -- public views ---------------------------------------------------------------------------

    def surface(self, day: dt.date, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Cloud-free, noise-free surface reflectance (6, h, w) on `day`: what the scene really is."""
        return self._surface(day, rows[0], rows[1], cols[0], cols[1])[0]

    def landcover(self, day: dt.date, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Land-cover class (LC_*) of every pixel on `day`; active planted changes are LC_DISTURBED."""
        return self._surface(day, rows[0], rows[1], cols[0], cols[1])[1]

    def planted(self, grid: GeoBox) -> list[PlantedChange]:
        """Every planted disturbance, old and new, with geometry in the grid CRS."""
        if grid.shape != (self.height, self.width):
            raise ValueError(
                f"grid shape {grid.shape.yx} is not the scene's {(self.height, self.width)}"
            )
        t = grid.transform
        matrix = [t.a, t.b, t.d, t.e, t.c, t.f]
        px_area = projected_pixel_area_m2(grid) if grid.crs.projected else 100.0
        out = []
        for p in self._planted:
            geom = orient(_valid(affinity.affine_transform(p.poly, matrix)), 1.0)
            old = None
            if p.grew_from is not None:
                old = orient(_valid(affinity.affine_transform(p.grew_from, matrix)), 1.0)
            area = float(geom.area) if grid.crs.projected else float(p.poly.area * px_area)
            out.append(PlantedChange(p.id, p.kind, p.start, geom, area, area < MMU_M2, old, p.note))
        return out


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------


def _clean(geom: Any) -> Any:
    """Drop slivers thinner than half a pixel so the polygon stays valid through affine transforms."""
    opened = geom.buffer(-0.25, join_style="mitre").buffer(0.25, join_style="mitre")
    opened = shapely.set_precision(opened.intersection(geom), 1e-6)
    if opened.geom_type == "MultiPolygon":
        opened = max(opened.geoms, key=lambda g: g.area)
    return opened if opened.geom_type == "Polygon" else Polygon()


def _valid(geom: Polygon) -> Polygon:
    """`geom`, repaired if numerical noise made it self-touch (keeps the largest part)."""
    if geom.is_valid:
        return geom
    fixed = shapely.make_valid(geom)
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type == "Polygon"]
    return max(parts, key=lambda g: g.area) if parts else geom


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _segment_distance(
    px: np.ndarray, py: np.ndarray, x0: float, y0: float, x1: float, y1: float
) -> np.ndarray:
    dx, dy = x1 - x0, y1 - y0
    length2 = max(dx * dx + dy * dy, 1e-12)
    t = np.clip(((px - x0) * dx + (py - y0) * dy) / length2, 0.0, 1.0)
    return np.hypot(px - (x0 + t * dx), py - (y0 + t * dy))


def _coverage(poly: Polygon, rows: np.ndarray, cols: np.ndarray, sub: int = 2) -> np.ndarray:
    """Share of each pixel inside `poly`, from sub x sub sample points per pixel."""
    off = (np.arange(sub) + 0.5) / sub
    ys = (rows[:, None] + off[None, :]).ravel()
    xs = (cols[:, None] + off[None, :]).ravel()
    inside = shapely.contains_xy(poly, xs[None, :], ys[:, None])
    return inside.reshape(len(rows), sub, len(cols), sub).mean(axis=(1, 3), dtype=np.float32)


def _sample_points(poly: Polygon, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and cols of a regular lattice of points inside `poly` (at least its centroid)."""
    minx, miny, maxx, maxy = poly.bounds
    ys = np.arange(miny + step / 2, maxy, step)
    xs = np.arange(minx + step / 2, maxx, step)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    inside = shapely.contains_xy(poly, gx, gy)
    cen = poly.representative_point()
    return np.append(gy[inside], cen.y), np.append(gx[inside], cen.x)


def _blob(
    rng: np.random.Generator, cx: float, cy: float, area: float, n_vertices: int, roughness: float
) -> Polygon:
    """An irregular star-shaped polygon of exactly `area` (pixel units) around (cx, cy)."""
    theta = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
    radius = np.ones(n_vertices)
    for k in range(2, 6):
        radius += rng.uniform(0, roughness / (k - 1)) * np.cos(
            k * theta + rng.uniform(0, 2 * np.pi)
        )
    radius = np.clip(radius, 0.4, None)
    poly = Polygon(np.column_stack([np.cos(theta) * radius, np.sin(theta) * radius]))
    if not poly.is_valid or poly.area <= 0:
        poly = shapely.Point(0, 0).buffer(1.0, 8)
    scale = math.sqrt(area / poly.area)
    return affinity.affine_transform(poly, [scale, 0, 0, scale, cx, cy])


def _building_site(rng: np.random.Generator, cx: float, cy: float, area: float) -> Polygon:
    """A rotated rectangle, sometimes with a wing: construction sites follow straight lines."""
    aspect = rng.uniform(1.0, 2.5)
    w = math.sqrt(area / aspect)
    poly = shapely.box(-w * aspect / 2, -w / 2, w * aspect / 2, w / 2)
    if rng.random() < 0.5:
        wing = shapely.box(0, 0, w * aspect * rng.uniform(0.3, 0.5), w * rng.uniform(0.6, 1.0))
        poly = poly.union(
            affinity.translate(wing, w * aspect * rng.uniform(-0.5, 0.1), w / 2 - 0.1)
        )
    poly = affinity.rotate(poly, rng.uniform(0, 180), origin=(0, 0))
    scale = math.sqrt(area / poly.area)
    return affinity.affine_transform(poly, [scale, 0, 0, scale, cx, cy])


def _stratified_areas(rng: np.random.Generator, n: int, lo: float, hi: float) -> list[float]:
    """`n` areas spread log-uniformly over [lo, hi], one per stratum, in random order."""
    u = (np.arange(n) + rng.uniform(0, 1, n)) / max(n, 1)
    areas = lo * (hi / lo) ** u
    rng.shuffle(areas)
    return [float(a) for a in areas]


# ----------------------------------------------------------------------------------------------
# Dates and truth
# ----------------------------------------------------------------------------------------------


def acquisition_dates(window: TimeWindow, revisit_days: int) -> list[dt.date]:
    """Every `revisit_days`-th day counted from :data:`EPOCH` that falls inside `window`."""
    if revisit_days < 1:
        raise ValueError(f"revisit_days must be at least 1, got {revisit_days}")
    offset = (window.start - EPOCH).days
    k = -(-offset // revisit_days)  # ceiling division, also before the epoch
    day = EPOCH + dt.timedelta(days=k * revisit_days)
    out = []
    while day <= window.end:
        out.append(day)
        day += dt.timedelta(days=revisit_days)
    return out


def score_clues(result: AoiResult, truth: Sequence[PlantedChange]) -> PatchQuality:
    """Recall, precision and type accuracy of `result`'s clues against planted changes (those
    below the mapping unit are not expected)."""
    return evaluate_patches(
        [p.geometry for p in result.patches],
        [c.change_type for c in result.clues],
        [t.geometry for t in truth],
        [t.change_type for t in truth],
        [t.id for t in truth],
        [not t.below_mmu for t in truth],
    )


def new_changes(
    changes: Sequence[PlantedChange], before: TimeWindow, after: TimeWindow
) -> list[PlantedChange]:
    """The changes absent during the whole `before` window and present during the whole `after`."""
    return [c for c in changes if before.end < c.start <= after.start]


_WGS84 = CRS.from_epsg(4326)


def _to_wgs84(grid: GeoBox) -> Callable[[Any], Any]:
    tr = Transformer.from_crs(grid.crs.proj, _WGS84, always_xy=True)

    def convert(geom: Any) -> Any:
        g = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        return orient(g, 1.0) if g.geom_type == "Polygon" else g

    return convert


def truth_geojson(changes: Sequence[PlantedChange], grid: GeoBox) -> dict[str, Any]:
    """An RFC 7946 FeatureCollection (WGS84, counter-clockwise exteriors) of the planted changes."""
    convert = _to_wgs84(grid)
    features = []
    for c in changes:
        props = c.properties()
        props["grew_from"] = mapping(convert(c.grew_from)) if c.grew_from is not None else None
        features.append(
            {
                "type": "Feature",
                "id": c.id,
                "geometry": mapping(convert(c.geometry)),
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": json.loads(json.dumps(features))}


def write_truth_geojson(path: str | Path, changes: Sequence[PlantedChange], grid: GeoBox) -> Path:
    """Write :func:`truth_geojson` to `path` (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(truth_geojson(changes, grid), fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "BANDS",
    "CHANGE_TYPES",
    "EPOCH",
    "LC_CROP",
    "LC_DISTURBED",
    "LC_FOREST",
    "LC_GRASS",
    "LC_ROAD",
    "LC_ROCK",
    "LC_SHORE",
    "LC_URBAN",
    "LC_WATER",
    "MMU_M2",
    "PlantedChange",
    "SyntheticScene",
    "acquisition_dates",
    "new_changes",
    "truth_geojson",
    "write_truth_geojson",
]
