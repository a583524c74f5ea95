"""The nightly Prefect flow, run offline under Prefect's test harness: same clues as the library,
retries, AOIs that fail alone, idempotent re-runs, the schedule, and a dask cluster."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from prefect.artifacts import Artifact
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import (
    PREFECT_HOME,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    temporary_settings,
)
from prefect.testing.utilities import prefect_test_harness

from changedetect.config import DaskConfig, load_config
from changedetect.errors import (
    ConfigError,
    CorruptInputError,
    CredentialsError,
    RemoteServiceError,
    SourceError,
)
from changedetect.handoff import JsonlLedger
from changedetect.io.sinks.run_records import markdown_report
from changedetect.io.sources.local import LocalSource
from changedetect.models import PatchClue
from changedetect.pipeline import run
from changedetect.runs import AoiRecord, RunRecord
from changedetect.state import AlertBook, RunState
from changedetect.testing.rasters import make_grid, truncate_file, write_multiband
from flows.cluster import SCHEDULER_ENV, dask_scheduler, scheduler_address
from flows.nightly import build_deployment, main, nightly
from flows.tasks import is_transient

from .regions import SHAPE, write_region
from .test_cli import scene_dn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """A temporary Prefect server and database, and a private home for the task cache."""
    home = tmp_path_factory.mktemp("prefect-home")
    settings = {
        PREFECT_HOME: str(home),
        PREFECT_LOCAL_STORAGE_PATH: str(home / "storage"),
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
    }
    with temporary_settings(updates=settings), prefect_test_harness(server_startup_timeout=180):
        yield


def clue_summary(out_dir: Path) -> list[tuple]:
    doc = json.loads((out_dir / "clues.geojson").read_text())
    return sorted(
        (p["clue_id"], p["change_type"], p["area_m2"], p["zone"], p["priority"])
        for p in (f["properties"] for f in doc["features"])
    )


def output_files(out_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every published output (not the run record) with its bytes and modification time."""
    return {
        str(p.relative_to(out_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(out_dir.rglob("*"))
        if p.is_file() and p.name != "run.json"
    }


def ledger_ids(out: Path) -> list[str]:
    return [entry["clue_id"] for entry in JsonlLedger(out / "handoff.jsonl").entries()]


# ---- the flow, end to end ---------------------------------------------------------------------


def test_demo_through_the_flow_gives_the_clues_of_changedetect_run(prefect_harness, tmp_path):
    doc = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    doc["output"]["dir"] = str(tmp_path / "flow")
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(doc))
    library = load_config(config)
    library = library.model_copy(
        update={"output": library.output.model_copy(update={"dir": tmp_path / "library"})}
    )
    (expected,) = run(library, incremental=False)

    record = nightly(config=config)

    (aoi,) = record.aois
    assert aoi.status == "published" and record.status == "completed"
    out_dir = Path(aoi.out_dir)
    assert out_dir == tmp_path / "flow" / expected.out_dir.relative_to(tmp_path / "library")
    assert clue_summary(out_dir) == clue_summary(expected.out_dir)
    assert len(expected.clues) >= 20
    assert {c.zone for c in expected.clues} >= {"Qinling red line core", "Qinling general control"}
    assert aoi.clues_by_type == expected.counts_by_type()
    # the clues went to the tracker sink once each, the state advanced, the run is on record
    assert sorted(ledger_ids(tmp_path / "flow")) == sorted(c.clue_id for c in expected.clues)
    assert RunState(tmp_path / "flow" / "state.json").get(aoi.aoi).clues == len(expected.clues)
    run_json = json.loads((out_dir / "run.json").read_text())
    assert run_json["aoi"]["acquisitions_after"][-1] == "SYN_20250623"
    assert run_json["aoi"]["timings_s"]["detect"] > 0
    assert json.loads((tmp_path / "flow" / "run.json").read_text())["status"] == "completed"


def test_a_source_that_fails_twice_is_retried_and_the_run_completes(
    prefect_harness, tmp_path, monkeypatch
):
    config = write_region(tmp_path)
    original = LocalSource.search
    calls: list[str] = []

    def flaky(self, grid, window):  # noqa: ANN001, ANN202
        calls.append(str(window.start))
        if len(calls) <= 2:
            raise ConnectionResetError("the imagery share dropped the connection (test)")
        return original(self, grid, window)

    monkeypatch.setattr(LocalSource, "search", flaky)
    state = nightly(config=config, retry_delay_s=0.01, return_state=True)

    assert state.is_completed(), state.message
    # attempt 1 and 2 fail on the after window; attempt 3 searches the after and before windows
    assert calls == ["2025-04-01", "2025-04-01", "2025-04-01", "2024-04-01"]
    record = state.result()
    assert record.aois[0].status == "published" and record.aois[0].clues == 1
    assert (tmp_path / "out" / "valley" / "20250508" / "clues.geojson").exists()


def test_a_corrupt_aoi_fails_alone_and_the_run_ends_failed_naming_it(prefect_harness, tmp_path):
    config = write_region(tmp_path, ("valley", "ridge", "plain"), corrupt=("ridge",))
    out = tmp_path / "out"

    state = nightly(config=config, retry_delay_s=0.01, return_state=True)

    assert state.is_failed()
    assert "1 of 3 AOI(s) failed: ridge (CorruptInputError" in state.message
    assert "valley" not in state.message and "plain" not in state.message
    for good in ("valley", "plain"):
        assert len(clue_summary(out / good / "20250508")) == 1
        assert RunState(out / "state.json").get(good) is not None
    assert not (out / "ridge").exists()
    assert RunState(out / "state.json").get("ridge") is None  # redone next night
    assert {i.split("-")[0] for i in ledger_ids(out)} == {"valley", "plain"}

    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "failed"
    statuses = {a["aoi"]: (a["status"], a["error"]) for a in run_json["aois"]}
    assert statuses["valley"] == ("published", None)
    assert statuses["ridge"][0] == "failed" and "ridge_20250508" in statuses["ridge"][1]
    artifact = Artifact.get("nightly-test-region")
    assert artifact is not None
    assert "## Failures" in artifact.data and "**ridge**: CorruptInputError" in artifact.data
    assert "| valley | published |" in artifact.data
    assert str(out / "plain" / "20250508" / "clues.geojson") in artifact.data


def test_a_source_that_cannot_open_fails_every_aoi_on_record(prefect_harness, tmp_path):
    config = write_region(tmp_path, ("valley", "ridge"))
    truncate_file(tmp_path / "imagery" / "valley_20240503.tif")  # the folder scan rejects it

    state = nightly(config=config, return_state=True)

    assert state.is_failed() and "2 of 2 AOI(s) failed" in state.message
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [(a["aoi"], a["status"]) for a in run_json["aois"]] == [
        ("valley", "failed"),
        ("ridge", "failed"),
    ]
    assert "valley_20240503.tif is truncated" in run_json["aois"][1]["error"]


def test_running_the_same_night_again_changes_nothing_and_hands_on_nothing(
    prefect_harness, tmp_path, capsys
):
    config = write_region(tmp_path)
    out = tmp_path / "out"
    out_dir = out / "valley" / "20250508"
    first = nightly(config=config).aois[0]
    assert first.status == "published" and first.handed_on == first.clues == 1
    published = output_files(out_dir)
    assert set(published) >= {"clues.geojson", "change.tif"}
    assert any(name.startswith("chips/") for name in published)
    handed = ledger_ids(out)

    # incremental: nothing new, nothing touched (the command line entry point)
    assert main(["--config", str(config)]) == 0
    capsys.readouterr()
    again = json.loads((out / "run.json").read_text())["aois"][0]
    assert again["status"] == "nothing_new" and "no new acquisition" in again["note"]
    assert output_files(out_dir) == published

    # --full: the analysis comes from the cache and leaves the outputs as they are
    full = nightly(config=config, full=True).aois[0]
    assert full.status == "published" and full.cached and full.handed_on == 0
    assert output_files(out_dir) == published

    # a cache hit whose outputs have gone computes them again, identical
    (out_dir / "clues.geojson").unlink()
    for chip in (out_dir / "chips").iterdir():
        chip.unlink()
    redone = nightly(config=config, full=True).aois[0]
    assert redone.status == "published" and not redone.cached and redone.handed_on == 0
    assert {k: v[0] for k, v in output_files(out_dir).items()} == {
        k: v[0] for k, v in published.items()
    }
    assert ledger_ids(out) == handed


def test_the_flow_follows_a_site_across_nights(prefect_harness, tmp_path):
    config = write_region(tmp_path)
    first = nightly(config=config).aois[0]
    assert first.status == "published"
    grid = make_grid("EPSG:32649", left=500_000.0, shape=SHAPE)
    for day, seed in (("20250602", 3), ("20250617", 5)):
        arrays = scene_dn(SHAPE, seed, quarry=True)
        write_multiband(tmp_path / "imagery" / f"valley_{day}.tif", arrays, grid, nodata=0)
        record = nightly(config=config).aois[0]
        assert record.status == "published" and not record.cached
    doc = json.loads((tmp_path / "out" / "valley" / "20250617" / "clues.geojson").read_text())
    (props,) = [f["properties"] for f in doc["features"]]
    assert (props["alert_status"], props["supporting_observations"]) == ("confirmed", 3)
    assert (props["first_detected"], props["last_detected"]) == ("2025-05-08", "2025-06-17")
    (alert,) = AlertBook(tmp_path / "out" / "alerts.json").get("valley")
    assert (alert.status, alert.supporting, alert.alert_id) == ("confirmed", 3, props["alert_id"])


def test_an_all_cloud_night_is_reported_and_skipped_not_failed(prefect_harness, tmp_path):
    config = write_region(tmp_path)
    assert nightly(config=config).aois[0].status == "published"
    alerts_before = (tmp_path / "out" / "alerts.json").read_text()
    grid = make_grid("EPSG:32649", left=500_000.0, shape=SHAPE)
    clouded = scene_dn(SHAPE, 3, quarry=True)
    clouded["SCL"] = np.full(SHAPE, 9, np.uint16)  # cloud, high probability, everywhere
    write_multiband(tmp_path / "imagery" / "valley_20250602.tif", clouded, grid, nodata=0)
    run = nightly(config=config)
    (record,) = run.aois
    assert run.status == "completed" and record.status == "no_clear_view"
    assert "under cloud" in record.note and record.clues == 0
    assert (tmp_path / "out" / "alerts.json").read_text() == alerts_before
    state = RunState(tmp_path / "out" / "state.json").get("valley")
    assert state.last_acquisition.date() == dt.date(2025, 6, 2)  # consumed, not retried
    assert nightly(config=config).aois[0].status == "nothing_new"


def test_the_analysis_runs_on_a_dask_cluster_with_the_same_clues(prefect_harness, tmp_path):
    distributed = pytest.importorskip("distributed")
    config = write_region(tmp_path / "threads", ("valley", "ridge"), chunk_size=64)
    (expected_valley, expected_ridge) = run(load_config(config))
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        cluster_config = write_region(
            tmp_path / "cluster",
            ("valley", "ridge"),
            chunk_size=64,
            dask={"scheduler_address": cluster.scheduler_address},
        )
        record = nightly(config=cluster_config)
        ran = {prefix for prefix in cluster.scheduler.task_prefixes}
    assert record.scheduler == cluster.scheduler_address
    # the per-chunk work and the chips ran on the workers
    assert {"load_chunk", "finish_block", "render_chip_batch"} <= ran
    for aoi, expected in zip(record.aois, (expected_valley, expected_ridge), strict=True):
        assert aoi.status == "published"
        assert len(expected.clues) == 1
        assert clue_summary(Path(aoi.out_dir)) == clue_summary(expected.out_dir)
        chips = sorted((Path(aoi.out_dir) / "chips").iterdir())
        assert [p.name for p in chips] == sorted(
            p.name for p in (expected.out_dir / "chips").iterdir()
        )
        assert all(
            p.read_bytes() == (expected.out_dir / "chips" / p.name).read_bytes() for p in chips
        )


def test_the_nightly_deployment_runs_at_two_in_the_morning_shanghai_time():
    deployment = build_deployment(ROOT / "configs" / "demo.yaml")
    (schedule,) = deployment.schedules
    assert isinstance(schedule.schedule, CronSchedule)
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "Asia/Shanghai"
    assert deployment.name == "nightly-demo-serve" and deployment.flow_name == "nightly"
    assert Path(deployment.parameters["config"]) == ROOT / "configs" / "demo.yaml"

    # prefect.yaml (for `prefect deploy`) defines the same schedule, of a flow that loads
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (entry,) = doc["deployments"]
    (cron,) = entry["schedules"]
    assert (cron["cron"], cron["timezone"]) == ("0 2 * * *", "Asia/Shanghai")
    assert CronSchedule(cron=cron["cron"], timezone=cron["timezone"])
    path, name = entry["entrypoint"].split(":")
    flow = load_flow_from_entrypoint(f"{ROOT / path}:{name}")
    assert flow.name == "nightly"
    flow.validate_parameters(entry["parameters"])
    assert (ROOT / entry["parameters"]["config"]).exists()


# ---- the pieces, without Prefect --------------------------------------------------------------


def test_the_ledger_hands_each_clue_on_once(tmp_path):
    from shapely.geometry import box

    def clue(clue_id: str) -> PatchClue:
        return PatchClue(
            clue_id, "a", "2025-05-08", ["2024-04-01", "2024-06-30"], ["2025-04-01", "2025-06-30"],
            box(108.0, 34.0, 108.001, 34.001), 1500.0, (108.0005, 34.0005), "quarry", 0.9, "high",
            -0.2, 0.1, 0.05,
        )  # fmt: skip

    ledger = JsonlLedger(tmp_path / "handoff.jsonl")
    assert ledger.hand_on([clue("a-1"), clue("a-2"), clue("a-1")], out_dir=tmp_path) == [
        "a-1",
        "a-2",
    ]
    assert ledger.hand_on([clue("a-2"), clue("a-3")], out_dir=tmp_path) == ["a-3"]
    entries = ledger.entries()
    assert [e["clue_id"] for e in entries] == ["a-1", "a-2", "a-3"]
    assert entries[0]["feature"]["properties"]["change_type"] == "quarry"
    assert entries[0]["feature"]["geometry"]["type"] == "Polygon"
    # a line a crash cut short is not counted, and the next append replaces it
    with open(ledger.path, "a") as fh:
        fh.write('{"clue_id": "a-4", "fea')
    assert ledger.handed_ids() == {"a-1", "a-2", "a-3"}
    assert ledger.hand_on([clue("a-4")], out_dir=tmp_path) == ["a-4"]
    assert [e["clue_id"] for e in ledger.entries()] == ["a-1", "a-2", "a-3", "a-4"]
    lines = ledger.path.read_text().splitlines()
    assert [json.loads(line)["clue_id"] for line in lines] == ["a-1", "a-2", "a-3", "a-4"]


def test_only_transient_failures_are_retried():
    assert not is_transient(RemoteServiceError("HTTP 503 after 5 retries"))  # the source's
    assert is_transient(SourceError("catalog timed out"))
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionResetError())
    assert not is_transient(CorruptInputError("truncated file"))
    assert not is_transient(CredentialsError("rejected"))
    assert not is_transient(ConfigError("bad key"))
    assert not is_transient(ValueError("a bug"))


