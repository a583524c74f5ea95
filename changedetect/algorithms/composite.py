"""Before/after composites: per-pixel median of the valid observations in a window."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..models import Composite, TimeWindow
from .arrays import as_dask
from .composite_kernel import masked_composite
from .masking import PixelMask

#: Consistency constant that turns a median absolute deviation into a normal standard deviation.
MAD_TO_SIGMA = 1.4826


def composite(
    stack: xr.Dataset,
    valid: xr.DataArray,
    window: TimeWindow,
    bands: Sequence[str],
    *,
    min_valid: int = 1,
    within: Sequence[TimeWindow] | None = None,
    mask: PixelMask | None = None,
) -> Composite:
    """Median of valid observations per pixel, with the count and the temporal spread.

    The median is taken over the acquisitions of `stack` in `window`, and also in one of `within`
    when it is given (a seasonal baseline's weeks of each earlier year, the rest of the stack being
    history the composite is not made of).

    `spread` per band is the robust temporal standard deviation (1.4826 * MAD over time) where a
    pixel has at least three valid observations, NaN elsewhere: it tells how much a pixel varies
    on its own (crops, phenology, residual haze) so a change can be judged against it.

    `mask`, the pixel-by-pixel form of `valid` where it has one, lets the composite's
    ``layers`` compute it inside each chunk's task (see :func:`composite_layers`).
    """
    times = [np.datetime64(t, "D").astype(object) for t in stack["time"].values]
    in_window = [
        window.contains(t) and (within is None or any(w.contains(t) for w in within)) for t in times
    ]
    # selecting every acquisition would still add a task (and a graph entry) per chunk
    every = all(in_window)
    sel = stack if every else stack.isel(time=np.flatnonzero(in_window))
    sel_valid = valid if every else valid.isel(time=np.flatnonzero(in_window))
    ids = [str(i) for i in sel["acquisition"].values] if "acquisition" in sel.coords else []
    count = sel_valid.sum("time").astype("int16").rename("valid_count")
    enough = count >= min_valid
    medians = {}
    spreads = {}
    for band in bands:
        masked = sel[band].where(sel_valid)
        if sel.sizes["time"] == 1:
            # one observation is its own median and has no spread: no reduction to compute
            medians[band] = masked.isel(time=0, drop=True).where(enough).astype("float32")
            continue
        med, mad = _median_and_mad(masked)
        medians[band] = med.where(enough).astype("float32")
        spreads[band] = (mad * MAD_TO_SIGMA).where(count >= 3).astype("float32")
    bands_ds = xr.Dataset(medians, attrs=dict(stack.attrs))
    # fewer than three observations anywhere: no pixel has a spread
    spread_ds = xr.Dataset(spreads, attrs=dict(stack.attrs)) if spreads else None
    return Composite(
        window=window,
        bands=bands_ds,
        valid_count=count,
        acquisitions=ids,
        spread=spread_ds,
        valid=valid,
        members=np.asarray(in_window, dtype=bool),
        layers=composite_layers(stack, valid, np.flatnonzero(in_window), bands, min_valid, mask),
    )


@dataclass(frozen=True)
class CompositeChunk:
    """How one chunk of a composite's layers (medians, spreads, valid count) is computed from
    the chunks of the stack it was built from: by one plain function call (:meth:`fill`), the
    same values as the composite's xarray layers, without the hundred small steps (and graph
    entries) a chunk of those takes."""

    names: tuple[str, ...]
    """The stack's layers read, in the order of the chunks :meth:`fill` is given (then the
    valid mask without a `mask`)."""
    n_bands: int
    """The first `n_bands` of `names` are the composite's bands, in order."""
    members: tuple[int, ...]
    """The acquisitions (positions along time) the median is taken over."""
    n_times: int
    min_valid: int
    mask: PixelMask | None
    """The validity mask computed per chunk; None: the valid mask is the last chunk given."""

    @property
    def has_spread(self) -> bool:
        """Whether the composite has spreads (more than one acquisition)."""
        return len(self.members) > 1

    def fill(
        self,
        blocks: Sequence[np.ndarray],
        bands: np.ndarray,
        spreads: np.ndarray | None,
        count: np.ndarray,
    ) -> None:
        """Write one chunk's medians into `bands` (band, y, x), its spreads into `spreads`
        (left as they are without a spread; None: not wanted) and its valid count into `count`
        (y, x), from the stack's chunks (time, y, x) of :attr:`names`."""
        by_name: Mapping[str, np.ndarray] = dict(zip(self.names, blocks, strict=False))
        tested, quality, rejected = self._validity(by_name, blocks)
        members = np.asarray(self.members, np.intp)
        with_spread = spreads is not None and self.has_spread
        values = [_kernel_input(by_name[band]) for band in self.names[: self.n_bands]]
        # one call for the bands of one float type (all of them, from any source of ours)
        groups = [range(len(values))] if _one_type(values) else [[i] for i in range(len(values))]
        for group in groups:
            part = slice(group[0], group[-1] + 1)
            masked_composite(
                tuple(values[i] for i in group),
                tested if tested else _NOTHING_TESTED,
                len(tested),
                quality if quality is not None else _NO_QUALITY,
                rejected,
                quality is not None,
                members,
                self.min_valid,
                np.float32(MAD_TO_SIGMA),
                bands[part],
                spreads[part] if with_spread else bands[part],
                with_spread,
                count,
            )

    def _validity(
        self, by_name: Mapping[str, np.ndarray], blocks: Sequence[np.ndarray]
    ) -> tuple[tuple[np.ndarray, ...], np.ndarray | None, np.ndarray]:
        """How :func:`masked_composite` tells a valid observation: (the layers that must have
        data, the quality layer or None, its table of rejected values)."""
        mask = self.mask
        if mask is not None:
            tested = tuple(_kernel_input(by_name[band]) for band in mask.bands)
            if _one_type(tested):
                lookup = mask.rejected_lookup(by_name)
                if lookup is None:
                    return tested, None, _INVALID
                layer, table = lookup
                return tested, _read_only(np.ascontiguousarray(layer)), table
            valid = mask(by_name)  # bands of several float types: no tuple of them
        else:
            valid = blocks[-1]
        # the valid mask itself as the quality layer, its False rejected
        layer = np.ascontiguousarray(valid, dtype=bool).view(np.uint8)
        return (), _read_only(layer), _INVALID


