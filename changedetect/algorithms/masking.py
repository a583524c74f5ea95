"""Validity masks: where each acquisition has data and is not under cloud or shadow.

The cloud mask comes from the product's own where it carries one: the scene classification
layer (SCL) of Sentinel-2 L2A, the QA_PIXEL flags of Landsat Collection 2 (USGS's Fmask, which
has the thermal band a reflectance-only test lacks). Else from s2cloudless on L1C bands, else from
the multitemporal test (changedetect.algorithms.clouds); :func:`choose_cloud_mask` picks it.

A single acquisition without such a layer gets no cloud mask: Fmask's spectral tests without a
thermal band flag bright built ground as cloud (on the seven cloud-free OSCD pairs they flagged
up to 74 % of Paris and 90 % of Hong Kong), and against the other date of a pair the test mistakes
new construction and any change of illumination for cloud and shadow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import dask.array as da
import numpy as np
import xarray as xr

from .arrays import is_lazy
from .clouds import (
    MIN_OBSERVATIONS,
    MULTITEMPORAL_DILATION_M,
    S2CLOUDLESS_AVERAGE_OVER,
    S2CLOUDLESS_BANDS,
    S2CLOUDLESS_DILATION,
    S2CLOUDLESS_RESOLUTION_M,
    multitemporal_mask,
    s2cloudless_mask,
)

#: Sentinel-2 L2A scene classification classes.
SCL_NO_DATA = 0
SCL_SATURATED = 1
SCL_DARK = 2
SCL_CLOUD_SHADOW = 3
SCL_VEGETATION = 4
SCL_NOT_VEGETATED = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_CIRRUS = 10
SCL_SNOW = 11

#: Landsat Collection 2 QA_PIXEL bits that make a pixel invalid (USGS Landsat 8-9 Collection 2
#: Level-2 Science Product Guide, table 6-3): fill, dilated cloud, cirrus, cloud, cloud shadow,
#: snow. Landsat 4-7 leave the cirrus bit unset.
QA_FILL, QA_DILATED_CLOUD, QA_CIRRUS, QA_CLOUD, QA_CLOUD_SHADOW, QA_SNOW = range(6)
QA_INVALID_BITS = (QA_FILL, QA_DILATED_CLOUD, QA_CIRRUS, QA_CLOUD, QA_CLOUD_SHADOW, QA_SNOW)

CloudMask = Literal["scl", "qa_pixel", "s2cloudless", "multitemporal", "none"]
#: What ``detection.cloud_mask`` accepts: a method, or ``auto`` (:func:`choose_cloud_mask`).
CLOUD_MASKS = ("auto", "scl", "qa_pixel", "s2cloudless", "multitemporal", "none")
#: Bands the multitemporal test needs (blue and green are used when present).
MULTITEMPORAL_BANDS = ("B04", "B08", "B11")


def choose_cloud_mask(
    requested: str, preset: str, bands: Collection[str], n_acquisitions: int
) -> CloudMask:
    """The cloud mask a stack gets: `requested` unless it is ``auto``; then SCL where the stack
    has it, QA_PIXEL where it has that, s2cloudless for L1C with its ten bands, else the
    multitemporal test. The multitemporal test needs 3 acquisitions in the window: with fewer
    there is no cloud mask (``none``)."""
    if requested not in CLOUD_MASKS:
        raise ValueError(f"unknown cloud mask {requested!r}; use one of {', '.join(CLOUD_MASKS)}")
    if requested != "auto":
        chosen = requested
    elif "SCL" in bands:
        chosen = "scl"
    elif "QA_PIXEL" in bands:
        chosen = "qa_pixel"
    elif preset == "sentinel2_l1c" and all(b in bands for b in S2CLOUDLESS_BANDS):
        chosen = "s2cloudless"
    else:
        chosen = "multitemporal"
    if chosen == "multitemporal" and n_acquisitions < MIN_OBSERVATIONS:
        return "none"
    return chosen  # type: ignore[return-value]


def valid_mask(
    stack: xr.Dataset,
    bands: Sequence[str],
    cloud_classes: Sequence[int],
    *,
    cloud_mask: CloudMask = "scl",
    pixel_m: float = 10.0,
) -> xr.DataArray:
    """True where every band has data and the cloud mask (`cloud_mask`, on `pixel_m` metre pixels)
    sees neither cloud nor shadow. ``scl`` rejects `cloud_classes` where the stack has an SCL band
    and masks nothing where it has none; ``qa_pixel`` rejects the QA_INVALID_BITS of a QA_PIXEL
    band, and needs one."""
    valid = None
    for band in bands:
        has = stack[band].notnull()
        valid = has if valid is None else (valid & has)
    if valid is None:
        raise ValueError("valid_mask needs at least one band")
    if cloud_mask == "scl" and "SCL" in stack:
        valid = valid & ~stack["SCL"].isin(list(cloud_classes))
    elif cloud_mask == "qa_pixel":
        if "QA_PIXEL" not in stack:
            raise ValueError("the qa_pixel cloud mask needs a QA_PIXEL band, not in the imagery")
        valid = valid & ~qa_pixel_flagged(stack["QA_PIXEL"])
    elif cloud_mask == "s2cloudless":
        # the halo covers the averaging and the dilation, done at S2CLOUDLESS_RESOLUTION_M
        factor = max(1, round(S2CLOUDLESS_RESOLUTION_M / pixel_m))
        halo = (S2CLOUDLESS_AVERAGE_OVER + S2CLOUDLESS_DILATION + 1) * factor
        cloud = _computed_mask(stack, S2CLOUDLESS_BANDS, _s2cloudless(pixel_m), halo, 1)
        valid = valid & ~cloud
    elif cloud_mask == "multitemporal":
        present = [b for b in ("B02", "B03", *MULTITEMPORAL_BANDS) if b in stack]
        halo = max(1, round(MULTITEMPORAL_DILATION_M / pixel_m))
        # every acquisition of the window at once: the test compares each with the median
        cloud = _computed_mask(stack, present, _multitemporal(pixel_m), halo, -1)
        valid = valid & ~cloud
    return valid.rename("valid")


@dataclass(frozen=True)
class PixelMask:
    """:func:`valid_mask` for the cloud masks decided pixel by pixel (``scl``, ``qa_pixel``,
    ``none``), as a function of a block of the stack's own layers: the composites then compute
    it inside each chunk's own task (:func:`changedetect.algorithms.composite.composite`)."""

    bands: tuple[str, ...]
    """The bands that must all have data."""
    quality: str | None = None
    """The layer that flags clouds (``SCL`` or ``QA_PIXEL``), or None."""
    rejected: tuple[int, ...] = ()
    """The SCL classes rejected."""

    @property
    def reads(self) -> tuple[str, ...]:
        """Every layer the mask reads."""
        return (*self.bands, self.quality) if self.quality is not None else self.bands

    def __call__(self, blocks: Mapping[str, np.ndarray]) -> np.ndarray:
        """Where a block (time, y, x) of `blocks` (layer -> array) is valid, as valid_mask."""
        valid = None
        for band in self.bands:
            has = ~np.isnan(blocks[band])
            valid = has if valid is None else (valid & has)
        if valid is None:
            raise ValueError("valid_mask needs at least one band")
        if self.quality == "SCL":
            scl = blocks["SCL"]
            if scl.dtype == np.uint8:  # a lookup of the 256 classes: np.isin sorts
                rejected = np.zeros(256, bool)
                rejected[[c for c in self.rejected if 0 <= c < 256]] = True
                valid = valid & ~rejected[scl]
            else:
                valid = valid & ~np.isin(scl, list(self.rejected))
        elif self.quality == "QA_PIXEL":
            invalid = sum(1 << bit for bit in QA_INVALID_BITS)
            valid = valid & ((blocks["QA_PIXEL"].astype("uint16") & invalid) == 0)
        return valid

    def rejected_lookup(
        self, blocks: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The cloud test of a block of `blocks` as a table: (layer, rejected), the observations
        rejected where ``rejected[layer]`` (the layer's unsigned integers index the table);
        None without a quality layer. A table lookup is one read per pixel where np.isin sorts,
        and it lets a compiled kernel apply any of the tests."""
        if self.quality == "SCL":
            scl = blocks["SCL"]
            if scl.dtype == np.uint8:
                return scl, _scl_table(self.rejected)
            # other integer types (and classes beyond 255): the classes tested here
            return np.isin(scl, list(self.rejected)).view(np.uint8), _FLAGGED
        if self.quality == "QA_PIXEL":
            return blocks["QA_PIXEL"].astype("uint16", copy=False), _qa_pixel_table()
        return None


#: The table of a layer that is already the rejection (0 kept, 1 rejected).
_FLAGGED = np.array([False, True])
_FLAGGED.flags.writeable = False


@functools.cache
def _scl_table(classes: tuple[int, ...]) -> np.ndarray:
    """Which of the 256 uint8 SCL values are among `classes`."""
    table = np.zeros(256, bool)
    table[[c for c in classes if 0 <= c < 256]] = True
    table.flags.writeable = False
    return table


@functools.cache
def _qa_pixel_table() -> np.ndarray:
    """Which of the 65,536 QA_PIXEL values set one of the QA_INVALID_BITS."""
    invalid = sum(1 << bit for bit in QA_INVALID_BITS)
    table = (np.arange(1 << 16) & invalid) != 0
    table.flags.writeable = False
    return table


def pixel_mask(
    stack: xr.Dataset,
    bands: Sequence[str],
    cloud_classes: Sequence[int],
    *,
    cloud_mask: CloudMask = "scl",
) -> PixelMask | None:
    """The :class:`PixelMask` equal to ``valid_mask(stack, bands, cloud_classes, cloud_mask=...)``,
    or None where the mask needs neighbouring pixels (``s2cloudless``, ``multitemporal``) or a
    layer the stack lacks, or a band is not floating point (no data is then not NaN)."""
    if not bands or any(b not in stack or stack[b].dtype.kind != "f" for b in bands):
        return None
    if cloud_mask == "scl":
        quality = "SCL" if "SCL" in stack else None
        return PixelMask(tuple(bands), quality, tuple(int(c) for c in cloud_classes))
    if cloud_mask == "qa_pixel" and "QA_PIXEL" in stack:
        return PixelMask(tuple(bands), "QA_PIXEL")
    if cloud_mask == "none":
        return PixelMask(tuple(bands))
    return None


def qa_pixel_flagged(qa: xr.DataArray) -> xr.DataArray:
    """True where Landsat QA_PIXEL flags fill, cloud (dilated or not), cirrus, shadow or snow."""
    invalid = sum(1 << bit for bit in QA_INVALID_BITS)
    return (qa.astype("uint16") & invalid) != 0


CubeMask = Callable[[np.ndarray, Sequence[str]], np.ndarray]


def _s2cloudless(pixel_m: float) -> CubeMask:
    def per_block(cube: np.ndarray, names: Sequence[str]) -> np.ndarray:
        return np.stack(
            [
                s2cloudless_mask({b: cube[i, t] for i, b in enumerate(names)}, pixel_m)
                for t in range(cube.shape[1])
            ]
        )

    return per_block


def _multitemporal(pixel_m: float) -> CubeMask:
    def per_block(cube: np.ndarray, names: Sequence[str]) -> np.ndarray:
        return multitemporal_mask({b: cube[i] for i, b in enumerate(names)}, pixel_m)

    return per_block


def _computed_mask(
    stack: xr.Dataset, bands: Sequence[str], per_block: CubeMask, halo: int, time_chunk: int
) -> xr.DataArray:
    """A (time, y, x) cloud mask computed from `bands` block by block: `time_chunk`
    acquisitions at a time (-1: all), each spatial block with a `halo` of pixels around it."""
    missing = [b for b in bands if b not in stack]
    if missing:
        raise ValueError(f"the cloud mask needs band(s) {', '.join(missing)}, not in the imagery")
    template = stack[bands[0]]
    names = list(bands)

    def compute(block: np.ndarray) -> np.ndarray:
        return per_block(block, names)

    if is_lazy(*(stack[b] for b in names)):
        cube = da.stack([da.asarray(stack[b].data) for b in names])
        spatial = template.data.chunks[1:] if is_lazy(template) else "auto"
        cube = cube.rechunk((-1, time_chunk, *spatial))
        halo_y = min(halo, *cube.chunks[2])
        halo_x = min(halo, *cube.chunks[3])
        masked = da.map_overlap(
            compute,
            cube,
            depth={0: 0, 1: 0, 2: halo_y, 3: halo_x},
            boundary="none",
            drop_axis=0,
            dtype=bool,
            meta=np.array((), dtype=bool),
        )
    else:
        masked = compute(np.stack([np.asarray(stack[b].data) for b in names]))
    return xr.DataArray(masked, coords=template.coords, dims=template.dims)
