"""jobs, job_outbox and job_events

Revision ID: 0001_jobs
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("notebook", sa.String(1024), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.String(255), nullable=True, unique=True),
        sa.Column("submitter", sa.String(255), nullable=True),
        sa.Column("cache_key", sa.String(128), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("queued_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("heartbeat_at", TZ, nullable=True),
        sa.Column("worker_id", sa.String(255), nullable=True),
        sa.Column("cells_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cells_total", sa.Integer(), nullable=True),
        sa.Column("current_cell", sa.Integer(), nullable=True),
        sa.Column("error_kind", sa.String(32), nullable=True),
        sa.Column("error_cell_index", sa.Integer(), nullable=True),
        sa.Column("error_ename", sa.String(255), nullable=True),
        sa.Column("error_evalue", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("output_uri", sa.String(2048), nullable=True),
        sa.Column("html_uri", sa.String(2048), nullable=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_cache_key", "jobs", ["cache_key"])
    op.create_index("ix_jobs_notebook_created", "jobs", ["notebook", "created_at"])
    op.create_table(
        "job_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("available_at", TZ, nullable=False),
        sa.Column("sent_at", TZ, nullable=True),
        sa.Column("dead_at", TZ, nullable=True),
        sa.Column("dead_reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_job_outbox_job_id", "job_outbox", ["job_id"])
    op.create_index("ix_job_outbox_pending", "job_outbox", ["sent_at", "available_at"])
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.Column("from_state", sa.String(128), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.String(255), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])


def downgrade() -> None:
    op.drop_table("job_events")
    op.drop_table("job_outbox")
    op.drop_table("jobs")
