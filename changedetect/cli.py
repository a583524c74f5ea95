"""Command line: `changedetect demo | compare | run`."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import __version__
from .argtypes import iso_date
from .errors import ChangeDetectError, ConfigError, RunFailedError
from .progress import listening

log = logging.getLogger("changedetect")


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("changedetect")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[None]:
    """A bar per long step on a terminal; nothing in a pipe or a log file (the log says it)."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bars: dict[str, tqdm] = {}

    def show(what: str, done: int, total: int) -> None:
        bar = bars.get(what)
        if bar is None:
            bar = bars[what] = tqdm(
                total=total, desc=what, unit="block", file=sys.stderr, leave=False
            )
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    try:  # log lines go above the bar, not through it
        with listening(show), logging_redirect_tqdm(loggers=[log]):
            yield
    finally:
        for bar in bars.values():
            bar.close()


def _print_results(results: Sequence) -> None:
    for result in results:
        if result.note is not None:
            print(f"{result.aoi}: {result.note}")
            continue
        counts = result.counts_by_type()
        by_type = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
        print(f"{result.aoi}: {len(result.clues)} clues ({by_type})")
        for name, path in result.files.items():
            print(f"  {name:7s} {path}")


def _run_config(config, args: argparse.Namespace, *, incremental: bool, **window):  # noqa: ANN001, ANN202
    """Every AOI of `config` through the run's steps, its clues handed to the configured sink and
    the run on record (``run.json``); prints what each AOI gave. Raises when an AOI failed,
    naming every failed one (the others are published)."""
    from .handoff import default_sink
    from .io.sinks.run_records import write_run_records
    from .runs import RunRecord, now_utc, run_config

    record = RunRecord(
        config=str(getattr(args, "config", None) or "demo"),
        config_name=config.name,
        flow_run=None,
        started_at=now_utc(),
    )
    with _progress_bar(not args.quiet):
        record = run_config(
            config, log=log, sink=default_sink, incremental=incremental, record=record, **window
        )
    write_run_records(record, Path(config.output.dir))
    _print_results([a.result for a in record.aois if a.result is not None])
    if record.failed:
        if args.debug:
            raise record.failed[0].exception  # type: ignore[misc]
        raise RunFailedError(record.failure_message())
    return record


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_config, score_against_truth

    config = demo_config(Path(args.out), baseline=args.baseline)
    start = time.perf_counter()
    record = _run_config(config, args, incremental=False)
    elapsed = time.perf_counter() - start
    score = score_against_truth(config, record.aois[0].result)
    q = score.quality
    print(
        f"against the planted truth ({q.n_truth} changes >= {config.detection.min_area_m2:g} m²): "
        f"recall {q.recall:.2f}, precision {q.precision:.2f} ({q.n_clues} clues), "
        f"change type right {q.type_accuracy:.0%}"
    )
    print(f"  truth   {score.truth_path}")
    print(f"done in {elapsed:.0f} s")
    return 0


def _sensor_from_args(args: argparse.Namespace):  # noqa: ANN202
    from .config import SensorConfig

    bands = [b.strip() for b in args.bands.split(",")] if args.bands else None
    data = {"preset": args.preset, "bands": bands}
    if args.scale is not None:
        data["scale"] = args.scale
    try:
        return SensorConfig.model_validate(data)
    except Exception as exc:  # pydantic's message already names the option
        raise ConfigError(f"invalid --preset/--bands/--scale: {exc}") from None


def _detection_from_args(args: argparse.Namespace):  # noqa: ANN202
    from .config import DetectionConfig

    data = {"min_area_m2": args.min_area, "chunk_size": args.chunk_size}
    if args.false_alarm_rate is not None:
        data["false_alarm_rate"] = args.false_alarm_rate
    try:
        return DetectionConfig.model_validate(data)
    except Exception as exc:  # pydantic's message already names the option
        raise ConfigError(f"invalid --min-area/--chunk-size/--false-alarm-rate: {exc}") from None


def cmd_compare(args: argparse.Namespace) -> int:
    from .io.sources.local import LocalSource, acquisition_from_path, check_overlap
    from .models import TimeWindow
    from .pipeline import AnalysisOptions, analyse, bands_to_load

    sensor = _sensor_from_args(args)
    detection = _detection_from_args(args)
    before = acquisition_from_path(Path(args.before), sensor, when=_day(args.before_date))
    after = acquisition_from_path(Path(args.after), sensor, when=_day(args.after_date))
    if after.datetime <= before.datetime:
        raise ConfigError(
            f"the after acquisition ({after.id}, {after.datetime:%Y-%m-%d}) is not later than the "
            f"before one ({before.id}, {before.datetime:%Y-%m-%d}); swap them, or give the dates "
            "with --before-date / --after-date"
        )
    assert before.grid is not None
    check_overlap(before.grid, after)
    source = LocalSource(None, sensor, acquisitions=[before, after])
    grid = before.grid
    before_stack, after_stack = (
        source.load([a], bands_to_load(detection, sensor.preset, [a]), grid, detection.chunk_size)
        for a in (before, after)
    )
    day_b, day_a = before.datetime.date(), after.datetime.date()
    options = AnalysisOptions(
        aoi=args.name, detection=detection, chips=not args.no_chips, preset=sensor.preset
    )
    with _progress_bar(not args.quiet):
        result = analyse(
            before_stack,
            after_stack,
            grid,
            TimeWindow(day_b, day_b),
            TimeWindow(day_a, day_a),
            options,
            Path(args.out),
            progress=log.info,
        )
    _print_results([result])
    return 0


