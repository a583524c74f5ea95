"""The nightly flow: every AOI of one config, searched, loaded, analysed, published, handed on.

Run once, locally, without a Prefect server (Prefect starts a temporary one)::

    python -m flows.nightly --config configs/demo.yaml [--since DATE] [--until DATE] [--full]

Serve it on its schedule (02:00 Asia/Shanghai by default) from this process::

    python -m flows.nightly --config configs/demo.yaml --serve

or register the deployments of `prefect.yaml` for a work pool: ``prefect deploy --all``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger, serve
from prefect.artifacts import create_markdown_artifact
from prefect.deployments.runner import RunnerDeployment
from prefect.runtime import flow_run
from prefect.schedules import Cron
from prefect.settings import (
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)
from prefect.states import Failed, State
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from changedetect.config import RunConfig, load_config
from changedetect.errors import NoClearViewError
from changedetect.handoff import ClueSink, TrackerSink, default_sink
from changedetect.io.sources.base import ImagerySource
from changedetect.io.zones import ZoneIndex
from changedetect.models import TimeWindow
from changedetect.pipeline import (
    after_window,
    make_source,
    record_aoi,
    record_clouded,
    run_state,
    zone_index,
)
from changedetect.state import AlertBook, RunState

from .cluster import scheduler_address
from .report import AoiRecord, RunRecord, markdown_report, write_run_records
from .tasks import RETRIES, RETRY_DELAY_S, detect, hand_on, load, look_back, search

#: When the nightly deployment runs, and in which time zone.
NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_TIMEZONE = "Asia/Shanghai"


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class _Steps:
    """The tasks of one run, with the run's retry settings."""

    search: Task
    load: Task
    detect: Task
    hand_on: Task
    look_back: Task

    @classmethod
    def configured(cls, *, retries: int, retry_delay_s: float, refresh: bool) -> _Steps:
        network = {"retries": retries, "retry_delay_seconds": exponential_backoff(retry_delay_s)}
        return cls(
            search.with_options(**network),
            load.with_options(**network),
            detect.with_options(refresh_cache=True) if refresh else detect,
            hand_on.with_options(**network),
            look_back,
        )


@dataclass(frozen=True)
class _Context:
    """What every AOI of a run shares."""

    config: RunConfig
    source: ImagerySource
    zones: ZoneIndex | None
    after: TimeWindow
    state: RunState | None
    sink: ClueSink
    steps: _Steps


