"""The case tracker: the ledger that follows each patch clue from issue to verdict.

Service layer (what the CLI and the HTTP API call); every write takes a :class:`TrackerDB`
(own retried transaction) or a SQLAlchemy ``Session`` (inside the caller's transaction):

- :func:`ingest` — a night's clues into cases, deduplicated; :class:`IngestReport`
- :func:`transition`, :func:`reassign`, :func:`escalate_overdue` — the lifecycle
- :func:`import_sites`, :func:`read_sites` — permits and restoration sites
- :func:`look_back` with a ``measure`` returning :class:`SiteSignal` — relapses
- :func:`list_cases` / :class:`CaseQuery`, :func:`get_case`, :func:`cases_geojson`,
  :func:`clue_statuses`, :func:`monthly_report` — reads (take a ``Session``: ``db.session()``)
- :func:`upgrade`, :func:`downgrade`, :func:`current_revision` — schema migrations
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers and IDEs
    from .clues import Clue, parse_clues, read_clues_file
    from .db import TrackerDB, make_engine, resolve_db_url
    from .errors import (
        CaseNotFoundError,
        ClueFormatError,
        ConcurrencyError,
        InvalidTransitionError,
        SchemaOutdatedError,
        SiteRegistryError,
        TrackerDatabaseError,
        TrackerError,
    )
    from .ingest import ClueOutcome, IngestReport, ingest
    from .lifecycle import escalate_overdue, reassign, transition
    from .lookback import LookBackReport, Measure, Relapse, SiteSignal, look_back
    from .migrate import current_revision, downgrade, head_revision, upgrade
    from .queries import (
        CaseDetail,
        CasePage,
        CaseQuery,
        CaseSummary,
        DetectionView,
        EventView,
        cases_geojson,
        clue_statuses,
        get_case,
        list_cases,
    )
    from .report import CountyMonth, MonthlyReport, monthly_report
    from .settings import DB_ENV_VAR, DEFAULT_DB_URL, TrackerSettings
    from .sites import SiteImportReport, SiteRecord, import_sites, read_sites
    from .states import CASE_STATES, FINAL_STATES, OPEN_STATES, TRANSITIONS

#: Public name → submodule. Imported on first use (PEP 562), so that the main CLI can register
#: the tracker's commands without paying for SQLAlchemy, shapely and pyproj at start-up.
_EXPORTS: dict[str, str] = {
    "Clue": "clues",
    "parse_clues": "clues",
    "read_clues_file": "clues",
    "DB_ENV_VAR": "settings",
    "DEFAULT_DB_URL": "settings",
    "TrackerDB": "db",
    "make_engine": "db",
    "resolve_db_url": "db",
    "CaseNotFoundError": "errors",
    "ClueFormatError": "errors",
    "ConcurrencyError": "errors",
    "InvalidTransitionError": "errors",
    "SchemaOutdatedError": "errors",
    "SiteRegistryError": "errors",
    "TrackerDatabaseError": "errors",
    "TrackerError": "errors",
    "ClueOutcome": "ingest",
    "IngestReport": "ingest",
    "ingest": "ingest",
    "escalate_overdue": "lifecycle",
    "reassign": "lifecycle",
    "transition": "lifecycle",
    "LookBackReport": "lookback",
    "Measure": "lookback",
    "Relapse": "lookback",
    "SiteSignal": "lookback",
    "look_back": "lookback",
    "current_revision": "migrate",
    "downgrade": "migrate",
    "head_revision": "migrate",
    "upgrade": "migrate",
    "CaseDetail": "queries",
    "CasePage": "queries",
    "CaseQuery": "queries",
    "CaseSummary": "queries",
    "DetectionView": "queries",
    "EventView": "queries",
    "cases_geojson": "queries",
    "clue_statuses": "queries",
    "get_case": "queries",
    "list_cases": "queries",
    "CountyMonth": "report",
    "MonthlyReport": "report",
    "monthly_report": "report",
    "TrackerSettings": "settings",
    "SiteImportReport": "sites",
    "SiteRecord": "sites",
    "import_sites": "sites",
    "read_sites": "sites",
    "CASE_STATES": "states",
    "FINAL_STATES": "states",
    "OPEN_STATES": "states",
    "TRANSITIONS": "states",
}


__all__ = [
    "CASE_STATES",
    "DB_ENV_VAR",
    "DEFAULT_DB_URL",
    "FINAL_STATES",
    "OPEN_STATES",
    "TRANSITIONS",
    "CaseDetail",
    "CaseNotFoundError",
    "CasePage",
    "CaseQuery",
    "CaseSummary",
    "Clue",
    "ClueFormatError",
    "ClueOutcome",
    "ConcurrencyError",
    "CountyMonth",
    "DetectionView",
    "EventView",
    "IngestReport",
    "InvalidTransitionError",
    "LookBackReport",
    "Measure",
    "MonthlyReport",
    "Relapse",
    "SchemaOutdatedError",
    "SiteImportReport",
    "SiteRecord",
    "SiteRegistryError",
    "SiteSignal",
    "TrackerDB",
    "TrackerDatabaseError",
    "TrackerError",
    "TrackerSettings",
    "cases_geojson",
    "clue_statuses",
    "current_revision",
    "downgrade",
    "escalate_overdue",
    "get_case",
    "head_revision",
    "import_sites",
    "ingest",
    "list_cases",
    "look_back",
    "make_engine",
    "monthly_report",
    "parse_clues",
    "read_clues_file",
    "read_sites",
    "reassign",
    "resolve_db_url",
    "transition",
    "upgrade",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    loaded = importlib.import_module(f"{__name__}.{module}")
    value = getattr(loaded, name)
    globals()[name] = value  # later look-ups skip this function
    if _EXPORTS.get(module) == module:
        # loading a submodule makes it an attribute of the package: ``ingest`` the module would
        # hide ``ingest`` the function from a later ``from changedetect.tracker import ingest``
        globals()[module] = getattr(loaded, module)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
