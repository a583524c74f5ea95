"""``tracker serve --workers N``: several worker processes, each with the app the options say."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from changedetect.tracker import TrackerDB, upgrade
from changedetect.tracker.api.basemap import Basemap
from changedetect.tracker.api.serving import OPTIONS_ENV, ServeOptions, app_from_environment
from changedetect.tracker.auth import add_user, create_token
from changedetect.tracker.settings import DB_ENV_VAR

from .conftest import free_port

TILES = "https://tiles.example.org/{z}/{x}/{y}.png"


def test_a_worker_builds_the_app_the_parent_was_given(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    options = ServeOptions(
        evidence_roots=[str(tmp_path / "runs")],
        cookie_secure=True,
        busy_wait_s=2.5,
        basemap_url=TILES,
        basemap_attribution="© tiles",
        photo_dir=str(tmp_path / "photos"),
    )
    monkeypatch.setenv(DB_ENV_VAR, url)
    monkeypatch.setenv(OPTIONS_ENV, json.dumps(options.__dict__))
    state = app_from_environment().state.tracker
    assert state.db.url == url
    assert state.evidence_roots == (tmp_path / "runs",)
    assert state.cookie_secure is True
    assert state.basemap == Basemap(TILES, "© tiles")
    assert state.photos.root == (tmp_path / "photos").resolve()
    state.db.close()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_serve_with_two_workers_answers_from_two_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    with TrackerDB(url) as db:
        add_user(db, "ana.lyst", "analyst")
        token = create_token(db, "ana.lyst")
    port = free_port()
    env = {**os.environ, DB_ENV_VAR: url}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "changedetect.tracker",
            "serve",
            "--workers",
            "2",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_worker_processes(server.pid)) < 2:
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.2)
        assert len(_worker_processes(server.pid)) == 2
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/cases", headers={"Authorization": f"Bearer {token}"}
        )
        for _ in range(4):  # whichever worker answers, it has the ledger
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200 and json.load(answer)["total"] == 0
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "with 2 worker processes" in output


def _worker_processes(pid: int) -> list[int]:
    """uvicorn's supervisor forks the workers (and a resource tracker): Python children."""
    found = []
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                command = f.read().split(b"\0")
        except OSError:
            continue
        if any(b"multiprocessing" in part for part in command) and not any(
            b"resource_tracker" in part for part in command
        ):
            found.append(child)
    return found


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_serve_refuses_fewer_than_one_worker(tmp_path, workers):
    env = {**os.environ, DB_ENV_VAR: f"sqlite:///{tmp_path / 'l.db'}"}
    done = subprocess.run(
        [sys.executable, "-m", "changedetect.tracker", "serve", "--workers", workers],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "--workers must be at least 1" in done.stderr
