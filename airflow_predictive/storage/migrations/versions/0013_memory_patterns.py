"""Memory access patterns: anonymous vs file-backed memory, per sample and per run.

Revision ID: 0013_memory_patterns
Revises: 0008_coming_capacity (the latest revision when this one was written; the chain stays linear)
Create Date: 2026-12-01

New nullable metric columns (``Metric`` members of issue 13 item 5, see docs/recording.md): on
``predictive_resource_sample`` the readings, on ``predictive_task_run`` the ``declared_`` and
``peak_`` columns every metric has. Existing rows read NULL: not measured, never 0. Page-fault
rates were measured too and not kept (docs/benchmarks/profiler_memstat.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_memory_patterns"
down_revision = "0008_coming_capacity"
branch_labels = None
depends_on = None

# frozen here: the metrics this revision adds (a later Metric member needs its own revision)
METRICS = ("memory_anon_bytes", "memory_file_bytes")


def upgrade() -> None:
    with op.batch_alter_table("predictive_resource_sample") as batch:
        for m in METRICS:
            batch.add_column(sa.Column(m, sa.Float, nullable=True))
    with op.batch_alter_table("predictive_task_run") as batch:
        for prefix in ("declared_", "peak_"):
            for m in METRICS:
                batch.add_column(sa.Column(f"{prefix}{m}", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictive_task_run") as batch:
        for prefix in ("declared_", "peak_"):
            for m in METRICS:
                batch.drop_column(f"{prefix}{m}")
    with op.batch_alter_table("predictive_resource_sample") as batch:
        for m in METRICS:
            batch.drop_column(m)
