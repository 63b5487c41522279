"""what each run's snapshot added to the snapshot chain (EBS direct APIs)

Revision ID: 0004_snapshot_stats
Revises: 0003_runs_host_index
Create Date: 2026-12-01 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_snapshot_stats"
down_revision: str | None = "0003_runs_host_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("snapshot_stats", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("snapshot_stats")