@contextmanager
def _timed(record: AoiRecord, step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        record.timings_s[step] = round(time.perf_counter() - start, 3)


def _run_aoi(ctx: _Context, aoi: str) -> AoiRecord:
    """One AOI through every step; a failure is recorded, never raised, so the others go on."""
    logger = get_run_logger()
    record = AoiRecord(aoi)
    steps = ctx.steps
    try:
        with _timed(record, "total"):
            with _timed(record, "search"):
                plan = steps.search(ctx.config, aoi, ctx.source, ctx.after, ctx.state)
            record.planned(plan)
            if plan.nothing_new:
                record.status = "nothing_new"
                return record
            with _timed(record, "load"):
                stacks = steps.load(ctx.config, plan, ctx.source)
            with _timed(record, "detect"):
                args = (ctx.config, plan, quote(stacks), ctx.zones)
                outcome = steps.detect(*args, return_state=True)
                detected = outcome.result()
                cached = outcome.name == "Cached"
                if cached and not detected.outputs_intact():
                    logger.warning(
                        f"[{aoi}] the cached analysis's outputs in {plan.out_dir} are missing or "
                        "changed; computing them again"
                    )
                    detected = steps.detect.with_options(refresh_cache=True)(*args)
                    cached = False
            with _timed(record, "hand_on"):
                handed = steps.hand_on(ctx.sink, detected.result)
            if isinstance(ctx.sink, TrackerSink):
                with _timed(record, "look_back"):
                    looked = steps.look_back(ctx.sink, ctx.config, plan, quote(stacks))
                logger.info(f"[{aoi}] look-back: {looked}")
            if ctx.state is not None:
                book = AlertBook(ctx.config.output.alerts_path())
                record_aoi(ctx.state, plan, detected.result, book)
            record.published(detected.result, handed, cached=cached)
            logger.info(
                f"[{aoi}] published {record.clues} clue(s) in {plan.out_dir}, "
                f"{len(handed)} new to the tracker"
            )
    except NoClearViewError as exc:  # reported and skipped: nothing was seen, nothing is lost
        record.status = "no_clear_view"
        record.note = str(exc)
        logger.warning(f"[{aoi}] skipped: {exc}")
        if ctx.state is not None:
            record_clouded(ctx.state, plan)
    except Exception as exc:  # one AOI failing must not stop the others
        record.status = "failed"
        record.error = f"{type(exc).__name__}: {exc}"
        logger.error(f"[{aoi}] failed: {record.error}")
    return record


def _artifact_key(name: str) -> str:
    return "nightly-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "run")


@flow(name="nightly", description="Nightly change detection over every AOI of one config.")
def nightly(
    config: Path,
    since: dt.date | None = None,
    until: dt.date | None = None,
    full: bool = False,
    refresh: bool = False,
    retries: int = RETRIES,
    retry_delay_s: float = RETRY_DELAY_S,
) -> RunRecord | State:
    """Search new acquisitions, analyse and publish every AOI, hand the clues to the tracker.

    Args:
        config: Path of the run config (YAML) on the machine that runs the flow.
        since: Start of the after window (replaces the config's; the run state is then ignored).
        until: End of the after window (replaces the config's).
        full: Ignore the run state: analyse the whole after window again.
        refresh: Recompute the analysis even where the cache holds it for the same inputs.
        retries: Retries of the network steps (search, download, hand-on).
        retry_delay_s: First retry delay in seconds; it doubles with every retry.
    """
    logger = get_run_logger()
    cfg = load_config(config)
    record = RunRecord(
        config=str(config),
        config_name=cfg.name,
        flow_run=flow_run.get_name(),
        started_at=_now(),
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
        full=full,
        scheduler=scheduler_address(cfg.dask) or "threads",
    )
    try:
        ctx = _Context(
            config=cfg,
            source=make_source(cfg),
            zones=zone_index(cfg),
            after=after_window(cfg, since=since, until=until),
            state=run_state(cfg, since=since, incremental=not full),
            sink=default_sink(cfg),
            steps=_Steps.configured(retries=retries, retry_delay_s=retry_delay_s, refresh=refresh),
        )
    except Exception as exc:  # what every AOI needs failed: all fail, and the run is on record
        error = f"{type(exc).__name__}: {exc}"
        logger.error(f"cannot start the run: {error}")
        record.aois = [AoiRecord(aoi.name, error=error) for aoi in cfg.aois]
    else:
        for aoi in cfg.aois:
            record.aois.append(_run_aoi(ctx, aoi.name))
    record.finished_at = _now()
    record.status = "failed" if record.failed else "completed"
    path = write_run_records(record, Path(cfg.output.dir))
    create_markdown_artifact(
        key=_artifact_key(cfg.name),
        markdown=markdown_report(record),
        description=f"Nightly run of {cfg.name}: clues per AOI, outputs, failures",
    )
    logger.info(f"run record: {path}")
    if record.failed:
        return Failed(message=record.failure_message())
    return record


def build_deployment(
    config: str | Path,
    *,
    name: str | None = None,
    cron: str = NIGHTLY_CRON,
    timezone: str = NIGHTLY_TIMEZONE,
) -> RunnerDeployment:
    """The nightly deployment of `config` for `serve`: one run a day (02:00 Shanghai time).

    Named ``nightly-<config stem>-serve`` by default, apart from the `prefect.yaml` deployment of
    the same config (``nightly-<stem>``, run by a work pool's worker): a served deployment of the
    same name would take that one over."""
    config = Path(config)
    return nightly.to_deployment(
        name=name or f"nightly-{config.stem}-serve",
        schedule=Cron(cron, timezone=timezone),
        parameters={"config": str(config.absolute())},
        description=f"Nightly change detection of {config}",
        tags=["changedetect", "nightly"],
    )


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.nightly",
        description="Run the nightly flow once (local, no server needed), or serve it on its "
        "schedule.",
    )
    parser.add_argument("--config", required=True, type=Path, help="run config (YAML)")
    parser.add_argument("--since", type=_date, help="after window start (ignores the run state)")
    parser.add_argument("--until", type=_date, help="after window end")
    parser.add_argument("--full", action="store_true", help="ignore the run state")
    parser.add_argument("--refresh", action="store_true", help="ignore cached analyses")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="create the deployment and run it on its schedule from this process (Ctrl-C stops)",
    )
    parser.add_argument("--name", help="deployment name (default: nightly-<config stem>-serve)")
    parser.add_argument("--cron", default=NIGHTLY_CRON, help=f"schedule (default {NIGHTLY_CRON!r})")
    parser.add_argument(
        "--timezone", default=NIGHTLY_TIMEZONE, help=f"of the schedule ({NIGHTLY_TIMEZONE})"
    )
    return parser


def _local_settings() -> dict[Any, Any]:
    """Quiet, patient defaults for Prefect's temporary local server (unless set otherwise)."""
    updates: dict[Any, Any] = {}
    if PREFECT_SERVER_ANALYTICS_ENABLED.name not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    if PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.name not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 120
    return updates


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with temporary_settings(updates=_local_settings()):
        if args.serve:
            serve(
                build_deployment(
                    args.config, name=args.name, cron=args.cron, timezone=args.timezone
                )
            )
            return 0
        state = nightly(
            config=args.config,
            since=args.since,
            until=args.until,
            full=args.full,
            refresh=args.refresh,
            return_state=True,
        )
    if state.is_failed():
        sys.stderr.write(f"nightly: {state.message}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
