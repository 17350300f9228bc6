"""Scheduler ledger: pools, time-indexed reservations, and every plan / admission decision.

Revision ID: 0004_ledger
Revises: 0003_run_legs
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_ledger"
down_revision = "0003_run_legs"
branch_labels = None
depends_on = None


def _task_columns() -> list[sa.Column]:
    return [
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "predictive_pool",
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("capacity", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_predictive_pool"),
    )
    op.create_table(
        "predictive_reservation",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pool", sa.String(250), nullable=False),
        *_task_columns(),
        sa.Column("holder", sa.String(250), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("start_at", sa.Float, nullable=False),
        sa.Column("end_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("timeline", sa.Text, nullable=False),
        sa.Column("plan", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_predictive_reservation"),
        sa.ForeignKeyConstraint(
            ["pool"],
            ["predictive_pool.name"],
            name="fk_predictive_reservation_pool_predictive_pool",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_predictive_reservation_pool_state", "predictive_reservation", ["pool", "state"])
    op.create_table(
        "predictive_decision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        *_task_columns(),
        sa.Column("pool", sa.String(250), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("payload", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_predictive_decision"),
    )
    op.create_index("ix_predictive_decision_task_at", "predictive_decision", ["dag_id", "task_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_predictive_decision_task_at", table_name="predictive_decision")
    op.drop_table("predictive_decision")
    op.drop_index("ix_predictive_reservation_pool_state", table_name="predictive_reservation")
    op.drop_table("predictive_reservation")
    op.drop_table("predictive_pool")
