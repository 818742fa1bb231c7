"""jobs own their outputs; run cache columns

jobs.outputs: the output files a job wrote (parameter, path, md5, size, stored URI), set when it ends.
jobs.write_workspace: the submitter asked the job to write the project's files (as `jobrunner run`).
jobs.use_cache / jobs.cached_from: the run cache (`--no-cache`; the job whose execution a hit reused).
run_cache_claims: one row per cache key being executed, so identical in-flight jobs coalesce.

Revision ID: 0004_job_outputs
Revises: 0003_schedules
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_job_outputs"
down_revision = "0003_schedules"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # batch mode: SQLite cannot ALTER every column kind
        batch.add_column(sa.Column("outputs", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("write_workspace", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("use_cache", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("cached_from", sa.String(36), nullable=True))
        batch.create_index("ix_jobs_cached_from", ["cached_from"])
    op.create_table(
        "run_cache_claims",
        sa.Column("cache_key", sa.String(128), primary_key=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("worker_id", sa.String(255), nullable=True),
        sa.Column("claimed_at", TZ, nullable=False),
    )
    op.create_index("ix_run_cache_claims_job_id", "run_cache_claims", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_run_cache_claims_job_id", table_name="run_cache_claims")
    op.drop_table("run_cache_claims")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_cached_from")
        batch.drop_column("cached_from")
        batch.drop_column("use_cache")
        batch.drop_column("write_workspace")
        batch.drop_column("outputs")
