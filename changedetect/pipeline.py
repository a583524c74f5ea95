"""The whole pipeline, Prefect-free: plan -> load lazily -> composite -> detect -> patches -> clues
-> sinks. Flows and the CLI call these functions."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from pyproj.geod import Geod
from shapely.geometry.base import BaseGeometry

from .alerting import AlertFollowing, follow_alerts, site_findings
from .algorithms.alerts import RECURRING_SIGHTINGS
from .algorithms.classify import classify_patch
from .algorithms.clouds import MIN_OBSERVATIONS, S2CLOUDLESS_BANDS
from .algorithms.clues import confidence_level, load_clue_model, object_features, priority_for
from .algorithms.composite import composite
from .algorithms.detect import prepare_change_test
from .algorithms.detect.features import pixel_features
from .algorithms.labelling import label_changed_pixels
from .algorithms.masking import CloudMask, choose_cloud_mask, pixel_mask, valid_mask
from .algorithms.patch_pixels import PatchPixels
from .algorithms.patches import (
    build_patches,
    patch_statistics,
)
from .algorithms.site_signal import FootprintSignal, footprint_signal
from .config import (
    DetectionConfig,
    LocalSourceConfig,
    RunConfig,
    SentinelHubSourceConfig,
    StacSourceConfig,
    SyntheticSourceConfig,
)
from .engine.blockwise import run_pass
from .errors import ConfigError, NoClearViewError, NoValidDataError, SourceError
from .grids import (
    WGS84,
    footprint_pixels,
    grid_for_aoi,
    pixel_area_m2,
    pixel_size,
    reproject_geometry,
    wgs84_bounds,
)
from .io.sinks.chips import preview_bytes, write_chips
from .io.sinks.exports import write_exports
from .io.sinks.geojson import write_clues_geojson
from .io.sinks.rasters import ScratchRasters, mask_score_to_patches, write_cog
from .io.sinks.report import write_report
from .io.sources.base import ImagerySource
from .io.zones import ProtectionZone, ZoneIndex, load_zones
from .memory import release_freed_memory, set_aside_from_gc
from .models import (
    Acquisition,
    AoiResult,
    Composite,
    Patch,
    PatchClue,
    TimeWindow,
)
from .seasons import same_season
from .state import AlertBook, AoiState, RunState
from .types import ANALYSIS_BANDS

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

#: Morphological cleaning radius in pixels (a 3x3 disk): bridges one-pixel gaps, and a patch must
#: hold at least one pixel whose whole disk is changed (drops lines and speckle).
CLEAN_RADIUS = 1


@dataclass(frozen=True)
class AnalysisOptions:
    """What the analysis stage needs: the AOI name, the detection settings and the chip options."""

    aoi: str
    detection: DetectionConfig = DetectionConfig()
    chips: bool = True
    chip_size: int = 128
    preset: str = "sentinel2_l2a"
    """The sensor preset (what `detection.cloud_mask: auto` chooses by)."""
    baseline: str = "window"
    """What the before side was (``BaselineConfig.describe``), written on each clue."""

    @classmethod
    def from_config(cls, config: RunConfig, aoi: str) -> AnalysisOptions:
        return cls(
            aoi,
            config.detection,
            config.output.chips,
            config.output.chip_size,
            config.sensor.preset,
            config.baseline.describe(),
        )


def make_source(config: RunConfig, *, refresh: bool = False) -> ImagerySource:
    """The imagery source the config names. With `refresh`, a source that caches its searches
    (Sentinel Hub) asks the service again instead."""
    if isinstance(config.source, SyntheticSourceConfig):
        from .io.sources.synthetic import SyntheticSource

        return SyntheticSource.for_windows(
            config.before.to_window(), config.after.to_window(), config.source
        )
    if isinstance(config.source, LocalSourceConfig):
        from .io.sources.local import LocalSource

        return LocalSource(config.source, config.sensor)
    if isinstance(config.source, StacSourceConfig):
        from .io.sources.stac import StacSource

        return StacSource(config.source, config.sensor)
    if isinstance(config.source, SentinelHubSourceConfig):
        from .io.sources.sentinelhub import SentinelHubSource

        return SentinelHubSource(config.source, config.sensor, refresh=refresh)
    raise ConfigError(f"unsupported source kind {config.source!r}")  # pragma: no cover


def plan_grid(config: RunConfig, aoi_index: int, source: ImagerySource) -> GeoBox:
    """The AOI's analysis grid: its bbox on a UTM grid, or the first acquisition's native grid."""
    aoi = config.aois[aoi_index]
    if aoi.bbox is not None:
        return grid_for_aoi(aoi)
    acquisitions = getattr(source, "acquisitions", None)
    if acquisitions:
        grid = acquisitions[0].grid
        if grid is not None:
            return grid
    raise ConfigError(
        f"aois[{aoi_index}] ({aoi.name}): bbox is required for source {config.source.kind!r}"
    )


def run(
    config: RunConfig,
    *,
    progress: Progress | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    incremental: bool = True,
) -> list[AoiResult]:
    """Every AOI of the config (:func:`changedetect.runs.run_config`, no clue sink): each is
    attempted, and the first failure is then raised.

    `since` / `until` replace the after window's start / end. Unless `since` is given or
    `incremental` is off, an AOI analyses only after-window acquisitions newer than the newest one
    its last successful run analysed (kept in the run state file), and is skipped when there is none.
    A run that is not incremental (``--full``) also searches afresh, past the source's search cache.
    """
    from .runs import results_or_raise, run_config

    record = run_config(
        config, log=_ProgressLog(progress), since=since, until=until, incremental=incremental
    )
    return results_or_raise(record)


class _ProgressLog:
    """A run log that sends information to a progress callback and the rest to the logger."""

    def __init__(self, progress: Progress | None) -> None:
        self.info = progress or log.info
        self.warning, self.error = log.warning, log.error


def zone_index(config: RunConfig) -> ZoneIndex | None:
    """The config's protection zones, indexed for lookups (None without a zone layer)."""
    return ZoneIndex(load_zones(config.zones)) if config.zones is not None else None


