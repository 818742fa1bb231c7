"""schedules and schedule_runs (scheduled notebooks)

Revision ID: 0003_schedules
Revises: 0002_job_timeout
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_schedules"
down_revision = "0002_job_timeout"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("notebook", sa.String(1024), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("kernel_name", sa.String(255), nullable=False),
        sa.Column("max_concurrent_runs", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("catchup", sa.String(8), nullable=False, server_default="once"),
        sa.Column("submitter", sa.String(255), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("next_slot_at", TZ, nullable=False),
    )
    op.create_index("ix_schedules_due", "schedules", ["paused", "next_slot_at"])
    op.create_table(
        "schedule_runs",
        sa.Column(
            "schedule_id", sa.String(36), sa.ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("slot", TZ, primary_key=True),
        sa.Column("trigger", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_schedule_runs_job_id", "schedule_runs", ["job_id"])
    op.create_index("ix_schedule_runs_status", "schedule_runs", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_table("schedules")
