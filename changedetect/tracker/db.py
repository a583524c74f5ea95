"""The store: engines, sessions and write transactions that are safe under concurrency.

Two engines are supported:

- **SQLite** (the embedded default, ``sqlite:///changedetect-tracker.db``): WAL journal so readers
  never wait for a writer, and every write transaction starts with ``BEGIN IMMEDIATE``: it takes
  the database's single write lock *before* reading, so two ingests cannot both read "no case
  here" and both open one. A writer that finds the lock taken waits (``busy_timeout``).
- **PostgreSQL** (multi-user): writes that open cases take a transaction-scoped advisory lock
  (:func:`lock_for_case_writes`); transitions lock their case row (``SELECT ... FOR UPDATE``).

Under both, :meth:`TrackerDB.run_write` re-runs a unit of work in a fresh transaction when it
hits a transient conflict (unique violation from a concurrent insert, serialization failure,
deadlock, "database is locked"), and the unique key on ``detections.clue_id`` is the last line:
whatever happens, one clue is stored once.

How long a write waits for another writer's lock is the :class:`TrackerDB`'s ``busy_wait_s``:
unbounded callers (the nightly ingest, the CLI) wait as long as their retries allow, while the
API gives up after a few seconds with :class:`~.errors.DatabaseBusyError` (a 503 with
``Retry-After``) rather than holding a person's request for minutes.

Engines are made with ``hide_parameters=True``: a database error's text names the statement but
never the values bound to it, so no clue data, token hash or password reaches a log or stderr.
"""

from __future__ import annotations

import logging
import os
import random
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .errors import ConcurrencyError, DatabaseBusyError, TrackerDatabaseError
from .settings import DB_ENV_VAR, DB_FILE_ENV_VAR, DEFAULT_DB_URL

log = logging.getLogger("changedetect.tracker")

T = TypeVar("T")

#: How long a SQLite writer waits for the write lock before failing (seconds).
SQLITE_BUSY_TIMEOUT_S = 60.0
#: A writer waiting for the SQLite write lock tries it again every 100 ms at most (SQLite's busy
#: handler) and is not queued: a long job that began its next transaction the instant it
#: committed would take the lock straight back. Pausing a little longer than that lets it in.
SQLITE_HANDOFF_S = 0.12
#: Key of the PostgreSQL advisory lock held by every write that may open cases: one key for the
#: whole ledger, because AOIs may overlap and a per-AOI key could not stop two AOIs' ingests from
#: opening two cases on the same ground. Ingests are short batches, so serialising them is cheap.
CASE_WRITE_LOCK_KEY = zlib.crc32(b"changedetect.tracker.case-writes")
#: PostgreSQL SQLSTATE of a lock wait that ran out (``lock_timeout``): lock_not_available.
_LOCK_WAIT_SQLSTATES = {"55P03"}
#: PostgreSQL SQLSTATEs worth a retry: unique_violation, serialization_failure, deadlock_detected,
#: and a lock wait that ran out.
_RETRY_SQLSTATES = {"23505", "40001", "40P01", *_LOCK_WAIT_SQLSTATES}