def _day(day: dt.date | None) -> dt.datetime | None:
    return dt.datetime(day.year, day.month, day.day) if day is not None else None


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config

    config = load_config(args.config)
    if args.out:
        config = config.model_copy(
            update={"output": config.output.model_copy(update={"dir": Path(args.out)})}
        )
    _run_config(config, args, incremental=not args.full, since=args.since, until=args.until)
    return 0


def _presets() -> tuple[str, ...]:
    from typing import get_args

    from .config import SensorConfig

    return get_args(SensorConfig.model_fields["preset"].annotation)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="changedetect",
        description="Find new human disturbance in satellite imagery and write patch clues.",
    )
    parser.add_argument("--version", action="version", version=f"changedetect {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run the embedded synthetic scene end to end and score it against its truth",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument(
        "--baseline",
        choices=("window", "same_season"),
        default="window",
        help="compare with the before window (default), or with the same season of the three "
        "years before (baseline.kind: same_season)",
    )
    demo.set_defaults(func=cmd_demo)

    compare = sub.add_parser(
        "compare",
        parents=[common],
        help="compare two local acquisitions (GeoTIFF, folder of *_<BAND>.tif, or any GDAL raster)",
    )
    compare.add_argument(
        "before", help="earlier acquisition: a raster file or a folder of band files"
    )
    compare.add_argument("after", help="later acquisition, aligned onto BEFORE's grid")
    compare.add_argument("--out", required=True, help="output folder")
    compare.add_argument(
        "--bands",
        help="band names of the file's bands in order, e.g. B02,B03,B04,B08,B11,B12 (SKIP ignores one)",
    )
    compare.add_argument(
        "--preset",
        default="sentinel2_l2a",
        choices=_presets(),
        metavar="PRESET",
        help=f"sensor preset: {', '.join(_presets())} (default: sentinel2_l2a)",
    )
    compare.add_argument(
        "--scale", type=float, help="reflectance = value * scale (overrides preset)"
    )
    compare.add_argument(
        "--before-date",
        type=iso_date,
        help="acquisition date of BEFORE (YYYY-MM-DD), when neither its name nor its metadata "
        "(ENVI header, Landsat MTL, TIFF tag) carries it",
    )
    compare.add_argument(
        "--after-date", type=iso_date, help="acquisition date of AFTER (YYYY-MM-DD)"
    )
    compare.add_argument("--name", default="compare", help="AOI name used in clue ids")
    compare.add_argument("--min-area", type=float, default=1000.0, help="mapping unit in m²")
    compare.add_argument(
        "--false-alarm-rate",
        type=float,
        help="per-pixel false-alarm rate of an isolated pixel (default: detection.false_alarm_rate)",
    )
    compare.add_argument("--chunk-size", type=int, default=512, help="dask chunk edge in px")
    compare.add_argument("--no-chips", action="store_true", help="skip the PNG chips")
    compare.set_defaults(func=cmd_compare)

    run = sub.add_parser("run", parents=[common], help="run what a YAML config says, for every AOI")
    run.add_argument("--config", required=True, help="YAML run configuration")
    run.add_argument("--out", help="override output.dir")
    run.add_argument(
        "--since",
        type=iso_date,
        help="start of the after window (YYYY-MM-DD); analyses from there whatever ran before",
    )
    run.add_argument("--until", type=iso_date, help="end of the after window (YYYY-MM-DD)")
    run.add_argument(
        "--full",
        action="store_true",
        help="analyse the whole after window, not only acquisitions newer than the last run",
    )
    run.set_defaults(func=cmd_run)

    from .tracker.cli import add_tracker_commands

    add_tracker_commands(sub, parents=[common])
    return parser


#: GDAL's block cache defaults to 5 % of RAM per process and is fixed on first use; memory should
#: depend on the chunk size instead, so the command line caps it before any raster is opened.
GDAL_CACHEMAX_MB = "16"


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHEMAX_MB)
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except ChangeDetectError as exc:
        if args.debug:
            raise
        print(f"changedetect: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("changedetect: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`changedetect tracker list | head`): not an error of ours; stdout
        # goes to devnull so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - last resort: one line, details behind --debug
        if args.debug:
            raise
        print(
            f"changedetect: unexpected error: {type(exc).__name__}: {exc} (rerun with --debug)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
