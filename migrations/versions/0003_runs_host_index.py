"""runs by host (`ec2backup runs --host`, a fleet sharing one database)

Revision ID: 0003_runs_host_index
Revises: 0002_leases
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_runs_host_index"
down_revision: str | None = "0002_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_host_created_at", ["host", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_host_created_at")