def read_db_url_file(path: str | Path) -> str:
    """The database URL kept in a file (a mounted secret): its one line, blanks stripped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise TrackerDatabaseError(f"database URL file {path}: cannot read it ({reason})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        what = "is empty" if not lines else f"holds {len(lines)} lines"
        raise TrackerDatabaseError(f"database URL file {path} {what}: it must hold one URL")
    return lines[0]


def resolve_db_url(url: str | None = None, url_file: str | Path | None = None) -> str:
    """The database URL: ``url`` (``--db``), else read from ``url_file`` (``--db-file``), else
    ``$CHANGEDETECT_DB``, else read from the file ``$CHANGEDETECT_DB_FILE`` names, else the
    SQLite default. A password belongs in the environment or the file, never on a command line
    (where ``ps`` shows it to every user of the machine)."""
    if url and url_file:
        raise TrackerDatabaseError("give the database as --db URL or --db-file PATH, not both")
    if url:
        return url
    if url_file:
        return read_db_url_file(url_file)
    return db_url_from_env() or DEFAULT_DB_URL


def db_url_from_env() -> str | None:
    """``$CHANGEDETECT_DB``, else the URL in the file ``$CHANGEDETECT_DB_FILE`` names, else
    None."""
    env_url, env_file = os.environ.get(DB_ENV_VAR), os.environ.get(DB_FILE_ENV_VAR)
    if env_url and env_file:
        raise TrackerDatabaseError(
            f"${DB_ENV_VAR} and ${DB_FILE_ENV_VAR} are both set: keep one of them"
        )
    if env_file:
        return read_db_url_file(env_file)
    return env_url or None


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"


def make_engine(url: str | None = None) -> Engine:
    """An engine for the tracker, with the per-engine settings concurrency relies on."""
    url = resolve_db_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # not echoed: what failed to parse may still hold a password
        raise TrackerDatabaseError(
            "the database URL is not a URL: use e.g. sqlite:///tracker.db or "
            "postgresql+psycopg://user:password@host/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
        try:
            return create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
        except ModuleNotFoundError as exc:
            raise TrackerDatabaseError(
                f"no driver for {redact(url)}: pip install 'psycopg[binary]' ({exc})"
            ) from None
    raise TrackerDatabaseError(
        f"database URL {redact(url)} uses {backend!r}: the tracker supports sqlite and postgresql"
    )


def _sqlite_engine(url: Any) -> Engine:
    database = url.database
    in_memory = not database or database == ":memory:"
    if not in_memory:
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise TrackerDatabaseError(
                f"SQLite database {database}: folder {parent} does not exist; create it first"
            )
    kwargs: dict[str, Any] = {
        "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S},
        "hide_parameters": True,
    }
    if in_memory:
        # one shared connection, or every checkout would see its own empty database
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control away from the sqlite3 module, so that "begin" below decides
        # how each transaction starts (the SQLAlchemy-documented recipe)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        # set on every transaction: pooled connections serve bounded and unbounded callers
        wait_s = options.get("tracker_lock_wait_s", SQLITE_BUSY_TIMEOUT_S)
        conn.exec_driver_sql(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("tracker_write") else "BEGIN")

    return engine


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a conflict with a concurrent writer that a fresh attempt may clear."""
    if isinstance(exc, IntegrityError):
        code = getattr(exc.orig, "sqlstate", None)
        if code is not None:
            return code == "23505"
        return "UNIQUE" in str(exc.orig).upper()  # sqlite3 has no SQLSTATE
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None)
        if code in _RETRY_SQLSTATES:
            return True
        return is_lock_wait(exc)
    return False


def is_lock_wait(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that gave up waiting for a lock another writer held."""
    if not isinstance(exc, OperationalError):
        return False
    if getattr(exc.orig, "sqlstate", None) in _LOCK_WAIT_SQLSTATES:
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database table is locked" in message


def lock_for_case_writes(session: Session) -> None:
    """Serialise the writes that may open cases (ingest, look-back) for this transaction.

    PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback. SQLite: the
    write transactions of :class:`TrackerDB` already hold the database write lock from their
    first statement (``BEGIN IMMEDIATE``), so there is nothing more to take.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CASE_WRITE_LOCK_KEY})


