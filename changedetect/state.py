"""Durable run state: per AOI, the newest acquisition a successful run has analysed.

Nightly runs read it to process only what is new, and write it only after every output of an AOI
is in place, so a run that fails or is killed is simply redone the next night.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

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


class RunState:
    """The state file of a run configuration (JSON, rewritten atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("version") != STATE_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {STATE_VERSION}")
            return dict(doc["aois"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"run state {self.path} is unreadable ({exc}); move it away to start afresh "
                "(the next run then analyses the whole after window)"
            ) from None

    def get(self, aoi: str) -> AoiState | None:
        entry = self._read().get(aoi)
        if entry is None:
            return None
        return AoiState(
            last_acquisition=dt.datetime.fromisoformat(entry["last_acquisition"]),
            finished_at=dt.datetime.fromisoformat(entry["finished_at"]),
            clues=int(entry["clues"]),
            out_dir=str(entry["out_dir"]),
        )

    def record(self, aoi: str, state: AoiState) -> None:
        """Store `state` for `aoi`, keeping the other AOIs' entries."""
        aois = self._read()
        entry = asdict(state)
        entry["last_acquisition"] = state.last_acquisition.isoformat()
        entry["finished_at"] = state.finished_at.isoformat()
        aois[aoi] = entry
        doc = {"version": STATE_VERSION, "aois": aois}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
