"""Schema migrations, run programmatically: ``upgrade(db_url)`` / ``downgrade(db_url, rev)``.

The Alembic scripts live in ``changedetect/tracker/migrations`` (a package, so they ship with
changedetect); no ``alembic.ini`` is needed. The application creates tables only through these
migrations, never with ``create_all``.
"""

from __future__ import annotations

import time
import warnings
import zlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from .db import is_retryable, log, make_engine, redact, resolve_db_url
from .errors import SchemaOutdatedError, TrackerDatabaseError
from .spatial import comparison_filters

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = zlib.crc32(b"changedetect.tracker.migrate")


def alembic_config(db_url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations and ``db_url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config is ConfigParser-based: a literal % in a password must be doubled
    config.set_main_option("sqlalchemy.url", resolve_db_url(db_url).replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision this version of changedetect knows."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise TrackerDatabaseError("no tracker migrations found in the package")
    return head


def _url_of(target: str | Engine | None) -> str:
    if isinstance(target, Engine):
        return target.url.render_as_string(hide_password=False)
    return resolve_db_url(target)


def _run(target: str | Engine | None, action: str, revision: str) -> None:
    engine = target if isinstance(target, Engine) else make_engine(target)
    url = _url_of(target)
    config = alembic_config(url)
    try:
        # two processes migrating one database at once (first use of the embedded default by
        # concurrent ingests) must not both see "empty" and both create tables: take the write
        # lock first — SQLite BEGIN IMMEDIATE, a PostgreSQL advisory lock — then let Alembic
        # read the current revision
        with engine.execution_options(tracker_write=True).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
    except TrackerDatabaseError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "alembic", "psycopg", "sqlite3")):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TrackerDatabaseError(
                f"migration {action} to {revision} failed on {redact(url)}: {first}"
            ) from exc
        raise
    finally:
        if not isinstance(target, Engine):
            engine.dispose()


def upgrade(db_url: str | Engine | None = None, revision: str = "head") -> None:
    """Bring the database at ``db_url`` (a URL or an engine) up to ``revision`` (the newest)."""
    _run(db_url, "upgrade", revision)


def downgrade(db_url: str | Engine | None, revision: str) -> None:
    """Take the database back to ``revision`` (``base`` drops every tracker table and its data)."""
    _run(db_url, "downgrade", revision)


def current_revision(target: str | Engine | None = None) -> str | None:
    """The revision the database is at (None for an empty database)."""
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if not isinstance(target, Engine):
            engine.dispose()


def schema_differences(target: str | Engine | None = None) -> list[Any]:
    """How the database's schema differs from the models (Alembic's diff; [] when they match).

    Only tables and indexes the tracker owns are compared (see :func:`.spatial.comparison_filters`).
    Models of every feature must be imported first, or their tables count as differences.
    """
    from .models import Base

    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        with engine.connect() as connection, warnings.catch_warnings():
            # the PostGIS expression index is PostgreSQL's only: SQLite has nothing to compare
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
            options = {"compare_type": True, **comparison_filters(connection.dialect.name)}
            context = MigrationContext.configure(connection, opts=options)
            return compare_metadata(context, Base.metadata)
    finally:
        if not isinstance(target, Engine):
            engine.dispose()


def _read_revision(engine: Engine, attempts: int = 10) -> str | None:
    """The current revision, waiting out a concurrent first use of a new SQLite file.

    SQLite answers "database is locked" without waiting while another connection switches a
    fresh file to WAL mode; those answers are retried, everything else is reported at once.
    """
    delay = 0.05
    for attempt in range(1, attempts + 1):
        try:
            return current_revision(engine)
        except DBAPIError as exc:
            if attempt < attempts and is_retryable(exc):
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            raise TrackerDatabaseError(
                f"cannot open tracker database {redact(str(engine.url))}: {first}"
            ) from None
    raise AssertionError("unreachable")


def ensure_schema(engine: Engine, *, migrate: bool = False) -> None:
    """Check (or with ``migrate``, bring) the database at the newest schema."""
    head = head_revision()
    current = _read_revision(engine)
    if current == head:
        return
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))  # the scripts need no URL
    known = {s.revision for s in scripts.walk_revisions()}
    if current is not None and current not in known:
        raise SchemaOutdatedError(
            f"tracker database {redact(str(engine.url))} is at revision {current}, newer than "
            "this changedetect knows: upgrade changedetect"
        )
    if not migrate:
        raise SchemaOutdatedError(
            f"tracker database {redact(str(engine.url))} is at revision {current or 'none'}, "
            f"this changedetect needs {head}: run `changedetect tracker migrate`"
        )
    for attempt in range(1, 6):
        try:
            upgrade(engine)
            break
        except TrackerDatabaseError as exc:
            # see _read_revision: a concurrent first use may make SQLite answer "locked" at once
            cause = exc.__cause__
            if attempt == 5 or not (isinstance(cause, DBAPIError) and is_retryable(cause)):
                raise
            time.sleep(0.1 * attempt)
    log.info("tracker database %s migrated to revision %s", redact(str(engine.url)), head)
