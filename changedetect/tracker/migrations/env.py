"""Alembic environment: runs the tracker migrations on the connection :mod:`..migrate` passes.

Run through :func:`changedetect.tracker.migrate.upgrade` (or ``changedetect tracker migrate``);
the connection comes in ``config.attributes["connection"]``, already configured by
:func:`changedetect.tracker.db.make_engine` (SQLite pragmas and transaction handling included).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from changedetect.tracker.db import make_engine
from changedetect.tracker.models import Base
from changedetect.tracker.spatial import comparison_filters

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later migrations get copy-and-move batch mode
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        **comparison_filters(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over the given connection, or over a fresh engine for ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the tracker migrations run online only (changedetect tracker migrate)")
run_migrations_online()
