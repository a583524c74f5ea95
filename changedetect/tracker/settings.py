"""Tunable rules of the tracker (deadlines, overlap and growth thresholds), resolved once."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

#: Environment variable naming the database URL.
DB_ENV_VAR = "CHANGEDETECT_DB"
#: Environment variable naming a file that holds the database URL: the Docker and Kubernetes
#: secrets convention, so a password never has to sit on a command line or in ``env``.
DB_FILE_ENV_VAR = "CHANGEDETECT_DB_FILE"
#: The embedded default: a SQLite file in the working directory.
DEFAULT_DB_URL = "sqlite:///changedetect-tracker.db"
#: How long an API write waits for another writer's lock before answering 503 (seconds): an
#: ingest frees the lock between its chunks well within it, and a person is not left hanging.
API_BUSY_WAIT_S = 5.0


@dataclass(frozen=True)
class TrackerSettings:
    """Thresholds that decide deduplication, site matching, look-back and deadlines, and the
    HTTP API's limits (upload size, session lifetimes)."""

    deadline_days: int = 30
    """Days from a case's issue to its verification deadline."""

    issue_probable: bool = False
    """Open cases for clues whose alert is still ``probable`` (seen on one clear acquisition, or
    not yet on enough later ones). Off: such a clue is held back until a later run confirms its
    alert, so a cloud edge or a wet field sends nobody out; it still updates an open case over
    its site. Clues of ``dropped`` alerts never open a case."""

    min_overlap: float = 0.30
    """A clue belongs to a case when their intersection covers at least this share of the
    smaller of the two (areas measured in the local UTM zone)."""

    regrowth_factor: float = 1.5
    """A clue over a case closed as false alarm / compliant opens a new (linked) case only if
    its area is at least this multiple of the old case's area ..."""

    regrowth_min_added_m2: float = 1000.0
    """... and at least this many m² larger (0.1 ha: the pipeline's mapping unit)."""

    site_overlap_min: float = 0.01
    """Share of a clue's area that must fall on a known site for the clue to touch it; keeps
    shared borders and rounding from tagging neighbours."""

    permit_inside_min: float = 0.99
    """Share of a clue's area that must lie inside valid permits for it to count as inside."""

    relapse_min_growth: float = 0.10
    """Look-back: rise of the bare/built fraction over the lowest level seen since closure (or
    since the last case at a restoration site) that counts as a relapse ..."""

    relapse_min_area_m2: float = 1000.0
    """... provided the added bare/built area is at least this many m²."""

    fresh_disturbance_fraction: float = 0.25
    """Look-back without an earlier observation: bare/built share that, together with ..."""

    fresh_ndvi_drop: float = -0.10
    """... a vegetation change at or below this (the night's before→after NDVI change), counts
    as a new disturbance."""

    photo_max_bytes: int = 10 * 1024 * 1024
    """Largest field photo the API accepts (bytes); a larger upload is refused with 413 as soon
    as its bytes pass this, before the rest is read. 10 MB holds a full-resolution phone JPEG."""

    session_idle_minutes: int = 120
    """A review-page session ends after this long without a request ..."""

    session_max_hours: int = 12
    """... and this long after its login whatever happens (one field day)."""

    def __post_init__(self) -> None:
        if self.deadline_days < 1:
            raise ConfigError(f"deadline_days must be at least 1, got {self.deadline_days}")
        for name in ("min_overlap", "site_overlap_min", "permit_inside_min"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {value}")
        if self.photo_max_bytes < 1:
            raise ConfigError(f"photo_max_bytes must be at least 1, got {self.photo_max_bytes}")
        if self.regrowth_factor < 1.0:
            raise ConfigError(f"regrowth_factor must be at least 1, got {self.regrowth_factor}")
        if not 0.0 < self.relapse_min_growth <= 1.0:
            raise ConfigError(
                f"relapse_min_growth must be in (0, 1], got {self.relapse_min_growth}"
            )
        for name in ("session_idle_minutes", "session_max_hours"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