def _read_only(block: np.ndarray) -> np.ndarray:
    view = block.view()
    view.flags.writeable = False
    return view


#: Stand-ins for the kernel's arguments a chunk has no use for: no layer tested for data, no
#: quality layer; and the table that rejects a valid mask's False.
_NOTHING_TESTED = (_read_only(np.empty((0, 0, 0), np.float32)),)
_NO_QUALITY = _read_only(np.zeros((0, 0, 0), np.uint8))
_INVALID = _read_only(np.array([True, False]))


def _kernel_input(block: np.ndarray) -> np.ndarray:
    """A stack's chunk as :func:`masked_composite` reads it: C-contiguous and read-only (numba
    types a tuple of arrays that differ in those flags as one type per array, which the
    kernel cannot index), float32 or float64 (integers as the float64 numpy's NaN masking
    made of them)."""
    dtype = np.result_type(block.dtype, 1.0)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"a composite's bands must be float32 or float64 or integers, not {dtype}")
    return _read_only(np.ascontiguousarray(block, dtype=dtype))


def _one_type(blocks: Sequence[np.ndarray]) -> bool:
    return len({b.dtype for b in blocks}) == 1


@dataclass(frozen=True)
class CompositeLayers:
    """A composite's layers as the stack's lazy chunks and the call that makes a chunk of the
    layers from them (:func:`layer_blocks` runs it, one task per chunk)."""

    arrays: tuple[da.Array, ...]
    """The lazy (time, y, x) inputs of :attr:`chunk`, in its order."""
    chunk: CompositeChunk