def after_window(
    config: RunConfig, *, since: dt.date | None = None, until: dt.date | None = None
) -> TimeWindow:
    """The config's after window with `since` / `until` replacing its start / end."""
    after = config.after.to_window()
    after = TimeWindow(since or after.start, until or after.end)
    if after.end < after.start:
        raise ConfigError(f"--since {after.start} is after --until {after.end}")
    return after


def run_state(
    config: RunConfig, *, since: dt.date | None = None, incremental: bool = True
) -> RunState | None:
    """The run state an incremental run reads and advances; None when `since` is given or
    `incremental` is off (the state is then neither read nor written)."""
    return RunState(config.output.state_path()) if incremental and since is None else None


def _utc(when: dt.datetime) -> dt.datetime:
    """Naive UTC, so acquisition times from any source compare."""
    if when.tzinfo is not None:
        return when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


@dataclass(frozen=True)
class AoiPlan:
    """What one AOI's run analyses, decided from metadata alone (:func:`plan_aoi`)."""

    aoi: str
    grid: GeoBox
    before_window: TimeWindow
    after_window: TimeWindow
    before: list[Acquisition]
    after: list[Acquisition]
    """After-window acquisitions to analyse: those newer than the last successful run's."""
    out_dir: Path
    """Where the outputs go: ``output.dir/<aoi>/<YYYYMMDD of the newest after acquisition>``, or
    the last run's folder when there is nothing new."""
    note: str | None = None
    """Why there is nothing to analyse (no acquisition newer than the last run's), else None."""
    seasons: tuple[TimeWindow, ...] = ()
    """With a seasonal baseline, the weeks of each earlier year the before composite is made of
    (empty: the whole before window)."""
    history: tuple[Acquisition, ...] = ()
    """Before-window acquisitions outside those weeks: not part of the baseline, but looked at to
    tell ground already seen as it is now (a field bare after last year's harvest) from a new
    change."""

    @property
    def nothing_new(self) -> bool:
        return self.note is not None

    @property
    def newest(self) -> dt.datetime:
        """The newest after-window acquisition analysed (naive UTC)."""
        if not self.after:
            raise ValueError(f"AOI {self.aoi}: the plan has no after-window acquisition")
        return max(_utc(a.datetime) for a in self.after)

    @property
    def first_new(self) -> str:
        """The date of the oldest after acquisition analysed (ISO): the alert history before it
        is all this run's alert state depends on."""
        if not self.after:
            raise ValueError(f"AOI {self.aoi}: the plan has no after-window acquisition")
        return min(_utc(a.datetime) for a in self.after).date().isoformat()

    @property
    def night(self) -> str:
        """The night the run stands for: the date of its newest after acquisition (ISO)."""
        return self.newest.date().isoformat()

    def skipped(self, why: str | None = None) -> AoiResult:
        """The result of an AOI that analysed nothing: nothing new (`note`), or `why` not."""
        return AoiResult(self.aoi, self.out_dir, [], {}, self.grid, note=why or self.note)


