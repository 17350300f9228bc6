"""Shaping events: every decision of the shaping controller, with its reason.

Revision ID: 0006_shaping_events
Revises: 0004_ledger (0005 is reserved for the profiler; re-chain to it if it lands)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_shaping_events"
down_revision = "0004_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictive_shaping_event",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("t_s", sa.Float, nullable=False),
        sa.Column("subject", sa.String(250), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("run_key", sa.String(1000), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("before_value", sa.Float, nullable=True),
        sa.Column("target_value", sa.Float, nullable=True),
        sa.Column("after_value", sa.Float, nullable=True),
        sa.Column("usage_value", sa.Float, nullable=True),
        sa.Column("predicted_value", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_predictive_shaping_event"),
    )
    op.create_index("ix_predictive_shaping_event_subject_at", "predictive_shaping_event", ["subject", "at"])
    op.create_index("ix_predictive_shaping_event_run_key", "predictive_shaping_event", ["run_key"])


def downgrade() -> None:
    op.drop_index("ix_predictive_shaping_event_run_key", table_name="predictive_shaping_event")
    op.drop_index("ix_predictive_shaping_event_subject_at", table_name="predictive_shaping_event")
    op.drop_table("predictive_shaping_event")
