"""The field verification record: the officer's position on verdict events, and site photos.

Revision ID: 0004
Revises: 0003
Create Date: 2025-07-10

Written out in full, like 0001: ``EventPosition`` and ``CasePhoto`` in ``models.py`` must match
what this creates. Only new tables: the events themselves are unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``event_positions`` and ``case_photos``."""
    op.create_table(
        "event_positions",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("accuracy_m", sa.Float(), nullable=True),
        sa.Column("taken_at", _utc(), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.CheckConstraint(
            "lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180",
            name=op.f("ck_event_positions_range"),
        ),
        sa.CheckConstraint(
            "accuracy_m IS NULL OR accuracy_m >= 0", name=op.f("ck_event_positions_accuracy")
        ),
        sa.CheckConstraint(
            "source IN ('device', 'manual')", name=op.f("ck_event_positions_source")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["case_events.id"],
            name=op.f("fk_event_positions_event_id_case_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_event_positions")),
    )

    op.create_table(
        "case_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("media_type", sa.String(length=20), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=True),
        sa.Column("uploaded_by", sa.String(length=200), nullable=False),
        sa.Column("uploaded_at", _utc(), nullable=False),
        sa.Column("exif_lat", sa.Float(), nullable=True),
        sa.Column("exif_lon", sa.Float(), nullable=True),
        sa.Column("exif_taken_at", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "media_type IN ('image/jpeg', 'image/png', 'image/webp')",
            name=op.f("ck_case_photos_media_type"),
        ),
        sa.CheckConstraint(
            "byte_size > 0 AND width > 0 AND height > 0", name=op.f("ck_case_photos_size")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_photos_case_id_cases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["case_events.id"],
            name=op.f("fk_case_photos_event_id_case_events"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_photos")),
        sa.UniqueConstraint("case_id", "sha256", name=op.f("uq_case_photos_case_sha256")),
    )
    op.create_index(op.f("ix_case_photos_case_id"), "case_photos", ["case_id"])
    op.create_index(op.f("ix_case_photos_event_id"), "case_photos", ["event_id"])


def downgrade() -> None:
    """Drop both tables (the photo files stay on disk)."""
    op.drop_table("case_photos")
    op.drop_table("event_positions")