def plan_aoi(
    config: RunConfig,
    aoi_index: int,
    source: ImagerySource,
    *,
    after: TimeWindow | None = None,
    state: RunState | None = None,
    progress: Progress | None = None,
) -> AoiPlan:
    """Search both windows of one AOI and keep the after acquisitions `state` has not seen.

    Raises NoValidDataError when a window holds no acquisition; a plan with nothing new carries
    a `note` instead."""
    say = progress or log.info
    aoi = config.aois[aoi_index]
    grid = plan_grid(config, aoi_index, source)
    before_w, after_w = config.before.to_window(), after or config.after.to_window()
    size = f"{grid.width}x{grid.height} px at {pixel_size(grid):g}"
    say(f"[{aoi.name}] grid {size} ({grid.crs.proj.name})")
    after_acq = source.search(grid, after_w)
    previous = state.get(aoi.name) if state is not None else None
    if previous is not None:
        seen = _utc(previous.last_acquisition)
        after_acq = [a for a in after_acq if _not_analysed(a, previous)]
        if not after_acq:
            note = (
                f"no new acquisition after {seen:%Y-%m-%d %H:%M} (last analysed) in the after "
                f"window {after_w.start}..{after_w.end}; nothing to do"
            )
            say(f"[{aoi.name}] {note}")
            return AoiPlan(
                aoi.name, grid, before_w, after_w, [], [], Path(previous.out_dir), note=note
            )
    if not after_acq:
        raise _no_acquisition(
            aoi.name, grid, source, f"the after window {after_w.start}..{after_w.end}", [after_w]
        )
    seasons: list[TimeWindow] = []
    history: tuple[Acquisition, ...] = ()
    if config.baseline.kind == "same_season":
        days = [_utc(a.datetime).date() for a in after_acq]
        seasons = same_season(
            min(days), max(days), days=config.baseline.days, years=config.baseline.years
        )
        before_acq = sorted(
            {a.id: a for w in seasons for a in source.search(grid, w)}.values(),
            key=lambda a: _utc(a.datetime),
        )
        seasonal = {a.id for a in before_acq}
        history = tuple(a for a in source.search(grid, before_w) if a.id not in seasonal)
        before_w = TimeWindow(seasons[0].start, seasons[-1].end)
        where = "the same season of the years before: " + ", ".join(
            f"{w.start}..{w.end}" for w in seasons
        )
        if history:
            where += f" (and {len(history)} more of the before window, to tell recurrences)"
    else:
        before_acq = source.search(grid, before_w)
        where = f"the before window {before_w.start}..{before_w.end}"
    if not before_acq:
        raise _no_acquisition(aoi.name, grid, source, where, seasons or [before_w])
    say(
        f"[{aoi.name}] {len(before_acq)} acquisitions in {where}; {len(after_acq)} after "
        f"({after_w.start}..{after_w.end})"
        + (" not analysed before" if previous is not None else "")
    )
    newest = max(_utc(a.datetime) for a in after_acq)
    # one folder per newest acquisition: a night's clues are never overwritten by the next night's
    out_dir = Path(config.output.dir) / aoi.name / f"{newest:%Y%m%d}"
    return AoiPlan(
        aoi.name, grid, before_w, after_w, before_acq, after_acq, out_dir,
        seasons=tuple(seasons), history=history,
    )  # fmt: skip


