"""What single acquisitions show at a run's patches, read from the lazy stacks: the after side's
follow each clue's alert (changedetect.algorithms.alerts), the before side's tell a recurrence
(ground already seen as it is now) from a new change."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rasterio
import rasterio.windows
import xarray as xr
from odc.geo.geobox import GeoBox
from shapely.geometry.base import BaseGeometry

from .algorithms.alerts import (
    RECURRING_SIGHTINGS,
    SEEN_SHARE,
    Alert,
    Observation,
    Sighting,
    advance,
    site_sighting,
)
from .algorithms.patch_pixels import PatchPixels
from .algorithms.patches import BlockPixels, block_pixels
from .grids import WGS84, footprint_pixels, reproject_geometry
from .memory import release_freed_memory
from .models import Composite, Patch, PatchClue
from .types import ANALYSIS_BANDS


@dataclass(frozen=True)
class AlertFollowing:
    """What a run needs to follow its clues' alerts: the AOI's alert history before the run, the
    night the run stands for, and how many later sightings confirm an alert."""

    history: list[Alert]
    night: str
    confirm_after: int


@dataclass(frozen=True)
class SiteView:
    """Every acquisition of both sides over one patch's pixels: reflectance (time, band, pixel),
    where each is clear (time, pixel) and their dates, oldest first. `before_baseline` marks the
    before acquisitions the before composite was made of (None: all); the others are history,
    looked at only to tell a recurrence."""

    before: np.ndarray
    before_clear: np.ndarray
    before_days: list[str]
    after: np.ndarray
    after_clear: np.ndarray
    after_days: list[str]
    before_baseline: np.ndarray | None = None

    @staticmethod
    def _state(obs: np.ndarray, clear: np.ndarray) -> np.ndarray:
        """Per-pixel median of the clear observations (bands x pixels): the composite there."""
        if not len(obs):
            return np.full(obs.shape[1:], np.nan, dtype=np.float32)
        masked = np.where(clear[:, None, :] & np.isfinite(obs), obs, np.nan)
        with warnings.catch_warnings():  # a pixel never clear stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(masked, axis=0)

    @cached_property
    def states(self) -> tuple[np.ndarray, np.ndarray]:
        """The site's before and after states (bands x pixels), shared by both sides' sightings."""
        baseline = slice(None) if self.before_baseline is None else self.before_baseline
        return (
            self._state(self.before[baseline], self.before_clear[baseline]),
            self._state(self.after, self.after_clear),
        )

    def sightings(self, side: str) -> list[Sighting]:
        """What each acquisition of `side` ("before" or "after") shows (:func:`site_sighting`)."""
        b, a = self.states
        obs, clear, days = (
            (self.after, self.after_clear, self.after_days)
            if side == "after"
            else (self.before, self.before_clear, self.before_days)
        )
        return [(day, site_sighting(b, a, obs[t], clear[t])) for t, day in enumerate(days)]

    def recurs(self) -> bool:
        """Whether at least :data:`RECURRING_SIGHTINGS` clear before-side acquisitions show the
        site nearer its after state than its before state: ground already seen as it is now (a
        field harvested or bare then too, a season's leaf-out), not a new change. The history
        beside a seasonal baseline counts too: a field bare after last summer's harvest is ground
        seen bare, even when no earlier spring showed it so.

        At least two, since haze or an unmasked cloud rim can make one acquisition look like
        anything bright; a before side of two acquisitions or fewer never shows a recurrence (its
        median is made of them). The price: building on a field that lay bare at that time of an
        earlier year looks like the bare field at first, and is found once it no longer does."""
        if not may_recur(len(self.before_days)):
            return False
        changed = sum(1 for _, seen in self.sightings("before") if seen == "changed")
        return changed >= RECURRING_SIGHTINGS


def may_recur(before_acquisitions: int) -> bool:
    """Whether a before side of this many acquisitions can show a recurrence
    (:meth:`SiteView.recurs`): more than :data:`RECURRING_SIGHTINGS`, since the median of a side
    of that many or fewer is made of the very acquisitions that would show it."""
    return before_acquisitions > RECURRING_SIGHTINGS


#: Chunks gathered per dask call in :func:`site_views`: their pieces are put in place and let
#: go before the next call, so that only the patches' pixels are held, once.
GATHER_CHUNKS = 16


def site_views(
    patches: Sequence[Patch],
    pixels: PatchPixels,
    sides: Sequence[tuple[xr.Dataset, Composite]],
) -> dict[int, SiteView]:
    """For each patch (by label; its pixels are those of `pixels`), every acquisition of the
    before and after `sides` (a stack and the composite built from it, whose validity mask it
    reuses) over its pixels, in raster order.
    Read from the stacks themselves (no composite is computed again), one task per chunk
    holding any patch pixel: slicing the stacks patch by patch made a graph that grew with
    patches x chunks, and its culling took most of the time on scenes with thousands of
    patches. Each patch's arrays are slices of one array per side (in label order)."""
    if not patches:
        return {}
    wanted = [p.label for p in patches]
    layout = None  # (spatial chunks, where the patch pixels lie in them): the sides share a grid
    days, members, per_side = [], [], []
    for stack, comp in sides:
        if comp.valid is None:
            raise ValueError("site_views needs composites that carry their validity mask")
        # every acquisition of the stack: those the composite was made of, and on the before side
        # the history beside a seasonal baseline (comp.members tells them apart)
        members.append(comp.members)
        days.append([str(np.datetime64(t, "D")) for t in stack["time"].values])
        cube = stack[list(ANALYSIS_BANDS)].to_array("band").data.transpose(1, 0, 2, 3)
        cube = da.asarray(cube)
        # whole time and band axes per block, so one task gathers a chunk's pixels; merging
        # chunks along those axes only concatenates them (the values are those of any slice)
        cube = cube.rechunk({0: -1, 1: -1})
        valid = da.asarray(comp.valid.data).rechunk((-1, *cube.chunks[2:]))
        if layout is None or layout[0] != cube.chunks[2:]:
            layout = (cube.chunks[2:], block_pixels(pixels, wanted, *cube.chunks[2:]))
        where = layout[1]
        # not optimised one by one: each would fuse the chunk reads into its own tasks, and the
        # bands were read once for the observations and again for the validity mask (2,600
        # chunk reads instead of 1,400 on the 5,000 px bench scene)
        cube_blocks = cube.to_delayed(optimize_graph=False)
        valid_blocks = valid.to_delayed(optimize_graph=False)
        tasks = [
            dask.delayed(_gather_block)(cube_blocks[0, 0, i, j], valid_blocks[0, i, j], at)
            for i, j, at in where.blocks
        ]
        # each chunk's pixels go straight to their place in label order
        total = len(where.order)
        place = np.empty(total, dtype=np.int64)
        place[where.order] = np.arange(total)
        starts = np.cumsum([0, *(len(at) for _, _, at in where.blocks)])
        obs = np.empty((*cube.shape[:2], total), dtype=cube.dtype)
        clear = np.empty((cube.shape[0], total), dtype=bool)
        for k in range(0, len(tasks), GATHER_CHUNKS):
            for n, (b_obs, b_clear) in enumerate(dask.compute(*tasks[k : k + GATHER_CHUNKS]), k):
                at = place[starts[n] : starts[n + 1]]
                obs[:, :, at], clear[:, at] = b_obs, b_clear
        per_side.append((where, obs, clear))
    views = {}
    for p in patches:
        (b, b_ok), (a, a_ok) = (_site_pixels(side, p.label) for side in per_side)
        views[p.label] = SiteView(b, b_ok, days[0], a, a_ok, days[1], before_baseline=members[0])
    return views


#: Patch pixels whose site views are held at a time by :func:`site_findings` (each pixel holds
#: every acquisition's bands: with 5 % of a 10,000² grid changed, all at once held 0.4 GB).
FINDINGS_BATCH_PIXELS = 2**20


@dataclass(frozen=True)
class SiteFindings:
    """What a run keeps of a patch's :class:`SiteView`: whether it recurs, and what each
    after-side acquisition shows (None when not asked for: a run that follows no alerts)."""

    recurs: bool
    after: list[Sighting] | None


def site_findings(
    patches: Sequence[Patch],
    pixels: PatchPixels,
    sides: Sequence[tuple[xr.Dataset, Composite]],
    *,
    after: bool = True,
) -> dict[int, SiteFindings]:
    """:func:`site_views`' findings for each patch (by label), the after-side sightings only
    with `after`; the views gathered for a batch of patches (FINDINGS_BATCH_PIXELS, in label
    order) and let go before the next: memory stays flat however much changed, for a few chunks
    read again where batches meet.

    Without `after`, and with too few before-side acquisitions for any patch to recur (a
    comparison of two dates), there is nothing to find and no chunk is read again: each patch
    is found not recurring."""
    if not after and not may_recur(sides[0][0].sizes["time"]):
        return {p.label: SiteFindings(False, None) for p in patches}
    findings: dict[int, SiteFindings] = {}
    batch: list[Patch] = []
    held = 0
    for k, patch in enumerate(patches):
        batch.append(patch)
        held += patch.n_pixels
        if held >= FINDINGS_BATCH_PIXELS or k == len(patches) - 1:
            for label, view in site_views(batch, pixels, sides).items():
                seen = view.sightings("after") if after else None
                findings[label] = SiteFindings(view.recurs(), seen)
            batch, held = [], 0
            release_freed_memory()  # the batch's views, before the next batch's
    return findings


def _gather_block(
    cube: np.ndarray, valid: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One chunk's (time, band, y, x) observations and (time, y, x) validity at `positions`
    (flat, inside the chunk)."""
    obs = np.asarray(cube).reshape(*cube.shape[:2], -1)[:, :, positions]
    clear = np.asarray(valid).reshape(valid.shape[0], -1)[:, positions].astype(bool)
    return obs, clear


def _site_pixels(
    side: tuple[BlockPixels, np.ndarray, np.ndarray], label: int
) -> tuple[np.ndarray, np.ndarray]:
    """One patch's observations and validity on one side (in label order), in raster order:
    views, not copies."""
    pixels, obs, clear = side
    start, stop = pixels.spans.get(label, (0, 0))
    return obs[:, :, start:stop], clear[:, start:stop]


def site_observation(change_path: Path, grid: GeoBox, footprint: BaseGeometry) -> Observation:
    """What a run's change raster shows over an alert's footprint (WGS84): "unobserved" when
    clouds or no data hide most of it, "changed" when a clue covers part of it, else
    "unchanged" (the change test ran there and found nothing)."""
    local = reproject_geometry(footprint, WGS84, grid.crs)
    pixels = footprint_pixels(local, grid, all_touched=True)
    if pixels is None:  # the site lies outside this grid
        return "unobserved"
    (rows, cols), inside = pixels
    with rasterio.open(change_path) as src:
        window = rasterio.windows.Window.from_slices(rows, cols)
        score = src.read(1, window=window, masked=True).filled(np.nan)
    values = score[inside]
    if values.size == 0 or np.isfinite(values).mean() < SEEN_SHARE:
        return "unobserved"
    return "changed" if np.nanmax(values) > 0 else "unchanged"


def follow_alerts(
    following: AlertFollowing,
    clues: Sequence[PatchClue],
    sightings: dict[str, list[Sighting]],
    change_path: Path,
    grid: GeoBox,
) -> list[Alert]:
    """Continue or open an alert for each clue from its sightings (by clue id), see whether the
    run's change raster shows the sites of the other alerts, and give each clue its alert's
    state. Returns the AOI's new alert state, for the caller to store once every output is in
    place. Re-running a night counts nothing twice."""

    def observe(alert: Alert) -> Observation:
        return site_observation(change_path, grid, alert.footprint)

    alerts, of_clue = advance(
        following.history,
        following.night,
        clues,
        observe,
        sightings=sightings,
        confirm_after=following.confirm_after,
    )
    for clue in clues:
        alert = of_clue[clue.clue_id]
        clue.alert_id, clue.alert_status = alert.alert_id, alert.status
        clue.first_detected, clue.last_detected = alert.first_detected, alert.last_detected
        clue.supporting_observations = alert.supporting
    return alerts