def test_the_scheduler_comes_from_the_environment_then_the_config(monkeypatch):
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    assert scheduler_address(DaskConfig()) is None
    assert scheduler_address(DaskConfig(scheduler_address="tcp://a:8786")) == "tcp://a:8786"
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://b:8786")
    assert scheduler_address(DaskConfig(scheduler_address="tcp://a:8786")) == "tcp://b:8786"
    monkeypatch.delenv(SCHEDULER_ENV)
    with dask_scheduler(DaskConfig()) as where:
        assert where == "threads"


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    config = DaskConfig(scheduler_address="tcp://127.0.0.1:9", connect_timeout_s=1)
    with pytest.raises(Exception, match="cannot reach the dask scheduler at tcp://127.0.0.1:9"):
        with dask_scheduler(config):
            pass


def test_the_markdown_report_lists_clues_by_type_and_zone_and_failures():
    good = AoiRecord("valley", status="published", out_dir="/o/valley/20250508", clues=3)
    good.after_window = ["2025-04-01", "2025-06-30"]
    good.acquisitions_after = ["S2_20250508"]
    good.clues_by_type = {"construction": 1, "quarry": 2}
    good.clues_by_zone = {"Core A": 2, "(outside every zone)": 1}
    good.files = {"clues": "/o/valley/20250508/clues.geojson"}
    bad = AoiRecord("ridge", error="CorruptInputError: S2_20250508.tif is truncated")
    record = RunRecord("c.yaml", "region", "run-1", "2025-07-01T18:00:00+00:00", status="failed")
    record.aois = [good, bad]
    text = markdown_report(record)
    assert "| valley | published | 2025-04-01..2025-06-30 | 0 / 1 | 3 |" in text
    assert "construction: 1, quarry: 2" in text
    assert "`/o/valley/20250508/clues.geojson`" in text
    assert "| valley | Core A | 2 |" in text
    assert "- **ridge**: CorruptInputError: S2_20250508.tif is truncated" in text
    assert record.failure_message() == (
        "1 of 2 AOI(s) failed: ridge (CorruptInputError: S2_20250508.tif is truncated)"
    )


