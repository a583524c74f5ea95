"""Prefect tasks: each wraps one step of `changedetect.pipeline` and adds retries or caching.

- `search` and `load` touch the network (catalog search, imagery download), never cached (each
  night must see what is new). The networked sources retry each request themselves
  (``source.max_retries``, honouring the service's Retry-After), so a
  :class:`~changedetect.errors.RemoteServiceError` has used up its retries and the task does not
  add more; the task retries only what no layer below did (a file system or connection hiccup).
- `detect` (the expensive, pure analysis, which also publishes the AOI's outputs) is cached by
  everything it depends on: config, AOI, windows, acquisitions (and local files' sizes and times),
  output folder. A cached result remembers the outputs it published; the flow checks they are
  still in place and recomputes when they are not.
- `hand_on` passes clues to the case tracker sink, retried like the network steps.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

import changedetect
from changedetect.config import RunConfig
from changedetect.errors import (
    ConfigError,
    CorruptInputError,
    CredentialsError,
    MissingBandError,
    RemoteServiceError,
    SourceError,
)
from changedetect.handoff import ClueSink, TrackerSink
from changedetect.io.sources.base import ImagerySource
from changedetect.io.zones import ZoneIndex
from changedetect.models import Acquisition, AoiResult, TimeWindow
from changedetect.pipeline import (
    AoiPlan,
    analyse_aoi,
    footprint_measure,
    load_aoi,
    plan_aoi,
)
from changedetect.state import AlertBook, RunState

from .cluster import dask_scheduler

#: Bump to invalidate every cached analysis (e.g. when the outputs' format changes).
CACHE_VERSION = 3
#: How long a cached analysis is reused.
CACHE_EXPIRATION = dt.timedelta(days=30)
#: Default retries of the network steps, and the first delay (doubling each time).
RETRIES = 3
RETRY_DELAY_S = 30.0

#: Failures that another attempt cannot fix, or that the source already retried.
PERMANENT_ERRORS = (
    ConfigError,
    CredentialsError,
    CorruptInputError,
    MissingBandError,
    RemoteServiceError,
)


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: a source or network failure that is not a bad config, credential or
    file, nor a service that kept failing through the source's own retries."""
    if isinstance(exc, PERMANENT_ERRORS):
        return False
    return isinstance(exc, SourceError | OSError | TimeoutError)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:  # noqa: ARG001
    """Prefect `retry_condition_fn`: retry only transient failures."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


_network = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(RETRY_DELAY_S),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}


@task(name="search", task_run_name="search-{aoi}", **_network)
def search(
    config: RunConfig,
    aoi: str,
    source: ImagerySource,
    after: TimeWindow,
    state: RunState | None,
) -> AoiPlan:
    """Search both windows of `aoi` and keep the acquisitions the run state has not seen."""
    index = [a.name for a in config.aois].index(aoi)
    logger = get_run_logger()
    return plan_aoi(config, index, source, after=after, state=state, progress=logger.info)


@task(name="load", task_run_name="load-{plan.aoi}", **_network)
def load(config: RunConfig, plan: AoiPlan, source: ImagerySource) -> tuple[xr.Dataset, xr.Dataset]:
    """Download what the source's cache lacks; the stacks come back lazy (dask graphs)."""
    return load_aoi(config, plan, source)


@task(name="hand-on", task_run_name="hand-on-{result.aoi}", **_network)
def hand_on(sink: ClueSink, result: AoiResult) -> list[str]:
    """Pass the AOI's clues to the tracker sink; returns the ids it had not seen before."""
    return sink.hand_on(result.clues, out_dir=result.out_dir)


@task(name="look-back", task_run_name="look-back-{plan.aoi}", cache_policy=NO_CACHE)
def look_back(
    sink: TrackerSink,
    config: RunConfig,
    plan: AoiPlan,
    stacks: tuple[xr.Dataset, xr.Dataset],
) -> dict[str, int]:
    """Re-examine rectified cases and restoration sites with this AOI's composites."""
    with dask_scheduler(config.dask):
        report = sink.look_back(footprint_measure(config, plan, *stacks))
    return report


def _file_stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def output_fingerprint(files: dict[str, Path]) -> dict[str, Any]:
    """Size and modification time of every published output (chips: of every file inside)."""
    stamps: dict[str, Any] = {}
    for name, path in sorted(files.items()):
        path = Path(path)
        if path.is_dir():
            stamps[name] = {p.name: _file_stamp(p) for p in sorted(path.iterdir())}
        else:
            stamps[name] = _file_stamp(path)
    return stamps


@dataclass(frozen=True)
class Detected:
    """What `detect` returns (and the cache keeps): the AOI result and its outputs' fingerprint."""

    result: AoiResult
    outputs: dict[str, Any]

    def outputs_intact(self) -> bool:
        """Every output this analysis published is still there, unchanged."""
        return output_fingerprint(self.result.files) == self.outputs


def _acquisition_key(acq: Acquisition) -> dict[str, Any]:
    return {
        "id": acq.id,
        "datetime": acq.datetime.isoformat(),
        "source": acq.source,
        # a local file repaired or replaced under the same name is new input
        "assets": {
            band: [path, index, _file_stamp(Path(path))]
            for band, (path, index) in sorted(acq.assets.items())
        },
    }


def detect_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:  # noqa: ARG001
    """Everything the analysis of `plan` depends on (not where it computes)."""
    config: RunConfig = parameters["config"]
    plan: AoiPlan = parameters["plan"]
    aoi = next(a for a in config.aois if a.name == plan.aoi)
    doc = {
        "cache_version": CACHE_VERSION,
        "changedetect": changedetect.__version__,
        "config": config.model_dump(
            mode="json", include={"source", "sensor", "baseline", "detection", "zones"}
        ),
        "zones_file": _file_stamp(Path(config.zones.path)) if config.zones else None,
        "chips": [config.output.chips, config.output.chip_size],
        "aoi": aoi.model_dump(mode="json"),
        "windows": [plan.before_window.as_list(), plan.after_window.as_list()],
        "out_dir": str(Path(plan.out_dir).absolute()),
        "before": [_acquisition_key(a) for a in plan.before],
        "history": [_acquisition_key(a) for a in plan.history],
        "after": [_acquisition_key(a) for a in plan.after],
        # the clues carry their alerts' state, which depends on the acquisitions before these
        "alerts": AlertBook(config.output.alerts_path()).history_before(plan.aoi, plan.first_new),
        "confirm_after": config.alerts.confirm_after,
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return f"changedetect-detect-{plan.aoi}-{digest[:32]}"


@task(
    name="detect",
    task_run_name="detect-{plan.aoi}",
    cache_key_fn=detect_cache_key,
    cache_expiration=CACHE_EXPIRATION,
    persist_result=True,
)
def detect(
    config: RunConfig,
    plan: AoiPlan,
    stacks: tuple[xr.Dataset, xr.Dataset],
    zones: ZoneIndex | None,
) -> Detected:
    """Detect change and publish the AOI's outputs, computing on the configured dask scheduler."""
    logger = get_run_logger()
    before, after = stacks
    with dask_scheduler(config.dask) as where:
        logger.info(f"[{plan.aoi}] computing on dask scheduler {where}")
        result = analyse_aoi(config, plan, before, after, zones=zones, progress=logger.info)
    return Detected(result, output_fingerprint(result.files))
