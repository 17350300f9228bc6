"""Shadow re-forecasts: the forecast a shadow run left for the real try of one DAG run.

Revision ID: 0009_shadow_forecasts
Revises: 0006_shaping_events (0007 / 0008 are reserved for the nodes and ledger work; the chain is
re-linked when they land)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_shadow_forecasts"
down_revision = "0006_shaping_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictive_shadow_forecast",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("shadow_run_pk", sa.Integer, nullable=True),
        sa.Column("estimator", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("curves", sa.Text, nullable=False),
        sa.Column("duration", sa.Text, nullable=False),
        sa.Column("peak_only", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_predictive_shadow_forecast"),
        sa.UniqueConstraint(
            "dag_id", "task_id", "map_index", "run_id", name="uq_predictive_shadow_forecast_run"
        ),
    )


def downgrade() -> None:
    op.drop_table("predictive_shadow_forecast")
