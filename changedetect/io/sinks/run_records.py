"""What a run did, as `run.json` files and a markdown summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_path

if TYPE_CHECKING:
    from ...runs import RunRecord

#: File name of a run record: one under ``output.dir`` (the latest run, every AOI) and one beside
#: each AOI's outputs (that AOI's analysis).
RUN_RECORD = "run.json"


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
            _write_json({**context, "aoi": aoi.to_json()}, Path(aoi.out_dir) / RUN_RECORD)
    return _write_json(record.to_json(), Path(output_dir) / RUN_RECORD)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_report(record: RunRecord) -> str:
    """The run as markdown: clues per AOI, by type and by zone, output paths and failures."""
    lines = [
        f"# Change detection run: {_cell(record.config_name)}",
        "",
        f"Config `{record.config}` · started {record.started_at} · finished "
        f"{record.finished_at} · status **{record.status}** · dask: {record.scheduler}",
        "",
        "| AOI | status | after window | acquisitions (before / after) | clues | handed on "
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
