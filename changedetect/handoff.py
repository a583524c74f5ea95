"""Handing patch clues on to the case tracker.

Clues go to a :class:`ClueSink`. With a tracker database configured (``tracker.db``,
``CHANGEDETECT_DB`` or ``CHANGEDETECT_DB_FILE``), :class:`TrackerSink` ingests the published ``clues.geojson`` through the same
code path as ``changedetect tracker ingest``; without one, :class:`JsonlLedger` appends one JSON
line per clue to a ledger file. Either hands every clue id on once only: running the same night
again hands on nothing new.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from .config import RunConfig
from .errors import SinkError
from .io.sinks.geojson import clues_feature_collection
from .models import PatchClue

#: The ledger's file name under ``output.dir``.
LEDGER_NAME = "handoff.jsonl"

log = logging.getLogger("changedetect.handoff")


@runtime_checkable
class ClueSink(Protocol):
    """Where clues go once their outputs are published (the case tracker, or a stand-in)."""

    def hand_on(self, clues: Sequence[PatchClue], *, out_dir: Path) -> list[str]:
        """Pass on the clues not handed on before and return their ids (the others are ignored).

        `out_dir` is the folder holding the clues' outputs (chip paths are relative to it).
        Must be safe to call again with the same clues: nothing is then handed on twice."""
        ...


class JsonlLedger:
    """An append-only JSON-lines ledger; each line is one clue handed on.

    A line holds ``clue_id``, ``aoi``, ``handed_at`` (UTC), ``out_dir`` and the clue as a GeoJSON
    ``feature``. Appends hold an exclusive lock on the file, so concurrent runs that share it hand
    each clue on once. A last line cut short by a crash is ignored (its clue is handed on again).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def handed_ids(self) -> set[str]:
        """Ids of every clue handed on so far."""
        if not self.path.exists():
            return set()
        with self._locked("r") as fh:
            return {entry["clue_id"] for entry in self._entries(fh.read())}

    def entries(self) -> list[dict[str, Any]]:
        """Every complete ledger line, oldest first."""
        if not self.path.exists():
            return []
        with self._locked("r") as fh:
            return list(self._entries(fh.read()))

    def hand_on(self, clues: Sequence[PatchClue], *, out_dir: Path) -> list[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked("a+") as fh:
            fh.seek(0)
            text = fh.read()
            seen = {entry["clue_id"] for entry in self._entries(text)}
            handed_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
            features = clues_feature_collection(clues)["features"]
            lines, new = [], []
            for clue, feature in zip(clues, features, strict=True):
                if clue.clue_id in seen:
                    continue
                seen.add(clue.clue_id)
                new.append(clue.clue_id)
                record = {
                    "clue_id": clue.clue_id,
                    "aoi": clue.aoi,
                    "handed_at": handed_at,
                    "out_dir": str(out_dir),
                    "feature": feature,
                }
                lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
            if lines:
                if not text.endswith("\n"):  # drop a last line a crash cut short
                    complete = text[: text.rfind("\n") + 1]
                    os.ftruncate(fh.fileno(), len(complete.encode("utf-8")))
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
        return new

    @contextmanager
    def _locked(self, mode: str) -> Iterator[IO[str]]:
        try:
            with open(self.path, mode, encoding="utf-8") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX if "a" in mode else fcntl.LOCK_SH)
                yield fh
        except OSError as exc:
            raise SinkError(f"cannot use the hand-off ledger {self.path}: {exc.strerror}") from None

    def _entries(self, text: str) -> Iterator[dict[str, Any]]:
        lines = text.split("\n")
        # after the final newline: nothing, or a line a crash cut short (not handed on)
        for number, line in enumerate(lines[:-1], start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or not isinstance(entry.get("clue_id"), str):
                    raise ValueError("not a ledger entry")
            except ValueError:
                raise SinkError(
                    f"hand-off ledger {self.path} line {number} is not a ledger entry; repair or "
                    "remove that line (every clue on a removed line is handed on again)"
                ) from None
            yield entry


class TrackerSink:
    """Ingests each AOI's published ``clues.geojson`` into the case tracker (deduplicated there:
    a clue already ingested changes nothing)."""

    def __init__(self, db_url: str, *, issue_probable: bool = False) -> None:
        self.db_url = db_url
        self.issue_probable = issue_probable
        """Open cases for clues of probable alerts too (``alerts.issue_probable``)."""

    def hand_on(self, clues: Sequence[PatchClue], *, out_dir: Path) -> list[str]:
        from .tracker import TrackerDB
        from .tracker.rejects import default_rejects_path, write_rejects
        from .tracker.settings import TrackerSettings
        from .tracker.webhook import WebhookConfig, ingest_and_hand_off

        if not clues:
            return []
        # the published file, so the cases' evidence paths point at the outputs that stay
        geojson = Path(out_dir) / "clues.geojson"
        db = TrackerDB.open(self.db_url, migrate=db_url_is_sqlite(self.db_url))
        try:
            # new and changed cases also go to the webhook of $CHANGEDETECT_WEBHOOK_URL (bounded:
            # a dead receiver keeps them queued and never fails the night)
            report, _ = ingest_and_hand_off(
                db,
                geojson,
                webhook=WebhookConfig.from_env(),
                actor="nightly",
                settings=TrackerSettings(issue_probable=self.issue_probable),
            )
        finally:
            db.close()
        # a clue the ledger cannot store is not handed on; it waits beside the night for people
        rejects = write_rejects(default_rejects_path(geojson), report.rejected)
        if rejects is not None:
            first = report.rejected[0]
            log.warning(
                "%d clues could not go to the tracker (set aside in %s); the first, %s: %s",
                len(report.rejected),
                rejects,
                first.clue_id or f"feature #{first.index}",
                first.reason,
            )
        # a held clue (its alert still probable) is not handed on: its site comes back confirmed
        return [o.clue_id for o in report.outcomes if o.action not in ("unchanged", "held")]

    def look_back(self, measure: Callable[[Any], Any]) -> dict[str, int]:
        """The tracker's look-back with a `measure(footprint) -> FootprintSignal | None` from the
        night's imagery; returns its counts."""
        from .tracker import TrackerDB
        from .tracker.lookback import SiteSignal, look_back

        def tracker_measure(footprint: Any) -> SiteSignal | None:
            signal = measure(footprint)
            if signal is None:
                return None
            return SiteSignal(signal.bare_fraction, signal.built_fraction, signal.ndvi_change)

        db = TrackerDB.open(self.db_url, migrate=db_url_is_sqlite(self.db_url))
        try:
            report = look_back(db, tracker_measure, actor="nightly")
        finally:
            db.close()
        return {
            "examined": report.examined,
            "no_signal": report.no_signal,
            "relapses": len(report.relapses),
            "escalated": len(report.escalated),
        }


def db_url_is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def default_sink(config: RunConfig) -> ClueSink:
    """The tracker when a database is configured (``tracker.db``, else ``CHANGEDETECT_DB`` or
    the file ``CHANGEDETECT_DB_FILE`` names), else the JSONL ledger under ``output.dir``."""
    from .tracker.db import db_url_from_env

    url = config.tracker.db or db_url_from_env()
    if url:
        return TrackerSink(url, issue_probable=config.alerts.issue_probable)
    return JsonlLedger(Path(config.output.dir) / LEDGER_NAME)
