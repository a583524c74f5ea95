"""One run over every AOI of a config: the steps, their order, and what came of each AOI.

The CLI (`changedetect run`, `changedetect demo`) and the nightly flow run the same loop: every
AOI is attempted, an AOI that fails is recorded and the others go on, and the run's record names
the failed ones. They differ only in how a step is executed: :data:`PLAIN_STEPS` calls the library
directly; the flow passes Prefect tasks (retries of the hand-on, a cached analysis).

Per AOI: search -> load -> detect (which publishes the outputs) -> hand on to the clue sink ->
look back (with the case tracker) -> record the night in the run state. The state is advanced
last: an AOI that fails anywhere before is analysed again the next night, and the hand-on is
idempotent, so no clue is lost or handed on twice.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import xarray as xr

from .config import RunConfig
from .errors import NoClearViewError
from .handoff import ClueSink, TrackerSink
from .io.sources.base import ImagerySource
from .io.zones import ZoneIndex
from .models import AoiResult, TimeWindow
from .pipeline import (
    AoiPlan,
    after_window,
    analyse_aoi,
    footprint_measure,
    load_aoi,
    make_source,
    plan_aoi,
    record_aoi,
    record_clouded,
    run_state,
    zone_index,
)
from .state import AlertBook, RunState

AoiStatus = Literal["published", "nothing_new", "no_clear_view", "failed"]
Stacks = tuple[xr.Dataset, xr.Dataset]


class RunLog(Protocol):
    """Where a run reports: a `logging.Logger`, or Prefect's run logger (a LoggerAdapter)."""

    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...
    def error(self, msg: str) -> Any: ...


@dataclass(frozen=True)
class RunContext:
    """What every AOI of a run shares."""

    config: RunConfig
    source: ImagerySource
    zones: ZoneIndex | None
    after: TimeWindow
    state: RunState | None
    sink: ClueSink | None
    """Where the clues go once published; None: nowhere (library use)."""
    log: RunLog


class Detection(NamedTuple):
    """What the detect step gives: the AOI's result, and whether it came from a cache."""

    result: AoiResult
    cached: bool = False


@dataclass(frozen=True)
class RunSteps:
    """How each step of an AOI is executed."""

    search: Callable[[RunContext, str], AoiPlan]
    load: Callable[[RunContext, AoiPlan], Stacks]
    detect: Callable[[RunContext, AoiPlan, Stacks], Detection]
    hand_on: Callable[[ClueSink, AoiResult], list[str]]
    look_back: Callable[[TrackerSink, RunContext, AoiPlan, Stacks], dict[str, int]]


def _search(ctx: RunContext, aoi: str) -> AoiPlan:
    index = [a.name for a in ctx.config.aois].index(aoi)
    return plan_aoi(
        ctx.config, index, ctx.source, after=ctx.after, state=ctx.state, progress=ctx.log.info
    )


def _load(ctx: RunContext, plan: AoiPlan) -> Stacks:
    return load_aoi(ctx.config, plan, ctx.source)


def _detect(ctx: RunContext, plan: AoiPlan, stacks: Stacks) -> Detection:
    result = analyse_aoi(ctx.config, plan, *stacks, zones=ctx.zones, progress=ctx.log.info)
    return Detection(result)


def _hand_on(sink: ClueSink, result: AoiResult) -> list[str]:
    return sink.hand_on(result.clues, out_dir=result.out_dir)


def _look_back(sink: TrackerSink, ctx: RunContext, plan: AoiPlan, stacks: Stacks) -> dict[str, int]:
    return sink.look_back(footprint_measure(ctx.config, plan, *stacks))


#: The steps as direct library calls.
PLAIN_STEPS = RunSteps(_search, _load, _detect, _hand_on, _look_back)


# ----------------------------------------------------------------------------------------------
# What a run did
# ----------------------------------------------------------------------------------------------