def _no_acquisition(
    aoi: str,
    grid: GeoBox,
    source: ImagerySource,
    where: str,
    windows: Sequence[TimeWindow],
) -> NoValidDataError:
    """Why a search found nothing: no imagery of those dates at all, or imagery of those dates
    that does not cover the AOI (said with both extents, so it does not read as a date problem).
    Only a source that lists its acquisitions (a local folder) can tell the two apart."""
    extent = _format_bounds(wgs84_bounds(grid))
    listed: list[Acquisition] | None = getattr(source, "acquisitions", None)
    dated = [a for a in listed or [] if any(w.contains(a.datetime) for w in windows) and a.grid]
    if not dated:
        return NoValidDataError(
            f"AOI {aoi}: no acquisition in {where} over the AOI ({extent} WGS84)"
        )
    covered = np.array([wgs84_bounds(a.grid) for a in dated])
    union = (*covered[:, :2].min(axis=0), *covered[:, 2:].max(axis=0))
    return NoValidDataError(
        f"AOI {aoi}: no acquisition covers the AOI ({extent} WGS84): the {len(dated)} "
        f"acquisition(s) in {where} cover {_format_bounds(union)} WGS84; check the AOI's bbox "
        "or the imagery"
    )


def _format_bounds(bounds: Sequence[float]) -> str:
    return "west {:.4f}, south {:.4f}, east {:.4f}, north {:.4f}".format(*bounds)


def _not_analysed(acq: Acquisition, previous: AoiState) -> bool:
    """Whether `acq` is new to the run that left `previous`: newer than its newest acquisition,
    or of that day under an id it did not analyse (a source naming a day by its granules, whose
    set changed: a better granule came in late; the day's time alone cannot tell)."""
    when, seen = _utc(acq.datetime), _utc(previous.last_acquisition)
    if when > seen:
        return True
    return (
        bool(previous.acquisitions)
        and when.date() == seen.date()
        and acq.id not in previous.acquisitions
    )


def load_aoi(
    config: RunConfig, plan: AoiPlan, source: ImagerySource
) -> tuple[xr.Dataset, xr.Dataset]:
    """The plan's before and after stacks, lazily (networked sources fetch what their cache
    lacks first)."""
    det, preset = config.detection, config.sensor.preset
    before = sorted([*plan.before, *plan.history], key=lambda a: _utc(a.datetime))
    before_stack = source.load(
        before, bands_to_load(det, preset, before), plan.grid, det.chunk_size
    )
    after_stack = source.load(
        plan.after, bands_to_load(det, preset, plan.after), plan.grid, det.chunk_size
    )
    return before_stack, after_stack


def bands_to_load(
    detection: DetectionConfig, preset: str, acquisitions: Sequence[Acquisition]
) -> list[str]:
    """The analysis bands and SCL; QA_PIXEL for Landsat Collection 2 or where an acquisition
    lists it; and the L1C bands s2cloudless reads when it is asked for, or when ``auto`` meets L1C
    imagery that has them all (acquisitions that list their bands must list them; a service makes
    any band it offers)."""
    bands = [*ANALYSIS_BANDS, "SCL"]
    if preset == "landsat_c2_l2" or any("QA_PIXEL" in a.assets for a in acquisitions):
        bands.append("QA_PIXEL")
    asked = detection.cloud_mask
    offered = all(
        not a.assets or all(b in a.assets for b in S2CLOUDLESS_BANDS) for a in acquisitions
    )
    if asked == "s2cloudless" or (asked == "auto" and preset == "sentinel2_l1c" and offered):
        bands += [b for b in S2CLOUDLESS_BANDS if b not in bands]
    return bands


