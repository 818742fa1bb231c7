"""verification jobs

jobs.kind: NULL for a notebook job, "verify" for a verification job (`jobrunner verify --queue`,
POST /v1/runs/{id}/verify): the worker re-executes the recorded run `jobs.verifies` (an MLflow run id)
and writes what it found into `jobs.verification` (JSON: reproduced, the differences, the new run).

Revision ID: 0006_verify_jobs
Revises: 0005_job_events
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_verify_jobs"
down_revision = "0005_job_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("verifies", sa.String(64), nullable=True))
        batch.add_column(sa.Column("verification", sa.JSON(), nullable=True))
        batch.create_index("ix_jobs_verifies", ["verifies"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_verifies")
        batch.drop_column("verification")
        batch.drop_column("verifies")
        batch.drop_column("kind")