def test_with_a_tracker_the_flow_ingests_into_it_and_looks_back(prefect_harness, tmp_path):
    from changedetect.tracker import CaseQuery, TrackerDB, list_cases

    config = write_region(tmp_path, aois=("valley", "ridge"))
    doc = yaml.safe_load(config.read_text())
    doc["tracker"] = {"db": f"sqlite:///{tmp_path / 'cases.db'}"}
    config.write_text(yaml.safe_dump(doc))

    def cases():
        db = TrackerDB.open(doc["tracker"]["db"])
        try:
            with db.session() as session:
                return list(list_cases(session, CaseQuery()).items)
        finally:
            db.close()

    # one clear acquisition: the quarries are probable, held back by the tracker
    run = nightly(config=config)
    assert [a.status for a in run.aois] == ["published", "published"]
    assert [a.handed_on for a in run.aois] == [0, 0]
    assert all("look_back" in a.timings_s for a in run.aois)
    assert cases() == []
    # the next night brings two more clear acquisitions of both: confirmed, so issued
    for k, name in enumerate(("valley", "ridge")):
        grid = make_grid("EPSG:32649", left=500_000.0 + 20_000.0 * k, shape=SHAPE)
        for day, seed in (("20250602", 3), ("20250617", 5)):
            arrays = scene_dn(SHAPE, seed + 10 * k, quarry=True)
            write_multiband(tmp_path / "imagery" / f"{name}_{day}.tif", arrays, grid, nodata=0)
    run = nightly(config=config)
    assert [a.handed_on for a in run.aois] == [1, 1]
    issued = cases()
    assert sorted(c.aoi for c in issued) == ["ridge", "valley"]
    assert {c.state for c in issued} == {"issued"}
    assert not (tmp_path / "out" / "handoff.jsonl").exists()  # the tracker, not the ledger
    # a full re-run analyses all three acquisitions again: it may refine a clue, never a new case
    again = nightly(config=config, full=True)
    assert [a.status for a in again.aois] == ["published", "published"]
    assert sorted(c.aoi for c in cases()) == ["ridge", "valley"]


def test_the_tracker_issues_probable_clues_when_the_config_says_so(prefect_harness, tmp_path):
    from changedetect.tracker import CaseQuery, TrackerDB, list_cases

    config = write_region(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["tracker"] = {"db": f"sqlite:///{tmp_path / 'cases.db'}"}
    doc["alerts"] = {"issue_probable": True}
    config.write_text(yaml.safe_dump(doc))
    assert [a.handed_on for a in nightly(config=config).aois] == [1]
    db = TrackerDB.open(doc["tracker"]["db"])
    try:
        with db.session() as session:
            (case,) = list_cases(session, CaseQuery()).items
    finally:
        db.close()
    assert case.state == "issued"
