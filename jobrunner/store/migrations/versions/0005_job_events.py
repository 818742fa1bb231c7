"""live output of running jobs, per-job kernel, webhook notifications

- `job_output`: cell output of running jobs (stream text, errors, a note for rich outputs), appended in
  batches by workers, read by `jobrunner logs --follow`, GET /v1/jobs/{id}/events and the job board;
- `jobs.kernel_name` (None: the workers' JOBRUNNER_KERNEL_NAME) and `jobs.notify_url` / `notify_on`,
  `schedules.notify_url` / `notify_on` (copied to each run);
- `job_notifications`: the webhook outbox, one row per job and terminal state, sent apart from the job;
- `job_events.kind`: NULL for a state change, "notify" for a webhook delivery, "output" for output notes.

Revision ID: 0005_job_events
Revises: 0004_job_outputs
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_job_events"
down_revision = "0004_job_outputs"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "job_output",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cell_index", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(16), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", TZ, nullable=False),
    )
    op.create_index("ix_job_output_job_id_id", "job_output", ["job_id", "id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kernel_name", sa.String(255), nullable=True))
        batch.add_column(sa.Column("notify_url", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("notify_on", sa.String(8), nullable=True))
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("notify_url", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("notify_on", sa.String(8), nullable=True))
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=True))
    op.create_table(
        "job_notifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("available_at", TZ, nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("sent_at", TZ, nullable=True),
        sa.Column("failed_at", TZ, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.UniqueConstraint("job_id", "state", "attempt", name="uq_job_notifications_once"),
    )
    op.create_index("ix_job_notifications_due", "job_notifications", ["sent_at", "failed_at", "available_at"])


def downgrade() -> None:
    op.drop_table("job_notifications")
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("notify_on")
        batch.drop_column("notify_url")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("notify_on")
        batch.drop_column("notify_url")
        batch.drop_column("kernel_name")
    op.drop_table("job_output")
