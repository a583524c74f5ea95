"""The tracker commands, on clues the real pipeline wrote for a small synthetic scene."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from changedetect.tracker import head_revision
from changedetect.tracker.cli import add_tracker_commands, main

from .helpers import collection, feature, rect


@pytest.fixture(scope="session")
def demo_clues(tmp_path_factory) -> Path:
    """clues.geojson from the pipeline on a corner of the demo scene (a few seconds)."""
    from changedetect.demo import demo_config, write_demo_zones
    from changedetect.pipeline import run

    out = tmp_path_factory.mktemp("pipeline")
    config = demo_config(out)
    aoi = config.aois[0].model_copy(update={"bbox": (108.20, 33.95, 108.26, 34.0)})
    source = config.source.model_copy(update={"revisit_days": 20})
    config = config.model_copy(update={"aois": [aoi], "source": source})
    config = config.model_copy(update={"zones": write_demo_zones(config, out / "zones.geojson")})
    (result,) = run(config, incremental=False)
    assert len(result.clues) >= 3, "the small scene should hold several planted changes"
    return result.files["clues"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_ingest_list_show_transition_report(demo_clues, sqlite_url, capsys):
    n = len(json.loads(demo_clues.read_text())["features"])
    db = ["--db", sqlite_url]
    code, out, _ = run_cli(capsys, "ingest", str(demo_clues), *db)
    assert code == 0
    assert f"{n} clues: {n} created, 0 updated, 0 suppressed, 0 unchanged" in out
    code, out, _ = run_cli(capsys, "ingest", str(demo_clues), *db)
    assert f"{n} clues: 0 created, 0 updated, 0 suppressed, {n} unchanged" in out

    code, out, _ = run_cli(capsys, "list", *db)
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["id", "state", "priority"]
    assert len(lines) == n + 2 and lines[-1] == f"{n} cases (1-{n} shown)"

    code, out, _ = run_cli(capsys, "list", "--json", *db)
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert len(rows) == n
    assert {r["state"] for r in rows} == {"issued"}
    priorities = [r["priority"] for r in rows]
    rank = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
    assert priorities == sorted(priorities, key=rank.get)  # most pressing first
    first = rows[0]["id"]
    clue_ids = {f["properties"]["clue_id"] for f in json.loads(demo_clues.read_text())["features"]}

    code, out, _ = run_cli(capsys, "show", str(first), "--json", *db)
    detail = json.loads(out)
    assert detail["detection_history"][0]["clue_id"] in clue_ids
    chip = Path(detail["evidence"]["chips"][0])
    assert chip.is_file() and chip.parent.parent == demo_clues.parent  # resolved, real file

    code, out, _ = run_cli(capsys, "transition", str(first), "verifying", "--actor", "li", *db)
    assert (code, out.strip()) == (0, f"case {first} is now verifying")
    code, out, err = run_cli(capsys, "transition", str(first), "closed", "--actor", "li", *db)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"changedetect: error: case {first} is verifying and cannot move to closed: "
        "from verifying it can go to compliant, false_alarm, violation"
    ]
    code, out, _ = run_cli(capsys, "list", "--state", "verifying", "--json", *db)
    assert [json.loads(line)["id"] for line in out.strip().splitlines()] == [first]

    # the demo's clues were seen in June 2025 and ingested today: they are June's cases
    month = "2025-06"
    assert {r["first_detected_on"][:7] for r in rows} == {month}
    code, out, _ = run_cli(capsys, "report", "--month", month, "--csv", *db)
    table = list(csv.DictReader(io.StringIO(out)))
    assert sum(int(r["issued"]) for r in table) == n
    assert {r["county"] for r in table} <= {"Zhouzhi", "Huyi", "(unassigned)"}
    code, out, _ = run_cli(capsys, "report", "--month", month, *db)
    assert out.startswith(f"report {month}") and "county" in out


def test_export_sites_escalate_migrate(sqlite_url, tmp_path, capsys):
    db = ["--db", sqlite_url]
    clues = tmp_path / "clues.geojson"
    clues.write_text(json.dumps(collection([feature("a", rect(100, 100, 60))])))
    sites = tmp_path / "permits.geojson"
    sites.write_text(
        json.dumps(
            collection(
                [
                    {
                        "type": "Feature",
                        "geometry": rect(0, 0, 400).__geo_interface__,
                        "properties": {"name": "Quarry 7", "valid_from": "2020-01-01"},
                    }
                ]
            )
        )
    )
    code, out, _ = run_cli(capsys, "sites", "import", str(sites), "--kind", "permit", *db)
    assert code == 0 and "1 created" in out
    run_cli(capsys, "ingest", str(clues), *db)
    code, out, _ = run_cli(capsys, "list", "--tag", "permitted", "--json", *db)
    (row,) = [json.loads(line) for line in out.strip().splitlines()]
    assert row["tags"] == ["permitted"] and row["priority"] == "low"
    code, out, _ = run_cli(capsys, "sites", "list", *db)
    assert "Quarry 7" in out and "permit" in out

    target = tmp_path / "cases.geojson"
    code, out, _ = run_cli(capsys, "export", "--out", str(target), *db)
    assert code == 0 and json.loads(target.read_text())["features"][0]["properties"]["id"] == 1
    code, out, _ = run_cli(capsys, "escalate", *db)
    assert out.strip() == "0 cases escalated"
    code, out, _ = run_cli(capsys, "migrate", *db)
    assert out.strip().endswith(f"is at revision {head_revision()}")


def test_default_database_comes_from_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHANGEDETECT_DB", f"sqlite:///{tmp_path / 'env.db'}")
    code, out, _ = run_cli(capsys, "list")  # a SQLite database is created and migrated on use
    assert code == 0 and out.strip().endswith("0 cases (none shown)")
    assert (tmp_path / "env.db").is_file()
    monkeypatch.delenv("CHANGEDETECT_DB")
    monkeypatch.chdir(tmp_path)
    run_cli(capsys, "list")
    assert (tmp_path / "changedetect-tracker.db").is_file()


def test_the_database_url_can_come_from_a_file(tmp_path, monkeypatch, capsys):
    """The Docker/Kubernetes secrets convention: --db-file or $CHANGEDETECT_DB_FILE."""
    monkeypatch.delenv("CHANGEDETECT_DB", raising=False)
    monkeypatch.delenv("CHANGEDETECT_DB_FILE", raising=False)
    secret = tmp_path / "db-url"
    secret.write_text(f"sqlite:///{tmp_path / 'from-file.db'}\n")  # secrets often end in a newline
    code, out, _ = run_cli(capsys, "list", "--db-file", str(secret))
    assert code == 0 and out.strip().endswith("0 cases (none shown)")
    assert (tmp_path / "from-file.db").is_file()

    monkeypatch.setenv("CHANGEDETECT_DB_FILE", str(secret))
    code, out, _ = run_cli(capsys, "migrate")
    assert code == 0 and out.startswith(f"sqlite:///{tmp_path / 'from-file.db'} is at revision")

    monkeypatch.setenv("CHANGEDETECT_DB", f"sqlite:///{tmp_path / 'other.db'}")
    code, _, err = run_cli(capsys, "list")
    assert code == 2 and "$CHANGEDETECT_DB and $CHANGEDETECT_DB_FILE are both set" in err
    monkeypatch.delenv("CHANGEDETECT_DB")

    with pytest.raises(SystemExit):  # one or the other on the command line
        main(["list", "--db", "sqlite://", "--db-file", str(secret)])
    assert "not allowed with argument" in capsys.readouterr().err

    secret.write_text("\n")
    code, _, err = run_cli(capsys, "list")
    assert code == 2 and f"database URL file {secret} is empty" in err
    code, _, err = run_cli(capsys, "list", "--db-file", str(tmp_path / "missing"))
    assert code == 2 and "cannot read it (No such file or directory)" in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://ops:hunter2@127.0.0.1:9/cases", "//ops:***@127.0.0.1:9/cases"),
        ("postgresql//ops:hunter2@127.0.0.1/cases", "is not a URL"),
        ("postgresql://ops:hunter2@127.0.0.1:port/cases", "is not a URL"),
        ("mysql://ops:hunter2@127.0.0.1/cases", "supports sqlite and postgresql"),
    ],
)
@pytest.mark.parametrize("command", [["list"], ["migrate"], ["user", "list"]])
def test_the_database_password_is_never_printed(tmp_path, capsys, url, message, command):
    secret = tmp_path / "db-url"
    secret.write_text(url)
    code, out, err = run_cli(capsys, *command, "--db-file", str(secret))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "hunter2" not in out + err


def test_errors_are_one_line(tmp_path, capsys):
    code, out, err = run_cli(
        capsys, "ingest", str(tmp_path / "none.geojson"), "--db", f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err
    code, _, err = run_cli(capsys, "list", "--db", "postgresql://u:pw@127.0.0.1:9/x")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot open" in err
    code, _, err = run_cli(
        capsys, "report", "--month", "2025-13", "--db", f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert code == 2 and "is not YYYY-MM" in err


def test_postgresql_needs_an_explicit_migrate(pg_server, capsys):
    if pg_server.fixed_url is not None:
        pytest.skip("needs a fresh PostgreSQL database")
    url = pg_server.create_database("cli")
    code, _, err = run_cli(capsys, "list", "--db", url)
    assert code == 2 and "run `changedetect tracker migrate`" in err
    code, out, err = run_cli(capsys, "migrate", "--db", url)
    assert code == 0 and make_url(url).password not in out + err
    code, out, _ = run_cli(capsys, "list", "--db", url)
    assert code == 0 and "0 cases" in out


def test_wiring_into_the_main_cli():
    """What cli.py will do: the tracker under the main parser, with its common options."""
    parser = argparse.ArgumentParser(prog="changedetect")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true")
    common.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    add_tracker_commands(sub, parents=[common])
    args = parser.parse_args(
        ["tracker", "list", "--db", "sqlite://", "--debug", "--state", "issued,verifying"]
    )
    assert (args.db, args.debug, args.verbose, args.state) == (
        "sqlite://",
        True,
        False,
        ["issued", "verifying"],
    )
    assert args.func.__name__ == "cmd_list"
    args = parser.parse_args(["tracker", "sites", "import", "f.gpkg", "--kind", "restoration"])
    assert args.func.__name__ == "cmd_sites_import" and args.debug is False


def test_module_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "changedetect.tracker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    for command in ("ingest", "list", "report", "transition", "sites", "migrate"):
        assert command in proc.stdout


def test_the_tracker_commands_load_without_the_heavy_stack():
    """The main CLI registers ``tracker`` at start-up: that must not import SQLAlchemy & co."""
    code = (
        "import sys, changedetect.tracker.cli; "
        "print(sorted(m for m in ('sqlalchemy', 'shapely', 'pyproj', 'xarray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def night_with_bad_clues(folder: Path) -> Path:
    """Two good clues, a 75-character change type and a clue with a NUL in its id."""
    long_kind = feature("long-kind", rect(600, 0, 60), change_type="k" * 75)
    nul_id = feature("nul", rect(900, 0, 60))
    nul_id["properties"]["clue_id"] = "nul\x00id"
    clues = folder / "clues.geojson"
    good = [feature("good-1", rect(0, 0, 60)), feature("good-2", rect(300, 0, 60))]
    clues.write_text(json.dumps(collection([*good, long_kind, nul_id])))
    return clues


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_ingest_stores_the_good_clues_and_sets_the_bad_aside(engine, tmp_path, capsys, request):
    url = request.getfixturevalue("sqlite_url" if engine == "sqlite" else "pg_url")
    clues = night_with_bad_clues(tmp_path)
    code, out, err = run_cli(capsys, "ingest", str(clues), "--db", url)
    assert code == 0
    assert (
        f"{clues}: 4 clues: 2 created, 0 updated, 0 suppressed, 0 unchanged, 0 held, 2 rejected"
        in out
    )
    rejects = tmp_path / "clues.rejects.geojson"
    assert f"rejected clues set aside in {rejects}" in out
    reasons = [
        f["properties"]["reject_reason"] for f in json.loads(rejects.read_text())["features"]
    ]
    assert reasons == [
        "change_type is 75 characters long; the ledger keeps at most 40",
        "clue_id holds a control character (U+0000 NUL) at position 3",
    ]
    assert "change_type is 75 characters long" in err and "U+0000 NUL" in err
    assert "[SQL" not in err and "k" * 75 not in err  # no database error, no dumped values
    code, out, _ = run_cli(capsys, "list", "--json", "--db", url)
    assert code == 0 and len(out.strip().splitlines()) == 2


def test_ingest_exit_status_when_clues_are_rejected(sqlite_url, tmp_path, capsys):
    db = ["--db", sqlite_url]
    clues = night_with_bad_clues(tmp_path)
    # --strict: nothing stored while any clue is rejected; the rejects are still written
    code, out, _ = run_cli(capsys, "ingest", str(clues), "--strict", *db)
    assert code == 1
    assert f"{clues}: 2 of 4 clues rejected" in out and "nothing stored (--strict)" in out
    assert (tmp_path / "clues.rejects.geojson").is_file()
    assert run_cli(capsys, "list", *db)[1].strip().endswith("0 cases (none shown)")
    # a file whose every clue is rejected stores nothing: exit status 1
    hopeless = tmp_path / "hopeless.geojson"
    hopeless.write_text(json.dumps(collection([feature("x", rect(0, 0, 60), confidence=7)])))
    elsewhere = tmp_path / "out" / "x.rejects.geojson"
    code, out, _ = run_cli(capsys, "ingest", str(hopeless), "--rejects", str(elsewhere), *db)
    assert code == 1 and "1 clues: 0 created" in out and "1 rejected" in out
    assert json.loads(elsewhere.read_text())["features"][0]["properties"]["clue_id"] == "x"
    # --json reports the rejects with their reasons and the file
    code, out, _ = run_cli(capsys, "ingest", str(clues), "--json", *db)
    report = json.loads(out)
    assert code == 0 and (report["created"], report["rejected"]) == (2, 2)
    assert report["rejects_file"] == str(tmp_path / "clues.rejects.geojson")
    assert [r["index"] for r in report["rejects"]] == [2, 3]
    # one --rejects path for several files is refused before anything is read
    code, _, err = run_cli(capsys, "ingest", str(clues), str(hopeless), "--rejects", "r.json", *db)
    assert code == 2 and "--rejects names one file" in err
