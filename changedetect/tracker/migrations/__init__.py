"""Alembic migrations of the tracker schema, run programmatically by :mod:`..migrate`."""
