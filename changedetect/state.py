"""Durable run state: per AOI, the newest acquisition a successful run has analysed, and the
alert state of its suspect changes.

Nightly runs read it to process only what is new, and write it only after every output of an AOI
is in place, so a run that fails or is killed is simply redone the next night.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

from shapely.geometry import mapping, shape

from .algorithms.alerts import Alert
from .errors import ConfigError
from .io.atomic import atomic_path

STATE_VERSION = 1


@dataclass(frozen=True)
class AoiState:
    """What the last successful run of one AOI did."""

    last_acquisition: dt.datetime
    """Newest after-window acquisition it analysed."""
    finished_at: dt.datetime
    """When its outputs were all in place (UTC)."""
    clues: int
    out_dir: str
    acquisitions: tuple[str, ...] = ()
    """Ids of the after-window acquisitions it analysed (empty in files of older releases): an
    acquisition of the newest day under another id (a source whose day got a better granule)
    is new."""


def _read_per_aoi(path: Path, versions: Collection[int], what: str, remedy: str) -> dict:
    """The per-AOI entries of a state file of one of `versions` ({} when there is none yet)."""
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") not in versions:
            expected = " or ".join(map(str, versions))
            raise ValueError(f"version {doc.get('version')!r}, expected {expected}")
        return dict(doc["aois"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{what} is unreadable ({exc}); {remedy}") from None


class RunState:
    """The state file of a run configuration (JSON, rewritten atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, dict]:
        return _read_per_aoi(
            self.path,
            (STATE_VERSION,),
            f"run state {self.path}",
            "move it away to start afresh (the next run then analyses the whole after window)",
        )

    def get(self, aoi: str) -> AoiState | None:
        entry = self._read().get(aoi)
        if entry is None:
            return None
        return AoiState(
            last_acquisition=dt.datetime.fromisoformat(entry["last_acquisition"]),
            finished_at=dt.datetime.fromisoformat(entry["finished_at"]),
            clues=int(entry["clues"]),
            out_dir=str(entry["out_dir"]),
            acquisitions=tuple(str(i) for i in entry.get("acquisitions", ())),
        )

    def record(self, aoi: str, state: AoiState) -> None:
        """Store `state` for `aoi`, keeping the other AOIs' entries."""
        aois = self._read()
        entry = asdict(state)
        entry["last_acquisition"] = state.last_acquisition.isoformat()
        entry["finished_at"] = state.finished_at.isoformat()
        entry["acquisitions"] = list(state.acquisitions)
        aois[aoi] = entry
        doc = {"version": STATE_VERSION, "aois": aois}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


ALERTS_VERSION = 3
#: Version 1 counted nights (``nights``); version 2 counts acquisitions (``observed``). A night of
#: version 1 is the date of its newest acquisition, so its entries read as version 2 unchanged.
#: Version 3 keeps each alert's ``site``; older entries read with their footprint as the site.
READABLE_ALERTS_VERSIONS = (1, 2, 3)


class AlertBook:
    """The alert state of every AOI (changedetect.algorithms.alerts), beside the run state: a
    JSON file rewritten atomically, so a run killed before it records leaves it as it was."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, list]:
        return _read_per_aoi(
            self.path,
            READABLE_ALERTS_VERSIONS,
            f"alert state {self.path}",
            "restore it from a backup, or move it away to start afresh (every alert is then new "
            "again)",
        )

    def get(self, aoi: str) -> list[Alert]:
        try:
            return [_alert_from_json(e) for e in self._read().get(aoi, [])]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"alert state {self.path}, AOI {aoi}: bad entry ({exc})") from None

    def history_before(self, aoi: str, day: str) -> str:
        """A digest of `aoi`'s alert history before `day` (the first acquisition a run analyses):
        all the alert state of that run's clues depends on (re-running it counts nothing twice),
        so a cached analysis stays valid however often the run is recorded."""
        history = sorted(
            [
                a.alert_id,
                [d for d in a.observed if d < day],
                a.dropped_on if a.dropped_on is not None and a.dropped_on < day else None,
            ]
            for a in self.get(aoi)
            if a.first_detected < day
        )
        return hashlib.sha256(json.dumps(history).encode()).hexdigest()[:16]

    def record(self, aoi: str, alerts: list[Alert]) -> None:
        """Store `alerts` for `aoi`, keeping the other AOIs' entries."""
        aois = self._read()
        aois[aoi] = [_alert_to_json(a) for a in alerts]
        doc = {"version": ALERTS_VERSION, "aois": aois}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _alert_to_json(alert: Alert) -> dict:
    entry = asdict(alert)
    entry["footprint"] = mapping(alert.footprint)
    entry["observed"] = list(alert.observed)
    entry["site"] = mapping(alert.where)
    return entry


def _alert_from_json(entry: dict) -> Alert:
    observed = entry["observed"] if "observed" in entry else entry["nights"]
    if not observed:
        raise ValueError("an alert with no observation")
    return Alert(
        alert_id=str(entry["alert_id"]),
        footprint=shape(entry["footprint"]),
        status=entry["status"],
        observed=tuple(sorted(str(n) for n in observed)),
        change_type=str(entry["change_type"]),
        clue_id=str(entry["clue_id"]),
        dropped_on=entry.get("dropped_on"),
        # versions before 3 kept no site: the footprint stands for it
        site=shape(entry["site"]) if entry.get("site") is not None else None,
    )
