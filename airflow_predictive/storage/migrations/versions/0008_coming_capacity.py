"""Coming capacity: a pool's capacity that is on its way (nodes booting, warm capacity), ready at a time.

Revision ID: 0008_coming_capacity
Revises: 0009_shadow_forecasts (the latest revision when this one was written; the chain stays linear)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_coming_capacity"
down_revision = "0009_shadow_forecasts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # JSON [{"pool", "ready_at", "requests", "limits", "source", "ref"}]; NULL = nothing coming
    with op.batch_alter_table("predictive_pool") as batch:
        batch.add_column(sa.Column("coming", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictive_pool") as batch:
        batch.drop_column("coming")