@dataclass
class AoiRecord:
    """One AOI of a run: what it analysed, found and handed on, how long it took, or why it
    failed."""

    aoi: str
    status: AoiStatus = "failed"
    out_dir: str | None = None
    before_window: list[str] | None = None
    after_window: list[str] | None = None
    acquisitions_before: list[str] = field(default_factory=list)
    acquisitions_after: list[str] = field(default_factory=list)
    clues: int = 0
    clues_by_type: dict[str, int] = field(default_factory=dict)
    clues_by_zone: dict[str, int] = field(default_factory=dict)
    handed_on: int = 0
    """Clues handed to the clue sink for the first time by this run."""
    files: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    """The analysis came from the task cache (same inputs as an earlier run; outputs checked)."""
    timings_s: dict[str, float] = field(default_factory=dict)
    note: str | None = None
    error: str | None = None
    result: AoiResult | None = field(default=None, repr=False, compare=False)
    """The AOI's result (not written to the record)."""
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    """Why it failed (not written to the record)."""

    def planned(self, plan: AoiPlan) -> None:
        self.out_dir = str(Path(plan.out_dir).absolute())
        self.before_window = plan.before_window.as_list()
        self.after_window = plan.after_window.as_list()
        self.acquisitions_before = [a.id for a in plan.before]
        self.acquisitions_after = [a.id for a in plan.after]
        self.note = plan.note

    def published(self, result: AoiResult, handed_on: list[str], *, cached: bool) -> None:
        self.status = "published"
        self.result = result
        self.clues = len(result.clues)
        self.clues_by_type = dict(sorted(result.counts_by_type().items()))
        zones = Counter(c.zone or "(outside every zone)" for c in result.clues)
        self.clues_by_zone = dict(sorted(zones.items()))
        self.handed_on = len(handed_on)
        self.files = {name: str(Path(p).absolute()) for name, p in sorted(result.files.items())}
        self.cached = cached

    def failed(self, exc: BaseException) -> None:
        self.status = "failed"
        self.error = f"{type(exc).__name__}: {exc}"
        self.exception = exc

    def to_json(self) -> dict[str, Any]:
        return {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in fields(self)
            if f.name not in ("result", "exception")
        }


@dataclass
class RunRecord:
    """One run over one config."""

    config: str
    config_name: str
    flow_run: str | None
    started_at: str
    finished_at: str | None = None
    status: Literal["running", "completed", "failed"] = "running"
    since: str | None = None
    until: str | None = None
    full: bool = False
    scheduler: str = "threads"
    aois: list[AoiRecord] = field(default_factory=list)

    @property
    def failed(self) -> list[AoiRecord]:
        return [a for a in self.aois if a.status == "failed"]

    def failure_message(self) -> str:
        failed = self.failed
        names = ", ".join(f"{a.aoi} ({a.error})" for a in failed)
        return f"{len(failed)} of {len(self.aois)} AOI(s) failed: {names}"

    def finish(self) -> None:
        self.finished_at = now_utc()
        self.status = "failed" if self.failed else "completed"

    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "aois"}
        return doc | {"aois": [a.to_json() for a in self.aois]}


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


