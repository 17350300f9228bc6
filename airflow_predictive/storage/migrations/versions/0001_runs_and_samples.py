"""Runs (one per task try) and their resource samples.

Revision ID: 0001_runs_and_samples
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_runs_and_samples"
down_revision = None
branch_labels = None
depends_on = None

METRICS = (
    "cpu_cores",
    "memory_bytes",
    "disk_read_bps",
    "disk_write_bps",
    "net_rx_bps",
    "net_tx_bps",
    "gpu_util",
    "gpu_memory_bytes",
)


def upgrade() -> None:
    op.create_table(
        "predictive_task_run",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("start_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("operator", sa.String(250), nullable=True),
        sa.Column("pool", sa.String(250), nullable=True),
        sa.Column("queue", sa.String(250), nullable=True),
        sa.Column("hostname", sa.String(250), nullable=True),
        sa.Column("executor_config", sa.Text, nullable=True),
        sa.Column("features", sa.Text, nullable=True),
        sa.Column("sample_interval_s", sa.Float, nullable=True),
        sa.Column("n_samples", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        *[sa.Column(f"declared_{m}", sa.Float, nullable=True) for m in METRICS],
        *[sa.Column(f"peak_{m}", sa.Float, nullable=True) for m in METRICS],
        sa.PrimaryKeyConstraint("id", name="pk_predictive_task_run"),
        sa.UniqueConstraint(
            "source",
            "dag_id",
            "task_id",
            "map_index",
            "run_id",
            "try_number",
            name="uq_predictive_task_run_try",
        ),
    )
    op.create_index(
        "ix_predictive_task_run_task_start",
        "predictive_task_run",
        ["dag_id", "task_id", "map_index", "start_date"],
    )
    op.create_table(
        "predictive_resource_sample",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_pk", sa.Integer, nullable=False),
        sa.Column("t_s", sa.Float, nullable=False),
        *[sa.Column(m, sa.Float, nullable=True) for m in METRICS],
        sa.PrimaryKeyConstraint("id", name="pk_predictive_resource_sample"),
        sa.ForeignKeyConstraint(
            ["run_pk"],
            ["predictive_task_run.id"],
            name="fk_predictive_resource_sample_run_pk_predictive_task_run",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_predictive_resource_sample_run_t", "predictive_resource_sample", ["run_pk", "t_s"])


def downgrade() -> None:
    op.drop_index("ix_predictive_resource_sample_run_t", "predictive_resource_sample")
    op.drop_table("predictive_resource_sample")
    op.drop_index("ix_predictive_task_run_task_start", "predictive_task_run")
    op.drop_table("predictive_task_run")
