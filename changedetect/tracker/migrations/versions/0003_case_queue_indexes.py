"""Indexes in the case list's order, so a page of a million-case ledger needs no sort.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the list-order indexes, whole and per county, and those of urgent cases."""
    op.create_index("ix_cases_queue", "cases", ["priority_rank", "deadline", "id"])
    op.create_index("ix_cases_state_deadline", "cases", ["state", "deadline"])
    op.create_index(
        "ix_cases_county_escalated",
        "cases",
        ["assigned_county", "escalated", "priority_rank", "deadline", "id"],
    )
    op.create_index(
        "ix_cases_county_queue", "cases", ["assigned_county", "priority_rank", "deadline", "id"]
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_cases_county_escalated", table_name="cases")
    op.drop_index("ix_cases_state_deadline", table_name="cases")
    op.drop_index("ix_cases_county_queue", table_name="cases")
    op.drop_index("ix_cases_queue", table_name="cases")
