"""Run legs: one try = one run across the task processes it took (deferrals, reschedules).

A try that defers exits its task process and resumes later in a new one; each such process is
one *leg*. ``predictive_task_run.leg`` is the current leg (a generation number: a stale sidecar's
writes carry an older leg and are refused), ``predictive_run_leg`` keeps when each leg ran and
why it ended, so the time between two legs is known to be deferred, never UNKNOWN.

Revision ID: 0003_run_legs
Revises: 0002_profiles_and_forecasts
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_run_legs"
down_revision = "0002_profiles_and_forecasts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictive_task_run") as batch:
        batch.add_column(sa.Column("leg", sa.Integer, nullable=False, server_default="1"))
    op.create_table(
        "predictive_run_leg",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_pk", sa.Integer, nullable=False),
        sa.Column("leg", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.Column("t_start_s", sa.Float, nullable=True),
        sa.Column("t_end_s", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_predictive_run_leg"),
        sa.ForeignKeyConstraint(
            ["run_pk"],
            ["predictive_task_run.id"],
            name="fk_predictive_run_leg_run_pk_predictive_task_run",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("run_pk", "leg", name="uq_predictive_run_leg_run_leg"),
    )


def downgrade() -> None:
    op.drop_table("predictive_run_leg")
    with op.batch_alter_table("predictive_task_run") as batch:
        batch.drop_column("leg")