def footprint_measure(
    config: RunConfig, plan: AoiPlan, before_stack: xr.Dataset, after_stack: xr.Dataset
) -> Callable[[BaseGeometry], FootprintSignal | None]:
    """``measure(footprint_wgs84)`` for the case tracker's look-back: the plan's composites read
    over the footprint's window only. None outside this AOI's grid or under clouds."""
    options = AnalysisOptions.from_config(config, plan.aoi)
    grid = plan.grid
    composites = [
        composite_of(before_stack, plan.before_window, options, grid, within=plan.seasons or None),
        composite_of(after_stack, plan.after_window, options, grid),
    ]

    def measure(footprint: BaseGeometry) -> FootprintSignal | None:
        local = reproject_geometry(footprint, WGS84, grid.crs)
        pixels = footprint_pixels(local, grid)
        if pixels is None:
            return None
        (rows, cols), inside = pixels
        before, after = dask.compute(
            *[{b: comp.bands[b].data[rows, cols] for b in ANALYSIS_BANDS} for comp in composites]
        )
        return footprint_signal(before, after, inside)

    return measure


def analyse_aoi(
    config: RunConfig,
    plan: AoiPlan,
    before_stack: xr.Dataset,
    after_stack: xr.Dataset,
    *,
    zones: ZoneIndex | None = None,
    progress: Progress | None = None,
) -> AoiResult:
    """Detect change between the plan's stacks, follow each clue's alert across acquisitions
    (from the config's alert state; :func:`record_aoi` stores the new state) and publish the
    outputs in `plan.out_dir`."""
    history = AlertBook(config.output.alerts_path()).get(plan.aoi)
    return analyse(
        before_stack,
        after_stack,
        plan.grid,
        plan.before_window,
        plan.after_window,
        AnalysisOptions.from_config(config, plan.aoi),
        plan.out_dir,
        zones=zones,
        limit_to_zones=bool(config.zones and config.zones.limit_to_zones),
        following=AlertFollowing(history, plan.night, config.alerts.confirm_after),
        seasons=plan.seasons or None,
        progress=progress or log.info,
    )


def record_aoi(state: RunState, plan: AoiPlan, result: AoiResult, book: AlertBook) -> None:
    """Store the AOI's alert state in `book` and advance `state` past the plan's acquisitions;
    call once every output is in place (a run killed before leaves both as they were)."""
    if result.alerts is not None:
        book.record(plan.aoi, result.alerts)
    finished = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    analysed = tuple(a.id for a in plan.after)
    state.record(
        plan.aoi,
        AoiState(plan.newest, finished, len(result.clues), str(plan.out_dir), analysed),
    )


def record_clouded(state: RunState, plan: AoiPlan) -> None:
    """Advance `state` past a night whose after acquisitions were all under cloud: they hold
    nothing to analyse again, and the alert state is left as it was (nothing was seen)."""
    previous = state.get(plan.aoi)
    finished = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    out_dir = previous.out_dir if previous is not None else str(plan.out_dir)
    analysed = tuple(a.id for a in plan.after)
    state.record(plan.aoi, AoiState(plan.newest, finished, 0, out_dir, analysed))


def run_aoi(
    config: RunConfig,
    aoi_index: int,
    source: ImagerySource,
    *,
    zones: ZoneIndex | None = None,
    progress: Progress | None = None,
    after: TimeWindow | None = None,
    state: RunState | None = None,
) -> AoiResult:
    """One AOI end to end with the run's steps (:func:`changedetect.runs.run_one_aoi`, no clue
    sink): search, load, analyse, publish; then record it in `state`. A failure is raised."""
    from .runs import RunContext, result_or_raise, run_one_aoi

    ctx = RunContext(
        config,
        source,
        zones,
        after or config.after.to_window(),
        state,
        None,
        _ProgressLog(progress),
    )
    return result_or_raise(run_one_aoi(ctx, config.aois[aoi_index].name))


def screened(
    stack: xr.Dataset, options: AnalysisOptions, grid: GeoBox
) -> tuple[xr.DataArray, CloudMask]:
    """Where each acquisition of `stack` is valid (data, no cloud or shadow), and the cloud mask
    that decided it (:func:`choose_cloud_mask` from ``detection.cloud_mask``)."""
    present = [b for b in ANALYSIS_BANDS if b in stack]
    missing = sorted(set(ANALYSIS_BANDS) - set(present))
    if missing:
        raise SourceError(f"loaded imagery lacks band(s) {missing}")
    det = options.detection
    n_times = stack.sizes.get("time", 1)
    method = choose_cloud_mask(det.cloud_mask, options.preset, set(stack.data_vars), n_times)
    try:
        valid = valid_mask(
            stack,
            ANALYSIS_BANDS,
            det.cloud_classes,
            cloud_mask=method,
            pixel_m=float(np.sqrt(pixel_area_m2(grid))),
        )
    except ValueError as exc:
        raise SourceError(f"cloud mask {method}: {exc}") from None
    return valid, method


