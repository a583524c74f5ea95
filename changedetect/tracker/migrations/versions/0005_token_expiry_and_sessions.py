"""Tokens expire; the review page's sessions live on the server.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

``api_tokens.expires_at`` (not null): tokens issued before this revision get the default
lifetime (90 days) counted from the upgrade, so no integration stops working the moment the
schema changes. ``api_sessions`` holds the hashed session ids that ``POST /login`` hands out
(model: ``sessions.ApiSession``).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

#: ``auth.DEFAULT_TOKEN_LIFETIME`` when this revision was written.
EXISTING_TOKEN_LIFETIME = dt.timedelta(days=90)


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add ``api_tokens.expires_at`` and create ``api_sessions``."""
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", _utc(), nullable=True))
    expires = dt.datetime.now(dt.UTC) + EXISTING_TOKEN_LIFETIME
    if op.get_bind().dialect.name == "sqlite":
        expires = expires.replace(tzinfo=None)  # the models store naive UTC on SQLite
    tokens = sa.table("api_tokens", sa.column("expires_at", _utc()))
    op.execute(tokens.update().where(tokens.c.expires_at.is_(None)).values(expires_at=expires))
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("expires_at", existing_type=_utc(), nullable=False)

    op.create_table(
        "api_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("last_seen_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_api_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            name=op.f("fk_api_sessions_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_sessions")),
        # the look-up key of every cookie request
        sa.UniqueConstraint("session_hash", name=op.f("uq_api_sessions_session_hash")),
    )
    op.create_index(op.f("ix_api_sessions_user_id"), "api_sessions", ["user_id"])
    op.create_index(op.f("ix_api_sessions_token_id"), "api_sessions", ["token_id"])


def downgrade() -> None:
    """Drop ``api_sessions`` (everyone logs in again) and the tokens' expiry."""
    op.drop_table("api_sessions")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
