"""Initial tracker schema: cases, detections, events, tags, known sites, site observations.

Revision ID: 0001
Revises:
Create Date: 2025-06-30

Written out in full (not generated at run time from the models) so that this revision means
the same schema forever; ``tests/tracker/test_migrations.py`` checks the models still match
the head of the chain.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

STATES = "'issued', 'verifying', 'compliant', 'false_alarm', 'violation', 'rectifying', 'closed'"
TAGS = "'permitted', 'outside_permit', 'restoration_breach'"


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _bbox() -> list[sa.Column]:
    return [
        sa.Column(name, sa.Float(), nullable=False)
        for name in ("min_lon", "min_lat", "max_lon", "max_lat")
    ]


def upgrade() -> None:
    """Create every tracker table."""
    op.create_table(
        "known_sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("geometry", sa.LargeBinary(), nullable=False),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("imported_at", _utc(), nullable=False),
        *_bbox(),
        sa.CheckConstraint("kind IN ('permit', 'restoration')", name=op.f("ck_known_sites_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_known_sites")),
        sa.UniqueConstraint("kind", "name", name=op.f("uq_known_sites_kind_name")),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("aoi", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("change_type", sa.String(length=40), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("confidence_level", sa.String(length=20), nullable=True),
        sa.Column("clue_priority", sa.String(length=10), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("priority_rank", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(length=200), nullable=True),
        sa.Column("zone_tier", sa.String(length=100), nullable=True),
        sa.Column("county", sa.String(length=200), nullable=True),
        sa.Column("assigned_county", sa.String(length=200), nullable=True),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("linked_case_id", sa.Integer(), nullable=True),
        sa.Column("link_reason", sa.String(length=20), nullable=True),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("geom_first", sa.LargeBinary(), nullable=False),
        sa.Column("geom_latest", sa.LargeBinary(), nullable=False),
        sa.Column("geom_union", sa.LargeBinary(), nullable=False),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("first_detected_on", sa.Date(), nullable=False),
        sa.Column("last_detected_on", sa.Date(), nullable=False),
        sa.Column("deadline", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("verified_at", _utc(), nullable=True),
        sa.Column("closed_at", _utc(), nullable=True),
        *_bbox(),
        sa.CheckConstraint(f"state IN ({STATES})", name=op.f("ck_cases_state")),
        sa.CheckConstraint(
            "link_reason IN ('relapse', 'regrowth')", name=op.f("ck_cases_link_reason")
        ),
        sa.ForeignKeyConstraint(
            ["linked_case_id"],
            ["cases.id"],
            name=op.f("fk_cases_linked_case_id_cases"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["known_sites.id"],
            name=op.f("fk_cases_site_id_known_sites"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
    )
    indexed = ("assigned_county", "created_at", "last_detected_on", "linked_case_id", "site_id")
    for column in indexed:
        op.create_index(op.f(f"ix_cases_{column}"), "cases", [column])
    op.create_index("ix_cases_order", "cases", ["escalated", "priority_rank", "deadline"])
    op.create_index("ix_cases_state_bbox", "cases", ["state", "min_lon", "max_lon"])

    op.create_table(
        "case_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_events_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_events")),
    )
    op.create_index(op.f("ix_case_events_case_id"), "case_events", ["case_id"])

    op.create_table(
        "case_tags",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=30), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("added_at", _utc(), nullable=False),
        sa.CheckConstraint(f"tag IN ({TAGS})", name=op.f("ck_case_tags_tag")),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_tags_case_id_cases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["known_sites.id"],
            name=op.f("fk_case_tags_site_id_known_sites"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("case_id", "tag", name=op.f("pk_case_tags")),
    )

    op.create_table(
        "detections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("clue_id", sa.String(length=200), nullable=False),
        sa.Column("detected_on", sa.Date(), nullable=False),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("change_type", sa.String(length=40), nullable=False),
        sa.Column("geometry", sa.LargeBinary(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("chip_before", sa.Text(), nullable=True),
        sa.Column("chip_after", sa.Text(), nullable=True),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.Column("ingested_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_detections_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detections")),
        # one clue, one row, whoever ingests it and however often: the dedup backstop
        sa.UniqueConstraint("clue_id", name=op.f("uq_detections_clue_id")),
    )
    op.create_index(op.f("ix_detections_case_id"), "detections", ["case_id"])

    op.create_table(
        "site_observations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=40), nullable=False),
        sa.Column("observed_on", sa.Date(), nullable=False),
        sa.Column("bare_fraction", sa.Float(), nullable=False),
        sa.Column("built_fraction", sa.Float(), nullable=False),
        sa.Column("ndvi_change", sa.Float(), nullable=True),
        sa.Column("disturbed", sa.Float(), nullable=False),
        sa.Column("relapse_case_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["relapse_case_id"],
            ["cases.id"],
            name=op.f("fk_site_observations_relapse_case_id_cases"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_observations")),
        sa.UniqueConstraint("target", "observed_on", name=op.f("uq_site_observations_target_day")),
    )
    op.create_index(op.f("ix_site_observations_target"), "site_observations", ["target"])


def downgrade() -> None:
    """Drop every tracker table (and its data)."""
    tables = ("site_observations", "detections", "case_tags", "case_events", "cases", "known_sites")
    for table in tables:
        op.drop_table(table)