@contextmanager
def _timed(record: AoiRecord, step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        record.timings_s[step] = round(time.perf_counter() - start, 3)


def run_one_aoi(ctx: RunContext, aoi: str, steps: RunSteps = PLAIN_STEPS) -> AoiRecord:
    """One AOI through every step; a failure is recorded, never raised (an interrupt is), so
    the others go on."""
    record = AoiRecord(aoi)
    plan: AoiPlan | None = None
    try:
        with _timed(record, "total"):
            with _timed(record, "search"):
                plan = steps.search(ctx, aoi)
            record.planned(plan)
            if plan.nothing_new:
                record.status = "nothing_new"
                record.result = plan.skipped()
                return record
            with _timed(record, "load"):
                stacks = steps.load(ctx, plan)
            with _timed(record, "detect"):
                result, cached = steps.detect(ctx, plan, stacks)
            handed: list[str] = []
            if ctx.sink is not None:
                with _timed(record, "hand_on"):
                    handed = steps.hand_on(ctx.sink, result)
            if isinstance(ctx.sink, TrackerSink):
                with _timed(record, "look_back"):
                    looked = steps.look_back(ctx.sink, ctx, plan, stacks)
                ctx.log.info(f"[{aoi}] look-back: {looked}")
            if ctx.state is not None:
                record_aoi(ctx.state, plan, result, AlertBook(ctx.config.output.alerts_path()))
            record.published(result, handed, cached=cached)
            sent = f", {len(handed)} new to the clue sink" if ctx.sink is not None else ""
            ctx.log.info(f"[{aoi}] published {record.clues} clue(s) in {plan.out_dir}{sent}")
    except NoClearViewError as exc:  # reported and skipped: nothing was seen, nothing is lost
        record.status = "no_clear_view"
        record.note = str(exc)
        ctx.log.warning(f"[{aoi}] skipped: {exc}")
        if plan is not None:
            record.result = plan.skipped(str(exc))
            if ctx.state is not None:
                record_clouded(ctx.state, plan)
    except Exception as exc:  # one AOI failing must not stop the others
        record.failed(exc)
        ctx.log.error(f"[{aoi}] failed: {record.error}")
    return record


def start_run(
    config: RunConfig,
    *,
    log: RunLog,
    sink: ClueSink | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    incremental: bool = True,
) -> RunContext:
    """What every AOI of the run shares (opening the source may fail: then every AOI does).
    A run that is not incremental (``--full``) also searches afresh, past a source's search
    cache."""
    return RunContext(
        config=config,
        source=make_source(config, refresh=not incremental),
        zones=zone_index(config),
        after=after_window(config, since=since, until=until),
        state=run_state(config, since=since, incremental=incremental),
        sink=sink,
        log=log,
    )


def run_config(
    config: RunConfig,
    *,
    steps: RunSteps = PLAIN_STEPS,
    log: RunLog | None = None,
    sink: ClueSink | Callable[[RunConfig], ClueSink] | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    incremental: bool = True,
    record: RunRecord | None = None,
) -> RunRecord:
    """Every AOI of `config`, each attempted whatever happened to the others.

    `since` / `until` replace the after window's start / end. Unless `since` is given or
    `incremental` is off, an AOI analyses only after-window acquisitions newer than the newest one
    its last successful run analysed (kept in the run state file), and is skipped when there is
    none. `sink` (or a function making it from the config) receives each AOI's clues.
    Returns the run's record, its `aois` in config order."""
    log = log or logging.getLogger("changedetect")
    record = record or RunRecord(
        config=config.name, config_name=config.name, flow_run=None, started_at=now_utc()
    )
    record.since = since.isoformat() if since else None
    record.until = until.isoformat() if until else None
    record.full = not incremental
    try:
        made = sink(config) if callable(sink) else sink
        ctx = start_run(
            config, log=log, sink=made, since=since, until=until, incremental=incremental
        )
    except Exception as exc:  # what every AOI needs failed: all fail, and the run is on record
        log.error(f"cannot start the run: {type(exc).__name__}: {exc}")
        for aoi in config.aois:
            record.aois.append(AoiRecord(aoi.name))
            record.aois[-1].failed(exc)
    else:
        for aoi in config.aois:
            record.aois.append(run_one_aoi(ctx, aoi.name, steps))
    record.finish()
    return record


def result_or_raise(record: AoiRecord) -> AoiResult:
    """The AOI's result, or the exception it failed with."""
    if record.exception is not None:
        raise record.exception
    assert record.result is not None
    return record.result


def results_or_raise(record: RunRecord) -> list[AoiResult]:
    """Each AOI's result in config order; the first failure raised (naming the others)."""
    failed = record.failed
    if failed:
        exc = failed[0].exception
        assert exc is not None
        if len(failed) > 1:
            exc.add_note(record.failure_message())
        raise exc
    return [result_or_raise(a) for a in record.aois]
