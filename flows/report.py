"""What a nightly run did, as `run.json` files and a markdown summary (no Prefect here)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from changedetect.io.atomic import atomic_path
from changedetect.models import AoiResult
from changedetect.pipeline import AoiPlan

AoiStatus = Literal["published", "nothing_new", "no_clear_view", "failed"]

#: File name of a run record: one under ``output.dir`` (the latest run, every AOI) and one beside
#: each AOI's outputs (that AOI's analysis).
RUN_RECORD = "run.json"


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
    """Clues handed to the case tracker for the first time by this run."""
    files: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    """The analysis came from the task cache (same inputs as an earlier run; outputs checked)."""
    timings_s: dict[str, float] = field(default_factory=dict)
    note: str | None = None
    error: str | None = None

    def planned(self, plan: AoiPlan) -> None:
        self.out_dir = str(Path(plan.out_dir).absolute())
        self.before_window = plan.before_window.as_list()
        self.after_window = plan.after_window.as_list()
        self.acquisitions_before = [a.id for a in plan.before]
        self.acquisitions_after = [a.id for a in plan.after]
        self.note = plan.note

    def published(self, result: AoiResult, handed_on: list[str], *, cached: bool) -> None:
        self.status = "published"
        self.clues = len(result.clues)
        self.clues_by_type = dict(sorted(result.counts_by_type().items()))
        zones = Counter(c.zone or "(outside every zone)" for c in result.clues)
        self.clues_by_zone = dict(sorted(zones.items()))
        self.handed_on = len(handed_on)
        self.files = {name: str(Path(p).absolute()) for name, p in sorted(result.files.items())}
        self.cached = cached


@dataclass
class RunRecord:
    """One flow run over one config."""

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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _write_json(doc: dict[str, Any], path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_run_records(record: RunRecord, output_dir: Path) -> Path:
    """`run.json` under `output_dir` (the whole run) and beside each published AOI's outputs
    (that AOI, with the run's context). Returns the first."""
    context = {k: v for k, v in record.to_json().items() if k != "aois"}
    for aoi in record.aois:
        if aoi.status == "published" and aoi.out_dir is not None:
            _write_json({**context, "aoi": asdict(aoi)}, Path(aoi.out_dir) / RUN_RECORD)
    return _write_json(record.to_json(), Path(output_dir) / RUN_RECORD)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_report(record: RunRecord) -> str:
    """The run as markdown: clues per AOI, by type and by zone, output paths and failures."""
    lines = [
        f"# Nightly change detection: {_cell(record.config_name)}",
        "",
        f"Config `{record.config}` · started {record.started_at} · finished "
        f"{record.finished_at} · status **{record.status}** · dask: {record.scheduler}",
        "",
        "| AOI | status | after window | acquisitions (before / after) | clues | new to tracker "
        "| by type | clues.geojson |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in record.aois:
        window = "..".join(a.after_window) if a.after_window else ""
        by_type = ", ".join(f"{k}: {v}" for k, v in a.clues_by_type.items()) or "-"
        clues_path = a.files.get("clues", "")
        status = a.status + (" (cached)" if a.cached else "")
        lines.append(
            f"| {_cell(a.aoi)} | {status} | {window} | {len(a.acquisitions_before)} / "
            f"{len(a.acquisitions_after)} | {a.clues} | {a.handed_on} | {_cell(by_type)} | "
            f"{f'`{clues_path}`' if clues_path else '-'} |"
        )
    zoned = [(a.aoi, zone, n) for a in record.aois for zone, n in a.clues_by_zone.items()]
    if zoned:
        lines += ["", "## Clues by zone", "", "| AOI | zone | clues |", "|---|---|---|"]
        lines += [f"| {_cell(aoi)} | {_cell(zone)} | {n} |" for aoi, zone, n in zoned]
    notes = [a for a in record.aois if a.note]
    if notes:
        lines += ["", "## Nothing new", ""]
        lines += [f"- **{_cell(a.aoi)}**: {_cell(a.note)}" for a in notes]
    if record.failed:
        lines += ["", "## Failures", ""]
        lines += [f"- **{_cell(a.aoi)}**: {_cell(a.error)}" for a in record.failed]
    return "\n".join(lines) + "\n"
