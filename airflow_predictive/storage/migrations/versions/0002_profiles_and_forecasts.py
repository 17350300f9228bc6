"""Task profiles (champion per task), precomputed forecasts, and selection records.

Revision ID: 0002_profiles_and_forecasts
Revises: 0001_runs_and_samples
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_profiles_and_forecasts"
down_revision = "0001_runs_and_samples"
branch_labels = None
depends_on = None


def _task_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "predictive_task_profile",
        *_task_columns(),
        sa.Column("champion", sa.String(100), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("scores", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_predictive_task_profile"),
        sa.UniqueConstraint("dag_id", "task_id", "map_index", name="uq_predictive_task_profile_task"),
    )
    op.create_table(
        "predictive_forecast",
        *_task_columns(),
        sa.Column("estimator", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("curves", sa.Text, nullable=False),
        sa.Column("duration", sa.Text, nullable=False),
        sa.Column("peak_only", sa.Integer, nullable=False),
        sa.Column("explanation", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_predictive_forecast"),
        sa.UniqueConstraint("dag_id", "task_id", "map_index", name="uq_predictive_forecast_task"),
    )
    op.create_table(
        "predictive_selection",
        *_task_columns(),
        sa.Column("champion", sa.String(100), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("scores", sa.Text, nullable=True),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("folds", sa.Integer, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_predictive_selection"),
    )
    op.create_index(
        "ix_predictive_selection_task_created",
        "predictive_selection",
        ["dag_id", "task_id", "map_index", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_predictive_selection_task_created", "predictive_selection")
    op.drop_table("predictive_selection")
    op.drop_table("predictive_forecast")
    op.drop_table("predictive_task_profile")