def composite_layers(
    stack: xr.Dataset,
    valid: xr.DataArray,
    members: np.ndarray,
    bands: Sequence[str],
    min_valid: int,
    mask: PixelMask | None,
) -> CompositeLayers | None:
    """The :class:`CompositeLayers` of a composite of `stack`'s acquisitions `members`. `valid`
    is read as it is where `mask` is None (a cloud mask that needs neighbouring pixels). None
    when the stack is not lazy or has no acquisition in the window."""
    names = list(bands) + [b for b in (mask.reads if mask is not None else ()) if b not in bands]
    if not len(members) or any(b not in stack for b in names):
        return None
    if any(stack[b].dims != ("time", "y", "x") for b in names):
        return None
    arrays = [stack[b].data for b in names]
    if mask is None:
        arrays.append(valid.transpose("time", "y", "x").data)
    if not all(isinstance(a, da.Array) for a in arrays):
        return None
    chunk = CompositeChunk(
        tuple(names),
        len(bands),
        tuple(int(m) for m in members),
        int(stack.sizes["time"]),
        min_valid,
        mask,
    )
    return CompositeLayers(tuple(arrays), chunk)


def layer_blocks(
    function: Callable[..., np.ndarray],
    n_layers: int,
    composites: Sequence[CompositeLayers],
    **kwargs: Any,
) -> da.Array:
    """A lazy (n_layers, y, x) float32 array, each chunk one task: ``function(blocks, **kwargs)``
    where ``blocks[k]`` are the chunks (time, y, x) of ``composites[k].arrays`` (the acquisitions
    of a chunk joined along time). `kwargs` must hold no lazy array."""
    args: list[object] = []
    sizes = []
    for k, layers in enumerate(composites):
        sizes.append(len(layers.arrays))
        # each stack its own time axis (a shared index would be one dimension to blockwise)
        time = "abcdefghijk"[k]
        for array in layers.arrays:
            args += [array, f"{time}yx"]
    return da.blockwise(
        _blocks_of,
        "lyx",
        *args,
        new_axes={"l": n_layers},
        concatenate=False,
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
        function=function,
        sizes=tuple(sizes),
        kwargs=kwargs,
    )


def _blocks_of(
    *parts: list[np.ndarray],
    function: Callable[..., np.ndarray],
    sizes: tuple[int, ...],
    kwargs: dict[str, Any],
) -> np.ndarray:
    # each input comes as the list of its time chunks (usually one: no copy then)
    joined = [p[0] if len(p) == 1 else np.concatenate(p, axis=0) for p in parts]
    groups, start = [], 0
    for size in sizes:
        groups.append(joined[start : start + size])
        start += size
    return function(groups, **kwargs)


def nan_median(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Median over `axis` ignoring NaN (NaN where all are NaN), without numpy's slow masked path.

    Sorting pushes NaN to the end, so the median of the n valid values sits at (n-1)//2 and n//2.
    """
    ordered = np.sort(values, axis=axis)
    n = np.sum(~np.isnan(ordered), axis=axis, keepdims=True)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0), axis=axis)
    hi = np.take_along_axis(ordered, np.maximum(n // 2, 0), axis=axis)
    med = np.where(n > 0, (lo + hi) / 2, np.nan)
    return np.squeeze(med, axis=axis)


def _nan_median_mad(block: np.ndarray) -> np.ndarray:
    if block.shape[0] == 1:  # one observation: itself, no spread
        return np.stack([block[0], np.where(np.isnan(block[0]), np.nan, 0)]).astype(np.float32)
    med = nan_median(block, axis=0)
    mad = nan_median(np.abs(block - med), axis=0)
    return np.stack([med, mad]).astype(np.float32)


def _median_and_mad(masked: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Per-pixel median over time and median absolute deviation from it, in one block pass."""
    data = as_dask(masked.transpose("time", "y", "x").data).rechunk({0: -1})
    both = da.map_blocks(_nan_median_mad, data, dtype=np.float32, chunks=((2,), *data.chunks[1:]))
    coords = {k: v for k, v in masked.coords.items() if "time" not in v.dims}
    med = xr.DataArray(both[0], dims=("y", "x"), coords=coords)
    mad = xr.DataArray(both[1], dims=("y", "x"), coords=coords)
    return med, mad