class TrackerDB:
    """A tracker database: an engine, read sessions and retried write transactions.

    ``busy_wait_s`` bounds how long a write waits for a lock another writer holds (the SQLite
    write lock, a PostgreSQL row or advisory lock), over all its attempts; past it the write
    raises :class:`DatabaseBusyError`. None waits as long as the retries allow, which suits
    batch jobs; :meth:`with_busy_wait` gives a bounded view for interactive callers.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        busy_wait_s: float | None = None,
    ) -> None:
        if busy_wait_s is not None and not busy_wait_s > 0:
            raise TrackerDatabaseError(f"busy_wait_s must be positive seconds, got {busy_wait_s}")
        self.url = resolve_db_url(url) if engine is None else engine.url.render_as_string(False)
        self.engine = engine if engine is not None else make_engine(self.url)
        self.busy_wait_s = busy_wait_s
        self._read = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = False) -> TrackerDB:
        """Open the database and check it is at this version's schema.

        ``migrate=True`` upgrades it first (what the embedded SQLite default wants); otherwise
        a database behind the migrations raises :class:`SchemaOutdatedError` naming the command.
        """
        from .migrate import ensure_schema

        db = cls(url)
        try:
            ensure_schema(db.engine, migrate=migrate)
        except BaseException:
            db.close()
            raise
        return db

    def with_busy_wait(self, seconds: float) -> TrackerDB:
        """The same database (same engine and pool) with writes that wait at most ``seconds``
        for another writer's lock. Closing either closes the engine they share."""
        return TrackerDB(engine=self.engine, busy_wait_s=seconds)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def session(self) -> Session:
        """A session for reading (no locks taken). To write in a transaction of your own, use
        :meth:`write`: on SQLite it takes the write lock up front."""
        return self._read()

    def _write_session(self, lock_wait_s: float | None) -> Session:
        """A session whose transaction is a write (SQLite: ``BEGIN IMMEDIATE``) waiting at
        most ``lock_wait_s`` for locks (None: the engine's own patience)."""
        options: dict[str, Any] = {"tracker_write": True}
        if lock_wait_s is not None:
            options["tracker_lock_wait_s"] = lock_wait_s
        return Session(self.engine.execution_options(**options), expire_on_commit=False)

    def _limit_lock_wait(self, session: Session, lock_wait_s: float | None) -> None:
        # SQLite's bound is its busy timeout, set as the transaction begins; PostgreSQL's is
        # this transaction's lock_timeout (0 would mean no limit, hence at least 1 ms)
        if lock_wait_s is not None and self.dialect == "postgresql":
            timeout = f"{max(1, int(lock_wait_s * 1000))}ms"
            session.execute(
                text("SELECT set_config('lock_timeout', :timeout, true)"), {"timeout": timeout}
            )

    def _busy(self, waited_s: float) -> DatabaseBusyError:
        return DatabaseBusyError(
            f"database {redact(self.url)} is busy: another write held its lock for more than "
            f"{waited_s:.1f} s; try again shortly",
            retry_after_s=waited_s,
        )

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on error. Not retried."""
        with self._write_session(self.busy_wait_s) as session:
            try:
                with session.begin():
                    self._limit_lock_wait(session, self.busy_wait_s)
                    yield session
            except OperationalError as exc:
                if self.busy_wait_s is not None and is_lock_wait(exc):
                    raise self._busy(self.busy_wait_s) from exc
                raise _database_error(self.url, exc) from exc

    def run_write(self, work: Callable[[Session], T], *, attempts: int = 8) -> T:
        """Run ``work(session)`` in a write transaction, re-running it on transient conflicts.

        ``work`` must do all its reads inside the session it is given (so a retry sees what the
        concurrent writer committed) and must not commit itself. With ``busy_wait_s``, lock
        waits over all attempts end by then with :class:`DatabaseBusyError`.
        """
        deadline = None if self.busy_wait_s is None else time.monotonic() + self.busy_wait_s
        delay = 0.05
        for attempt in range(1, attempts + 1):
            lock_wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                with self._write_session(lock_wait_s) as session, session.begin():
                    self._limit_lock_wait(session, lock_wait_s)
                    return work(session)
            except DBAPIError as exc:
                if not is_retryable(exc):
                    if isinstance(exc, OperationalError):
                        raise _database_error(self.url, exc) from exc
                    raise
                out_of_time = deadline is not None and time.monotonic() + delay >= deadline
                if is_lock_wait(exc) and (out_of_time or attempt == attempts):
                    raise self._busy(self.busy_wait_s or SQLITE_BUSY_TIMEOUT_S) from exc
                if out_of_time or attempt == attempts:
                    raise ConcurrencyError(
                        f"{redact(self.url)}: a write still conflicted with concurrent writers "
                        f"after {attempt} attempts ({type(exc.orig).__name__}); try again"
                    ) from exc
                log.debug("write conflict (%s), retry %d", type(exc.orig).__name__, attempt)
                pause = delay * (1 + random.random())  # jitter: contenders drift apart
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def let_waiting_writers_in(self) -> None:
        """Between the transactions of a long job: give writers waiting for the lock their turn.

        PostgreSQL queues lock waiters, so only SQLite needs the pause."""
        if self.dialect == "sqlite":
            time.sleep(SQLITE_HANDOFF_S)

    def refresh_statistics(self) -> None:
        """Let the query planner see the ledger's present size and spread (after a big change).

        Without statistics SQLite guesses, and for a filtered case list it may pick the
        filter's index and sort a million rows rather than walk the list-order index and stop
        after a page. PostgreSQL's autovacuum keeps its own statistics; SQLite's are refreshed
        here from a bounded sample (``analysis_limit``), so this stays quick at any size.
        """
        if self.dialect != "sqlite":
            return
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA analysis_limit=1000")
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        except OperationalError as exc:  # busy or read-only: the planner keeps what it had
            log.warning("could not refresh the SQLite planner statistics: %s", exc.orig)

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    def __enter__(self) -> TrackerDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _database_error(url: str, exc: OperationalError) -> TrackerDatabaseError:
    """A one-line error for what the database refused (unreachable, locked, read-only ...)."""
    detail = str(exc.orig).strip()
    first = detail.splitlines()[0] if detail else type(exc.orig).__name__
    return TrackerDatabaseError(f"database {redact(url)}: {first}")
