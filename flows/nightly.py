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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, serve
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

from changedetect.argtypes import iso_date
from changedetect.config import load_config
from changedetect.handoff import ClueSink, TrackerSink, default_sink
from changedetect.io.sinks.run_records import markdown_report, write_run_records
from changedetect.models import AoiResult
from changedetect.pipeline import AoiPlan
from changedetect.runs import (
    Detection,
    RunContext,
    RunRecord,
    RunSteps,
    Stacks,
    now_utc,
    run_config,
)

from .cluster import scheduler_address
from .tasks import RETRIES, RETRY_DELAY_S, detect, hand_on, load, look_back, search

#: When the nightly deployment runs, and in which time zone.
NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_TIMEZONE = "Asia/Shanghai"


def flow_steps(*, retries: int, retry_delay_s: float, refresh: bool) -> RunSteps:
    """The run's steps as Prefect tasks: a step retried where nothing below it retries (the
    hand-on to the tracker, a file system hiccup), the analysis cached by its inputs (and
    recomputed when the outputs it published are gone)."""
    delivery = {"retries": retries, "retry_delay_seconds": exponential_backoff(retry_delay_s)}
    searching, loading = search.with_options(**delivery), load.with_options(**delivery)
    detecting = detect.with_options(refresh_cache=True) if refresh else detect
    handing_on = hand_on.with_options(**delivery)

    def search_step(ctx: RunContext, aoi: str) -> AoiPlan:
        return searching(ctx.config, aoi, ctx.source, ctx.after, ctx.state)

    def load_step(ctx: RunContext, plan: AoiPlan) -> Stacks:
        return loading(ctx.config, plan, ctx.source)

    def detect_step(ctx: RunContext, plan: AoiPlan, stacks: Stacks) -> Detection:
        args = (ctx.config, plan, quote(stacks), ctx.zones)
        outcome = detecting(*args, return_state=True)
        detected = outcome.result()
        if outcome.name != "Cached":
            return Detection(detected.result)
        if detected.outputs_intact():
            return Detection(detected.result, cached=True)
        ctx.log.warning(
            f"[{plan.aoi}] the cached analysis's outputs in {plan.out_dir} are missing or "
            "changed; computing them again"
        )
        return Detection(detect.with_options(refresh_cache=True)(*args).result)

    def hand_on_step(sink: ClueSink, result: AoiResult) -> list[str]:
        return handing_on(sink, result)

    def look_back_step(
        sink: TrackerSink, ctx: RunContext, plan: AoiPlan, stacks: Stacks
    ) -> dict[str, int]:
        return look_back(sink, ctx.config, plan, quote(stacks))

    return RunSteps(search_step, load_step, detect_step, hand_on_step, look_back_step)


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
        retries: Retries of a step that failed where nothing below retried it (the hand-on to the
            tracker, a file system hiccup); the imagery sources retry each request themselves.
        retry_delay_s: First retry delay in seconds; it doubles with every retry.
    """
    cfg = load_config(config)
    record = RunRecord(
        config=str(config),
        config_name=cfg.name,
        flow_run=flow_run.get_name(),
        started_at=now_utc(),
        scheduler=scheduler_address(cfg.dask) or "threads",
    )
    record = run_config(
        cfg,
        steps=flow_steps(retries=retries, retry_delay_s=retry_delay_s, refresh=refresh),
        log=get_run_logger(),
        sink=default_sink,
        since=since,
        until=until,
        incremental=not full,
        record=record,
    )
    path = write_run_records(record, Path(cfg.output.dir))
    create_markdown_artifact(
        key=_artifact_key(cfg.name),
        markdown=markdown_report(record),
        description=f"Nightly run of {cfg.name}: clues per AOI, outputs, failures",
    )
    get_run_logger().info(f"run record: {path}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.nightly",
        description="Run the nightly flow once (local, no server needed), or serve it on its "
        "schedule.",
    )
    parser.add_argument("--config", required=True, type=Path, help="run config (YAML)")
    parser.add_argument("--since", type=iso_date, help="after window start (ignores the run state)")
    parser.add_argument("--until", type=iso_date, help="after window end")
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
