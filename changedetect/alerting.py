"""What single acquisitions show at a run's patches, read from the lazy stacks: the after side's
follow each clue's alert (changedetect.algorithms.alerts), the before side's tell a recurrence
(ground already seen as it is now) from a new change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import rasterio
import rasterio.errors
import rasterio.features
import rasterio.windows
import xarray as xr
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
from .grids import WGS84, reproject_geometry
from .models import Composite, GridSpec, Patch, PatchClue, TimeWindow
from .types import ANALYSIS_BANDS


@dataclass(frozen=True)
class AlertFollowing:
    """What a run needs to follow its clues' alerts: the AOI's alert history before the run, the
    night the run stands for, and how many later sightings confirm an alert."""

    history: list[Alert]
    night: str
    confirm_after: int


def acquisition_sightings(
    patches: Sequence[Patch],
    labels: np.ndarray,
    before: Composite,
    after: Composite,
    stack: xr.Dataset,
    valid: xr.DataArray,
    window: TimeWindow,
) -> dict[int, list[Sighting]]:
    """For each patch (by label), what every acquisition of `window` in `stack` shows over its
    pixels (:func:`site_sighting`), oldest first. Only the patches' bounding windows are read,
    all in one dask computation."""
    times = [np.datetime64(t, "D") for t in stack["time"].values]
    picked = [i for i, t in enumerate(times) if window.contains(t.astype(object))]
    if not patches or not picked:
        return {p.label: [] for p in patches}
    bands = list(ANALYSIS_BANDS)
    cube = stack[bands].isel(time=picked).to_array("band").data  # band, time, y, x
    clear = valid.isel(time=picked).data
    b_cube = before.bands[bands].to_array("band").data
    a_cube = after.bands[bands].to_array("band").data
    windows = []
    for p in patches:
        r0, c0, r1, c1 = p.bbox_rc
        windows.append(
            (
                b_cube[:, r0:r1, c0:c1],
                a_cube[:, r0:r1, c0:c1],
                cube[:, :, r0:r1, c0:c1],
                clear[:, r0:r1, c0:c1],
            )
        )
    (read,) = dask.compute(windows)
    days = [str(times[i]) for i in picked]
    sightings: dict[int, list[Sighting]] = {}
    for p, (b, a, obs, ok) in zip(patches, read, strict=True):
        r0, c0, r1, c1 = p.bbox_rc
        inside = labels[r0:r1, c0:c1] == p.label
        b, a = b[:, inside], a[:, inside]
        sightings[p.label] = [
            (day, site_sighting(b, a, obs[:, t][:, inside], ok[t][inside]))
            for t, day in enumerate(days)
        ]
    return sightings


def recurring_patches(
    patches: Sequence[Patch],
    labels: np.ndarray,
    before: Composite,
    after: Composite,
    before_stack: xr.Dataset,
    before_window: TimeWindow,
    valid: xr.DataArray,
) -> set[int]:
    """Labels of the patches whose ground, as it is now, was already seen on the before side
    (a field harvested or bare then too, a season's leaf-out): at least
    :data:`RECURRING_SIGHTINGS` of its clear acquisitions show the site nearer the after
    composite than the before composite (:func:`site_sighting`).

    At least two, since haze or an unmasked cloud rim can make one acquisition look like anything
    bright. A before side of two acquisitions or fewer never shows a recurrence (its median is
    made of them). The price: building on a field that lay bare at that time of an earlier year
    looks like the bare field at first, and is found once it no longer does."""
    if before_stack.sizes.get("time", 1) <= RECURRING_SIGHTINGS or not patches:
        return set()
    seen = acquisition_sightings(patches, labels, before, after, before_stack, valid, before_window)
    return {
        label
        for label, sightings in seen.items()
        if sum(1 for _, s in sightings if s == "changed") >= RECURRING_SIGHTINGS
    }


def site_observation(change_path: Path, grid: GridSpec, footprint: BaseGeometry) -> Observation:
    """What a run's change raster shows over an alert's footprint (WGS84): "unobserved" when
    clouds or no data hide most of it, "changed" when a clue covers part of it, else
    "unchanged" (the change test ran there and found nothing)."""
    local = reproject_geometry(footprint, WGS84, grid.crs)
    with rasterio.open(change_path) as src:
        full = rasterio.windows.Window(0, 0, src.width, src.height)
        window = rasterio.windows.from_bounds(*local.bounds, transform=src.transform)
        try:
            window = window.round_offsets().round_lengths().intersection(full)
        except rasterio.errors.WindowError:  # the site lies outside this grid
            return "unobserved"
        score = src.read(1, window=window, masked=True).filled(np.nan)
        inside = rasterio.features.geometry_mask(
            [local], out_shape=score.shape, transform=src.window_transform(window), invert=True,
            all_touched=True,
        )  # fmt: skip
    values = score[inside]
    if values.size == 0 or np.isfinite(values).mean() < SEEN_SHARE:
        return "unobserved"
    return "changed" if np.nanmax(values) > 0 else "unchanged"


def follow_alerts(
    following: AlertFollowing,
    clues: Sequence[PatchClue],
    sightings: dict[str, list[Sighting]],
    change_path: Path,
    grid: GridSpec,
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