def composite_of(
    stack: xr.Dataset,
    window: TimeWindow,
    options: AnalysisOptions,
    grid: GeoBox,
    *,
    within: Sequence[TimeWindow] | None = None,
) -> Composite:
    valid, method = screened(stack, options, grid)
    det = options.detection
    built = composite(
        stack,
        valid,
        window,
        ANALYSIS_BANDS,
        min_valid=det.min_valid_observations,
        within=within,
        mask=pixel_mask(stack, ANALYSIS_BANDS, det.cloud_classes, cloud_mask=method),
    )
    built.cloud_mask = method
    return built


@set_aside_from_gc()
def analyse(
    before_stack: xr.Dataset,
    after_stack: xr.Dataset,
    grid: GeoBox,
    before_window: TimeWindow,
    after_window: TimeWindow,
    options: AnalysisOptions,
    out_dir: Path,
    *,
    zones: ZoneIndex | None = None,
    limit_to_zones: bool = False,
    following: AlertFollowing | None = None,
    seasons: Sequence[TimeWindow] | None = None,
    progress: Progress | None = None,
) -> AoiResult:
    """Two lazy stacks on one grid -> patch clues and their outputs in `out_dir`.

    With `following`, each clue's alert is continued or opened from what every after-window
    acquisition shows at its site, and the result carries the AOI's new alert state. With
    `seasons`, the before composite is made of the before acquisitions in those weeks only; the
    others only tell recurrences."""
    say = progress or log.info
    before = composite_of(before_stack, before_window, options, grid, within=seasons)
    after = composite_of(after_stack, after_window, options, grid)
    for tag, comp in (("before", before), ("after", after)):
        if comp.cloud_mask == "none" and options.detection.cloud_mask == "auto":
            say(
                f"[{options.aoi}] no cloud mask for the {tag} window: no SCL, QA_PIXEL or L1C "
                f"bands, and fewer than {MIN_OBSERVATIONS} acquisitions for the multitemporal test"
            )
    det = options.detection
    # the AOI's folder, if this run makes it, goes again when the run fails before publishing
    made = not out_dir.parent.exists()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".work-{out_dir.name}-", dir=out_dir.parent))
    try:
        test, inputs = prepare_change_test(
            before,
            after,
            false_alarm_rate=det.false_alarm_rate,
            support_level=det.support_level,
            support_size=det.support_pixels(float(np.sqrt(pixel_area_m2(grid)))),
            median_size=det.median_size,
            # the chunks the sample computes, for the pass to read rather than compute again
            keep=work / "sample-chunks",
        )
        say(f"[{options.aoi}] computing change over {grid.width * grid.height / 1e6:.1f} Mpx")
        release_freed_memory()  # the sample statistics' arrays (45 MB at 10,000²), before the pass
        with ScratchRasters(grid, work / "score.tif", work / "rgb.tif") as scratch:
            gathered = run_pass(
                test,
                inputs,
                det.min_valid_observations,
                scratch.write,
                preview_bytes,
                what=f"[{options.aoi}] change test",
                # on disk, not in memory: with heavy change they were most of the run's memory
                spill=work / "changed-pixels",
                # the chunks a stripe of the pass computed for its halo, for the next stripe
                handover=work / "stripe-handover",
            )
        if gathered.n_valid == 0:
            raise _nothing_to_compare(options.aoi, before, after)
        coverage = gathered.n_valid / gathered.n_pixels
        say(f"[{options.aoi}] valid on both dates: {coverage:.1%} of the grid")
        px_area = pixel_area_m2(grid)
        min_pixels = max(1, int(np.ceil(det.min_area_m2 / px_area - 1e-9)))
        pixels = label_changed_pixels(
            gathered.flat_index, grid.shape.yx, radius=CLEAN_RADIUS, min_pixels=min_pixels
        )
        stats = patch_statistics(
            pixels, gathered.flat_index, gathered.values, derive=pixel_features
        )
        del gathered  # the changed pixels' positions: not needed past the patch means
        release_freed_memory()  # the labelling's arrays, before the site views'
        patches = build_patches(pixels, grid.transform, stats, pixels.counts * px_area)
        clues = make_clues(
            patches, grid, options.aoi, before_window, after_window, after_stack, zones
        )
        screened_by = (
            after.cloud_mask
            if before.cloud_mask == after.cloud_mask
            else f"{before.cloud_mask}/{after.cloud_mask}"
        )
        for clue in clues:
            clue.cloud_mask, clue.baseline = screened_by, options.baseline
        # what each acquisition shows at each patch: before-side ones tell ground already seen
        # as it is now; after-side ones follow the alerts
        found = site_findings(
            patches,
            pixels,
            [(before_stack, before), (after_stack, after)],
            after=following is not None,
        )
        recurring = {label for label, seen in found.items() if seen.recurs}
        reported = [
            (not limit_to_zones or c.zone is not None)
            and c.confidence >= det.min_confidence
            and p.label not in recurring
            for c, p in zip(clues, patches, strict=True)
        ]
        if recurring:
            say(
                f"[{options.aoi}] {len(recurring)} patches not reported: at least "
                f"{RECURRING_SIGHTINGS} clear before-side acquisitions show the ground as it is now "
                "(a harvest, a season: not new)"
            )
        if not all(reported):
            patches = [p for p, keep in zip(patches, reported, strict=True) if keep]
            clues = [c for c, keep in zip(clues, reported, strict=True) if keep]
            pixels = pixels.only([p.label for p in patches])
            say(
                f"[{options.aoi}] {len(reported) - len(clues)} patches not reported in all "
                "(recurring, outside the zones or below detection.min_confidence)"
            )
        say(f"[{options.aoi}] {len(clues)} patch clues")
        patch_score = np.zeros(pixels.n_labels + 1, dtype=np.float32)
        for clue, patch in zip(clues, patches, strict=True):
            patch_score[patch.label] = max(clue.confidence, np.float32(1e-3))
        mask_score_to_patches(work / "score.tif", pixels, patch_score)
        alerts = None
        if following is not None:
            sightings = {
                c.clue_id: found[p.label].after for c, p in zip(clues, patches, strict=True)
            }
            alerts = follow_alerts(following, clues, sightings, work / "score.tif", grid)
        files = publish(
            clues,
            patches,
            pixels,
            work,
            out_dir,
            options,
            grid=grid,
            windows=(before_window, after_window),
            zones=zones.zones if zones is not None else (),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if made:
            _remove_if_empty(out_dir.parent)
    return AoiResult(options.aoi, out_dir, clues, files, grid, patches=patches, alerts=alerts)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: something was published there
        folder.rmdir()


def _nothing_to_compare(aoi: str, before: Composite, after: Composite) -> NoValidDataError:
    """Why no pixel has valid data on both dates: a clouded-out after window (the night is
    skipped), or anything else (the run fails)."""
    seen_before, seen_after = dask.compute(
        (before.valid_count > 0).any(), (after.valid_count > 0).any()
    )
    if seen_before and not seen_after:
        return NoClearViewError(
            f"AOI {aoi}: every after-window acquisition ({', '.join(after.acquisitions)}) is "
            f"under cloud or without data over the whole AOI (cloud mask {after.cloud_mask}); "
            "nothing to compare, no clue"
        )
    return NoValidDataError(
        f"AOI {aoi}: no pixel has valid data on both dates (all cloud, all nodata, or the "
        f"imagery does not cover the AOI; the before window has {'some' if seen_before else 'none'})"
    )


def _clue_id(aoi: str, detected_at: str, patch: Patch) -> str:
    """``<aoi>-<YYYYMMDD detected>-<hash of the place and size>``: the date is the newest analysed
    acquisition's, as in the output folder's name and ``detected_at``."""
    c = patch.geometry.centroid
    key = f"{aoi}|{detected_at}|{round(c.x, 1)}|{round(c.y, 1)}|{patch.n_pixels}"
    day = dt.date.fromisoformat(detected_at)
    return f"{aoi}-{day:%Y%m%d}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _detected_at(after_stack: xr.Dataset, after_window: TimeWindow) -> str:
    """The date (ISO) of the newest after acquisition analysed (the window's end without one)."""
    times = after_stack["time"].values if "time" in after_stack.coords else []
    if len(times):
        return str(np.datetime_as_string(np.max(times), unit="D"))
    return after_window.end.isoformat()


def make_clues(
    patches: Sequence[Patch],
    grid: GeoBox,
    aoi: str,
    before_window: TimeWindow,
    after_window: TimeWindow,
    after_stack: xr.Dataset,
    zones: ZoneIndex | None,
) -> list[PatchClue]:
    geod = Geod(ellps="WGS84")
    model = load_clue_model()
    detected_at = _detected_at(after_stack, after_window)
    clues = []
    for patch in patches:
        geom = reproject_geometry(patch.geometry, grid.crs, WGS84)
        area = patch.area_m2 if grid.crs.projected else abs(geod.geometry_area_perimeter(geom)[0])
        change_type = classify_patch(patch.stats)
        confidence = float(model.probability(object_features(patch))[0])
        zone = zones.lookup(geom) if zones is not None else None
        centroid = geom.centroid
        clues.append(
            PatchClue(
                clue_id=_clue_id(aoi, detected_at, patch),
                aoi=aoi,
                detected_at=detected_at,
                before=before_window.as_list(),
                after=after_window.as_list(),
                geometry_wgs84=geom,
                area_m2=float(area),
                centroid=(centroid.x, centroid.y),
                change_type=change_type,
                confidence=confidence,
                confidence_level=confidence_level(confidence),
                d_ndvi=float(patch.stats.get("d_ndvi", np.nan)),
                d_bsi=float(patch.stats.get("d_bsi", np.nan)),
                d_ndbi=float(patch.stats.get("d_ndbi", np.nan)),
                zone=zone.name if zone else None,
                zone_tier=zone.tier if zone else None,
                county=zone.county if zone else None,
                priority=priority_for(
                    change_type, zone.tier if zone else None, zone is not None, confidence
                ),
                model=model.tag,
            )
        )
    return clues


def publish(
    clues: list[PatchClue],
    patches: list[Patch],
    pixels: PatchPixels,
    work: Path,
    out_dir: Path,
    options: AnalysisOptions,
    *,
    grid: GeoBox,
    windows: tuple[TimeWindow, TimeWindow],
    zones: Sequence[ProtectionZone] = (),
) -> dict[str, Path]:
    """Write every output into the work folder first (the change raster, masked to the patches,
    is there already), then move each into place. `zones` are drawn on the report's overview."""
    staged_chips = work / "chips"
    if options.chips and patches:
        written = write_chips(
            work / "rgb.tif",
            pixels,
            patches,
            staged_chips,
            size=options.chip_size,
            metres_per_px=float(np.sqrt(pixel_area_m2(grid))),
        )
        for clue, patch in zip(clues, patches, strict=True):
            for which, png in written[patch.label]._asdict().items():
                name = f"{clue.clue_id}_{which}.png"
                png.rename(staged_chips / name)
                setattr(clue, f"chip_{which}", f"chips/{name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "change": write_cog(work / "score.tif", out_dir / "change.tif"),
        "clues": write_clues_geojson(clues, out_dir / "clues.geojson"),
        "report": write_report(
            out_dir / "report.html",
            aoi=options.aoi,
            clues=clues,
            patches=patches,
            grid=grid,
            rgb_path=work / "rgb.tif",
            chip_dir=staged_chips if staged_chips.exists() else None,
            before=windows[0],
            after=windows[1],
            detected_at=clues[0].detected_at if clues else None,
            zones=zones,
        ),
    }
    files.update(write_exports(clues, out_dir))
    final_chips = out_dir / "chips"
    if final_chips.exists():
        old = out_dir / f".chips-old-{os.getpid()}"
        os.replace(final_chips, old)
        shutil.rmtree(old, ignore_errors=True)
    if staged_chips.exists():
        os.replace(staged_chips, final_chips)
        files["chips"] = final_chips
    return files
