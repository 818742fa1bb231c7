"""per-job time limit

Revision ID: 0002_job_timeout
Revises: 0001_jobs
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_job_timeout"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # batch mode: SQLite cannot ALTER every column kind
        batch.add_column(sa.Column("timeout_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("timeout_seconds")
